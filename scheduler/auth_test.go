package scheduler

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/console"
	"github.com/gantry/gantry/identity"
	"github.com/gantry/gantry/scheduler/registry"
	"github.com/gantry/gantry/scheduler/routes"
	"github.com/gantry/gantry/scheduler/store"
)

// The callers of the authorization matrix, each with its level on the
// endpoint "ep" and the model "m" that the fixture sets up.
const (
	idNone     = "no token"
	idBad      = "bad token"
	idExpired  = "expired"
	idRevoked  = "revoked"
	idStranger = "no grant"
	idView     = "CAN_VIEW"
	idQuery    = "CAN_QUERY"
	idGroup    = "group member (CAN_QUERY)"
	// idNested is in group ds-inner, itself a member of the granted ds.
	idNested  = "nested group member (CAN_QUERY)"
	idManage  = "CAN_MANAGE"
	idAdmin   = "admin"
	idCompont = "component"
)

var matrixIDs = []string{idNone, idBad, idExpired, idRevoked, idStranger, idView, idQuery, idGroup, idNested, idManage, idAdmin, idCompont}

// levels is what each authenticated caller holds on ep and on m.
var levels = map[string][2]identity.Level{
	idStranger: {identity.NoPermissions, identity.NoPermissions},
	idView:     {identity.CanView, identity.CanRead},
	idQuery:    {identity.CanQuery, identity.CanRead},
	idGroup:    {identity.CanQuery, identity.CanRead},
	idNested:   {identity.CanQuery, identity.CanRead},
	idManage:   {identity.CanManage, identity.CanManage},
	idAdmin:    {identity.CanManage, identity.CanManage},
}

// authHarness is a scheduler with authentication on, an endpoint "ep"
// serving model "m" (both owned by "owner"), and a token per caller.
type authHarness struct {
	*harness
	id     *identity.Service
	now    atomic.Int64 // the identity clock, Unix seconds
	tokens map[string]string
	// principals by userName/applicationId, for paths that name ids.
	users map[string]*identity.Principal
	group *identity.Principal
}

func newAuthHarness(t *testing.T) *authHarness {
	t.Helper()
	dir := t.TempDir()
	a := &authHarness{tokens: map[string]string{}, users: map[string]*identity.Principal{}}
	a.now.Store(1_800_000_000)
	var err error
	a.id, err = identity.Open(filepath.Join(dir, "identity.db"), func() time.Time { return time.Unix(a.now.Load(), 0) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.id.Close() })
	st, err := store.Open(filepath.Join(dir, "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	reg, err := registry.Open(filepath.Join(dir, "models"))
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{orch: newFake(), routes: routes.NewTable(), dir: dir}
	h.s, err = New(Config{Store: st, Registry: reg, Orchestrator: h.orch, Routes: h.routes, BaseURL: "http://gantry.test", Auth: a.id,
		Secrets: openSecrets(t, dir, a.id)})
	if err != nil {
		t.Fatal(err)
	}
	h.srv = httptest.NewServer(h.s.Handler())
	t.Cleanup(h.srv.Close)
	a.harness = h

	user := func(name string) string {
		p, err := a.id.CreatePrincipal(identity.User, name, "")
		if err != nil {
			t.Fatal(err)
		}
		a.users[name] = p
		v, _, err := a.id.CreateToken(p.ID, p.ID, 0, "")
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	a.tokens["owner"] = user("owner@corp.com")
	for _, n := range []string{idStranger, idView, idQuery, idGroup, idNested, idManage} {
		a.tokens[n] = user(strings.ReplaceAll(strings.ToLower(n), " ", "-") + "@corp.com")
	}
	sp, _ := a.id.CreatePrincipal(identity.ServicePrincipal, "", "gantry-admin")
	admins, _ := a.id.Lookup(identity.Ref{Kind: identity.Group, Name: identity.AdminsGroup})
	a.id.SetMembers(admins.ID, []string{sp.ID}, nil, false)
	a.tokens[idAdmin], _, _ = a.id.CreateToken(sp.ID, sp.ID, 0, "")
	a.group, _ = a.id.CreatePrincipal(identity.Group, "ds", "")
	a.id.SetMembers(a.group.ID, []string{a.users["group-member-(can_query)@corp.com"].ID}, nil, false)
	inner, _ := a.id.CreatePrincipal(identity.Group, "ds-inner", "")
	a.id.SetMembers(inner.ID, []string{a.users["nested-group-member-(can_query)@corp.com"].ID}, nil, false)
	if _, err := a.id.SetMembers(a.group.ID, []string{inner.ID}, nil, false); err != nil {
		t.Fatal(err)
	}
	// The components' service principal, as gantry scheduler makes it.
	compFile := filepath.Join(dir, "components-token")
	if _, err := a.id.BootstrapComponents(compFile); err != nil {
		t.Fatal(err)
	}
	if a.tokens[idCompont], err = identity.ReadTokenFile(compFile); err != nil {
		t.Fatal(err)
	}

	// A token that expires in a second, and one revoked.
	ex := user("expiring@corp.com")
	a.id.DeleteToken(a.id.Tokens(a.users["expiring@corp.com"].ID)[0].ID, "")
	var tok *identity.Token
	ex, tok, _ = a.id.CreateToken(a.users["expiring@corp.com"].ID, a.users["expiring@corp.com"].ID, time.Second, "")
	_ = tok
	a.tokens[idExpired] = ex
	rv := user("revoked@corp.com")
	a.id.DeleteToken(a.id.Tokens(a.users["revoked@corp.com"].ID)[0].ID, "")
	a.tokens[idRevoked] = rv
	a.tokens[idBad] = "dapi00000000000000000000000000000000"

	a.uploadAs(t, "owner", "m", 200)
	a.createEndpoint(t)
	a.grantModel(t)
	a.createScope(t)
	return a
}

// createEndpoint creates "ep" as owner and grants the matrix's callers
// their levels on it.
func (a *authHarness) createEndpoint(t *testing.T) {
	t.Helper()
	body := `{"name": "ep", "config": {"served_entities": [{"name": "v1", "entity_name": "m", "entity_version": "1"}]}}`
	if st, b := a.do(t, "owner", "POST", "/api/2.0/serving-endpoints", body); st != 200 {
		t.Fatalf("create ep: %d %s", st, b)
	}
	if st, b := a.do(t, "owner", "PATCH", "/api/2.0/permissions/serving-endpoints/ep", a.endpointGrants()); st != 200 {
		t.Fatalf("grant ep: %d %s", st, b)
	}
}

func (a *authHarness) endpointGrants() string {
	return `{"access_control_list": [
		{"user_name": "can_view@corp.com", "permission_level": "CAN_VIEW"},
		{"user_name": "can_query@corp.com", "permission_level": "CAN_QUERY"},
		{"user_name": "can_manage@corp.com", "permission_level": "CAN_MANAGE"},
		{"group_name": "ds", "permission_level": "CAN_QUERY"}]}`
}

func (a *authHarness) modelGrants() string {
	return `{"access_control_list": [
		{"user_name": "can_view@corp.com", "permission_level": "CAN_READ"},
		{"user_name": "can_query@corp.com", "permission_level": "CAN_READ"},
		{"user_name": "can_manage@corp.com", "permission_level": "CAN_MANAGE"},
		{"group_name": "ds", "permission_level": "CAN_READ"}]}`
}

func (a *authHarness) grantModel(t *testing.T) {
	t.Helper()
	if st, b := a.do(t, "owner", "PUT", "/api/2.0/permissions/registered-models/m", a.modelGrants()); st != 200 {
		t.Fatalf("grant m: %d %s", st, b)
	}
}

func (a *authHarness) epID(t *testing.T) string {
	a.s.mu.Lock()
	defer a.s.mu.Unlock()
	ep, ok := a.s.eps["ep"]
	if !ok {
		t.Fatal("ep is gone")
	}
	return ep.ID
}

func modelTarball(t *testing.T) []byte {
	t.Helper()
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "MLmodel"), []byte("flavors:\n  xgboost:\n    data: model.json\n"), 0o644)
	os.WriteFile(filepath.Join(src, "model.json"), []byte("{}"), 0o644)
	var buf bytes.Buffer
	if err := registry.TarGz(&buf, src); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func (a *authHarness) uploadAs(t *testing.T, who, model string, want int) {
	t.Helper()
	if st, b := a.doBytes(t, who, "POST", "/api/2.0/gantry/models/"+model+"/versions", modelTarball(t)); st != want {
		t.Fatalf("upload %s as %s: %d %s, want %d", model, who, st, b, want)
	}
}

// do sends a request as caller who (a key of a.tokens; "" or idNone: no
// header) and returns the status and body.
func (a *authHarness) do(t *testing.T, who, method, path, body string) (int, []byte) {
	t.Helper()
	return a.doBytes(t, who, method, path, []byte(body))
}

func (a *authHarness) doBytes(t *testing.T, who, method, path string, body []byte) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, a.srv.URL+path, bytes.NewReader(body))
	if tok, ok := a.tokens[who]; ok {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		var e api.Error
		if err := json.Unmarshal(b, &e); err != nil || e.Code == "" || e.Message == "" {
			t.Fatalf("%s %s as %s: %d with a body not in API.md's error shape: %s", method, path, who, resp.StatusCode, b)
		}
		if api.HTTPStatus(e.Code) != resp.StatusCode {
			t.Fatalf("%s %s: status %d with code %s", method, path, resp.StatusCode, e.Code)
		}
	}
	return resp.StatusCode, b
}

// access is a matrix row's rule, as the test states it (independently of
// apiRoutes): who gets through to the handler.
type access int

const (
	anonymous      access = iota // everyone, without a token
	anyone                       // any valid token
	adminsOnly                   // members of admins
	endpoint                     // a level on ep
	model                        // a level on m
	secretScope                  // a permission on secret scope sc (secrets_test.go)
	componentsOnly               // admins and the components' service principals
)

// matrixRow is one route under test: a request, who may make it, and
// the status the handler answers once through (ok), chosen so that it is
// neither 401, 403 nor the 404 of a hidden object where that matters.
type matrixRow struct {
	pattern string // as registered; every registered pattern needs a row
	access  access
	need    identity.Level
	// hidden is the status of a caller below the lowest level on the
	// object (404 by default: no oracle).
	hidden int
	// component: the components' service principal may call it too
	// (componentsOnly rows say so by their access).
	component bool
	ok        int
	// req builds the request for caller who; reset, when set, restores
	// what a successful request changed.
	req   func(a *authHarness, t *testing.T, who string) (method, path, body string)
	reset func(a *authHarness, t *testing.T)
}

func static(method, path, body string) func(*authHarness, *testing.T, string) (string, string, string) {
	return func(*authHarness, *testing.T, string) (string, string, string) { return method, path, body }
}

// slug makes a name from a caller's key, for objects each caller creates.
func slug(who string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			return r
		}
		return '-'
	}, strings.ToLower(who))
}

func matrixRows() []matrixRow {
	epPath := "/api/2.0/serving-endpoints/ep"
	return []matrixRow{
		// Serving endpoints.
		{pattern: "POST /api/2.0/serving-endpoints", access: model, need: identity.CanRead, ok: 200,
			req: func(a *authHarness, t *testing.T, who string) (string, string, string) {
				return "POST", "/api/2.0/serving-endpoints", `{"name": "new-` + slug(who) + `", "config": {"served_entities": [{"entity_name": "m", "entity_version": "1"}]}}`
			}},
		{pattern: "POST /api/2.0/serving-endpoints/pt", access: model, need: identity.CanRead, ok: 400, // m generates no tokens, refused once through
			req: func(a *authHarness, t *testing.T, who string) (string, string, string) {
				return "POST", "/api/2.0/serving-endpoints/pt", `{"name": "pt-` + slug(who) + `", "config": {"served_entities": [{"entity_name": "m", "entity_version": "1", "provisioned_model_units": 1}]}}`
			}},
		{pattern: "GET /api/2.0/serving-endpoints", access: anyone, ok: 200, req: static("GET", "/api/2.0/serving-endpoints", "")},
		{pattern: "GET /api/2.0/serving-endpoints/{name}", access: endpoint, need: identity.CanView, ok: 200, req: static("GET", epPath, "")},
		{pattern: "DELETE /api/2.0/serving-endpoints/{name}", access: endpoint, need: identity.CanManage, ok: 200, req: static("DELETE", epPath, ""),
			reset: func(a *authHarness, t *testing.T) { a.createEndpoint(t); a.putMonitor(t) }},
		{pattern: "PUT /api/2.0/serving-endpoints/{name}/config", access: endpoint, need: identity.CanManage, ok: 400, // an empty config, refused once through
			req: static("PUT", epPath+"/config", `{"served_entities": []}`)},
		{pattern: "PUT /api/2.0/serving-endpoints/pt/{name}/config", access: endpoint, need: identity.CanManage, ok: 400, // an empty config, refused once through
			req: static("PUT", "/api/2.0/serving-endpoints/pt/ep/config", `{"config": {"served_entities": []}}`)},
		{pattern: "PATCH /api/2.0/serving-endpoints/{name}/tags", access: endpoint, need: identity.CanManage, ok: 200,
			req: static("PATCH", epPath+"/tags", `{"add_tags": [{"key": "team", "value": "risk"}]}`)},
		{pattern: "PUT /api/2.0/serving-endpoints/{name}/ai-gateway", access: endpoint, need: identity.CanManage, ok: 200, req: static("PUT", epPath+"/ai-gateway", `{}`)},
		{pattern: "GET /api/2.0/serving-endpoints/{name}/served-models/{served}/logs", access: endpoint, need: identity.CanView, ok: 400, // the fake keeps no logs
			req: static("GET", epPath+"/served-models/v1/logs", "")},
		{pattern: "GET /api/2.0/serving-endpoints/{name}/served-models/{served}/build-logs", access: endpoint, need: identity.CanView, ok: 200,
			req: static("GET", epPath+"/served-models/v1/build-logs", "")},
		{pattern: "GET /api/2.0/serving-endpoints/{name}/metrics", access: endpoint, need: identity.CanView, ok: 200, req: static("GET", epPath+"/metrics", "")},
		{pattern: "GET /.well-known/databricks-config", access: anonymous, ok: 404, req: static("GET", "/.well-known/databricks-config", "")},
		{pattern: "GET /{$}", access: anonymous, ok: 200, req: static("GET", "/", "")}, // the console
		{pattern: "GET /assets/{file}", access: anonymous, ok: 200, req: static("GET", "/assets/"+console.AssetNames()[0], "")},
		{pattern: "GET /api/2.0/gantry/serving-endpoints/{name}/deployments", access: endpoint, need: identity.CanView, ok: 200,
			req: static("GET", "/api/2.0/gantry/serving-endpoints/ep/deployments", "")},
		{pattern: "POST /api/2.0/gantry/tables/query", access: endpoint, need: identity.CanManage, ok: 400, // ep has no inference table
			req: static("POST", "/api/2.0/gantry/tables/query", `{"endpoint": "ep", "sql": "SELECT 1"}`)},

		// Models.
		{pattern: "GET /api/2.0/gantry/models", access: anyone, ok: 200, req: static("GET", "/api/2.0/gantry/models", "")},
		{pattern: "POST /api/2.0/gantry/models/{name}/versions", access: model, need: identity.CanManage, hidden: 403, ok: 200,
			req: func(a *authHarness, t *testing.T, who string) (string, string, string) {
				return "POST", "/api/2.0/gantry/models/m/versions", string(modelTarball(t))
			}},
		{pattern: "GET /api/2.0/gantry/models/{name}/versions/{version}", access: model, need: identity.CanRead, ok: 200, req: static("GET", "/api/2.0/gantry/models/m/versions/1", "")},
		{pattern: "GET /api/2.0/serving-endpoints/get-model-optimization-info/{name}/{version}", access: model, need: identity.CanRead, ok: 200,
			req: static("GET", "/api/2.0/serving-endpoints/get-model-optimization-info/m/1", "")},
		{pattern: "DELETE /api/2.0/gantry/models/{name}/versions/{version}", access: model, need: identity.CanManage, ok: 409, // ep serves it
			req: static("DELETE", "/api/2.0/gantry/models/m/versions/1", "")},
		{pattern: "GET /api/2.0/gantry/models/{name}/versions/{version}/artifact", access: model, need: identity.CanRead, ok: 200,
			req: static("GET", "/api/2.0/gantry/models/m/versions/1/artifact", "")},

		// The components' views.
		{pattern: "GET /api/2.0/gantry/routes", access: componentsOnly, ok: 200, req: static("GET", "/api/2.0/gantry/routes", "")},
		{pattern: "GET /api/2.0/gantry/access", access: componentsOnly, ok: 200, req: static("GET", "/api/2.0/gantry/access", "")},
		{pattern: "GET /api/2.0/gantry/external-keys", access: componentsOnly, ok: 200, req: static("GET", "/api/2.0/gantry/external-keys", "")},
		{pattern: "POST /api/2.0/gantry/rate-limits/reserve", access: componentsOnly, ok: 200, req: static("POST", "/api/2.0/gantry/rate-limits/reserve", `{"endpoint": "ep", "requester": "x"}`)},
		{pattern: "POST /api/2.0/gantry/rate-limits/refund", access: componentsOnly, ok: 200, req: static("POST", "/api/2.0/gantry/rate-limits/refund", `{"endpoint": "ep", "window": 1, "tokens": 5, "buckets": ["e"]}`)},
		{pattern: "GET /api/2.0/gantry/usage", access: adminsOnly, ok: 503, // usage tables are off here
			req: static("GET", "/api/2.0/gantry/usage?since=7d&by=endpoint", "")},
		{pattern: "GET /api/2.0/gantry/deployments", access: componentsOnly, ok: 200, req: static("GET", "/api/2.0/gantry/deployments", "")},
		{pattern: "POST /api/2.0/gantry/deployments/{id}/scale", access: componentsOnly, ok: 400, req: static("POST", "/api/2.0/gantry/deployments/x/scale", `{"replicas": -1}`)},

		// Feature serving: the harness has no online store, so each
		// authorized call gets the 503 that says how to turn it on.
		{pattern: "POST /api/2.0/feature-store/tables/{source}/publish", access: adminsOnly, ok: 503,
			req: static("POST", "/api/2.0/feature-store/tables/features.users/publish", `{"primary_key_columns": ["id"]}`)},
		{pattern: "GET /api/2.0/feature-store/tables", access: anyone, ok: 503, req: static("GET", "/api/2.0/feature-store/tables", "")},
		{pattern: "GET /api/2.0/feature-store/tables/{source}", access: anyone, ok: 503, req: static("GET", "/api/2.0/feature-store/tables/features.users", "")},
		{pattern: "POST /api/2.0/gantry/feature-specs", access: adminsOnly, ok: 503, req: static("POST", "/api/2.0/gantry/feature-specs", `{"name": "s", "features": []}`)},
		{pattern: "GET /api/2.0/gantry/feature-specs", access: anyone, ok: 503, req: static("GET", "/api/2.0/gantry/feature-specs", "")},
		{pattern: "GET /api/2.0/gantry/feature-specs/{name}", access: anyone, ok: 503, req: static("GET", "/api/2.0/gantry/feature-specs/s", "")},
		{pattern: "DELETE /api/2.0/gantry/feature-specs/{name}", access: adminsOnly, ok: 503, req: static("DELETE", "/api/2.0/gantry/feature-specs/s", "")},
		{pattern: "PUT /api/2.0/gantry/models/{name}/versions/{version}/feature-spec", access: model, need: identity.CanManage, ok: 503,
			req: static("PUT", "/api/2.0/gantry/models/m/versions/1/feature-spec", `{"feature_spec": "s"}`)},
		{pattern: "DELETE /api/2.0/gantry/models/{name}/versions/{version}/feature-spec", access: model, need: identity.CanManage, ok: 503,
			req: static("DELETE", "/api/2.0/gantry/models/m/versions/1/feature-spec", "")},

		// Monitors follow their endpoint.
		{pattern: "POST /api/2.0/gantry/monitors", access: endpoint, need: identity.CanManage, ok: 400, // ep has no inference table
			req: static("POST", "/api/2.0/gantry/monitors", `{"name": "m2", "endpoint": "ep", "granularity": "1 hour"}`)},
		{pattern: "GET /api/2.0/gantry/monitors", access: anyone, component: true, ok: 200, req: static("GET", "/api/2.0/gantry/monitors", "")},
		{pattern: "GET /api/2.0/gantry/monitors/{name}", access: endpoint, need: identity.CanView, ok: 200, req: static("GET", "/api/2.0/gantry/monitors/mon", "")},
		{pattern: "DELETE /api/2.0/gantry/monitors/{name}", access: endpoint, need: identity.CanManage, ok: 200, req: static("DELETE", "/api/2.0/gantry/monitors/mon", ""),
			reset: func(a *authHarness, t *testing.T) { a.putMonitor(t) }},
		{pattern: "POST /api/2.0/gantry/monitors/{name}/run", access: endpoint, need: identity.CanManage, ok: 503, // tables are off
			req: static("POST", "/api/2.0/gantry/monitors/mon/run", "")},
		{pattern: "GET /api/2.0/gantry/monitors/{name}/report", access: endpoint, need: identity.CanManage, ok: 503, req: static("GET", "/api/2.0/gantry/monitors/mon/report", "")},

		// SCIM.
		{pattern: "POST /api/2.0/preview/scim/v2/Users", access: adminsOnly, ok: 201, req: static("POST", "/api/2.0/preview/scim/v2/Users", `{"userName": "new@corp.com"}`)},
		{pattern: "GET /api/2.0/preview/scim/v2/Users", access: anyone, ok: 200, req: static("GET", `/api/2.0/preview/scim/v2/Users?filter=userName+eq+%22owner@corp.com%22`, "")},
		{pattern: "GET /api/2.0/preview/scim/v2/Users/{id}", access: anyone, ok: 200, req: func(a *authHarness, t *testing.T, who string) (string, string, string) {
			return "GET", "/api/2.0/preview/scim/v2/Users/" + a.users["owner@corp.com"].ID, ""
		}},
		{pattern: "DELETE /api/2.0/preview/scim/v2/Users/{id}", access: adminsOnly, ok: 204, req: func(a *authHarness, t *testing.T, who string) (string, string, string) {
			p, _ := a.id.CreatePrincipal(identity.User, "doomed-"+slug(who), "")
			return "DELETE", "/api/2.0/preview/scim/v2/Users/" + p.ID, ""
		}},
		{pattern: "POST /api/2.0/preview/scim/v2/ServicePrincipals", access: adminsOnly, ok: 201, req: static("POST", "/api/2.0/preview/scim/v2/ServicePrincipals", `{"displayName": "ci"}`)},
		{pattern: "GET /api/2.0/preview/scim/v2/ServicePrincipals", access: anyone, ok: 200, req: static("GET", "/api/2.0/preview/scim/v2/ServicePrincipals", "")},
		{pattern: "GET /api/2.0/preview/scim/v2/ServicePrincipals/{id}", access: anyone, ok: 200, req: func(a *authHarness, t *testing.T, who string) (string, string, string) {
			return "GET", "/api/2.0/preview/scim/v2/ServicePrincipals/" + a.id.Principals(identity.ServicePrincipal, nil)[0].ID, ""
		}},
		{pattern: "DELETE /api/2.0/preview/scim/v2/ServicePrincipals/{id}", access: adminsOnly, ok: 204, req: func(a *authHarness, t *testing.T, who string) (string, string, string) {
			p, _ := a.id.CreatePrincipal(identity.ServicePrincipal, "", "doomed")
			return "DELETE", "/api/2.0/preview/scim/v2/ServicePrincipals/" + p.ID, ""
		}},
		{pattern: "POST /api/2.0/preview/scim/v2/Groups", access: adminsOnly, ok: 201, req: static("POST", "/api/2.0/preview/scim/v2/Groups", `{"displayName": "risk"}`)},
		{pattern: "GET /api/2.0/preview/scim/v2/Groups", access: anyone, ok: 200, req: static("GET", `/api/2.0/preview/scim/v2/Groups?filter=displayName+eq+%22ds%22`, "")},
		{pattern: "GET /api/2.0/preview/scim/v2/Groups/{id}", access: anyone, ok: 200, req: func(a *authHarness, t *testing.T, who string) (string, string, string) {
			return "GET", "/api/2.0/preview/scim/v2/Groups/" + a.group.ID, ""
		}},
		{pattern: "DELETE /api/2.0/preview/scim/v2/Groups/{id}", access: adminsOnly, ok: 204, req: func(a *authHarness, t *testing.T, who string) (string, string, string) {
			p, _ := a.id.CreatePrincipal(identity.Group, "doomed-"+slug(who), "")
			return "DELETE", "/api/2.0/preview/scim/v2/Groups/" + p.ID, ""
		}},
		{pattern: "PATCH /api/2.0/preview/scim/v2/Groups/{id}", access: adminsOnly, ok: 200, req: func(a *authHarness, t *testing.T, who string) (string, string, string) {
			return "PATCH", "/api/2.0/preview/scim/v2/Groups/" + a.group.ID,
				`{"Operations": [{"op": "add", "path": "members", "value": [{"value": "` + a.users["group-member-(can_query)@corp.com"].ID + `"}]}]}`
		}},
		{pattern: "GET /api/2.0/preview/scim/v2/Me", access: anyone, ok: 200, req: static("GET", "/api/2.0/preview/scim/v2/Me", "")},

		// Tokens.
		{pattern: "POST /api/2.0/token/create", access: anyone, ok: 200, req: static("POST", "/api/2.0/token/create", `{"comment": "matrix"}`)},
		{pattern: "GET /api/2.0/token/list", access: anyone, ok: 200, req: static("GET", "/api/2.0/token/list", "")},
		{pattern: "POST /api/2.0/token/delete", access: anyone, ok: 400, req: static("POST", "/api/2.0/token/delete", `{}`)},
		{pattern: "GET /api/2.0/token-management/tokens", access: adminsOnly, ok: 200, req: static("GET", "/api/2.0/token-management/tokens", "")},
		{pattern: "GET /api/2.0/token-management/tokens/{token_id}", access: adminsOnly, ok: 200, req: func(a *authHarness, t *testing.T, who string) (string, string, string) {
			return "GET", "/api/2.0/token-management/tokens/" + a.id.Tokens(a.users["owner@corp.com"].ID)[0].ID, ""
		}},
		{pattern: "DELETE /api/2.0/token-management/tokens/{token_id}", access: adminsOnly, ok: 200, req: func(a *authHarness, t *testing.T, who string) (string, string, string) {
			_, tok, _ := a.id.CreateToken(a.users["owner@corp.com"].ID, a.users["owner@corp.com"].ID, 0, "doomed")
			return "DELETE", "/api/2.0/token-management/tokens/" + tok.ID, ""
		}},
		{pattern: "POST /api/2.0/token-management/on-behalf-of/tokens", access: adminsOnly, ok: 200, req: func(a *authHarness, t *testing.T, who string) (string, string, string) {
			return "POST", "/api/2.0/token-management/on-behalf-of/tokens", `{"application_id": "` + a.id.Principals(identity.ServicePrincipal, nil)[0].Name + `"}`
		}},

		// Permissions. PUT and PATCH send the grants the fixture has, so
		// that a success changes nothing.
		{pattern: "GET /api/2.0/permissions/serving-endpoints/{id}", access: endpoint, need: identity.CanManage, ok: 200, req: func(a *authHarness, t *testing.T, who string) (string, string, string) {
			return "GET", "/api/2.0/permissions/serving-endpoints/" + a.epID(t), ""
		}},
		{pattern: "PUT /api/2.0/permissions/serving-endpoints/{id}", access: endpoint, need: identity.CanManage, ok: 200, req: func(a *authHarness, t *testing.T, who string) (string, string, string) {
			return "PUT", "/api/2.0/permissions/serving-endpoints/" + a.epID(t), a.endpointGrants()
		}},
		{pattern: "PATCH /api/2.0/permissions/serving-endpoints/{id}", access: endpoint, need: identity.CanManage, ok: 200, req: func(a *authHarness, t *testing.T, who string) (string, string, string) {
			return "PATCH", "/api/2.0/permissions/serving-endpoints/" + a.epID(t), a.endpointGrants()
		}},
		{pattern: "GET /api/2.0/permissions/serving-endpoints/{id}/permissionLevels", access: endpoint, need: identity.CanView, ok: 200, req: func(a *authHarness, t *testing.T, who string) (string, string, string) {
			return "GET", "/api/2.0/permissions/serving-endpoints/" + a.epID(t) + "/permissionLevels", ""
		}},
		{pattern: "GET /api/2.0/permissions/registered-models/{id}", access: model, need: identity.CanManage, ok: 200, req: static("GET", "/api/2.0/permissions/registered-models/m", "")},
		{pattern: "PUT /api/2.0/permissions/registered-models/{id}", access: model, need: identity.CanManage, ok: 200, req: func(a *authHarness, t *testing.T, who string) (string, string, string) {
			return "PUT", "/api/2.0/permissions/registered-models/m", a.modelGrants()
		}},
		{pattern: "PATCH /api/2.0/permissions/registered-models/{id}", access: model, need: identity.CanManage, ok: 200, req: func(a *authHarness, t *testing.T, who string) (string, string, string) {
			return "PATCH", "/api/2.0/permissions/registered-models/m", a.modelGrants()
		}},
		{pattern: "GET /api/2.0/permissions/registered-models/{id}/permissionLevels", access: model, need: identity.CanRead, ok: 200,
			req: static("GET", "/api/2.0/permissions/registered-models/m/permissionLevels", "")},
	}
}

func (a *authHarness) putMonitor(t *testing.T) {
	t.Helper()
	if err := a.s.cfg.Store.PutMonitor(&api.Monitor{Name: "mon", Endpoint: "ep"}); err != nil {
		t.Fatal(err)
	}
}

// want is the status row r should answer caller who.
func (r *matrixRow) want(who string) int {
	if r.access == anonymous {
		return r.ok
	}
	switch who {
	case idNone, idBad, idExpired, idRevoked:
		return http.StatusUnauthorized
	case idCompont:
		// The components' service principal holds no grant and may
		// call the components' routes only.
		if r.access == componentsOnly || r.component {
			return r.ok
		}
		return http.StatusForbidden
	}
	var have identity.Level
	switch r.access {
	case anyone:
		return r.ok
	case adminsOnly, componentsOnly:
		if who == idAdmin {
			return r.ok
		}
		return http.StatusForbidden
	case endpoint:
		have = levels[who][0]
	case model:
		have = levels[who][1]
	case secretScope:
		return r.scopeWant(who)
	}
	switch {
	case !have.AtLeast(identity.CanView): // CAN_VIEW and CAN_READ share the lowest rank
		if r.hidden != 0 {
			return r.hidden
		}
		return http.StatusNotFound
	case !have.AtLeast(r.need):
		return http.StatusForbidden
	}
	return r.ok
}

// TestAuthorizationMatrix sends every route as every kind of caller and
// checks the status against the row's rule. A route registered without a
// row fails it.
func TestAuthorizationMatrix(t *testing.T) {
	a := newAuthHarness(t)
	a.putMonitor(t)
	// The expiring token is a second old by now.
	a.now.Add(3600)

	rows := append(matrixRows(), secretMatrixRows()...)
	var registered []string
	for _, rt := range a.s.apiRoutes() {
		registered = append(registered, rt.pattern)
	}
	registered = append(registered, identity.Patterns()...)
	for _, p := range registered {
		if !slices.ContainsFunc(rows, func(r matrixRow) bool { return r.pattern == p }) {
			t.Errorf("route %q has no row in the authorization matrix: add one with who may call it", p)
		}
	}
	for _, r := range rows {
		if !slices.Contains(registered, r.pattern) {
			t.Errorf("matrix row %q names no registered route", r.pattern)
		}
	}

	for _, r := range rows {
		t.Run(r.pattern, func(t *testing.T) {
			for _, who := range matrixIDs {
				method, path, body := r.req(a, t, who)
				if !strings.HasPrefix(r.pattern, method+" ") {
					t.Fatalf("row %q sends %s", r.pattern, method)
				}
				got, b := a.do(t, who, method, path, body)
				if want := r.want(who); got != want {
					t.Errorf("%s: %d %s, want %d", who, got, b, want)
				}
				if who == idCompont && got == http.StatusForbidden && !bytes.Contains(b, []byte("may call only the components' routes")) && r.access != componentsOnly {
					t.Errorf("%s: the 403 does not say why: %s", who, b)
				}
				if got == http.StatusForbidden && who != idCompont && r.access != adminsOnly && r.access != componentsOnly && !bytes.Contains(b, []byte("lacks "+string(r.need))) {
					t.Errorf("%s: the 403 does not name the level lacked: %s", who, b)
				}
				if got < 300 && r.reset != nil {
					r.reset(a, t)
				}
			}
		})
	}
}

// TestNoExistenceOracle: for an endpoint, model or monitor a caller may
// not view, every answer is the one for a name that does not exist.
func TestNoExistenceOracle(t *testing.T) {
	a := newAuthHarness(t)
	a.putMonitor(t)
	// Each path names the hidden object as {}; the missing one is "nope".
	for _, tc := range []struct{ method, path, name, body string }{
		{"GET", "/api/2.0/serving-endpoints/{}", "ep", ""},
		{"DELETE", "/api/2.0/serving-endpoints/{}", "ep", ""},
		{"PUT", "/api/2.0/serving-endpoints/{}/config", "ep", `{"served_entities": []}`},
		{"GET", "/api/2.0/serving-endpoints/{}/metrics", "ep", ""},
		{"GET", "/api/2.0/serving-endpoints/{}/served-models/v1/logs", "ep", ""},
		{"GET", "/api/2.0/permissions/serving-endpoints/{}", "ep", ""},
		{"GET", "/api/2.0/permissions/serving-endpoints/{}/permissionLevels", "ep", ""},
		{"GET", "/api/2.0/gantry/models/{}/versions/1", "m", ""},
		{"GET", "/api/2.0/permissions/registered-models/{}", "m", ""},
		{"GET", "/api/2.0/gantry/monitors/{}", "mon", ""},
		{"POST", "/api/2.0/gantry/monitors/{}/run", "mon", ""},
		{"POST", "/api/2.0/gantry/tables/query", "ep", `{"endpoint": "{}", "sql": "SELECT 1"}`},
	} {
		hidden := strings.ReplaceAll(tc.path, "{}", tc.name)
		missing := strings.ReplaceAll(tc.path, "{}", "nope")
		st1, b1 := a.do(t, idStranger, tc.method, hidden, strings.ReplaceAll(tc.body, "{}", tc.name))
		st2, b2 := a.do(t, idStranger, tc.method, missing, strings.ReplaceAll(tc.body, "{}", "nope"))
		if st1 != http.StatusNotFound || st2 != st1 || string(b1) != strings.ReplaceAll(string(b2), "nope", tc.name) {
			t.Errorf("%s %s: %d %s; missing: %d %s", tc.method, hidden, st1, b1, st2, b2)
		}
	}
	// Creating an endpoint on a model one may not read: as for no model.
	st1, b1 := a.do(t, idStranger, "POST", "/api/2.0/serving-endpoints", `{"name": "x", "config": {"served_entities": [{"entity_name": "m", "entity_version": "1"}]}}`)
	st2, b2 := a.do(t, idStranger, "POST", "/api/2.0/serving-endpoints", `{"name": "x", "config": {"served_entities": [{"entity_name": "zz", "entity_version": "1"}]}}`)
	if st1 != 404 || st2 != 404 || strings.ReplaceAll(string(b1), " m ", " zz ") != string(b2) {
		t.Errorf("create on an unreadable model: %d %s; on a missing one: %d %s", st1, b1, st2, b2)
	}
}

// TestCallerViews: permission_level is the caller's, lists hold what the
// caller may see, and the creator and requester are the principal.
func TestCallerViews(t *testing.T) {
	a := newAuthHarness(t)
	for who, want := range map[string]string{idView: "CAN_VIEW", idGroup: "CAN_QUERY", idManage: "CAN_MANAGE", idAdmin: "CAN_MANAGE", "owner": "CAN_MANAGE"} {
		_, b := a.do(t, who, "GET", "/api/2.0/serving-endpoints/ep", "")
		var ep api.Endpoint
		json.Unmarshal(b, &ep)
		if ep.PermissionLevel != want || ep.Creator != "owner@corp.com" {
			t.Errorf("%s: permission_level %q creator %q, want %q and owner@corp.com", who, ep.PermissionLevel, ep.Creator, want)
		}
		var l api.ListEndpointsResponse
		_, b = a.do(t, who, "GET", "/api/2.0/serving-endpoints", "")
		json.Unmarshal(b, &l)
		if len(l.Endpoints) != 1 || l.Endpoints[0].PermissionLevel != want {
			t.Errorf("%s lists %+v", who, l.Endpoints)
		}
	}
	var l api.ListEndpointsResponse
	_, b := a.do(t, idStranger, "GET", "/api/2.0/serving-endpoints", "")
	json.Unmarshal(b, &l)
	if len(l.Endpoints) != 0 {
		t.Errorf("a caller without grants lists %d endpoints", len(l.Endpoints))
	}
	var ms api.ListModelsResponse
	_, b = a.do(t, idStranger, "GET", "/api/2.0/gantry/models", "")
	json.Unmarshal(b, &ms)
	if len(ms.Models) != 0 {
		t.Errorf("a caller without grants lists models %+v", ms.Models)
	}

	// A stranger's own model and endpoint: it manages both, others see
	// neither.
	a.uploadAs(t, idStranger, "mine", 200)
	if st, b := a.do(t, idStranger, "POST", "/api/2.0/serving-endpoints", `{"name": "own", "config": {"served_entities": [{"entity_name": "mine", "entity_version": "1"}]}}`); st != 200 {
		t.Fatalf("create own: %d %s", st, b)
	}
	_, b = a.do(t, idStranger, "GET", "/api/2.0/serving-endpoints/own", "")
	var own api.Endpoint
	json.Unmarshal(b, &own)
	if own.Creator != "no-grant@corp.com" || own.PermissionLevel != "CAN_MANAGE" {
		t.Errorf("own endpoint: creator %q level %q", own.Creator, own.PermissionLevel)
	}
	if st, _ := a.do(t, idView, "GET", "/api/2.0/serving-endpoints/own", ""); st != 404 {
		t.Errorf("another's endpoint: %d", st)
	}
	a.uploadAs(t, idView, "mine", 403)

	// Deleting forgets the ACL: a new endpoint of the same name starts
	// with none but its creator's.
	if st, _ := a.do(t, idStranger, "DELETE", "/api/2.0/serving-endpoints/own", ""); st != 200 {
		t.Fatal("delete own")
	}
	if a.id.ACL(identity.Object{Type: identity.Endpoints, ID: own.ID}) != nil {
		t.Error("the deleted endpoint's ACL is still stored")
	}
	if st, b := a.do(t, idStranger, "PUT", "/api/2.0/serving-endpoints/ep/config", `{}`); st != 404 {
		t.Errorf("stranger updates ep: %d %s", st, b)
	}
	if st, b := a.do(t, idManage, "PUT", "/api/2.0/serving-endpoints/ep/config", `{"served_entities": [{"entity_name": "mine", "entity_version": "1"}]}`); st != 404 || !strings.Contains(string(b), "model mine version 1 does not exist") {
		t.Errorf("an update to serve a model the caller may not read: %d %s", st, b)
	}
}

// TestAccessSnapshotFollowsRevocation: an activator following the access
// snapshot learns of a revocation at once (well within the 2 s),
// and its in-memory check then refuses the token.
func TestAccessSnapshotFollowsRevocation(t *testing.T) {
	a := newAuthHarness(t)
	get := func(index uint64) (*api.AccessSnapshot, time.Duration) {
		start := time.Now()
		st, b := a.do(t, idAdmin, "GET", fmt.Sprintf("/api/2.0/gantry/access?index=%d&wait=20s", index), "")
		if st != 200 {
			t.Fatalf("access: %d %s", st, b)
		}
		var snap api.AccessSnapshot
		if err := json.Unmarshal(b, &snap); err != nil {
			t.Fatal(err)
		}
		return &snap, time.Since(start)
	}
	snap, _ := get(0)
	if bytes.Contains(mustJSON(t, snap), []byte(a.tokens[idQuery])) {
		t.Fatal("the access snapshot holds a token value")
	}
	notFound := api.Errorf(api.ErrResourceDoesNotExist, "endpoint \"ep\" does not exist")
	now := time.Unix(a.now.Load(), 0)
	chk := identity.NewChecker(snap)
	for who, want := range map[string]string{
		idQuery: "", idGroup: "", idManage: "", idAdmin: "",
		idView: api.ErrPermissionDenied, idStranger: api.ErrResourceDoesNotExist,
		idNone: api.ErrUnauthenticated, idBad: api.ErrUnauthenticated, idRevoked: api.ErrUnauthenticated,
	} {
		var hdr string
		if tok, ok := a.tokens[who]; ok {
			hdr = "Bearer " + tok
		}
		c, err := chk.Invoke(hdr, "ep", now, notFound)
		got := ""
		if err != nil {
			got = err.Code
		}
		if got != want {
			t.Errorf("%s invokes ep: %v, want %q", who, err, want)
		}
		if err == nil && who == idQuery && c.Name() != "can_query@corp.com" {
			t.Errorf("requester = %q", c.Name())
		}
	}
	if _, err := chk.Invoke("Bearer "+a.tokens[idExpired], "ep", now.Add(time.Hour), notFound); err == nil || err.Code != api.ErrUnauthenticated {
		t.Errorf("expired token: %v", err)
	}

	// Revoke CAN_QUERY's token while a follower waits.
	done := make(chan struct{})
	var next *api.AccessSnapshot
	var took time.Duration
	go func() {
		defer close(done)
		next, took = get(snap.Index)
	}()
	time.Sleep(50 * time.Millisecond) // let the query block
	p := a.users["can_query@corp.com"]
	revokedAt := time.Now()
	if err := a.id.DeleteToken(a.id.Tokens(p.ID)[0].ID, ""); err != nil {
		t.Fatal(err)
	}
	<-done
	if next.Index <= snap.Index {
		t.Fatalf("index %d did not pass %d", next.Index, snap.Index)
	}
	if since := time.Since(revokedAt); since > 2*time.Second {
		t.Fatalf("the follower learned of the revocation after %s, want under 2s", since)
	}
	t.Logf("revocation reached the follower %s after the delete (query open %s)", time.Since(revokedAt), took)
	if _, err := identity.NewChecker(next).Invoke("Bearer "+a.tokens[idQuery], "ep", now, notFound); err == nil || err.Code != api.ErrUnauthenticated {
		t.Errorf("revoked token after the update: %v", err)
	}

	// A new endpoint enters the snapshot with its owner.
	if st, b := a.do(t, idStranger, "POST", "/api/2.0/serving-endpoints", `{"name": "fresh", "config": {"served_entities": [{"entity_name": "m", "entity_version": "1"}]}}`); st != 404 {
		t.Fatalf("stranger creates on m: %d %s", st, b)
	}
	a.uploadAs(t, idStranger, "sm", 200)
	a.do(t, idStranger, "POST", "/api/2.0/serving-endpoints", `{"name": "fresh", "config": {"served_entities": [{"entity_name": "sm", "entity_version": "1"}]}}`)
	last, _ := get(0)
	if _, err := identity.NewChecker(last).Invoke("Bearer "+a.tokens[idStranger], "fresh", now, notFound); err != nil {
		t.Errorf("the creator invokes its new endpoint: %v", err)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
