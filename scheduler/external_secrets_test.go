package scheduler

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/gantry/gantry/api"
)

// routeOf is the in-memory route table's external route of endpoint ep's
// first entity (the key included, as an activator in process sees it).
func routeOf(t *testing.T, h *harness, ep string) *api.ExternalRoute {
	t.Helper()
	for _, er := range h.routes.Current().Endpoints {
		if er.Name == ep && len(er.Entities) > 0 && er.Entities[0].External != nil {
			return er.Entities[0].External
		}
	}
	t.Fatalf("no external route for %s in %+v", ep, h.routes.Current())
	return nil
}

// TestExternalKeySecretReference: an external model's key given as
// {{secrets/scope/key}} is accepted when the creator (and on update the
// caller) may read the scope, else a 400 naming the reference; it reaches
// the route table in memory and the admins' external-keys answer, never
// an endpoint answer or the JSON route table; a creator who loses READ
// leaves the route with key_error instead of a key.
func TestExternalKeySecretReference(t *testing.T) {
	a := newAuthHarness(t)
	_, log := a.withAuditAndLog(t)
	if st, b := a.do(t, idQuery, "POST", "/api/2.0/secrets/put", `{"scope": "sc", "key": "openai", "string_value": "`+secretValue+`"}`); st != 200 {
		t.Fatalf("put: %d %s", st, b)
	}
	ref := "{{secrets/sc/openai}}"
	body := func(name, key string) string {
		return `{"name": "` + name + `", "config": {"served_entities": [{"name": "gpt", "external_model": {"name": "gpt-4o-mini", "provider": "openai", "task": "llm/v1/chat",
			"openai_config": {"openai_api_key": "` + key + `", "openai_api_base": "http://127.0.0.1:9/v1"}}}]}}`
	}
	// The stranger holds nothing on sc.
	st, b := a.do(t, idStranger, "POST", "/api/2.0/serving-endpoints", body("nope", ref))
	if st != 400 || !strings.Contains(string(b), ref) || !strings.Contains(string(b), "served_entities[0].external_model.openai_config.openai_api_key") {
		t.Fatalf("stranger: %d %s", st, b)
	}
	// Not a whole reference: refused without quoting the value.
	st, b = a.do(t, idView, "POST", "/api/2.0/serving-endpoints", body("bad", "sk-raw-key-in-the-wrong-field"))
	if st != 400 || strings.Contains(string(b), "sk-raw-key") || !strings.Contains(string(b), "openai_api_key_plaintext") {
		t.Fatalf("a key in the reference field: %d %s", st, b)
	}
	// READ suffices; the endpoint is ready at once.
	st, b = a.do(t, idView, "POST", "/api/2.0/serving-endpoints", body("ext", ref))
	if st != 200 || !bytes.Contains(b, []byte(ref)) {
		t.Fatalf("create with READ: %d %s", st, b)
	}
	a.s.reconcile(context.Background())
	if r := routeOf(t, a.harness, "ext"); r.Key != secretValue || r.KeyError != "" {
		t.Fatalf("route key %q error %q", r.Key, r.KeyError)
	}
	_, keys := a.do(t, idAdmin, "GET", "/api/2.0/gantry/external-keys", "")
	if !bytes.Contains(keys, []byte(secretValue)) {
		t.Errorf("external-keys lacks the resolved key: %s", keys)
	}
	if st, b := a.do(t, idView, "GET", "/api/2.0/gantry/external-keys", ""); st != 403 {
		t.Errorf("external-keys for a non-admin: %d %s", st, b)
	}
	for _, p := range []string{"/api/2.0/serving-endpoints/ext", "/api/2.0/serving-endpoints", "/api/2.0/gantry/routes"} {
		if _, b := a.do(t, idAdmin, "GET", p, ""); bytes.Contains(b, []byte(secretValue)) {
			t.Errorf("GET %s answers the value: %s", p, b)
		}
	}
	// An update by a manager who cannot read the scope is refused.
	if st, b := a.do(t, idView, "PATCH", "/api/2.0/permissions/serving-endpoints/ext",
		`{"access_control_list": [{"user_name": "no-grant@corp.com", "permission_level": "CAN_MANAGE"}]}`); st != 200 {
		t.Fatalf("grant: %d %s", st, b)
	}
	upd := body("", ref)
	upd = upd[strings.Index(upd, `"config": `)+len(`"config": `) : len(upd)-1]
	if st, b := a.do(t, idStranger, "PUT", "/api/2.0/serving-endpoints/ext/config", upd); st != 400 || !strings.Contains(string(b), "no-grant@corp.com") || !strings.Contains(string(b), ref) {
		t.Errorf("update by a manager without READ: %d %s", st, b)
	}
	// A new value reaches the route table at the next pass.
	const rotated = "sk-test-rotated-00aa11bb22cc"
	if st, b := a.do(t, idQuery, "POST", "/api/2.0/secrets/put", `{"scope": "sc", "key": "openai", "string_value": "`+rotated+`"}`); st != 200 {
		t.Fatalf("put: %d %s", st, b)
	}
	a.s.reconcile(context.Background())
	if r := routeOf(t, a.harness, "ext"); r.Key != rotated {
		t.Fatalf("route key after rotation: %q", r.Key)
	}
	// The creator loses READ: no key, and a key_error naming the reference.
	if st, b := a.do(t, "owner", "POST", "/api/2.0/secrets/acls/delete", `{"scope": "sc", "principal": "can_view@corp.com"}`); st != 200 {
		t.Fatalf("revoke: %d %s", st, b)
	}
	a.s.reconcile(context.Background())
	r := routeOf(t, a.harness, "ext")
	if r.Key != "" || !strings.Contains(r.KeyError, ref) || !strings.Contains(r.KeyError, "can_view@corp.com") {
		t.Fatalf("route after revocation: key %q error %q", r.Key, r.KeyError)
	}
	if _, b := a.do(t, idAdmin, "GET", "/api/2.0/gantry/routes", ""); !bytes.Contains(b, []byte(`"key_error"`)) {
		t.Errorf("the JSON route table lacks key_error: %s", b)
	}
	if _, keys := a.do(t, idAdmin, "GET", "/api/2.0/gantry/external-keys", ""); bytes.Contains(keys, []byte("sk-test")) {
		t.Errorf("external-keys after revocation: %s", keys)
	}
	for _, v := range []string{secretValue, rotated} {
		if strings.Contains(log.String(), v) {
			t.Errorf("the log holds a key:\n%s", log)
		}
	}
}
