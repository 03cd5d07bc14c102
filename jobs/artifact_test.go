package jobs

import (
	"testing"

	"github.com/gantry/gantry/scheduler/orchestrator"
)

// TestArtifactTokenHeader: the job's artifact block sends the
// deployment's artifact token, and no header without one.
func TestArtifactTokenHeader(t *testing.T) {
	d := orchestrator.Deployment{ID: "ep-v1-abcd", Endpoint: "ep", Entity: "v1", ModelName: "m", ModelVersion: "1",
		ArtifactURL: "http://gantry:8080/api/2.0/gantry/models/m/versions/1/artifact", Replicas: 1, WorkloadSize: "Small"}
	job, err := Render(d, Settings{})
	if err != nil {
		t.Fatal(err)
	}
	if h := job.TaskGroups[0].Tasks[0].Artifacts[0].GetterHeaders; h != nil {
		t.Errorf("no token, headers %v", h)
	}
	d.ArtifactToken = "ep-v1-abcd.0123"
	job, err = Render(d, Settings{})
	if err != nil {
		t.Fatal(err)
	}
	if h := job.TaskGroups[0].Tasks[0].Artifacts[0].GetterHeaders; h["X-Gantry-Artifact-Token"] != d.ArtifactToken {
		t.Errorf("headers %v", h)
	}
}
