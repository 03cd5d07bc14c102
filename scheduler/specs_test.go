package scheduler

import (
	"errors"
	"testing"

	"github.com/gantry/gantry/api"
)

func TestDeploymentSpecs(t *testing.T) {
	h := newHarness(t, t.TempDir())
	h.upload(t, "m")
	if code, e := h.call(t, "POST", "/api/2.0/serving-endpoints", createBody, nil); code != 200 {
		t.Fatalf("create: %d %v", code, e)
	}
	h.reconcile()
	c, err := api.NewClient(&api.Config{Address: h.srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	specs, err := c.Endpoints().DeploymentSpecs("fraud", nil)
	if err != nil {
		t.Fatal(err)
	}
	ids := h.orch.ids()
	if len(specs) != 1 || len(ids) != 1 {
		t.Fatalf("specs = %+v, orchestrator has %v; want one each", specs, ids)
	}
	want := h.orch.ensured[ids[0]]
	got := specs[0]
	if got.ID != want.ID || got.Replicas != want.Replicas || got.ArtifactURL != want.ArtifactURL ||
		got.ArtifactURL != "http://gantry.test/api/2.0/gantry/models/m/versions/1/artifact" ||
		got.Entity != "v1" || got.WorkloadSize != "Small" || got.WorkloadType != "CPU" || got.Pending {
		t.Errorf("spec = %+v, want what the orchestrator got: %+v", got, want)
	}

	_, err = c.Endpoints().DeploymentSpecs("nope", nil)
	var ue *api.UnexpectedResponseError
	if !errors.As(err, &ue) || ue.StatusCode() != 404 {
		t.Errorf("unknown endpoint: %v, want a 404", err)
	}
	// The list does not block: asking it to is a mistake, not a silent
	// immediate answer.
	if _, err := c.Endpoints().DeploymentSpecs("fraud", &api.QueryOptions{WaitIndex: 5}); err == nil {
		t.Error("DeploymentSpecs with a WaitIndex succeeded; want it refused (not a blocking query)")
	}
}
