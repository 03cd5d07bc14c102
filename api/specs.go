package api

import (
	"encoding/json"
	"errors"
	"net/url"
)

// NoticeHeader is on a worker's /ping answer of 200 when its model loaded
// with something its users should know: the packages the model was logged
// with that differ from the interpreter's ("scikit-learn 1.4.0 logged,
// 1.2.1 here"). Drivers carry it to the served entity's
// deployment_state_message.
const NoticeHeader = "X-Gantry-Notice"

// MaxNotice bounds a notice, as sent and as kept.
const MaxNotice = 1024

// DeploymentSpec is what the scheduler asks its orchestrator to run for one
// served entity: an element of
// GET /api/2.0/gantry/serving-endpoints/{name}/deployments (a Gantry
// extension). `gantry jobs render` turns it into the Nomad job that the
// nomad driver submits.
type DeploymentSpec struct {
	// ID names the deployment; it is the Nomad job ID.
	ID       string `json:"id"`
	Endpoint string `json:"endpoint"`
	Entity   string `json:"entity"`
	// ModelName and ModelVersion name the registry version; ArtifactURL is
	// where a worker fetches its tar.gz.
	ModelName    string `json:"model_name"`
	ModelVersion string `json:"model_version"`
	ArtifactURL  string `json:"artifact_url"`
	// Flavors are the model version's MLflow flavors: they decide whether
	// the worker needs a Python interpreter (and so which image it runs).
	Flavors      []string          `json:"flavors,omitempty"`
	Replicas     int               `json:"replicas"`
	WorkloadSize string            `json:"workload_size,omitempty"`
	WorkloadType string            `json:"workload_type,omitempty"`
	Env          map[string]string `json:"environment_vars,omitempty"`
	// Pending marks the deployments of a config that is rolling out.
	Pending bool `json:"pending,omitempty"`
	// Job is the orchestrator's own rendering of the deployment, as it
	// submits it (for the nomad driver, the Nomad job as JSON); absent
	// for drivers that render nothing.
	Job json.RawMessage `json:"job,omitempty"`
}

// ListDeploymentSpecsResponse is the body of
// GET /api/2.0/gantry/serving-endpoints/{name}/deployments.
type ListDeploymentSpecsResponse struct {
	Deployments []DeploymentSpec `json:"deployments"`
}

// DeploymentSpecs reads what the scheduler runs for an endpoint's served
// entities: those of its serving config, then those of a config rolling
// out. An unknown endpoint is a 404 RESOURCE_DOES_NOT_EXIST. q carries the
// context only: the list is not a blocking query, so a WaitIndex or
// WaitTime is refused rather than ignored.
func (e *Endpoints) DeploymentSpecs(name string, q *QueryOptions) ([]DeploymentSpec, error) {
	if q != nil && (q.WaitIndex > 0 || q.WaitTime > 0) {
		return nil, errors.New("deployment specs: not a blocking query; leave WaitIndex and WaitTime unset")
	}
	var out ListDeploymentSpecsResponse
	if _, err := e.client.query("/api/2.0/gantry/serving-endpoints/"+url.PathEscape(name)+"/deployments", q, &out); err != nil {
		return nil, err
	}
	return out.Deployments, nil
}
