package api

import "net/url"

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
	ModelName    string            `json:"model_name"`
	ModelVersion string            `json:"model_version"`
	ArtifactURL  string            `json:"artifact_url"`
	Replicas     int               `json:"replicas"`
	WorkloadSize string            `json:"workload_size,omitempty"`
	WorkloadType string            `json:"workload_type,omitempty"`
	Env          map[string]string `json:"environment_vars,omitempty"`
	// Pending marks the deployments of a config that is rolling out.
	Pending bool `json:"pending,omitempty"`
}

// ListDeploymentSpecsResponse is the body of
// GET /api/2.0/gantry/serving-endpoints/{name}/deployments.
type ListDeploymentSpecsResponse struct {
	Deployments []DeploymentSpec `json:"deployments"`
}

// Deployments reads what the scheduler runs for an endpoint's served
// entities: those of its serving config, then those of a config rolling
// out. An unknown endpoint is a 404 RESOURCE_DOES_NOT_EXIST.
func (e *Endpoints) Deployments(name string, q *QueryOptions) ([]DeploymentSpec, *QueryMeta, error) {
	var out ListDeploymentSpecsResponse
	meta, err := e.client.query("/api/2.0/gantry/serving-endpoints/"+url.PathEscape(name)+"/deployments", q, &out)
	if err != nil {
		return nil, nil, err
	}
	return out.Deployments, meta, nil
}
