package scheduler

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gantry/gantry/api"
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

func TestProvisionedThroughput(t *testing.T) {
	h := newHarness(t, t.TempDir())
	h.upload(t, "tabular")
	h.uploadMLmodel(t, "llm", llmMLmodel)
	entity := func(fields string) string {
		return `{"name": "e", "config": {"served_entities": [{"name": "v1", "entity_name": "llm", "entity_version": "1", ` + fields + `}]}}`
	}
	for _, tc := range []struct{ body, field string }{
		{entity(`"min_provisioned_throughput": 250, "max_provisioned_throughput": 600`), "max_provisioned_throughput: 600 is not a multiple"},
		{entity(`"min_provisioned_throughput": 100, "max_provisioned_throughput": 500`), "min_provisioned_throughput: 100 is not a multiple"},
		{entity(`"min_provisioned_throughput": 250`), "max_provisioned_throughput: required"},
		{entity(`"min_provisioned_throughput": 500, "max_provisioned_throughput": 250`), "min_provisioned_throughput: 500 must not exceed"},
		{entity(`"min_provisioned_throughput": -250, "max_provisioned_throughput": 250`), "min_provisioned_throughput: -250 must not be negative"},
		{entity(`"max_provisioned_throughput": 0`), "max_provisioned_throughput: 0 must be positive"},
		{entity(`"max_provisioned_throughput": 500, "workload_size": "Small"`), "workload_size cannot be combined"},
		{entity(`"max_provisioned_throughput": 500, "max_provisioned_concurrency": 4`), "cannot be combined with min/max_provisioned_throughput"},
		{`{"name": "e", "config": {"served_entities": [{"name": "v1", "entity_name": "tabular", "entity_version": "1", "max_provisioned_throughput": 500}]}}`, "does not generate tokens"},
	} {
		code, e := h.call(t, "POST", "/api/2.0/serving-endpoints", tc.body, nil)
		if code != 400 || e.Code != api.ErrInvalidParameterValue || !strings.Contains(e.Message, tc.field) {
			t.Errorf("%s: %d %+v, want 400 with %q", tc.body, code, e, tc.field)
		}
	}

	body := entity(`"min_provisioned_throughput": 250, "max_provisioned_throughput": 750, "scale_to_zero_enabled": true, "throughput_chunk_size": 1`)
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
