package jobs_test

import (
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/gantry/gantry/jobs"
	nomad "github.com/hashicorp/nomad/api"
)

// TestRenderSecretsThroughVariables: a deployment's secrets (resolved
// references and the worker secret) never reach the job: they are the
// items of its Nomad Variable, and the job holds a template that names
// them. The job is the same rendered with the references (gantry jobs
// render) and with their values (what the driver registers).
func TestRenderSecretsThroughVariables(t *testing.T) {
	resolved := cpuDeployment()
	resolved.Env = map[string]string{"API_KEY": "sk-resolved-value", "LOG_LEVEL": "debug"}
	resolved.SecretEnv = []string{"API_KEY"}
	resolved.WorkerSecret = "ws-resolved-value"
	job, err := jobs.Render(resolved, jobs.Settings{})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(job)
	for _, v := range []string{"sk-resolved-value", "ws-resolved-value"} {
		if strings.Contains(string(b), v) {
			t.Fatalf("the job holds a secret value (%d bytes of JSON; not shown)", len(b))
		}
	}
	task := job.TaskGroups[0].Tasks[0]
	if !maps.Equal(task.Env, map[string]string{"LOG_LEVEL": "debug"}) {
		t.Errorf("task env %v, want LOG_LEVEL only", task.Env)
	}
	if len(task.Templates) != 1 {
		t.Fatalf("%d templates, want 1", len(task.Templates))
	}
	tmpl := task.Templates[0]
	want := `{{ with nomadVar "nomad/jobs/fraud-model-v2-1a2b3c4d" }}
API_KEY={{ (index . "API_KEY").Value | toJSON }}
GANTRY_WORKER_SECRET={{ (index . "GANTRY_WORKER_SECRET").Value | toJSON }}
{{ end }}
`
	if *tmpl.EmbeddedTmpl != want || *tmpl.DestPath != "secrets/gantry.env" || !*tmpl.Envvars || *tmpl.ChangeMode != "restart" {
		t.Errorf("template %q to %s env=%v change_mode=%s", *tmpl.EmbeddedTmpl, *tmpl.DestPath, *tmpl.Envvars, *tmpl.ChangeMode)
	}
	items, err := jobs.SecretItems(resolved)
	if err != nil || !maps.Equal(items, nomad.VariableItems{"API_KEY": "sk-resolved-value", "GANTRY_WORKER_SECRET": "ws-resolved-value"}) {
		t.Errorf("items with keys %v (values not shown), %v", slices.Sorted(maps.Keys(items)), err)
	}

	// As gantry jobs render sees it: the reference, the secret redacted.
	shown := cpuDeployment()
	shown.Env = map[string]string{"API_KEY": "{{secrets/prod/openai}}", "LOG_LEVEL": "debug"}
	shown.WorkerSecret = "REDACTED"
	job2, err := jobs.Render(shown, jobs.Settings{})
	if err != nil {
		t.Fatal(err)
	}
	if b2, _ := json.Marshal(job2); string(b2) != string(b) {
		t.Errorf("rendered with references:\n%s\ndiffers from the job rendered with values (not shown)", b2)
	}
	// A reference is never an item: the scheduler resolves it first.
	if _, err := jobs.SecretItems(shown); err == nil || !strings.Contains(err.Error(), "environment_vars.API_KEY") || strings.Contains(err.Error(), "secrets/prod") {
		t.Errorf("items of an unresolved reference: %v", err)
	}

	// Without secrets: no template, no variable.
	plain := cpuDeployment()
	job3, _ := jobs.Render(plain, jobs.Settings{})
	if items, err := jobs.SecretItems(plain); items != nil || err != nil || len(job3.TaskGroups[0].Tasks[0].Templates) != 0 {
		t.Errorf("plain deployment: items %v %v, templates %v", items, err, job3.TaskGroups[0].Tasks[0].Templates)
	}

	// An ID too long for a variable path is refused, naming the path.
	long := resolved
	long.ID = strings.Repeat("x", 120)
	if _, err := jobs.Render(long, jobs.Settings{}); err == nil || !strings.Contains(err.Error(), "not a valid variable path") || strings.Contains(err.Error(), "sk-resolved") {
		t.Errorf("a long ID: %v", err)
	}
}
