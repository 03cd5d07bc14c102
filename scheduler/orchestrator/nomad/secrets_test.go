package nomad_test

import (
	"bytes"
	"context"
	"encoding/json"
	"maps"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/gantry/gantry/internal/nomadtest"
	"github.com/gantry/gantry/jobs"
	"github.com/gantry/gantry/scheduler/orchestrator"
	"github.com/gantry/gantry/worker"
	nomadapi "github.com/hashicorp/nomad/api"
)

// TestSecretsThroughVariables: a deployment's resolved secret and its
// worker secret reach the worker's environment through the job's Nomad
// Variable and template, and never the job Nomad holds nor the one
// RenderJob shows; removing the deployment deletes the variable.
func TestSecretsThroughVariables(t *testing.T) {
	e := newEnv(t, nomadtest.Config{Token: "s3cret"}, jobs.Settings{})
	const apiKey, workerSecret = "sk-live-\"quoted\"\nsecond line", "ws-4f1c9e0b"
	d := spec("ep-secrets-0000abcd", artifact(t, fixture), 1)
	d.Env = map[string]string{"API_KEY": apiKey, "LOG_LEVEL": "info"}
	d.SecretEnv = []string{"API_KEY"}
	d.WorkerSecret = workerSecret
	if err := e.driver.Ensure(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	v := e.srv.Variable("", "nomad/jobs/"+d.ID)
	if v == nil || !maps.Equal(v.Items, nomadapi.VariableItems{"API_KEY": apiKey, "GANTRY_WORKER_SECRET": workerSecret}) {
		t.Fatalf("the job's variable is missing or its items differ (values not shown)")
	}
	st := e.waitStatus(t, d.ID, "a ready replica", func(s orchestrator.Status) bool { return s.Ready() == 1 })

	// The job as Nomad holds it, and as gantry jobs render shows it.
	c, _ := nomadapi.NewClient(&nomadapi.Config{Address: e.srv.URL, SecretID: "s3cret"})
	job, _, err := c.Jobs().Info(d.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	held, _ := json.Marshal(job)
	shown := d
	shown.Env = map[string]string{"API_KEY": "{{secrets/prod/key}}", "LOG_LEVEL": "info"}
	shown.SecretEnv, shown.WorkerSecret = nil, "REDACTED"
	rendered, err := e.driver.RenderJob(shown)
	if err != nil {
		t.Fatal(err)
	}
	renderedJSON, _ := json.Marshal(rendered)
	for what, doc := range map[string][]byte{"the job Nomad holds": held, "the rendered job": renderedJSON} {
		for _, secret := range []string{"sk-live-", "ws-4f1c9e0b"} {
			if bytes.Contains(doc, []byte(secret)) {
				t.Errorf("%s holds a secret value (not shown)", what)
			}
		}
		if !bytes.Contains(doc, []byte(`nomadVar \"nomad/jobs/`+d.ID+`\"`)) {
			t.Errorf("%s has no template reading the variable", what)
		}
	}

	// The worker has both: it answers only with the worker secret, and
	// its environment holds the API key as it was, quotes and newline.
	addr := st.Instances[0].Addr
	if resp, err := http.Post("http://"+addr+"/invocations", "application/json", strings.NewReader(`{"inputs": [[1]]}`)); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("an invocation without the worker secret: %v %v", resp.Status, err)
	}
	req, _ := http.NewRequest("POST", "http://"+addr+"/invocations", strings.NewReader(`{"inputs": [[1]]}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(worker.SecretHeader, workerSecret)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode == http.StatusUnauthorized {
		t.Errorf("an invocation with the worker secret: %v %v", resp.Status, err)
	}
	pids := e.srv.Processes()
	if len(pids) != 1 {
		t.Fatalf("processes %v", pids)
	}
	environ, err := os.ReadFile("/proc/" + strconv.Itoa(pids[0]) + "/environ")
	if err != nil {
		t.Fatal(err)
	}
	vars := strings.Split(string(environ), "\x00")
	for _, want := range []string{"API_KEY=" + apiKey, "GANTRY_WORKER_SECRET=" + workerSecret, "LOG_LEVEL=info"} {
		found := false
		for _, kv := range vars {
			found = found || kv == want
		}
		if !found {
			t.Errorf("the worker's environment lacks %q", strings.SplitN(want, "=", 2)[0])
		}
	}

	if err := e.driver.Remove(context.Background(), d.ID); err != nil {
		t.Fatal(err)
	}
	if e.srv.Variable("", "nomad/jobs/"+d.ID) != nil {
		t.Error("the variable outlived its deployment")
	}
	waitNoProcess(t, e.srv)
}
