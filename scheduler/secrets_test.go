package scheduler

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/identity"
	"github.com/gantry/gantry/loggers"
	"github.com/gantry/gantry/scheduler/orchestrator"
	"github.com/gantry/gantry/secrets"
)

// openSecrets opens a secret store under dir whose ACLs name id's
// principals.
func openSecrets(t *testing.T, dir string, id *identity.Service) *secrets.Store {
	t.Helper()
	key, _, err := secrets.LoadKey(filepath.Join(dir, "secrets.key"), true)
	if err != nil {
		t.Fatal(err)
	}
	var auth Auth
	if id != nil {
		auth = id
	}
	st, err := secrets.Open(filepath.Join(dir, "secrets.db"), key, secrets.Options{Exists: SecretPrincipals(auth)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// createScope creates scope sc as owner and grants the matrix's callers
// their permissions on it (scopeLevels).
func (a *authHarness) createScope(t *testing.T) {
	t.Helper()
	for _, c := range []struct{ who, body string }{
		{"owner", `{"scope": "sc"}`},
	} {
		if st, b := a.do(t, c.who, "POST", "/api/2.0/secrets/scopes/create", c.body); st != 200 {
			t.Fatalf("create scope: %d %s", st, b)
		}
	}
	for p, perm := range map[string]string{"can_view@corp.com": "READ", "can_query@corp.com": "WRITE", "ds": "WRITE", "can_manage@corp.com": "MANAGE"} {
		if st, b := a.do(t, "owner", "POST", "/api/2.0/secrets/acls/put", `{"scope": "sc", "principal": "`+p+`", "permission": "`+perm+`"}`); st != 200 {
			t.Fatalf("grant %s on sc: %d %s", p, st, b)
		}
	}
}

// scopeLevels is what each authenticated caller holds on scope sc.
var scopeLevels = map[string]secrets.Permission{
	idStranger: secrets.None, idView: secrets.Read, idQuery: secrets.Write,
	idGroup: secrets.Write, idNested: secrets.Write, idManage: secrets.Manage, idAdmin: secrets.Manage,
}

// scopeWant is the status a secretScope row answers caller who, once
// authenticated: a scope one holds nothing on is missing (404), one held
// below need is 403. need "" is any caller.
func (r *matrixRow) scopeWant(who string) int {
	have, need := scopeLevels[who], secrets.Permission(r.need)
	switch {
	case need == secrets.None:
		return r.ok
	case have == secrets.None:
		return http.StatusNotFound
	case !have.AtLeast(need):
		return http.StatusForbidden
	}
	return r.ok
}

// owner is the secret store's view of the fixture's owner.
var owner = secrets.Principal{Name: "owner@corp.com"}

func secretMatrixRows() []matrixRow {
	lvl := func(p secrets.Permission) identity.Level { return identity.Level(p) }
	return []matrixRow{
		{pattern: "POST /api/2.0/secrets/scopes/create", access: secretScope, ok: 200,
			req: func(a *authHarness, t *testing.T, who string) (string, string, string) {
				return "POST", "/api/2.0/secrets/scopes/create", `{"scope": "new-` + slug(who) + `"}`
			}},
		{pattern: "GET /api/2.0/secrets/scopes/list", access: secretScope, ok: 200, req: static("GET", "/api/2.0/secrets/scopes/list", "")},
		{pattern: "POST /api/2.0/secrets/scopes/delete", access: secretScope, need: lvl(secrets.Manage), ok: 200,
			req:   static("POST", "/api/2.0/secrets/scopes/delete", `{"scope": "sc"}`),
			reset: func(a *authHarness, t *testing.T) { a.createScope(t) }},
		{pattern: "POST /api/2.0/secrets/put", access: secretScope, need: lvl(secrets.Write), ok: 200,
			req: static("POST", "/api/2.0/secrets/put", `{"scope": "sc", "key": "k", "string_value": "v"}`)},
		{pattern: "GET /api/2.0/secrets/list", access: secretScope, need: lvl(secrets.Read), ok: 200, req: static("GET", "/api/2.0/secrets/list?scope=sc", "")},
		{pattern: "POST /api/2.0/secrets/delete", access: secretScope, need: lvl(secrets.Write), ok: 200,
			req: func(a *authHarness, t *testing.T, who string) (string, string, string) {
				if err := a.s.cfg.Secrets.Put(owner, "sc", "doomed", []byte("x")); err != nil {
					t.Fatal(err)
				}
				return "POST", "/api/2.0/secrets/delete", `{"scope": "sc", "key": "doomed"}`
			}},
		{pattern: "POST /api/2.0/secrets/acls/put", access: secretScope, need: lvl(secrets.Manage), ok: 200,
			req: static("POST", "/api/2.0/secrets/acls/put", `{"scope": "sc", "principal": "can_view@corp.com", "permission": "READ"}`)},
		{pattern: "POST /api/2.0/secrets/acls/delete", access: secretScope, need: lvl(secrets.Manage), ok: 200,
			req: func(a *authHarness, t *testing.T, who string) (string, string, string) {
				if err := a.s.cfg.Secrets.PutACL(owner, "sc", "revoked@corp.com", secrets.Read); err != nil {
					t.Fatal(err)
				}
				return "POST", "/api/2.0/secrets/acls/delete", `{"scope": "sc", "principal": "revoked@corp.com"}`
			}},
		{pattern: "GET /api/2.0/secrets/acls/list", access: secretScope, need: lvl(secrets.Manage), ok: 200, req: static("GET", "/api/2.0/secrets/acls/list?scope=sc", "")},
		{pattern: "GET /api/2.0/secrets/acls/get", access: secretScope, need: lvl(secrets.Manage), ok: 200,
			req: static("GET", "/api/2.0/secrets/acls/get?scope=sc&principal=can_view@corp.com", "")},
	}
}

// auditRecorder keeps audit events, as a capture producer would queue them.
type auditRecorder struct {
	mu     sync.Mutex
	events []loggers.AuditEvent
}

func (r *auditRecorder) Audit(e *loggers.AuditEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, *e)
}

func (r *auditRecorder) all() []loggers.AuditEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]loggers.AuditEvent(nil), r.events...)
}

// syncBuf is a log sink tests read while the scheduler writes.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// withAuditAndLog gives a's scheduler an audit recorder and a log buffer,
// and serves its handler anew (the audit wrapping is made with it).
func (a *authHarness) withAuditAndLog(t *testing.T) (*auditRecorder, *syncBuf) {
	rec, log := &auditRecorder{}, &syncBuf{}
	a.s.cfg.Audit = rec
	a.s.cfg.Logger = slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	a.srv.Close()
	a.srv = httptest.NewServer(a.s.Handler())
	t.Cleanup(a.srv.Close)
	return rec, log
}

const secretValue = "sk-test-51f0c2d9e8a7b6c5d4e3f2a1"

// TestSecretReferences: an endpoint whose environment references a secret
// is accepted when its creator may read the scope, and its workers get the
// value, while every answer, the store, the log and the audit events hold
// only the reference.
func TestSecretReferences(t *testing.T) {
	a := newAuthHarness(t)
	rec, log := a.withAuditAndLog(t)
	if st, b := a.do(t, idQuery, "POST", "/api/2.0/secrets/put", `{"scope": "sc", "key": "openai", "string_value": "`+secretValue+`"}`); st != 200 {
		t.Fatalf("put: %d %s", st, b)
	}
	ref := "{{secrets/sc/openai}}"
	create := func(who, name, model, value string) (int, []byte) {
		return a.do(t, who, "POST", "/api/2.0/serving-endpoints", `{"name": "`+name+`", "config": {"served_entities": [
			{"name": "v1", "entity_name": "`+model+`", "entity_version": "1", "environment_vars": {"OPENAI_API_KEY": "`+value+`", "PLAIN": "x"}}]}}`)
	}
	a.uploadAs(t, idStranger, "ms", 200)
	a.uploadAs(t, idView, "mv", 200)

	// The stranger holds nothing on sc: a 400 that names the reference,
	// the same whether the scope exists or not.
	st, b := create(idStranger, "nope", "ms", ref)
	if st != 400 || !strings.Contains(string(b), ref) || !strings.Contains(string(b), "environment_vars.OPENAI_API_KEY") {
		t.Fatalf("stranger: %d %s", st, b)
	}
	_, b2 := create(idStranger, "nope", "ms", "{{secrets/zz/openai}}")
	if strings.ReplaceAll(string(b2), "zz", "sc") != string(b) {
		t.Errorf("a hidden scope answers unlike a missing one:\n%s\n%s", b, b2)
	}
	// A user with only READ on the scope may.
	st, b = create(idView, "withkey", "mv", ref)
	if st != 200 {
		t.Fatalf("create with READ: %d %s", st, b)
	}
	if !bytes.Contains(b, []byte(ref)) {
		t.Errorf("the answer does not show the reference: %s", b)
	}

	a.s.reconcile(context.Background())
	var d orchestrator.Deployment
	for _, x := range a.orch.ensured {
		if x.Endpoint == "withkey" {
			d = x
		}
	}
	if d.Env["OPENAI_API_KEY"] != secretValue || d.Env["PLAIN"] != "x" || strings.Join(d.SecretEnv, ",") != "OPENAI_API_KEY" {
		t.Fatalf("the driver got env %v secret %v", d.Env, d.SecretEnv)
	}
	// The copy handed to the driver is not the stored config.
	a.s.mu.Lock()
	stored := a.s.eps["withkey"].Config.ServedEntities[0].EnvironmentVars["OPENAI_API_KEY"]
	unresolved := a.s.led.applied[d.ID]
	applied := unresolved.Env["OPENAI_API_KEY"]
	a.s.mu.Unlock()
	if stored != ref || applied != ref {
		t.Fatalf("stored %q, ledger %q: want the reference", stored, applied)
	}

	// Every answer about the endpoint shows the reference only.
	for _, p := range []string{"/api/2.0/serving-endpoints/withkey", "/api/2.0/serving-endpoints", "/api/2.0/gantry/serving-endpoints/withkey/deployments", "/api/2.0/gantry/routes", "/api/2.0/secrets/list?scope=sc"} {
		_, b := a.do(t, idAdmin, "GET", p, "")
		if bytes.Contains(b, []byte(secretValue)) {
			t.Errorf("GET %s answers the value: %s", p, b)
		}
	}

	// An update by a manager who cannot read the scope is refused, though
	// the creator can: the manager would serve the creator's secret.
	for _, g := range []struct{ path, body string }{
		{"/api/2.0/permissions/serving-endpoints/withkey", `{"access_control_list": [{"user_name": "no-grant@corp.com", "permission_level": "CAN_MANAGE"}]}`},
		{"/api/2.0/permissions/registered-models/mv", `{"access_control_list": [{"user_name": "no-grant@corp.com", "permission_level": "CAN_READ"}]}`},
	} {
		if st, b := a.do(t, idView, "PATCH", g.path, g.body); st != 200 {
			t.Fatalf("PATCH %s: %d %s", g.path, st, b)
		}
	}
	upd := `{"served_entities": [{"name": "v2", "entity_name": "mv", "entity_version": "1", "environment_vars": {"K": "` + ref + `"}}]}`
	if st, b := a.do(t, idStranger, "PUT", "/api/2.0/serving-endpoints/withkey/config", upd); st != 400 || !strings.Contains(string(b), "no-grant@corp.com") {
		t.Errorf("update by a manager without READ: %d %s", st, b)
	}
	// Once the creator loses READ, the next deployment fails naming the
	// reference, and the update that would need it is refused.
	if st, b := a.do(t, "owner", "POST", "/api/2.0/secrets/acls/delete", `{"scope": "sc", "principal": "can_view@corp.com"}`); st != 200 {
		t.Fatalf("revoke: %d %s", st, b)
	}
	if st, b := a.do(t, idAdmin, "PUT", "/api/2.0/serving-endpoints/withkey/config", upd); st != 400 || !strings.Contains(string(b), "can_view@corp.com") {
		t.Errorf("update after the creator lost READ: %d %s", st, b)
	}
	if _, err := a.s.resolveEnv(unresolved); err == nil || !strings.Contains(err.Error(), ref) || strings.Contains(err.Error(), secretValue) {
		t.Errorf("resolve after revocation: %v", err)
	}
	if v, err := a.s.ResolveSecret(context.Background(), "withkey", ref); err == nil {
		t.Errorf("ResolveSecret after revocation: %q", v)
	}
	a.do(t, "owner", "POST", "/api/2.0/secrets/acls/put", `{"scope": "sc", "principal": "can_view@corp.com", "permission": "READ"}`)
	if v, err := a.s.ResolveSecret(context.Background(), "withkey", ref); err != nil || v != secretValue {
		t.Errorf("ResolveSecret: %q %v", v, err)
	}

	// Nowhere at rest or in the log, nor in an audit event.
	a.s.cfg.Store.Close()
	for _, f := range []string{"state.db", "secrets.db", "identity.db"} {
		raw, err := os.ReadFile(filepath.Join(a.dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(raw, []byte(secretValue)) {
			t.Errorf("%s holds the value", f)
		}
	}
	if strings.Contains(log.String(), secretValue) {
		t.Errorf("the log holds the value:\n%s", log)
	}
	evs, _ := json.Marshal(rec.all())
	if bytes.Contains(evs, []byte(secretValue)) {
		t.Errorf("an audit event holds the value: %s", evs)
	}
	if !bytes.Contains(evs, []byte(`"target":"secret sc/openai"`)) {
		t.Errorf("no audit event names the put: %s", evs)
	}
}

// TestAuditEvents: each change is one event naming the caller, the route,
// the object and how it ended; reads are not changes; refusals are
// recorded as attempts; no event holds a token's value.
func TestAuditEvents(t *testing.T) {
	a := newAuthHarness(t)
	rec, _ := a.withAuditAndLog(t)
	a.do(t, idManage, "GET", "/api/2.0/serving-endpoints/ep", "")
	a.do(t, "owner", "POST", "/api/2.0/serving-endpoints", `{"name": "e2", "config": {"served_entities": [{"entity_name": "m", "entity_version": "1"}]}}`)
	a.do(t, idManage, "PATCH", "/api/2.0/serving-endpoints/ep/tags", `{"add_tags": [{"key": "a", "value": "b"}]}`)
	a.do(t, idView, "DELETE", "/api/2.0/serving-endpoints/ep", "")
	_, tok := a.do(t, idQuery, "POST", "/api/2.0/token/create", `{"comment": "ci"}`)
	a.do(t, "owner", "DELETE", "/api/2.0/serving-endpoints/e2", "")

	evs := rec.all()
	want := []struct{ principal, action, path, target, code string }{
		{"owner@corp.com", "POST /api/2.0/serving-endpoints", "/api/2.0/serving-endpoints", "serving-endpoint e2", ""},
		{"can_manage@corp.com", "PATCH /api/2.0/serving-endpoints/{name}/tags", "/api/2.0/serving-endpoints/ep/tags", "", ""},
		{"can_view@corp.com", "DELETE /api/2.0/serving-endpoints/{name}", "/api/2.0/serving-endpoints/ep", "", api.ErrPermissionDenied},
		{"can_query@corp.com", "POST /api/2.0/token/create", "/api/2.0/token/create", "", ""},
		{"owner@corp.com", "DELETE /api/2.0/serving-endpoints/{name}", "/api/2.0/serving-endpoints/e2", "", ""},
	}
	if len(evs) != len(want) {
		t.Fatalf("%d events, want %d: %+v", len(evs), len(want), evs)
	}
	ids := map[string]bool{}
	for i, w := range want {
		e := evs[i]
		if e.Principal != w.principal || e.Action != w.action || e.Path != w.path || e.Target != w.target || e.ErrorCode != w.code {
			t.Errorf("event %d = %+v, want %+v", i, e, w)
		}
		if (w.code == "") != (e.StatusCode == 200) || e.TimestampMs == 0 || e.EventID == "" || ids[e.EventID] {
			t.Errorf("event %d: status %d, time %d, id %q", i, e.StatusCode, e.TimestampMs, e.EventID)
		}
		ids[e.EventID] = true
	}
	var created struct {
		TokenValue string `json:"token_value"`
	}
	json.Unmarshal(tok, &created)
	if b, _ := json.Marshal(evs); created.TokenValue == "" || bytes.Contains(b, []byte(created.TokenValue)) {
		t.Errorf("token %q; events %s", created.TokenValue, b)
	}
}

func TestSecretACLNamesAPrincipal(t *testing.T) {
	a := newAuthHarness(t)
	a.s.cfg.Secrets = openSecrets(t, t.TempDir(), nil) // a store that checks no names itself
	a.do(t, "owner", "POST", "/api/2.0/secrets/scopes/create", `{"scope": "x"}`)
	if st, b := a.do(t, "owner", "POST", "/api/2.0/secrets/acls/put", `{"scope": "x", "principal": "mallory@corp.com", "permission": "READ"}`); st != 404 {
		t.Errorf("a grant to nobody: %d %s", st, b)
	}
	for _, p := range []string{"ds", "users", "can_view@corp.com"} {
		if st, b := a.do(t, "owner", "POST", "/api/2.0/secrets/acls/put", `{"scope": "x", "principal": "`+p+`", "permission": "READ"}`); st != 200 {
			t.Errorf("a grant to %s: %d %s", p, st, b)
		}
	}
}
