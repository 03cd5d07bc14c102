package jobs_test

import (
	"encoding/json"
	"github.com/gantry/gantry/jobs"
	"strings"
	"testing"
)

// TestRenderRefusesSecrets: neither a reference nor a resolved secret
// reaches a Nomad job; the error names the variable, never the value.
func TestRenderRefusesSecrets(t *testing.T) {
	d := cpuDeployment()
	d.Env = map[string]string{"API_KEY": "{{secrets/prod/openai}}"}
	if _, err := jobs.Render(d, jobs.Settings{}); err == nil || !strings.Contains(err.Error(), "environment_vars.API_KEY") {
		t.Fatalf("a reference: %v", err)
	}
	d.Env = map[string]string{"API_KEY": "sk-resolved-value"}
	d.SecretEnv = []string{"API_KEY"}
	job, err := jobs.Render(d, jobs.Settings{})
	if err == nil || strings.Contains(err.Error(), "sk-resolved-value") {
		t.Fatalf("a resolved secret: %v", err)
	}
	if job != nil {
		b, _ := json.Marshal(job)
		t.Fatalf("rendered %s", b)
	}
	d.SecretEnv = nil
	if _, err := jobs.Render(d, jobs.Settings{}); err != nil {
		t.Fatalf("plain variables: %v", err)
	}
}
