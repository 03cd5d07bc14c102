package scheduler

import (
	"bytes"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/autoscaler"
	"github.com/gantry/gantry/scheduler/orchestrator"
	"github.com/gantry/gantry/scheduler/registry"
)

// uploadMLmodel uploads a model whose MLmodel is mlmodel.
func (h *harness) uploadMLmodel(t *testing.T, name, mlmodel string) (int, string) {
	t.Helper()
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "MLmodel"), []byte(mlmodel), 0o644)
	os.WriteFile(filepath.Join(src, "m.gguf"), []byte("GGUF"), 0o644) // what a gguf flavor names
	var buf bytes.Buffer
	if err := registry.TarGz(&buf, src); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(h.srv.URL+"/api/2.0/gantry/models/"+name+"/versions", "application/gzip", &buf)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	return resp.StatusCode, b.String()
}

const llmMLmodel = "flavors:\n  openai_server:\n    command: [vllm, serve, m]\n    tokens_per_second: 250\n"

func TestModelOptimizationInfo(t *testing.T) {
	h := newHarness(t, t.TempDir())
	h.upload(t, "tabular")
	if code, body := h.uploadMLmodel(t, "llm", llmMLmodel); code != 200 {
		t.Fatalf("upload llm: %d %s", code, body)
	}
	if code, body := h.uploadMLmodel(t, "plain", "flavors:\n  gguf:\n    model_file: m.gguf\n"); code != 200 {
		t.Fatalf("upload gguf: %d %s", code, body)
	}
	for _, tc := range []struct {
		path string
		want api.ModelOptimizationInfo
	}{
		{"llm/1", api.ModelOptimizationInfo{Optimizable: true, ModelType: "openai_server", ThroughputChunkSize: 250}},
		{"plain/1", api.ModelOptimizationInfo{Optimizable: true, ModelType: "gguf", ThroughputChunkSize: DefaultThroughputChunk}},
		{"tabular/1", api.ModelOptimizationInfo{}},
	} {
		var got api.ModelOptimizationInfo
		if code, e := h.call(t, "GET", "/api/2.0/serving-endpoints/get-model-optimization-info/"+tc.path, "", &got); code != 200 || got != tc.want {
			t.Errorf("%s: %d %+v %v, want %+v", tc.path, code, got, e, tc.want)
		}
	}
	// An openai_server model that names its task has it in its metadata
	// (and so in the route table, where the activator checks OpenAI paths
	// against it); one that names none takes every task.
	h.uploadMLmodel(t, "completer", "flavors:\n  openai_server:\n    command: [x]\n    task: llm/v1/completions\n")
	for name, want := range map[string]string{"completer": api.TaskCompletions, "llm": ""} {
		var mv api.ModelVersion
		if code, e := h.call(t, "GET", "/api/2.0/gantry/models/"+name+"/versions/1", "", &mv); code != 200 || mv.Task != want {
			t.Errorf("%s: %d %v task %q, want %q", name, code, e, mv.Task, want)
		}
	}
	if code, e := h.call(t, "GET", "/api/2.0/serving-endpoints/get-model-optimization-info/llm/9", "", nil); code != 404 || e.Code != api.ErrResourceDoesNotExist {
		t.Errorf("a missing version: %d %+v", code, e)
	}
	if code, body := h.uploadMLmodel(t, "bad", "flavors:\n  openai_server:\n    command: [x]\n    tokens_per_second: 2.5\n"); code != 400 || !strings.Contains(body, "tokens_per_second") {
		t.Errorf("a fractional tokens_per_second: %d %s", code, body)
	}
	if code, body := h.uploadMLmodel(t, "bad", "flavors:\n  openai_server:\n    command: vllm serve\n"); code != 400 || !strings.Contains(body, "command must be a non-empty list") {
		t.Errorf("a command that is not a list: %d %s", code, body)
	}
}

// llmHarness has models tabular (XGBoost) and llm (a chat LLM).
func llmHarness(t *testing.T) *harness {
	h := newHarness(t, t.TempDir())
	h.upload(t, "tabular")
	h.uploadMLmodel(t, "llm", llmMLmodel)
	return h
}

// llmEntity is a create of endpoint e serving llm version 1 with fields.
func llmEntity(fields string) string {
	return `{"name": "e", "config": {"served_entities": [{"name": "v1", "entity_name": "llm", "entity_version": "1", ` + fields + `}]}}`
}

func TestProvisionedThroughput(t *testing.T) {
	h := llmHarness(t)
	for _, tc := range []struct{ body, field string }{
		{llmEntity(`"min_provisioned_throughput": 250, "max_provisioned_throughput": 600`), "max_provisioned_throughput: 600 is not a multiple"},
		{llmEntity(`"min_provisioned_throughput": 100, "max_provisioned_throughput": 500`), "min_provisioned_throughput: 100 is not a multiple"},
		{llmEntity(`"min_provisioned_throughput": 250`), "max_provisioned_throughput: required"},
		{llmEntity(`"min_provisioned_throughput": 500, "max_provisioned_throughput": 250`), "min_provisioned_throughput: 500 must not exceed"},
		{llmEntity(`"min_provisioned_throughput": -250, "max_provisioned_throughput": 250`), "min_provisioned_throughput: -250 must not be negative"},
		{llmEntity(`"max_provisioned_throughput": 0`), "max_provisioned_throughput: 0 must be positive"},
		{llmEntity(`"max_provisioned_throughput": 500, "workload_size": "Small"`), "workload_size cannot be combined"},
		{llmEntity(`"max_provisioned_throughput": 500, "max_provisioned_concurrency": 4`), "cannot be combined with min/max_provisioned_throughput"},
		{`{"name": "e", "config": {"served_entities": [{"name": "v1", "entity_name": "tabular", "entity_version": "1", "max_provisioned_throughput": 500}]}}`, "does not generate tokens"},
	} {
		code, e := h.call(t, "POST", "/api/2.0/serving-endpoints", tc.body, nil)
		if code != 400 || e.Code != api.ErrInvalidParameterValue || !strings.Contains(e.Message, tc.field) {
			t.Errorf("%s: %d %+v, want 400 with %q", tc.body, code, e, tc.field)
		}
	}

	body := llmEntity(`"min_provisioned_throughput": 250, "max_provisioned_throughput": 750, "scale_to_zero_enabled": true, "throughput_chunk_size": 1`)
	if code, e := h.call(t, "POST", "/api/2.0/serving-endpoints", body, nil); code != 200 {
		t.Fatalf("create: %d %+v", code, e)
	}
	h.reconcile()
	se := h.get(t, "e").Config.ServedEntities[0]
	if se.ThroughputChunkSize != 250 || se.WorkloadSize != "" {
		t.Errorf("served entity = %+v, want the model's chunk 250 (the request's is read-only) and no workload size", se)
	}
	h.orch.set("v1", orchestrator.Status{Desired: 1, Instances: []orchestrator.Instance{
		{ID: "r0", Addr: "10.0.0.1:9000", Ready: true}, {ID: "r1", Addr: "10.0.0.2:9000"}}})
	ts := h.s.Targets()
	if len(ts) != 1 || ts[0].TokensPerReplica != 250 || ts[0].Min != 0 || ts[0].Max != 3 ||
		len(ts[0].Replicas) != 1 || ts[0].Replicas[0] != "10.0.0.1:9000" {
		t.Errorf("targets = %+v, want 250 tokens/s per replica, 0..3 replicas (scale to zero; 750/250), the ready replica's address", ts)
	}
}

// twoReady is a status of two ready replicas of an entity.
func twoReady() orchestrator.Status {
	return orchestrator.Status{Desired: 2, Instances: []orchestrator.Instance{
		{ID: "r0", Addr: "10.0.0.1:9000", Ready: true}, {ID: "r1", Addr: "10.0.0.2:9000", Ready: true}}}
}

// target is the autoscaler's target of served entity entity.
func (h *harness) target(t *testing.T, entity string) autoscaler.Target {
	t.Helper()
	for _, tg := range h.s.Targets() {
		if strings.Contains(tg.Deployment, entity) {
			return tg
		}
	}
	t.Fatalf("no autoscaler target for %s in %+v", entity, h.s.Targets())
	return autoscaler.Target{}
}

func TestProvisionedModelUnits(t *testing.T) {
	h := llmHarness(t)
	for _, tc := range []struct{ body, field string }{
		{llmEntity(`"provisioned_model_units": 2, "min_provisioned_throughput": 250`), "[0].provisioned_model_units cannot be combined with min_provisioned_throughput"},
		{llmEntity(`"provisioned_model_units": 2, "max_provisioned_throughput": 500`), "[0].provisioned_model_units cannot be combined with max_provisioned_throughput"},
		{llmEntity(`"provisioned_model_units": 2, "min_provisioned_concurrency": 0, "max_provisioned_concurrency": 4`), "[0].provisioned_model_units cannot be combined with min_provisioned_concurrency"},
		{llmEntity(`"provisioned_model_units": 2, "max_provisioned_concurrency": 4`), "[0].provisioned_model_units cannot be combined with max_provisioned_concurrency"},
		{llmEntity(`"provisioned_model_units": 2, "workload_size": "Small"`), "[0].provisioned_model_units cannot be combined with workload_size"},
		{llmEntity(`"provisioned_model_units": 0`), "[0].provisioned_model_units: 0 is out of range 1-1000"},
		{llmEntity(`"provisioned_model_units": 1001`), "[0].provisioned_model_units: 1001 is out of range 1-1000"},
		{llmEntity(`"provisioned_model_units": 2, "scale_to_zero_enabled": true`), "[0].scale_to_zero_enabled cannot be true with provisioned_model_units"},
		{llmEntity(`"max_provisioned_throughput": 500, "burst_scaling_enabled": true`), "[0].burst_scaling_enabled: only with provisioned_model_units"},
		{`{"name": "e", "config": {"served_entities": [{"name": "v1", "entity_name": "tabular", "entity_version": "1", "provisioned_model_units": 1}]}}`,
			"[0].provisioned_model_units: model tabular version 1 does not generate tokens"},
		{`{"name": "e", "config": {"served_entities": [{"provisioned_model_units": 1, "external_model": {"name": "m", "provider": "custom", "task": "llm/v1/chat", "custom_provider_config": {"custom_provider_url": "http://h"}}}]}}`,
			"[0].provisioned_model_units: cannot be set with external_model"},
	} {
		for _, path := range []string{"/api/2.0/serving-endpoints", "/api/2.0/serving-endpoints/pt"} {
			if strings.Contains(tc.body, "burst_scaling_enabled") && strings.HasSuffix(path, "/pt") {
				continue // no units: the /pt route refuses it for that first
			}
			code, e := h.call(t, "POST", path, tc.body, nil)
			if code != 400 || e.Code != api.ErrInvalidParameterValue || !strings.Contains(e.Message, "config.served_entities"+tc.field) {
				t.Errorf("POST %s %s: %d %+v, want 400 with %q", path, tc.body, code, e, tc.field)
			}
		}
	}

	// The /pt routes want units of every entity, and name the one without.
	two := `{"name": "e", "config": {"served_entities": [
		{"name": "v1", "entity_name": "llm", "entity_version": "1", "provisioned_model_units": 1},
		{"name": "v2", "entity_name": "llm", "entity_version": "1", "max_provisioned_throughput": 500}],
		"traffic_config": {"routes": [{"served_model_name": "v1", "traffic_percentage": 50}, {"served_model_name": "v2", "traffic_percentage": 50}]}}}`
	if code, e := h.call(t, "POST", "/api/2.0/serving-endpoints/pt", two, nil); code != 400 || e.Code != api.ErrInvalidParameterValue ||
		!strings.Contains(e.Message, `config.served_entities[1].provisioned_model_units: required for served entity "v2"`) {
		t.Errorf("pt create without units: %d %+v", code, e)
	}

	// Units with burst scaling (the default): N..2N replicas on tokens; the
	// answer and GET echo the units and the flag, not throughput bounds.
	var created api.Endpoint
	if code, e := h.call(t, "POST", "/api/2.0/serving-endpoints/pt", llmEntity(`"provisioned_model_units": 2`), &created); code != 200 {
		t.Fatalf("pt create: %d %+v", code, e)
	}
	if created.Name != "e" || created.State.ConfigUpdate != api.ConfigInProgress || created.Config.ConfigVersion != 1 {
		t.Errorf("pt create answered %+v, want the create's answer", created)
	}
	h.reconcile()
	for _, se := range []api.ServedEntity{created.Config.ServedEntities[0], h.get(t, "e").Config.ServedEntities[0]} {
		if deref(se.ProvisionedModelUnits) != 2 || se.BurstScalingEnabled == nil || !*se.BurstScalingEnabled ||
			se.MinProvisionedThroughput != nil || se.MaxProvisionedThroughput != nil || se.WorkloadSize != "" || se.ThroughputChunkSize != 250 {
			t.Errorf("served entity = %+v, want units 2, burst on, chunk 250 and nothing else sizing it", se)
		}
	}
	for _, d := range h.orch.ensured {
		if d.Entity == "v1" && d.Replicas != 2 {
			t.Errorf("deployment starts with %d replicas, want the 2 units", d.Replicas)
		}
	}
	h.orch.set("v1", twoReady())
	if tg := h.target(t, "v1"); tg.Min != 2 || tg.Max != 4 || tg.TokensPerReplica != 250 || len(tg.Replicas) != 2 {
		t.Errorf("target = %+v, want 2..4 replicas of 250 tokens/s and the ready replicas' addresses", tg)
	}
	h.reconcile()

	// The pt config update: Databricks' {"config": ...}, units required;
	// burst off holds the entity at N.
	if code, e := h.call(t, "PUT", "/api/2.0/serving-endpoints/pt/e/config", `{"served_entities": [{"entity_name": "llm", "entity_version": "1", "provisioned_model_units": 1}]}`, nil); code != 400 ||
		!strings.Contains(e.Message, "served_entities") {
		t.Errorf("pt update with a bare config: %d %+v, want 400 naming the field", code, e)
	}
	if code, e := h.call(t, "PUT", "/api/2.0/serving-endpoints/pt/e/config", `{"config": {"served_entities": [{"entity_name": "llm", "entity_version": "1", "workload_size": "Small"}]}}`, nil); code != 400 ||
		!strings.Contains(e.Message, `config.served_entities[0].provisioned_model_units: required for served entity "llm"`) {
		t.Errorf("pt update without units: %d %+v", code, e)
	}
	if code, e := h.call(t, "PUT", "/api/2.0/serving-endpoints/pt/nope/config", `{"config": {"served_entities": [{"entity_name": "llm", "entity_version": "1", "provisioned_model_units": 1}]}}`, nil); code != 404 {
		t.Errorf("pt update of a missing endpoint: %d %+v", code, e)
	}
	var updated api.Endpoint
	if code, e := h.call(t, "PUT", "/api/2.0/serving-endpoints/pt/e/config", `{"config": {"served_entities": [{"name": "v3", "entity_name": "llm", "entity_version": "1", "provisioned_model_units": 3, "burst_scaling_enabled": false}]}}`, &updated); code != 200 {
		t.Fatalf("pt update: %d %+v", code, e)
	}
	if p := updated.PendingConfig; p == nil || len(p.ServedEntities) != 1 || deref(p.ServedEntities[0].ProvisionedModelUnits) != 3 ||
		p.ServedEntities[0].BurstScalingEnabled == nil || *p.ServedEntities[0].BurstScalingEnabled || updated.State.ConfigUpdate != api.ConfigInProgress {
		t.Errorf("pt update answered %+v pending %+v, want the config update's answer with units 3, burst off", updated.State, updated.PendingConfig)
	}
	h.reconcile()
	if tg := h.target(t, "v3"); tg.Min != 3 || tg.Max != 3 || tg.TokensPerReplica != 250 {
		t.Errorf("target = %+v, want exactly 3 replicas without burst scaling", tg)
	}
	most := maxThroughputReplicas
	if lo, hi := throughputBounds(&api.ServedEntity{ProvisionedModelUnits: &most}); lo != maxThroughputReplicas || hi != maxThroughputReplicas {
		t.Errorf("bounds of the most units = %d..%d, want burst capped at %d", lo, hi, maxThroughputReplicas)
	}
}

// TestPtRoutesAndAnEndpointNamedPt: "pt" is a legal endpoint name, and the
// /pt routes and an endpoint's own routes tell each other apart.
func TestPtRoutesAndAnEndpointNamedPt(t *testing.T) {
	h := newHarness(t, t.TempDir())
	h.upload(t, "tabular")
	h.uploadMLmodel(t, "llm", llmMLmodel)
	body := `{"name": "pt", "config": {"served_entities": [{"name": "v1", "entity_name": "llm", "entity_version": "1", "provisioned_model_units": 1}]}}`
	if code, e := h.call(t, "POST", "/api/2.0/serving-endpoints/pt", body, nil); code != 200 {
		t.Fatalf("pt create of an endpoint named pt: %d %+v", code, e)
	}
	if code, e := h.call(t, "POST", "/api/2.0/serving-endpoints/pt", body, nil); code != 409 || e.Code != api.ErrResourceAlreadyExists {
		t.Errorf("second pt create: %d %+v, want 409", code, e)
	}
	var got api.Endpoint
	if code, e := h.call(t, "GET", "/api/2.0/serving-endpoints/pt", "", &got); code != 200 || got.Name != "pt" || deref(got.Config.ServedEntities[0].ProvisionedModelUnits) != 1 {
		t.Errorf("GET of the endpoint named pt: %d %+v %+v", code, e, got)
	}
	h.reconcile()
	h.orch.set("v1", ready("10.0.0.1:9000"))
	h.reconcile()
	// .../pt/pt/config is the pt update of endpoint pt: units required.
	if code, e := h.call(t, "PUT", "/api/2.0/serving-endpoints/pt/pt/config", `{"config": {"served_entities": [{"name": "v2", "entity_name": "tabular", "entity_version": "1"}]}}`, nil); code != 400 ||
		!strings.Contains(e.Message, `required for served entity "v2"`) {
		t.Errorf("pt update of endpoint pt without units: %d %+v", code, e)
	}
	// .../pt/config is the plain update of endpoint pt: no units needed.
	var updated api.Endpoint
	if code, e := h.call(t, "PUT", "/api/2.0/serving-endpoints/pt/config", `{"served_entities": [{"name": "v2", "entity_name": "tabular", "entity_version": "1"}]}`, &updated); code != 200 ||
		updated.Name != "pt" || updated.PendingConfig == nil || updated.PendingConfig.ServedEntities[0].WorkloadSize != api.WorkloadSmall {
		t.Errorf("plain update of endpoint pt: %d %+v %+v", code, e, updated)
	}
	if code, e := h.call(t, "DELETE", "/api/2.0/serving-endpoints/pt", "", nil); code != 200 {
		t.Errorf("DELETE of endpoint pt: %d %+v", code, e)
	}
	if code, _ := h.call(t, "GET", "/api/2.0/serving-endpoints/pt", "", nil); code != 404 {
		t.Errorf("GET after delete: %d", code)
	}
}

func isTrue(b *bool) bool { return b != nil && *b }

// The api client's CreatePt and UpdatePtConfig reach the /pt routes: a
// config without units is refused there, one with them is taken.
func TestPtRoutesThroughTheClient(t *testing.T) {
	h := newHarness(t, t.TempDir())
	h.uploadMLmodel(t, "llm", llmMLmodel)
	c, err := api.NewClient(&api.Config{Address: h.srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	units := 2
	cfg := &api.EndpointConfig{ServedEntities: []api.ServedEntity{{Name: "v1", EntityName: "llm", EntityVersion: "1", ProvisionedModelUnits: &units}}}
	ep, _, err := c.Endpoints().CreatePt(&api.CreateEndpointRequest{Name: "chat", Config: cfg}, nil)
	if err != nil || deref(ep.Config.ServedEntities[0].ProvisionedModelUnits) != 2 || !isTrue(ep.Config.ServedEntities[0].BurstScalingEnabled) {
		t.Fatalf("CreatePt: %+v %v", ep, err)
	}
	_, _, err = c.Endpoints().UpdatePtConfig("chat", &api.EndpointConfig{ServedEntities: []api.ServedEntity{{Name: "v2", EntityName: "llm", EntityVersion: "1"}}}, nil)
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != api.ErrInvalidParameterValue || !strings.Contains(ae.Message, "provisioned_model_units") {
		t.Errorf("UpdatePtConfig without units: %v", err)
	}
	h.reconcile()
	h.orch.set("v1", ready("10.0.0.1:9000"))
	h.reconcile()
	off := false
	cfg.ServedEntities[0].BurstScalingEnabled = &off
	if ep, _, err = c.Endpoints().UpdatePtConfig("chat", cfg, nil); err != nil || ep.PendingConfig == nil || isTrue(ep.PendingConfig.ServedEntities[0].BurstScalingEnabled) {
		t.Errorf("UpdatePtConfig: %+v %v", ep, err)
	}
}
