package nomad

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"time"

	"github.com/gantry/gantry/jobs"
	"github.com/gantry/gantry/scheduler/orchestrator"
	"github.com/hashicorp/nomad/api"
)

// Ensure registers the deployment's job, or scales it when only the
// replica count changed. It returns once Nomad has the job; the workers
// start on their own.
//
// When Nomad refuses a spec, Ensure answers for that same spec from memory
// until the backoff (1 s, doubling to a minute) has passed, instead of
// asking Nomad again on every reconcile.
func (d *Driver) Ensure(ctx context.Context, spec orchestrator.Deployment) error {
	d.mu.Lock()
	dep, ok := d.deps[spec.ID]
	if !ok {
		dep = d.watch(spec)
	}
	dep.spec = spec
	prev := dep.applied
	if err := dep.refusedAgain(spec, d.cfg.Clock.Now()); err != nil {
		d.mu.Unlock()
		return err
	}
	d.mu.Unlock()

	purged, err := d.submit(ctx, dep.job, prev, spec)
	if purged {
		prev = nil // Nomad no longer has what it accepted
	}

	d.mu.Lock()
	if err != nil && ctx.Err() == nil {
		// Nomad refused: the user sees why, and held requests fail now
		// rather than at their timeout.
		dep.refuse(spec, prev, err, d.cfg.Clock.Now())
	} else if err == nil {
		applied := spec
		dep.applied = &applied
		dep.submitErr, dep.backoff = nil, 0
	}
	d.mu.Unlock()
	d.changed(spec.ID)
	return err
}

// submit scales the job when prev, what Nomad has, differs from spec in
// the replica count only, and registers spec's job otherwise. purged is
// true when the job had gone from Nomad (someone purged it), so that it
// was registered again.
func (d *Driver) submit(ctx context.Context, job string, prev *orchestrator.Deployment, spec orchestrator.Deployment) (purged bool, err error) {
	w := (&api.WriteOptions{}).WithContext(ctx)
	if prev != nil && sameButCount(*prev, spec) {
		n := spec.Replicas
		_, _, err := d.client.Jobs().Scale(job, jobs.Group, &n, fmt.Sprintf("gantry: %d replicas", n), false, nil, w)
		if statusCode(err) != http.StatusNotFound {
			if err != nil {
				return false, fmt.Errorf("scale job %s to %d: %w", job, n, err)
			}
			return false, nil
		}
		purged = true
	}
	rendered, err := jobs.Render(spec, d.cfg.Jobs)
	if err != nil {
		return purged, err
	}
	// The secrets first, so that the job's template finds them when its
	// first allocation starts; the job holds only their names.
	items, err := jobs.SecretItems(spec)
	if err != nil {
		return purged, err
	}
	if items != nil {
		v := &api.Variable{Path: jobs.VariablePath(job), Items: items}
		if _, _, err := d.client.Variables().Update(v, d.nsWrite(ctx)); err != nil {
			// err is Nomad's answer, which never holds the items.
			return purged, fmt.Errorf("write the secrets of job %s to Nomad Variable %s: %w", job, v.Path, err)
		}
	}
	if _, _, err := d.client.Jobs().Register(rendered, w); err != nil {
		return purged, fmt.Errorf("register job %s: %w", job, err)
	}
	return purged, nil
}

// refusedAgain is Nomad's last refusal when spec is the spec it refused and
// its backoff has not passed by now; nil when Ensure should ask Nomad.
// d.mu must be held.
func (dep *deployment) refusedAgain(spec orchestrator.Deployment, now time.Time) error {
	if dep.submitErr != nil && reflect.DeepEqual(dep.refused, spec) && now.Before(dep.retryAt) {
		return dep.submitErr
	}
	return nil
}

// refuse records that Nomad refused spec with err at now: a failure
// counted, and the next try of the same spec backed off. prev stays what
// Nomad has. d.mu must be held.
func (dep *deployment) refuse(spec orchestrator.Deployment, prev *orchestrator.Deployment, err error, now time.Time) {
	dep.submitErr = err
	dep.failures++
	dep.backoff = nextSubmitBackoff(dep.backoff)
	dep.retryAt = now.Add(dep.backoff)
	dep.refused = spec
	dep.applied = prev
}

// nextSubmitBackoff is the wait after a refusal that followed a wait of
// prev: 1 s, 2 s, 4 s … capped at a minute, so a spec Nomad keeps
// refusing costs one request a minute and a fixed one is tried soon.
func nextSubmitBackoff(prev time.Duration) time.Duration {
	return min(max(2*prev, time.Second), time.Minute)
}

// sameButCount reports whether two specs differ in their replica count
// at most.
func sameButCount(a, b orchestrator.Deployment) bool {
	a.Replicas, b.Replicas = 0, 0
	return reflect.DeepEqual(a, b)
}

// statusCode is the HTTP status of a Nomad API error, 0 for other errors.
func statusCode(err error) int {
	var ue api.UnexpectedResponseError
	if errors.As(err, &ue) {
		return ue.StatusCode()
	}
	return 0
}
