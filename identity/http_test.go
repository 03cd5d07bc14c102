package identity

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gantry/gantry/api"
)

// fakeObjects knows endpoint "e1" (name "fraud") and model "m".
type fakeObjects struct{}

func (fakeObjects) Resolve(t ObjectType, id string) (Object, bool) {
	switch {
	case t == Endpoints && (id == "e1" || id == "fraud"):
		return Object{Endpoints, "e1"}, true
	case t == Models && id == "m":
		return Object{Models, "m"}, true
	}
	return Object{}, false
}

type apiHarness struct {
	s   *Service
	srv *httptest.Server
}

// newAPI serves Handler behind the authentication the scheduler does, and
// returns it with an admin token.
func newAPI(t *testing.T) (*apiHarness, string) {
	t.Helper()
	s := open(t, filepath.Join(t.TempDir(), "identity.db"), &clock{time.Unix(1_800_000_000, 0)})
	h := s.Handler(fakeObjects{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := s.Authenticate(r.Header.Get("Authorization"))
		if err != nil {
			writeError(w, err)
			return
		}
		h.ServeHTTP(w, r.WithContext(WithCaller(r.Context(), c)))
	}))
	t.Cleanup(srv.Close)
	sp, _ := s.CreatePrincipal(ServicePrincipal, "", "bootstrap")
	admins, _ := s.Lookup(Ref{Group, AdminsGroup})
	s.SetMembers(admins.ID, []string{sp.ID}, nil, false)
	v, _, _ := s.CreateToken(sp.ID, sp.ID, 0, "")
	return &apiHarness{s: s, srv: srv}, v
}

// call sends a request and decodes a JSON answer into out (when not nil).
func (a *apiHarness) call(t *testing.T, token, method, path, body string, out any) int {
	t.Helper()
	req, _ := http.NewRequest(method, a.srv.URL+path, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
	if out != nil && resp.StatusCode >= 300 {
		json.Unmarshal(b, out)
	}
	return resp.StatusCode
}

func TestSCIMUsersAndGroups(t *testing.T) {
	a, admin := newAPI(t)
	var u api.ScimPrincipal
	if st := a.call(t, admin, "POST", "/api/2.0/preview/scim/v2/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"alice@corp.com","displayName":"Alice"}`, &u); st != 201 {
		t.Fatalf("create user: %d", st)
	}
	if u.ID == "" || u.UserName != "alice@corp.com" || u.Active == nil || !*u.Active || len(u.Emails) != 1 {
		t.Errorf("created user = %+v", u)
	}
	if st := a.call(t, admin, "POST", "/api/2.0/preview/scim/v2/Users", `{"userName":"alice@corp.com"}`, nil); st != 409 {
		t.Errorf("duplicate user: %d", st)
	}
	if st := a.call(t, admin, "POST", "/api/2.0/preview/scim/v2/Users", `{"userName":"x","entitlements":[]}`, nil); st != 400 {
		t.Errorf("unsupported field: %d", st)
	}
	a.call(t, admin, "POST", "/api/2.0/preview/scim/v2/Users", `{"userName":"bob@corp.com"}`, nil)

	var l api.ScimListResponse
	if st := a.call(t, admin, "GET", `/api/2.0/preview/scim/v2/Users?filter=userName+eq+%22alice@corp.com%22`, "", &l); st != 200 {
		t.Fatalf("list: %d", st)
	}
	if l.TotalResults != 1 || len(l.Resources) != 1 || l.Resources[0].ID != u.ID || l.Schemas[0] != schemaList {
		t.Errorf("filtered list = %+v", l)
	}
	a.call(t, admin, "GET", `/api/2.0/preview/scim/v2/Users?startIndex=2&count=5`, "", &l)
	if l.TotalResults != 2 || len(l.Resources) != 1 || l.Resources[0].UserName != "bob@corp.com" {
		t.Errorf("second page = %+v", l)
	}
	if st := a.call(t, admin, "GET", `/api/2.0/preview/scim/v2/Users?filter=emails+eq+%22x%22`, "", nil); st != 400 {
		t.Errorf("bad filter: %d", st)
	}

	var g api.ScimPrincipal
	if st := a.call(t, admin, "POST", "/api/2.0/preview/scim/v2/Groups", `{"displayName":"ds","members":[{"value":"`+u.ID+`"}]}`, &g); st != 201 {
		t.Fatalf("create group: %d", st)
	}
	if len(g.Members) != 1 || g.Members[0].Value != u.ID || g.Members[0].Ref != "Users/"+u.ID {
		t.Errorf("group = %+v", g)
	}
	bob := a.s.Principals(User, func(p *Principal) bool { return p.Name == "bob@corp.com" })[0]
	patch := `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"add","path":"members","value":[{"value":"` + bob.ID + `"}]},{"op":"remove","path":"members[value eq \"` + u.ID + `\"]"}]}`
	if st := a.call(t, admin, "PATCH", "/api/2.0/preview/scim/v2/Groups/"+g.ID, patch, &g); st != 200 {
		t.Fatalf("patch group: %d", st)
	}
	if len(g.Members) != 1 || g.Members[0].Value != bob.ID {
		t.Errorf("after patch: %+v", g.Members)
	}
	var gotBob api.ScimPrincipal
	a.call(t, admin, "GET", "/api/2.0/preview/scim/v2/Users/"+bob.ID, "", &gotBob)
	if len(gotBob.Groups) != 1 || gotBob.Groups[0].Display != "ds" {
		t.Errorf("bob's groups = %+v", gotBob.Groups)
	}
	a.call(t, admin, "GET", `/api/2.0/preview/scim/v2/Groups?filter=displayName+eq+%22admins%22`, "", &l)
	if len(l.Resources) != 1 || len(l.Resources[0].Members) != 1 {
		t.Errorf("admins = %+v", l)
	}

	// Non-admins read but do not write.
	v, _, _ := a.s.CreateToken(bob.ID, bob.ID, 0, "")
	if st := a.call(t, v, "GET", "/api/2.0/preview/scim/v2/Users", "", nil); st != 200 {
		t.Errorf("user lists users: %d", st)
	}
	var e struct {
		Code, Message string
	}
	if st := a.call(t, v, "POST", "/api/2.0/preview/scim/v2/Users", `{"userName":"eve"}`, &e); st != 403 || !strings.Contains(e.Message, "admins") {
		t.Errorf("user creates user: %d %+v", st, e)
	}
	var me api.ScimPrincipal
	a.call(t, v, "GET", "/api/2.0/preview/scim/v2/Me", "", &me)
	if me.ID != bob.ID {
		t.Errorf("Me = %+v", me)
	}
	// The SDKs read Me as a User: a service principal's userName is its
	// application id, as in Databricks.
	var spMe api.ScimPrincipal
	a.call(t, admin, "GET", "/api/2.0/preview/scim/v2/Me", "", &spMe)
	if spMe.ApplicationID == "" || spMe.UserName != spMe.ApplicationID {
		t.Errorf("a service principal's Me = %+v, want userName = applicationId", spMe)
	}
	if st := a.call(t, admin, "DELETE", "/api/2.0/preview/scim/v2/Users/"+bob.ID, "", nil); st != 204 {
		t.Errorf("delete: %d", st)
	}
	if st := a.call(t, v, "GET", "/api/2.0/preview/scim/v2/Me", "", nil); st != 401 {
		t.Errorf("deleted user's token: %d", st)
	}
	if st := a.call(t, admin, "GET", "/api/2.0/preview/scim/v2/Users/"+bob.ID, "", nil); st != 404 {
		t.Errorf("get deleted: %d", st)
	}
}

func TestTokenAPI(t *testing.T) {
	a, admin := newAPI(t)
	var sp api.ScimPrincipal
	a.call(t, admin, "POST", "/api/2.0/preview/scim/v2/ServicePrincipals", `{"displayName":"ci"}`, &sp)
	if sp.ApplicationID == "" {
		t.Fatalf("service principal = %+v", sp)
	}
	var obo createTokenResponse
	if st := a.call(t, admin, "POST", "/api/2.0/token-management/on-behalf-of/tokens", `{"application_id":"`+sp.ApplicationID+`","lifetime_seconds":3600,"comment":"ci"}`, &obo); st != 200 {
		t.Fatalf("on-behalf-of: %d", st)
	}
	if obo.TokenValue == "" || obo.TokenInfo.ExpiryTime-obo.TokenInfo.CreationTime != 3600_000 || obo.TokenInfo.OwnerID == nil {
		t.Errorf("on-behalf-of = %+v", obo)
	}
	// The service principal makes its own, lists and deletes it.
	var own createTokenResponse
	if st := a.call(t, obo.TokenValue, "POST", "/api/2.0/token/create", `{"comment":"mine"}`, &own); st != 200 {
		t.Fatalf("create: %d", st)
	}
	var list struct {
		TokenInfos []tokenInfo `json:"token_infos"`
	}
	a.call(t, obo.TokenValue, "GET", "/api/2.0/token/list", "", &list)
	if len(list.TokenInfos) != 2 {
		t.Fatalf("list = %+v", list)
	}
	for _, ti := range list.TokenInfos {
		b, _ := json.Marshal(ti)
		if strings.Contains(string(b), own.TokenValue) || strings.Contains(string(b), obo.TokenValue) {
			t.Fatal("a list shows a token value")
		}
	}
	if st := a.call(t, obo.TokenValue, "POST", "/api/2.0/token-management/on-behalf-of/tokens", `{"application_id":"`+sp.ApplicationID+`"}`, nil); st != 403 {
		t.Errorf("non-admin on-behalf-of: %d", st)
	}
	// A user's first token (a Gantry extension: there is no SSO to get
	// it from): an admin issues it with user_name, and it is the user's.
	a.call(t, admin, "POST", "/api/2.0/preview/scim/v2/Users", `{"userName":"ada@corp.com"}`, nil)
	var ut createTokenResponse
	if st := a.call(t, admin, "POST", "/api/2.0/token-management/on-behalf-of/tokens", `{"user_name":"ada@corp.com","comment":"first"}`, &ut); st != 200 || ut.TokenValue == "" {
		t.Fatalf("on-behalf-of a user: %d %+v", st, ut)
	}
	var me api.ScimPrincipal
	if st := a.call(t, ut.TokenValue, "GET", "/api/2.0/preview/scim/v2/Me", "", &me); st != 200 || me.UserName != "ada@corp.com" {
		t.Errorf("the user's token is %d %+v, want ada@corp.com", st, me)
	}
	for body, want := range map[string]int{
		`{"user_name":"nobody@corp.com"}`:                                          404,
		`{"user_name":"ada@corp.com","application_id":"` + sp.ApplicationID + `"}`: 400,
		`{}`: 400,
	} {
		if st := a.call(t, admin, "POST", "/api/2.0/token-management/on-behalf-of/tokens", body, nil); st != want {
			t.Errorf("on-behalf-of %s: %d, want %d", body, st, want)
		}
	}
	if st := a.call(t, ut.TokenValue, "POST", "/api/2.0/token-management/on-behalf-of/tokens", `{"user_name":"ada@corp.com"}`, nil); st != 403 {
		t.Errorf("a user issues a token on behalf of itself: %d, want 403 (admins only)", st)
	}
	if st := a.call(t, admin, "POST", "/api/2.0/token/delete", `{"token_id":"`+own.TokenInfo.TokenID+`"}`, nil); st != 404 {
		t.Errorf("token/delete of another's token: %d", st)
	}
	if st := a.call(t, obo.TokenValue, "POST", "/api/2.0/token/delete", `{"token_id":"`+own.TokenInfo.TokenID+`"}`, nil); st != 200 {
		t.Errorf("delete own: %d", st)
	}
	if st := a.call(t, own.TokenValue, "GET", "/api/2.0/token/list", "", nil); st != 401 {
		t.Errorf("revoked token: %d", st)
	}
	if st := a.call(t, admin, "DELETE", "/api/2.0/token-management/tokens/"+obo.TokenInfo.TokenID, "", nil); st != 200 {
		t.Errorf("admin revokes: %d", st)
	}
	if st := a.call(t, obo.TokenValue, "GET", "/api/2.0/token/list", "", nil); st != 401 {
		t.Errorf("admin-revoked token: %d", st)
	}
	if st := a.call(t, admin, "POST", "/api/2.0/token/create", `{"lifetime_seconds":-5}`, nil); st != 400 {
		t.Errorf("negative lifetime: %d", st)
	}
}

func TestPermissionsAPI(t *testing.T) {
	a, admin := newAPI(t)
	alice, _ := a.s.CreatePrincipal(User, "alice", "Alice")
	a.s.CreatePrincipal(Group, "ds", "")
	va, _, _ := a.s.CreateToken(alice.ID, alice.ID, 0, "")
	a.s.Claim(Object{Endpoints, "e1"}, &Caller{Ref: Ref{User, "owner"}})

	var missing, hidden struct {
		Code    string `json:"error_code"`
		Message string `json:"message"`
	}
	// alice may not see e1: the answer is the one for no endpoint at all.
	st1 := a.call(t, va, "GET", "/api/2.0/permissions/serving-endpoints/e1", "", &hidden)
	st2 := a.call(t, va, "GET", "/api/2.0/permissions/serving-endpoints/zz", "", &missing)
	if st1 != 404 || st2 != 404 || strings.ReplaceAll(hidden.Message, "e1", "zz") != missing.Message {
		t.Errorf("hidden %d %+v vs missing %d %+v", st1, hidden, st2, missing)
	}

	var p permissionsResponse
	body := `{"access_control_list":[{"user_name":"alice","permission_level":"CAN_VIEW"},{"group_name":"ds","permission_level":"CAN_QUERY"}]}`
	if st := a.call(t, admin, "PATCH", "/api/2.0/permissions/serving-endpoints/fraud", body, &p); st != 200 {
		t.Fatalf("patch: %d", st)
	}
	if p.ObjectID != "/serving-endpoints/e1" || p.ObjectType != "serving-endpoint" || len(p.AccessControlList) != 4 {
		t.Errorf("ACL = %+v", p)
	}
	// Now alice sees it, but may not manage it: 403 naming CAN_MANAGE.
	if st := a.call(t, va, "GET", "/api/2.0/permissions/serving-endpoints/e1", "", &hidden); st != 403 || !strings.Contains(hidden.Message, "lacks CAN_MANAGE") || !strings.Contains(hidden.Message, "holds CAN_VIEW") {
		t.Errorf("viewer reads ACL: %d %+v", st, hidden)
	}
	var lv struct {
		PermissionLevels []levelInfo `json:"permission_levels"`
	}
	if st := a.call(t, va, "GET", "/api/2.0/permissions/serving-endpoints/e1/permissionLevels", "", &lv); st != 200 || len(lv.PermissionLevels) != 3 {
		t.Errorf("levels: %d %+v", st, lv)
	}
	for _, bad := range []string{
		`{"access_control_list":[{"user_name":"nobody","permission_level":"CAN_VIEW"}]}`,
		`{"access_control_list":[{"user_name":"alice","permission_level":"CAN_READ"}]}`,
		`{"access_control_list":[{"user_name":"alice","group_name":"ds","permission_level":"CAN_VIEW"}]}`,
		`{"access_control_list":[{"group_name":"admins","permission_level":"CAN_VIEW"}]}`,
	} {
		if st := a.call(t, admin, "PUT", "/api/2.0/permissions/serving-endpoints/e1", bad, nil); st != 400 {
			t.Errorf("PUT %s: %d", bad, st)
		}
	}
	if st := a.call(t, admin, "PUT", "/api/2.0/permissions/serving-endpoints/e1", `{"access_control_list":[]}`, &p); st != 200 || len(p.AccessControlList) != 2 {
		t.Errorf("PUT none keeps owner and admins: %d %+v", st, p)
	}
	if st := a.call(t, admin, "PUT", "/api/2.0/permissions/registered-models/m", `{"access_control_list":[{"user_name":"alice","permission_level":"CAN_READ"}]}`, &p); st != 200 || p.ObjectType != "registered-model" {
		t.Errorf("model ACL: %d %+v", st, p)
	}
}
