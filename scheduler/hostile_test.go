package scheduler

// Hostile input to the control plane (issue 19): each test is a way found
// to run code on the host, take it down, or grow state without bound, and
// asserts the safe behaviour.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/loggers"
	"github.com/gantry/gantry/scheduler/registry"
)

// fakeTables records the inference tables created; queries fail.
type fakeTables struct {
	mu      sync.Mutex
	ensured []string
}

func (f *fakeTables) Ensure(_ context.Context, t loggers.Table) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ensured = append(f.ensured, t.String())
	return nil
}

func (f *fakeTables) Query(context.Context, string, ...any) (*api.QueryResult, error) {
	return nil, errors.New("fake tables answer no queries")
}

func (f *fakeTables) Exec(context.Context, string, ...any) error { return nil }

func (f *fakeTables) created() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.ensured...)
}

// endpointBody is a create body for name with entity options and extra
// top-level config fields (each a `"key": value` fragment or "").
func endpointBody(name, entity, config string) string {
	if config != "" {
		config = ", " + config
	}
	return fmt.Sprintf(`{"name": %q, "config": {"served_entities": [{"entity_name": "m", "entity_version": "1"%s}]%s}}`, name, entity, config)
}

func wantError(t *testing.T, what string, code int, e api.Error, wantCode int, wantIn ...string) {
	t.Helper()
	if code != wantCode {
		t.Errorf("%s: %d %v; want %d", what, code, e, wantCode)
		return
	}
	for _, w := range wantIn {
		if !strings.Contains(e.Message, w) {
			t.Errorf("%s: message %q does not name %q", what, e.Message, w)
		}
	}
}

// Finding 2: LD_PRELOAD pointing at a .so in the model's tar ran code in
// the worker.
func TestHostileLoaderEnvRefused(t *testing.T) {
	h := newHarness(t, t.TempDir())
	h.upload(t, "m")
	for _, k := range []string{"LD_PRELOAD", "LD_LIBRARY_PATH", "ld_audit", "PYTHONPATH", "PYTHONSTARTUP", "GODEBUG",
		"GOTRACEBACK", "DYLD_INSERT_LIBRARIES", "MALLOC_CHECK_", "GLIBC_TUNABLES", "PATH", "HOME", "GANTRY_LISTEN"} {
		code, e := h.call(t, "POST", "/api/2.0/serving-endpoints",
			endpointBody("ep", fmt.Sprintf(`, "environment_vars": {%q: "/srv/gantry/models/m/1/model/x.so"}`, k), ""), nil)
		wantError(t, k, code, e, 400, "environment_vars."+k)
		if e.Code != api.ErrInvalidParameterValue {
			t.Errorf("%s: code %s", k, e.Code)
		}
	}
	// A config update is checked the same way.
	if code, e := h.call(t, "POST", "/api/2.0/serving-endpoints", endpointBody("ep", `, "environment_vars": {"MODEL_MODE": "fast"}`, ""), nil); code != 200 {
		t.Fatalf("create with a plain variable: %d %v", code, e)
	}
	code, e := h.call(t, "PUT", "/api/2.0/serving-endpoints/ep/config",
		`{"served_entities": [{"entity_name": "m", "entity_version": "1", "environment_vars": {"LD_PRELOAD": "x.so"}}]}`, nil)
	wantError(t, "update", code, e, 400, "LD_PRELOAD")
}

// Finding 2: answers named the registry's .upload-* path, which told the
// attacker where the model's files lay.
func TestHostileUploadErrorsHideServerPaths(t *testing.T) {
	dir := t.TempDir()
	h := newHarness(t, dir)
	for name, files := range map[string]map[string]string{
		"bad yaml":       {"MLmodel": "flavors: [unclosed\n"},
		"missing data":   {"MLmodel": "flavors:\n  xgboost:\n    data: weights.json\n"},
		"no flavors":     {"MLmodel": "run_id: x\n"},
		"data leaves it": {"MLmodel": "flavors:\n  xgboost:\n    data: ../../../etc/passwd\n"},
	} {
		code, e := uploadFiles(t, h, "m", files)
		if code == 200 || strings.Contains(e.Message, dir) || strings.Contains(e.Message, ".upload-") {
			t.Errorf("%s: %d %q; want a refusal without a server path", name, code, e.Message)
		}
	}
}

// Finding 6: max_provisioned_concurrency 4000000000 was accepted (10^9
// replicas).
func TestHostileReplicaCeiling(t *testing.T) {
	h := newHarness(t, t.TempDir())
	h.upload(t, "m")
	code, e := h.call(t, "POST", "/api/2.0/serving-endpoints",
		endpointBody("ep", `, "min_provisioned_concurrency": 0, "max_provisioned_concurrency": 4000000000`, ""), nil)
	wantError(t, "4e9", code, e, 400, "max_provisioned_concurrency", "4000000000", fmt.Sprint(DefaultMaxProvisionedConcurrency))

	// A lower ceiling also bounds the workload sizes.
	h.s.cfg.MaxProvisionedConcurrency = 16
	code, e = h.call(t, "POST", "/api/2.0/serving-endpoints", endpointBody("ep", `, "workload_size": "Large"`, ""), nil)
	wantError(t, "Large over a ceiling of 16", code, e, 400, "workload_size", "16")

	// At the ceiling, with one request per replica: the scale API, in
	// process and over HTTP, stops at ceiling replicas whatever it is asked.
	if code, e := h.call(t, "POST", "/api/2.0/serving-endpoints",
		endpointBody("ep", `, "min_provisioned_concurrency": 0, "max_provisioned_concurrency": 16, "replica_concurrency": 1`, ""), nil); code != 200 {
		t.Fatalf("create at the ceiling: %d %v", code, e)
	}
	ts := h.s.Targets()
	if len(ts) != 1 || ts[0].Max != 16 {
		t.Fatalf("targets %+v; want one with max 16", ts)
	}
	dep := ts[0].Deployment
	if err := h.s.Scale(dep, 1_000_000_000); err != nil {
		t.Fatal(err)
	}
	if n := h.s.Targets()[0].Current; n != 16 {
		t.Errorf("Scale(1e9) gave %d replicas; want the ceiling, 16", n)
	}
	if code, e := h.call(t, "POST", "/api/2.0/gantry/deployments/"+dep+"/scale", `{"replicas": 4000000000}`, nil); code != 200 {
		t.Fatalf("scale API: %d %v", code, e)
	}
	if n := h.s.Targets()[0].Current; n != 16 {
		t.Errorf("the scale API gave %d replicas; want the ceiling, 16", n)
	}
}

// Also found: no limit on tags (one record grew to 37 MB through PATCHes).
func TestHostileTags(t *testing.T) {
	h := newHarness(t, t.TempDir())
	h.upload(t, "m")
	key := func(i, keyLen int) string {
		k := fmt.Sprintf("k%d-", i)
		return k + strings.Repeat("k", max(0, keyLen-len(k)))
	}
	tags := func(n, keyLen, valueLen int) string {
		var ts []string
		for i := range n {
			ts = append(ts, fmt.Sprintf(`{"key": %q, "value": %q}`, key(i, keyLen), strings.Repeat("v", valueLen)))
		}
		return "[" + strings.Join(ts, ", ") + "]"
	}
	withTags := func(ts string) string {
		return `{"name": "ep", "config": {"served_entities": [{"entity_name": "m", "entity_version": "1"}]}, "tags": ` + ts + `}`
	}
	code, e := h.call(t, "POST", "/api/2.0/serving-endpoints", withTags(tags(maxTags+1, 1, 1)), nil)
	wantError(t, "too many tags", code, e, 400, "tags", fmt.Sprint(maxTags))
	code, e = h.call(t, "POST", "/api/2.0/serving-endpoints", withTags(tags(1, maxTagKeyLen+1, 1)), nil)
	wantError(t, "long key", code, e, 400, "tags[0].key")
	code, e = h.call(t, "POST", "/api/2.0/serving-endpoints", withTags(tags(1, 1, maxTagValueLen+1)), nil)
	wantError(t, "long value", code, e, 400, "tags[0].value")
	code, e = h.call(t, "POST", "/api/2.0/serving-endpoints", withTags(`[{"key": "a"}, {"key": "a"}]`), nil)
	wantError(t, "duplicate key", code, e, 400, `"a"`)

	if code, e := h.call(t, "POST", "/api/2.0/serving-endpoints", withTags(tags(maxTags, maxTagKeyLen, maxTagValueLen)), nil); code != 200 {
		t.Fatalf("create at the limits: %d %v", code, e)
	}
	// PATCHes add up: the total is bounded, not each request.
	code, e = h.call(t, "PATCH", "/api/2.0/serving-endpoints/ep/tags", `{"add_tags": [{"key": "one-more", "value": "x"}]}`, nil)
	wantError(t, "PATCH past the limit", code, e, 400, "add_tags", fmt.Sprint(maxTags))
	code, e = h.call(t, "PATCH", "/api/2.0/serving-endpoints/ep/tags", `{"add_tags": [{"key": "x", "value": "`+strings.Repeat("v", maxTagValueLen+1)+`"}]}`, nil)
	wantError(t, "PATCH long value", code, e, 400, "tags[0].value")
	if code, e := h.call(t, "PATCH", "/api/2.0/serving-endpoints/ep/tags", `{"delete_tags": ["`+key(0, maxTagKeyLen)+`"], "add_tags": [{"key": "one-more", "value": "x"}]}`, nil); code != 200 {
		t.Errorf("PATCH that keeps the count: %d %v", code, e)
	}
}

// Also found: no limit on endpoints (60 creates, 60 worker processes).
func TestHostileEndpointCount(t *testing.T) {
	h := newHarness(t, t.TempDir())
	h.upload(t, "m")
	h.s.cfg.MaxEndpoints = 3
	for i := range 3 {
		if code, e := h.call(t, "POST", "/api/2.0/serving-endpoints", endpointBody(fmt.Sprintf("ep%d", i), "", ""), nil); code != 200 {
			t.Fatalf("create %d: %d %v", i, code, e)
		}
	}
	code, e := h.call(t, "POST", "/api/2.0/serving-endpoints", endpointBody("ep3", "", ""), nil)
	wantError(t, "fourth endpoint", code, e, 400, "3", "--max-endpoints")
	if code, _ := h.call(t, "DELETE", "/api/2.0/serving-endpoints/ep0", "", nil); code != 200 {
		t.Fatal("delete")
	}
	if code, e := h.call(t, "POST", "/api/2.0/serving-endpoints", endpointBody("ep3", "", ""), nil); code != 200 {
		t.Errorf("create after a delete: %d %v", code, e)
	}
}

// Also found: "fraud-ep" and "fraud_ep" silently shared one inference
// table, an endpoint could name another's table, and a config update of
// a nonexistent endpoint created a table before its 404.
func TestHostileInferenceTables(t *testing.T) {
	h := newHarness(t, t.TempDir())
	h.upload(t, "m")
	tables := &fakeTables{}
	h.s.cfg.Tables = tables
	capture := func(prefix string) string {
		return `"auto_capture_config": {"catalog_name": "ml", "schema_name": "logs", "table_name_prefix": "` + prefix + `", "enabled": true}`
	}
	if code, e := h.call(t, "POST", "/api/2.0/serving-endpoints", endpointBody("fraud-ep", "", capture("")), nil); code != 200 {
		t.Fatalf("create fraud-ep: %d %v", code, e)
	}
	code, e := h.call(t, "POST", "/api/2.0/serving-endpoints", endpointBody("fraud_ep", "", capture("")), nil)
	wantError(t, "fraud_ep", code, e, 400, "ml_logs.fraud_ep_payload", `"fraud-ep"`, "table_name_prefix")
	code, e = h.call(t, "POST", "/api/2.0/serving-endpoints", endpointBody("other", "", capture("fraud_ep")), nil)
	wantError(t, "naming another's table", code, e, 400, "ml_logs.fraud_ep_payload", `"fraud-ep"`)
	// Its own table again is fine (a config update, once ready).
	h.reconcile()
	h.orch.set("m-1", ready("127.0.0.1:1"))
	h.reconcile()
	if code, e := h.call(t, "PUT", "/api/2.0/serving-endpoints/fraud-ep/config",
		`{"served_entities": [{"entity_name": "m", "entity_version": "1"}], `+capture("")+`}`, nil); code != 200 {
		t.Errorf("update keeping the table: %d %v", code, e)
	}
	// Another endpoint's update may not take it either.
	if code, e := h.call(t, "POST", "/api/2.0/serving-endpoints", endpointBody("other", "", ""), nil); code != 200 {
		t.Fatalf("create other: %d %v", code, e)
	}
	code, e = h.call(t, "PUT", "/api/2.0/serving-endpoints/other/config",
		`{"served_entities": [{"entity_name": "m", "entity_version": "1"}], `+capture("fraud_ep")+`}`, nil)
	wantError(t, "update naming another's table", code, e, 400, `"fraud-ep"`)
	// Nor the AI gateway's inference table.
	before := len(tables.created())
	code, e = h.call(t, "PUT", "/api/2.0/serving-endpoints/other/ai-gateway",
		`{"inference_table_config": {"catalog_name": "ml", "schema_name": "logs", "table_name_prefix": "fraud_ep", "enabled": true}}`, nil)
	wantError(t, "AI gateway naming another's table", code, e, 400, `"fraud-ep"`)
	if got := tables.created()[before:]; len(got) != 0 {
		t.Errorf("the refused AI gateway config created tables %v", got)
	}

	before = len(tables.created())
	code, e = h.call(t, "PUT", "/api/2.0/serving-endpoints/nope/config",
		`{"served_entities": [{"entity_name": "m", "entity_version": "1"}], `+capture("nope_table")+`}`, nil)
	wantError(t, "update of a nonexistent endpoint", code, e, 404, "nope")
	if got := tables.created()[before:]; len(got) != 0 {
		t.Errorf("the update of a nonexistent endpoint created tables %v", got)
	}
}

// Also found: duplicate JSON keys and field names in another case were
// accepted on create (encoding/json takes the last key and matches names
// case-insensitively).
func TestHostileJSONKeys(t *testing.T) {
	h := newHarness(t, t.TempDir())
	h.upload(t, "m")
	for _, c := range []struct{ name, body, want string }{
		{"duplicate name", `{"name": "a", "name": "b", "config": {"served_entities": [{"entity_name": "m", "entity_version": "1"}]}}`, "name: the key is given twice"},
		{"duplicate env", `{"name": "a", "config": {"served_entities": [{"entity_name": "m", "entity_version": "1",
			"environment_vars": {"MODE": "safe", "MODE": "other"}}]}}`, "config.served_entities[0].environment_vars.MODE"},
		{"case", `{"Name": "a", "config": {"served_entities": [{"entity_name": "m", "entity_version": "1"}]}}`, `did you mean "name"`},
		{"nested case", `{"name": "a", "config": {"served_entities": [{"Entity_Name": "m", "entity_version": "1"}]}}`, `"config.served_entities[0].entity_name"`},
	} {
		code, e := h.call(t, "POST", "/api/2.0/serving-endpoints", c.body, nil)
		wantError(t, c.name, code, e, 400, c.want)
	}
	code, e := h.call(t, "PATCH", "/api/2.0/serving-endpoints/a/tags", `{"add_tags": [], "add_tags": [{"key": "k"}]}`, nil)
	wantError(t, "duplicate in a PATCH", code, e, 400, "add_tags")
	if code, e := h.call(t, "POST", "/api/2.0/serving-endpoints", endpointBody("a", `, "environment_vars": {"mode": "a", "MODE": "b"}`, ""), nil); code != 200 {
		t.Errorf("map keys differing in case are two keys: %d %v", code, e)
	}
}

// Also found: monitor webhooks to loopback, link-local and private
// addresses were accepted, and a monitor with 2,000 slices.
func TestHostileMonitors(t *testing.T) {
	h := newHarness(t, t.TempDir())
	h.upload(t, "m")
	h.s.cfg.Tables = &fakeTables{}
	if code, e := h.call(t, "POST", "/api/2.0/serving-endpoints", endpointBody("fraud", "",
		`"auto_capture_config": {"catalog_name": "ml", "schema_name": "logs", "enabled": true}`), nil); code != 200 {
		t.Fatalf("create: %d %v", code, e)
	}
	body := func(hook, slices string) string {
		return `{"name": "drift", "endpoint": "fraud", "granularity": "5m", "columns": [{"name": "x", "kind": "numeric"}],
			"alert_webhook_url": "` + hook + `"` + slices + `}`
	}
	for _, hook := range []string{"http://127.0.0.1:8080/api/2.0/serving-endpoints", "http://169.254.169.254/latest/meta-data/",
		"http://10.0.0.5/hook", "http://[::1]/hook", "http://localhost:9/x"} {
		code, e := h.call(t, "POST", "/api/2.0/gantry/monitors", body(hook, ""), nil)
		wantError(t, hook, code, e, 400, "alert_webhook_url", "--webhook-allow")
	}
	var slices []string
	for i := range 2000 {
		slices = append(slices, fmt.Sprintf(`"x > %d"`, i))
	}
	code, e := h.call(t, "POST", "/api/2.0/gantry/monitors", body("https://93.184.216.34/hook", `, "slices": [`+strings.Join(slices, ", ")+`]`), nil)
	wantError(t, "2,000 slices", code, e, 400, "slices: 2000 slices")
}

// uploadFiles uploads a model directory holding files as model name.
func uploadFiles(t *testing.T, h *harness, name string, files map[string]string) (int, api.Error) {
	t.Helper()
	src := t.TempDir()
	for f, content := range files {
		if err := os.WriteFile(filepath.Join(src, f), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if err := registry.TarGz(&buf, src); err != nil {
		t.Fatal(err)
	}
	return h.call(t, "POST", "/api/2.0/gantry/models/"+name+"/versions", buf.String(), nil)
}
