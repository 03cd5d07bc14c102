package scheduler

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gantry/gantry/api"
)

// deploymentsPoll is how often a blocking deployments query looks for a
// change. The list mixes the store, the autoscaler's counts and the
// orchestrator's live status, and only the first of these notifies, so the
// query polls Targets (a map walk under s.mu) instead of waiting on an event.
const deploymentsPoll = 100 * time.Millisecond

// deploymentsAPI serves the deployments API, which a remote autoscaler uses
// in place of the in-process Targets and Scale:
//
//	GET  /api/2.0/gantry/deployments?index=N&wait=30s → {"deployments": [...]}
//	POST /api/2.0/gantry/deployments/{id}/scale {"replicas": N} → {}
type deploymentsAPI struct {
	s *Scheduler

	// mu guards index and last.
	mu sync.Mutex
	// index counts the changes of the list served so far; last is the JSON
	// of the list it was given for. The list has no version of its own, so
	// the index moves when a caller sees a list that differs from the
	// previous one. It starts at 1 with each Handler, like a restarted
	// scheduler's route index; clients take a lower index as a restart.
	index uint64
	last  []byte
}

// targets returns the current list, sorted by deployment, and its index.
func (d *deploymentsAPI) targets() ([]api.DeploymentTarget, uint64) {
	ts := d.s.Targets()
	out := make([]api.DeploymentTarget, len(ts))
	for i, t := range ts {
		out[i] = api.DeploymentTarget{
			Deployment: t.Deployment, MinReplicas: t.Min, MaxReplicas: t.Max,
			Current: t.Current, Ready: t.Ready, Starting: t.Starting,
			TargetPerReplica: t.TargetPerReplica,
			TokensPerReplica: t.TokensPerReplica, Replicas: t.Replicas,
		}
	}
	// Targets walks a map; a stable order keeps equal lists equal.
	slices.SortFunc(out, func(a, b api.DeploymentTarget) int { return strings.Compare(a.Deployment, b.Deployment) })
	b, _ := json.Marshal(out) // plain ints and strings: cannot fail

	d.mu.Lock()
	defer d.mu.Unlock()
	if d.index == 0 || !bytes.Equal(b, d.last) {
		d.index++
		d.last = b
	}
	return out, d.index
}

// list serves the deployments as a blocking query: with ?index=N it waits
// (up to ?wait=, default 30 s) for a list whose index exceeds N.
func (d *deploymentsAPI) list(w http.ResponseWriter, r *http.Request) {
	index, wait, err := blockingParams(r)
	if err != nil {
		writeError(w, err)
		return
	}
	out, cur := d.targets()
	if cur <= index {
		ctx, cancel := context.WithTimeout(r.Context(), wait)
		defer cancel()
		t := time.NewTicker(deploymentsPoll)
		defer t.Stop()
	wait:
		for cur <= index {
			select {
			case <-ctx.Done():
				break wait // answer the current list, as the route query does
			case <-t.C:
				out, cur = d.targets()
			}
		}
	}
	w.Header().Set("X-Gantry-Index", strconv.FormatUint(cur, 10))
	writeJSON(w, http.StatusOK, api.ListDeploymentsResponse{Deployments: out})
}

func (d *deploymentsAPI) scale(w http.ResponseWriter, r *http.Request) {
	var req api.ScaleDeploymentRequest
	if err := decode(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	switch {
	case req.Replicas == nil:
		writeError(w, invalid("replicas: required; send {\"replicas\": N}"))
		return
	case *req.Replicas < 0:
		writeError(w, invalid("replicas: %d is negative; send 0 or more", *req.Replicas))
		return
	}
	// Scale clamps to the entity's bounds and answers 404 for an unknown
	// deployment.
	if err := d.s.Scale(r.PathValue("id"), *req.Replicas); err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, struct{}{})
}

// blockingParams reads a blocking query's ?index= and ?wait= (default 30 s,
// capped at maxBlockingWait).
func blockingParams(r *http.Request) (index uint64, wait time.Duration, err error) {
	q := r.URL.Query()
	if v := q.Get("index"); v != "" {
		if index, err = strconv.ParseUint(v, 10, 64); err != nil {
			return 0, 0, invalid("index: %q is not a number; send the X-Gantry-Index of the last answer", v)
		}
	}
	wait = 30 * time.Second
	if v := q.Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return 0, 0, invalid("wait: %q is not a duration such as 30s", v)
		}
		wait = min(d, maxBlockingWait)
	}
	return index, wait, nil
}
