package scheduler

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/scheduler/orchestrator"
)

// raw sends a request and returns status, content type and body.
func (h *harness) raw(t *testing.T, method, path, body string) (int, string, string) {
	t.Helper()
	req, _ := http.NewRequest(method, h.srv.URL+path, strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
}

func TestPatchTagsAnswersEndpointTags(t *testing.T) {
	h := newHarness(t, t.TempDir())
	h.upload(t, "m")
	h.call(t, "POST", "/api/2.0/serving-endpoints", createBody, nil)
	code, _, body := h.raw(t, "PATCH", "/api/2.0/serving-endpoints/fraud/tags", `{"delete_tags": ["team"]}`)
	if code != 200 || strings.TrimSpace(body) != `{"tags":[]}` {
		t.Errorf("delete the last tag: %d %s, want {\"tags\":[]}", code, body)
	}
	code, _, body = h.raw(t, "PATCH", "/api/2.0/serving-endpoints/fraud/tags", `{"add_tags": [{"key": "b", "value": "2"}, {"key": "a"}]}`)
	if code != 200 || strings.TrimSpace(body) != `{"tags":[{"key":"a"},{"key":"b","value":"2"}]}` {
		t.Errorf("add two tags: %d %s", code, body)
	}
	if code, e := h.call(t, "PATCH", "/api/2.0/serving-endpoints/nope/tags", `{}`, nil); code != 404 || e.Code != api.ErrResourceDoesNotExist {
		t.Errorf("missing endpoint: %d %+v", code, e)
	}
}

func TestEndpointMetrics(t *testing.T) {
	h := newHarness(t, t.TempDir())
	h.upload(t, "m")
	body := `{"name": "fraud", "config": {"served_entities": [
		{"name": "v1", "entity_name": "m", "entity_version": "1", "workload_size": "Small"},
		{"name": "v2", "entity_name": "m", "entity_version": "1", "workload_size": "Small", "scale_to_zero_enabled": true, "environment_vars": {"K": "2"}}],
		"traffic_config": {"routes": [{"served_model_name": "v1", "traffic_percentage": 70}, {"served_model_name": "v2", "traffic_percentage": 30}]}}}`
	if code, e := h.call(t, "POST", "/api/2.0/serving-endpoints", body, nil); code != 200 {
		t.Fatalf("create: %d %+v", code, e)
	}
	if _, _, text := h.raw(t, "GET", "/api/2.0/serving-endpoints/fraud/metrics", ""); !strings.Contains(text, `gantry_endpoint_config_update_in_progress{endpoint="fraud"} 1`+"\n") {
		t.Errorf("a new endpoint is not updating:\n%s", text)
	}
	h.reconcile()
	h.orch.set("v1", ready("127.0.0.1:9001"))
	h.orch.set("v2", orchestrator.Status{Desired: 1, Failure: "model did not load", Failures: 3})
	h.reconcile()

	code, ct, text := h.raw(t, "GET", "/api/2.0/serving-endpoints/fraud/metrics", "")
	if code != 200 || !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Fatalf("metrics: %d %q\n%s", code, ct, text)
	}
	for _, want := range []string{
		"# TYPE gantry_endpoint_ready gauge\n",
		`gantry_endpoint_ready{endpoint="fraud"} 0` + "\n", // v2 failed
		`gantry_endpoint_config_version{endpoint="fraud"} 1` + "\n",
		`gantry_endpoint_config_update_in_progress{endpoint="fraud"} 0` + "\n", // UPDATE_FAILED
		`gantry_served_entity_replicas_desired{endpoint="fraud",served_entity="v1",config="active"} 1` + "\n",
		`gantry_served_entity_replicas_ready{endpoint="fraud",served_entity="v1",config="active"} 1` + "\n",
		`gantry_served_entity_replicas_ready{endpoint="fraud",served_entity="v2",config="active"} 0` + "\n",
		`gantry_served_entity_deployment_state{endpoint="fraud",served_entity="v1",config="active",state="DEPLOYMENT_READY"} 1` + "\n",
		`gantry_served_entity_deployment_state{endpoint="fraud",served_entity="v2",config="active",state="DEPLOYMENT_FAILED"} 1` + "\n",
		"# TYPE gantry_served_entity_failed_starts_total counter\n",
		`gantry_served_entity_failed_starts_total{endpoint="fraud",served_entity="v2",config="active"} 3` + "\n",
		`gantry_served_entity_traffic_percentage{endpoint="fraud",served_entity="v1",shadow="false"} 70` + "\n",
		`gantry_served_entity_traffic_percentage{endpoint="fraud",served_entity="v2",shadow="false"} 30` + "\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %q:\n%s", want, text)
		}
	}
	// Every sample line belongs to a family declared before it.
	declared := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		if name, ok := strings.CutPrefix(line, "# TYPE "); ok {
			declared[strings.Fields(name)[0]] = true
			continue
		}
		if strings.HasPrefix(line, "#") {
			continue
		}
		if name, _, _ := strings.Cut(line, "{"); !declared[name] {
			t.Errorf("sample before its # TYPE: %s", line)
		}
	}

	if code, e := h.call(t, "GET", "/api/2.0/serving-endpoints/nope/metrics", "", nil); code != 404 || e.Code != api.ErrResourceDoesNotExist {
		t.Errorf("missing endpoint: %d %+v", code, e)
	}
}

func TestBuildLogs(t *testing.T) {
	h := newHarness(t, t.TempDir())
	h.upload(t, "m")
	h.call(t, "POST", "/api/2.0/serving-endpoints", createBody, nil)
	var out struct {
		Logs string `json:"logs"`
	}
	if code, e := h.call(t, "GET", "/api/2.0/serving-endpoints/fraud/served-models/v1/build-logs", "", &out); code != 200 {
		t.Fatalf("build logs: %d %+v", code, e)
	}
	if !strings.Contains(out.Logs, "builds no environment") || !strings.Contains(out.Logs, "/api/2.0/serving-endpoints/fraud/served-models/v1/logs") {
		t.Errorf("logs = %q", out.Logs)
	}
	for _, p := range []string{"/api/2.0/serving-endpoints/fraud/served-models/v9/build-logs", "/api/2.0/serving-endpoints/nope/served-models/v1/build-logs"} {
		if code, e := h.call(t, "GET", p, "", nil); code != 404 || e.Code != api.ErrResourceDoesNotExist {
			t.Errorf("%s: %d %+v", p, code, e)
		}
	}
}

func TestUnknownPathsAnswerJSON(t *testing.T) {
	h := newHarness(t, t.TempDir())
	for _, p := range []string{"/.well-known/databricks-config", "/no/such/path", "/api/2.0/nothing"} {
		code, ct, body := h.raw(t, "GET", p, "")
		var e api.Error
		if code != 404 || ct != "application/json" || json.Unmarshal([]byte(body), &e) != nil || e.Code != api.ErrResourceDoesNotExist || e.Message == "" {
			t.Errorf("GET %s: %d %q %s", p, code, ct, body)
		}
	}
	// A served path asked with a method it does not take: 405 naming the
	// ones it does, before any token is asked for.
	code, _, body := h.raw(t, "PATCH", "/api/2.0/serving-endpoints", "")
	var e api.Error
	if code != 405 || json.Unmarshal([]byte(body), &e) != nil || e.Code != api.ErrMalformedRequest || !strings.Contains(e.Message, "use GET or HEAD or POST") {
		t.Errorf("PATCH /api/2.0/serving-endpoints: %d %s", code, body)
	}
}
