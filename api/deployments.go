package api

import (
	"net/http"
	"net/url"
)

// DeploymentTarget is one deployment that the autoscaler sizes, as the
// scheduler sees it: an element of GET /api/2.0/gantry/deployments.
type DeploymentTarget struct {
	// Deployment identifies the replicas of one served entity of one
	// config; it is what the route table calls EntityRoute.Deployment.
	Deployment string `json:"deployment"`
	// MinReplicas and MaxReplicas bound the replica count; MaxReplicas 0
	// means no bound.
	MinReplicas int `json:"min_replicas"`
	MaxReplicas int `json:"max_replicas"`
	// Current is the replica count asked for now.
	Current int `json:"current"`
	// Ready counts replicas that answer; Starting counts those asked for
	// that do not answer yet and have not failed.
	Ready    int `json:"ready"`
	Starting int `json:"starting"`
	// TargetPerReplica is the concurrency one replica is sized for.
	TargetPerReplica float64 `json:"target_per_replica,omitempty"`
	// TokensPerReplica, when set, makes the deployment scale on tokens:
	// it is one replica's generation rate in tokens per second (the
	// model's throughput chunk), and the autoscaler polls GET /load of
	// each address in Replicas.
	TokensPerReplica float64  `json:"tokens_per_replica,omitempty"`
	Replicas         []string `json:"replicas,omitempty"`
}

// ListDeploymentsResponse is the body of GET /api/2.0/gantry/deployments.
type ListDeploymentsResponse struct {
	Deployments []DeploymentTarget `json:"deployments"`
}

// ScaleDeploymentRequest is the body of
// POST /api/2.0/gantry/deployments/{id}/scale. Replicas is a pointer so
// that a missing count (400) is told apart from a scale to zero.
type ScaleDeploymentRequest struct {
	Replicas *int `json:"replicas"`
}

// LoadReport is what an activator pushes to the autoscaler every second:
// POST {autoscaler}/v1/stats.
type LoadReport struct {
	// Activator names the activator that saw the load. The autoscaler
	// forgets an activator that has not reported for a while.
	Activator string `json:"activator"`
	// PeriodMS is the span, in milliseconds, that the samples' averages
	// cover: the time since the activator's previous report. Absent or 0
	// means the reporter's default interval, 1 s.
	PeriodMS int64 `json:"period_ms,omitempty"`
	// Samples holds one entry per served entity of the activator's route
	// table, zero load included.
	Samples []LoadSample `json:"samples"`
}

// LoadSample is one deployment's load as one activator saw it.
type LoadSample struct {
	Deployment string `json:"deployment"`
	// Concurrency is the time-weighted average of requests in flight plus
	// requests waiting, over the report's period.
	Concurrency float64 `json:"concurrency"`
}

// PokeRequest is the body of POST {autoscaler}/v1/poke: a request arrived
// at a deployment that has no ready replica.
type PokeRequest struct {
	Deployment string `json:"deployment"`
}

// Deployments returns a handle on the deployments API, which the autoscaler
// uses to read and set replica counts.
func (c *Client) Deployments() *Deployments { return &Deployments{client: c} }

// Deployments is the deployments API (a Gantry extension).
type Deployments struct{ client *Client }

const deploymentsPath = "/api/2.0/gantry/deployments"

// List reads every deployment the autoscaler sizes. It is a blocking query:
// set q.WaitIndex to a previous LastIndex to wait until the list changes.
func (d *Deployments) List(q *QueryOptions) ([]DeploymentTarget, *QueryMeta, error) {
	var out ListDeploymentsResponse
	meta, err := d.client.query(deploymentsPath, q, &out)
	if err != nil {
		return nil, nil, err
	}
	return out.Deployments, meta, nil
}

// Scale asks for replicas replicas of deployment id. The scheduler clamps
// the count to the deployment's bounds; an unknown id is a 404
// RESOURCE_DOES_NOT_EXIST.
func (d *Deployments) Scale(id string, replicas int, w *WriteOptions) (*WriteMeta, error) {
	return d.client.write(http.MethodPost, deploymentsPath+"/"+url.PathEscape(id)+"/scale",
		&ScaleDeploymentRequest{Replicas: &replicas}, w, nil)
}

// TokenLoad is an LLM replica's load, as its worker answers it on
// GET /load: the autoscaler polls it on entities that scale on tokens.
type TokenLoad struct {
	// GeneratedTokens counts the tokens the replica's runtime generated
	// since it started; only its rate matters.
	GeneratedTokens uint64 `json:"generated_tokens"`
	// Queued counts sequences accepted and not yet generating; Running
	// those generating now.
	Queued  int `json:"queued"`
	Running int `json:"running"`
}
