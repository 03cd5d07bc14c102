package scheduler

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/scheduler/orchestrator"
	"github.com/gantry/gantry/scheduler/registry"
	"github.com/gantry/gantry/scheduler/routes"
	"github.com/gantry/gantry/scheduler/store"
)

// fakeOrchestrator records what the scheduler asks for; tests set statuses.
type fakeOrchestrator struct {
	mu       sync.Mutex
	ensured  map[string]orchestrator.Deployment
	removed  []string
	statuses map[string]orchestrator.Status
}

var _ Orchestrator = (*fakeOrchestrator)(nil)

func newFake() *fakeOrchestrator {
	return &fakeOrchestrator{ensured: map[string]orchestrator.Deployment{}, statuses: map[string]orchestrator.Status{}}
}

func (f *fakeOrchestrator) Ensure(_ context.Context, d orchestrator.Deployment) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ensured[d.ID] = d
	return nil
}

func (f *fakeOrchestrator) Remove(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.ensured, id)
	f.removed = append(f.removed, id)
	return nil
}

func (f *fakeOrchestrator) Status(id string) orchestrator.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.statuses[id]
}

// ready marks every ensured deployment of an entity ready at addr.
func (f *fakeOrchestrator) set(entity string, st orchestrator.Status) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for id, d := range f.ensured {
		if d.Entity == entity {
			st.ID = id
			f.statuses[id] = st
		}
	}
}

func (f *fakeOrchestrator) ids() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for id := range f.ensured {
		out = append(out, id)
	}
	return out
}

func ready(addr string) orchestrator.Status {
	return orchestrator.Status{Desired: 1, Instances: []orchestrator.Instance{{ID: "r0", Addr: addr, Ready: true}}}
}

type harness struct {
	s      *Scheduler
	orch   *fakeOrchestrator
	routes *routes.Table
	srv    *httptest.Server
	dir    string
}

func newHarness(t *testing.T, dir string) *harness {
	t.Helper()
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
	h.s, err = New(Config{Store: st, Registry: reg, Orchestrator: h.orch, Routes: h.routes, BaseURL: "http://gantry.test"})
	if err != nil {
		t.Fatal(err)
	}
	h.srv = httptest.NewServer(h.s.Handler())
	t.Cleanup(h.srv.Close)
	return h
}

func (h *harness) upload(t *testing.T, name string) {
	t.Helper()
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "MLmodel"), []byte("flavors:\n  xgboost:\n    data: model.json\n"), 0o644)
	os.WriteFile(filepath.Join(src, "model.json"), []byte("{}"), 0o644)
	var buf bytes.Buffer
	if err := registry.TarGz(&buf, src); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(h.srv.URL+"/api/2.0/gantry/models/"+name+"/versions", "application/gzip", &buf)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("upload: %v %v", resp, err)
	}
	resp.Body.Close()
}

// call sends a JSON request and decodes the answer into out (if not nil).
func (h *harness) call(t *testing.T, method, path, body string, out any) (int, api.Error) {
	t.Helper()
	req, _ := http.NewRequest(method, h.srv.URL+path, strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	var e api.Error
	if resp.StatusCode != 200 {
		if err := json.Unmarshal(b.Bytes(), &e); err != nil || e.Code == "" || e.Message == "" {
			t.Fatalf("%s %s: %d with a body not in API.md's error shape: %s", method, path, resp.StatusCode, b.Bytes())
		}
	} else if out != nil {
		if err := json.Unmarshal(b.Bytes(), out); err != nil {
			t.Fatal(err)
		}
	}
	return resp.StatusCode, e
}

func (h *harness) get(t *testing.T, name string) api.Endpoint {
	t.Helper()
	var ep api.Endpoint
	if code, e := h.call(t, "GET", "/api/2.0/serving-endpoints/"+name, "", &ep); code != 200 {
		t.Fatalf("get %s: %d %v", name, code, e)
	}
	return ep
}

func (h *harness) reconcile() { h.s.reconcile(context.Background()) }

const createBody = `{"name": "fraud", "config": {"served_entities": [{"name": "v1", "entity_name": "m", "entity_version": "1"}]}, "tags": [{"key": "team", "value": "risk"}]}`

func TestCreateBecomesReady(t *testing.T) {
	h := newHarness(t, t.TempDir())
	h.upload(t, "m")
	var ep api.Endpoint
	if code, e := h.call(t, "POST", "/api/2.0/serving-endpoints", createBody, &ep); code != 200 {
		t.Fatalf("create: %d %v", code, e)
	}
	if ep.State.Ready != api.EndpointNotReady || ep.State.ConfigUpdate != api.ConfigInProgress || ep.Config.ConfigVersion != 1 {
		t.Errorf("new endpoint state = %+v version %d", ep.State, ep.Config.ConfigVersion)
	}
	if ep.EndpointURL != "http://gantry.test/serving-endpoints/fraud/invocations" || ep.ID == "" {
		t.Errorf("endpoint_url=%q id=%q", ep.EndpointURL, ep.ID)
	}
	h.reconcile()
	if ids := h.orch.ids(); len(ids) != 1 || !strings.HasPrefix(ids[0], "fraud-v1-") {
		t.Fatalf("deployments = %v", ids)
	}
	if got := h.get(t, "fraud").Config.ServedEntities[0].State.Deployment; got != api.DeploymentCreating {
		t.Errorf("entity state = %s, want CREATING", got)
	}

	h.orch.set("v1", ready("127.0.0.1:9001"))
	h.reconcile()
	ep = h.get(t, "fraud")
	if ep.State.Ready != api.EndpointReady || ep.State.ConfigUpdate != api.ConfigNotUpdating {
		t.Errorf("state = %+v, want READY / NOT_UPDATING", ep.State)
	}
	e := ep.Config.ServedEntities[0]
	if e.Replicas.Ready != 1 || e.Replicas.Desired != 1 || *e.ScaledToZero {
		t.Errorf("replicas = %+v scaled_to_zero=%v", e.Replicas, *e.ScaledToZero)
	}
	rt := h.routes.Current()
	if len(rt.Endpoints) != 1 || rt.Endpoints[0].Entities[0].Replicas[0].Addr != "127.0.0.1:9001" ||
		rt.Endpoints[0].Routes[0].TrafficPercentage != 100 {
		t.Errorf("route table = %+v", rt)
	}

	// A replica that dies after being ready makes the entity RECOVERING.
	h.orch.set("v1", orchestrator.Status{Desired: 1})
	h.reconcile()
	if got := h.get(t, "fraud").Config.ServedEntities[0].State.Deployment; got != api.DeploymentRecovering {
		t.Errorf("entity state = %s, want RECOVERING", got)
	}
}

func TestCreateErrors(t *testing.T) {
	h := newHarness(t, t.TempDir())
	h.upload(t, "m")
	if code, _ := h.call(t, "POST", "/api/2.0/serving-endpoints", createBody, nil); code != 200 {
		t.Fatal(code)
	}
	for _, tc := range []struct {
		body   string
		status int
		code   string
		msg    string
	}{
		{createBody, 409, api.ErrResourceAlreadyExists, `"fraud" already exists`},
		{`{"name": "x", "config": {"served_entities": [{"entity_name": "m", "entity_version": "1"}]}, "rate_limits": []}`, 400, api.ErrInvalidParameterValue, `unknown field "rate_limits"`},
		{`{"name": "x", "config": `, 400, api.ErrMalformedRequest, "not valid JSON"},
		{``, 400, api.ErrMalformedRequest, "empty"},
		{`{"name": 5}`, 400, api.ErrMalformedRequest, "name"},
		{`{"name": "bad name!", "config": {"served_entities": [{"entity_name": "m", "entity_version": "1"}]}}`, 400, api.ErrInvalidParameterValue, "name"},
		{`{"name": "x", "config": {"served_entities": [{"entity_name": "m", "entity_version": "7"}]}}`, 404, api.ErrResourceDoesNotExist, "version 7 does not exist"},
		{`{"name": "x"}`, 400, api.ErrInvalidParameterValue, "config: required"},
	} {
		code, e := h.call(t, "POST", "/api/2.0/serving-endpoints", tc.body, nil)
		if code != tc.status || e.Code != tc.code || !strings.Contains(e.Message, tc.msg) {
			t.Errorf("%s: %d %+v, want %d %s containing %q", tc.body, code, e, tc.status, tc.code, tc.msg)
		}
	}
	if code, e := h.call(t, "GET", "/api/2.0/serving-endpoints/nope", "", nil); code != 404 || e.Code != api.ErrResourceDoesNotExist {
		t.Errorf("get unknown: %d %+v", code, e)
	}
	if code, e := h.call(t, "DELETE", "/api/2.0/serving-endpoints/nope", "", nil); code != 404 || e.Code != api.ErrResourceDoesNotExist {
		t.Errorf("delete unknown: %d %+v", code, e)
	}
}

func TestUpdateConfigRollsOutThenSwitches(t *testing.T) {
	h := newHarness(t, t.TempDir())
	h.upload(t, "m")
	h.upload(t, "m")
	h.call(t, "POST", "/api/2.0/serving-endpoints", createBody, nil)
	h.reconcile()
	h.orch.set("v1", ready("127.0.0.1:9001"))
	h.reconcile()
	old := h.orch.ids()[0]

	// Traffic-only change: applied at once, no new deployment.
	sameModels := `{"served_entities": [{"name": "v1", "entity_name": "m", "entity_version": "1"}], "traffic_config": {"routes": [{"served_model_name": "v1", "traffic_percentage": 100}]}}`
	var ep api.Endpoint
	if code, e := h.call(t, "PUT", "/api/2.0/serving-endpoints/fraud/config", sameModels, &ep); code != 200 {
		t.Fatalf("update: %d %+v", code, e)
	}
	if ep.Config.ConfigVersion != 2 || ep.PendingConfig != nil || ep.State.ConfigUpdate != api.ConfigNotUpdating {
		t.Errorf("traffic-only update: version %d pending %v state %+v", ep.Config.ConfigVersion, ep.PendingConfig, ep.State)
	}

	// A new model version rolls out while v1 keeps serving.
	canary := `{"served_entities": [{"name": "v1", "entity_name": "m", "entity_version": "1"}, {"name": "v2", "entity_name": "m", "entity_version": "2"}],
		"traffic_config": {"routes": [{"served_model_name": "v1", "traffic_percentage": 80}, {"served_model_name": "v2", "traffic_percentage": 20}]}}`
	h.call(t, "PUT", "/api/2.0/serving-endpoints/fraud/config", canary, &ep)
	if ep.PendingConfig == nil || ep.State.ConfigUpdate != api.ConfigInProgress || ep.Config.ConfigVersion != 2 {
		t.Fatalf("after update: pending=%v state=%+v", ep.PendingConfig, ep.State)
	}
	if code, e := h.call(t, "PUT", "/api/2.0/serving-endpoints/fraud/config", canary, nil); code != 409 || e.Code != api.ErrResourceConflict {
		t.Errorf("second update during rollout: %d %+v, want 409 RESOURCE_CONFLICT", code, e)
	}
	h.reconcile()
	if len(h.orch.ids()) != 2 {
		t.Fatalf("deployments during rollout = %v", h.orch.ids())
	}
	if rt := h.routes.Current(); len(rt.Endpoints[0].Entities) != 1 {
		t.Errorf("route table switched before v2 was ready: %+v", rt.Endpoints[0])
	}
	h.orch.set("v2", ready("127.0.0.1:9002"))
	h.reconcile()
	ep = h.get(t, "fraud")
	if ep.Config.ConfigVersion != 3 || ep.PendingConfig != nil || ep.State.ConfigUpdate != api.ConfigNotUpdating || len(ep.Config.ServedEntities) != 2 {
		t.Errorf("after rollout: version %d pending %v state %+v", ep.Config.ConfigVersion, ep.PendingConfig, ep.State)
	}
	rt := h.routes.Current()
	if len(rt.Endpoints[0].Entities) != 2 || rt.Endpoints[0].Routes[1].TrafficPercentage != 20 {
		t.Errorf("route table after switch: %+v", rt.Endpoints[0])
	}
	for _, id := range h.orch.removed {
		if id == old {
			t.Errorf("v1's deployment %s was removed though v1 still serves", old)
		}
	}
}

func TestFailedUpdateKeepsOldConfig(t *testing.T) {
	h := newHarness(t, t.TempDir())
	h.upload(t, "m")
	h.upload(t, "m")
	h.call(t, "POST", "/api/2.0/serving-endpoints", createBody, nil)
	h.reconcile()
	h.orch.set("v1", ready("127.0.0.1:9001"))
	h.reconcile()

	h.call(t, "PUT", "/api/2.0/serving-endpoints/fraud/config", `{"served_entities": [{"name": "v2", "entity_name": "m", "entity_version": "2"}]}`, nil)
	h.reconcile()
	h.orch.set("v2", orchestrator.Status{Desired: 1, Failure: "load model: model.json: unexpected end of JSON"})
	h.reconcile()
	ep := h.get(t, "fraud")
	if ep.State.ConfigUpdate != api.ConfigUpdateFailed || !strings.Contains(ep.State.Message, "unexpected end of JSON") {
		t.Errorf("state = %+v, want UPDATE_FAILED with the reason", ep.State)
	}
	if ep.PendingConfig != nil || ep.Config.ServedEntities[0].Name != "v1" || ep.State.Ready != api.EndpointReady {
		t.Errorf("old config not serving: %+v", ep)
	}
	if ids := h.orch.ids(); len(ids) != 1 || !strings.HasPrefix(ids[0], "fraud-v1-") {
		t.Errorf("deployments after failed update = %v, want only v1's", ids)
	}
	// The failure stays on record while the old config serves on.
	h.reconcile()
	h.reconcile()
	if ep := h.get(t, "fraud"); ep.State.ConfigUpdate != api.ConfigUpdateFailed {
		t.Errorf("state after more reconciles = %+v, want UPDATE_FAILED to stay", ep.State)
	}
}

func TestDeleteAndRestart(t *testing.T) {
	dir := t.TempDir()
	h := newHarness(t, dir)
	h.upload(t, "m")
	h.call(t, "POST", "/api/2.0/serving-endpoints", createBody, nil)
	h.call(t, "POST", "/api/2.0/serving-endpoints", strings.Replace(createBody, `"fraud"`, `"other"`, 1), nil)
	h.reconcile()
	if code, _ := h.call(t, "DELETE", "/api/2.0/serving-endpoints/other", "", nil); code != 200 {
		t.Fatal(code)
	}
	h.reconcile()
	if ids := h.orch.ids(); len(ids) != 1 || !strings.HasPrefix(ids[0], "fraud-") {
		t.Errorf("deployments after delete = %v", ids)
	}
	var list api.ListEndpointsResponse
	h.call(t, "GET", "/api/2.0/serving-endpoints", "", &list)
	if len(list.Endpoints) != 1 || list.Endpoints[0].Tags[0].Key != "team" {
		t.Errorf("list = %+v", list)
	}
	h.s.cfg.Store.Close()

	// A new scheduler on the same data dir brings the endpoint back.
	h2 := newHarness(t, dir)
	h2.reconcile()
	if ids := h2.orch.ids(); len(ids) != 1 || !strings.HasPrefix(ids[0], "fraud-") {
		t.Errorf("deployments after restart = %v", ids)
	}
	if ep := h2.get(t, "fraud"); ep.Config.ServedEntities[0].EntityName != "m" {
		t.Errorf("endpoint after restart = %+v", ep)
	}
}

func TestTags(t *testing.T) {
	h := newHarness(t, t.TempDir())
	h.upload(t, "m")
	h.call(t, "POST", "/api/2.0/serving-endpoints", createBody, nil)
	// Databricks' EndpointTags: {"tags": [...]}, through the Go client.
	c, err := api.NewClient(&api.Config{Address: h.srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	tags, _, err := c.Endpoints().PatchTags("fraud", &api.PatchTagsRequest{AddTags: []api.Tag{{Key: "env", Value: "prod"}}, DeleteTags: []string{"team"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(tags) != 1 || tags[0] != (api.Tag{Key: "env", Value: "prod"}) {
		t.Errorf("tags = %+v", tags)
	}
	if got := h.get(t, "fraud").Tags; len(got) != 1 || got[0].Key != "env" {
		t.Errorf("stored tags = %+v", got)
	}
}

func TestRoutesBlockingQuery(t *testing.T) {
	h := newHarness(t, t.TempDir())
	h.upload(t, "m")
	c, err := api.NewClient(&api.Config{Address: h.srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	rt, meta, err := c.Routes().Get(nil)
	if err != nil {
		t.Fatal(err)
	}
	if meta.LastIndex != rt.Index || rt.Index == 0 {
		t.Fatalf("index header %d, body %d", meta.LastIndex, rt.Index)
	}

	// A wait that times out returns the same index.
	start := time.Now()
	rt2, _, err := c.Routes().Get(&api.QueryOptions{WaitIndex: rt.Index, WaitTime: 50 * time.Millisecond})
	if err != nil || rt2.Index != rt.Index || time.Since(start) < 50*time.Millisecond {
		t.Fatalf("timed-out wait: %v %v after %s", rt2, err, time.Since(start))
	}

	// A change wakes a waiting query.
	got := make(chan *api.RouteTable, 1)
	go func() {
		rt3, _, _ := c.Routes().Get(&api.QueryOptions{WaitIndex: rt.Index, WaitTime: 10 * time.Second})
		got <- rt3
	}()
	time.Sleep(20 * time.Millisecond)
	h.call(t, "POST", "/api/2.0/serving-endpoints", createBody, nil)
	h.reconcile()
	select {
	case rt3 := <-got:
		if rt3 == nil || rt3.Index <= rt.Index || len(rt3.Endpoints) != 1 {
			t.Errorf("woken query got %+v", rt3)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("blocking query did not wake on a change")
	}
	if code, e := h.call(t, "GET", "/api/2.0/gantry/routes?index=x", "", nil); code != 400 || !strings.Contains(e.Message, "index") {
		t.Errorf("bad index: %d %+v", code, e)
	}
}

func TestModelsAPI(t *testing.T) {
	h := newHarness(t, t.TempDir())
	h.upload(t, "m")
	var mv api.ModelVersion
	if code, _ := h.call(t, "GET", "/api/2.0/gantry/models/m/versions/1", "", &mv); code != 200 || mv.Flavors[0] != "xgboost" {
		t.Errorf("metadata: %d %+v", code, mv)
	}
	resp, err := http.Get(h.srv.URL + "/api/2.0/gantry/models/m/versions/1/artifact")
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || int64(b.Len()) != mv.SizeBytes {
		t.Errorf("artifact: %d, %d bytes, want %d", resp.StatusCode, b.Len(), mv.SizeBytes)
	}
	if code, e := h.call(t, "GET", "/api/2.0/gantry/models/m/versions/2", "", nil); code != 404 || e.Code != api.ErrResourceDoesNotExist {
		t.Errorf("missing version: %d %+v", code, e)
	}
	if code, e := h.call(t, "POST", "/api/2.0/gantry/models/m/versions", "not a tarball", nil); code != 400 || !strings.Contains(e.Message, "gzip") {
		t.Errorf("bad upload: %d %+v", code, e)
	}
	var list api.ListModelsResponse
	h.call(t, "GET", "/api/2.0/gantry/models", "", &list)
	if len(list.Models) != 1 {
		t.Errorf("list = %+v", list)
	}
}

func TestScaleToZeroAndBack(t *testing.T) {
	h := newHarness(t, t.TempDir())
	h.upload(t, "m")
	body := `{"name": "z", "config": {"served_entities": [{"name": "v1", "entity_name": "m", "entity_version": "1", "workload_size": "Medium", "scale_to_zero_enabled": true}]}}`
	h.call(t, "POST", "/api/2.0/serving-endpoints", body, nil)
	h.reconcile()
	ts := h.s.Targets()
	if len(ts) != 1 || ts[0].Min != 0 || ts[0].Max != 4 || ts[0].Current != 1 || ts[0].Starting != 1 {
		t.Fatalf("targets = %+v, want one with bounds 0..4, 1 starting", ts)
	}
	dep := ts[0].Deployment
	h.orch.set("v1", ready("127.0.0.1:9001"))
	h.reconcile()

	if err := h.s.Scale(dep, 0); err != nil {
		t.Fatal(err)
	}
	h.reconcile()
	if got := h.orch.ensured[dep].Replicas; got != 0 {
		t.Errorf("driver replicas = %d, want 0", got)
	}
	h.orch.set("v1", orchestrator.Status{})
	h.reconcile()
	ep := h.get(t, "z")
	e := ep.Config.ServedEntities[0]
	if ep.State.Ready != api.EndpointReady || !*e.ScaledToZero || e.State.Deployment != api.DeploymentReady {
		t.Errorf("at zero: ready=%s scaled_to_zero=%v state=%+v; want READY, true, DEPLOYMENT_READY", ep.State.Ready, *e.ScaledToZero, e.State)
	}

	// Scale requests are clamped to the entity's bounds.
	h.s.Scale(dep, 99)
	h.reconcile()
	if got := h.orch.ensured[dep].Replicas; got != 4 {
		t.Errorf("driver replicas = %d after Scale(99), want 4 (Medium's max)", got)
	}
	if err := h.s.Scale("nope", 1); err == nil {
		t.Error("Scale of an unknown deployment succeeded")
	}
	// A failing deployment is no capacity on the way.
	h.orch.set("v1", orchestrator.Status{Desired: 4, Failure: "boom"})
	if ts := h.s.Targets(); ts[0].Starting != 0 {
		t.Errorf("Starting = %d for a failing deployment, want 0", ts[0].Starting)
	}
}

func TestReplicaConcurrencyReachesRoutesAndAutoscaler(t *testing.T) {
	h := newHarness(t, t.TempDir())
	h.upload(t, "m")
	body := `{"name": "c", "config": {"served_entities": [{"name": "v1", "entity_name": "m", "entity_version": "1", "workload_size": "Large", "replica_concurrency": 8}]}}`
	if code, e := h.call(t, "POST", "/api/2.0/serving-endpoints", body, nil); code != 200 {
		t.Fatalf("create: %d %+v", code, e)
	}
	h.reconcile()
	if got := h.routes.Current().Endpoints[0].Entities[0].Concurrency; got != 8 {
		t.Errorf("route table concurrency = %d, want 8", got)
	}
	ts := h.s.Targets()
	if ts[0].TargetPerReplica != 8 || ts[0].Min != 2 || ts[0].Max != 8 {
		t.Errorf("target = %+v, want 8 per replica, bounds 2..8 (Large is 16-64 concurrent)", ts[0])
	}
	if got := h.get(t, "c").Config.ServedEntities[0].ReplicaConcurrency; got == nil || *got != 8 {
		t.Errorf("replica_concurrency not kept: %v", got)
	}
}
