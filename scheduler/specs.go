package scheduler

import (
	"encoding/json"
	"net/http"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/scheduler/orchestrator"
)

// jobRenderer is implemented by drivers that render a deployment into a
// document of their own (the nomad driver: its Nomad job), so that
// `gantry jobs render` shows what is submitted without repeating the
// driver's settings.
type jobRenderer interface {
	RenderJob(d orchestrator.Deployment) (any, error)
}

// listDeploymentSpecs serves
// GET /api/2.0/gantry/serving-endpoints/{name}/deployments: the
// deployments the scheduler hands its orchestrator for the endpoint, so
// that `gantry jobs render` shows the job Nomad gets. Entities whose model
// is gone have none.
func (s *Scheduler) listDeploymentSpecs(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	s.mu.Lock()
	ep, err := s.lookup(name)
	if err != nil {
		s.mu.Unlock()
		writeError(w, err)
		return
	}
	out := api.ListDeploymentSpecsResponse{Deployments: []api.DeploymentSpec{}}
	render, _ := s.cfg.Orchestrator.(jobRenderer)
	world := s.world()
	add := func(c *api.EndpointConfig, pending bool) {
		for _, e := range world.entities(name, c) {
			if e.err != nil || e.noDeployment() {
				continue
			}
			sp := e.d
			ds := api.DeploymentSpec{
				ID: sp.ID, Endpoint: sp.Endpoint, Entity: sp.Entity,
				ModelName: sp.ModelName, ModelVersion: sp.ModelVersion, ArtifactURL: sp.ArtifactURL,
				Flavors:  sp.Flavors,
				Replicas: sp.Replicas, WorkloadSize: sp.WorkloadSize, WorkloadType: sp.WorkloadType,
				Env: sp.Env, Pending: pending,
			}
			if render != nil {
				// The artifact token opens the model to whoever holds
				// it; a caller who may only view the endpoint does not.
				if sp.ArtifactToken != "" {
					sp.ArtifactToken = "REDACTED"
				}
				if sp.WorkerSecret != "" {
					sp.WorkerSecret = "REDACTED"
				}
				// A spec the driver cannot render is one it refuses too:
				// the client renders it itself and shows the error.
				if job, err := render.RenderJob(sp); err == nil {
					ds.Job, _ = json.Marshal(job)
				}
			}
			out.Deployments = append(out.Deployments, ds)
		}
	}
	add(&ep.Config, false)
	if ep.Pending != nil {
		add(ep.Pending, true)
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, out)
}
