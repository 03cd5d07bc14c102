package nomad

// The watchers: three blocking queries per deployment (the job's
// allocations, its evaluations, the service's registrations), each in its
// own goroutine, each answer folded into the deployment under Driver.mu.

import (
	"context"
	"time"

	"github.com/gantry/gantry/scheduler/orchestrator"
	"github.com/hashicorp/nomad/api"
)

// watch adds a deployment and starts following it. d.mu must be held.
func (d *Driver) watch(spec orchestrator.Deployment) *deployment {
	ctx, cancel := context.WithCancel(d.ctx)
	dep := newDeployment(spec, cancel)
	d.deps[spec.ID] = dep
	id := spec.ID
	d.follow(ctx, id, "allocations", func(q *api.QueryOptions) (*api.QueryMeta, error) {
		allocs, meta, err := d.client.Jobs().Allocations(dep.job, false, q)
		if err == nil {
			d.allocations(ctx, dep, allocs)
		}
		return meta, err
	})
	d.follow(ctx, id, "evaluations", func(q *api.QueryOptions) (*api.QueryMeta, error) {
		evals, meta, err := d.client.Jobs().Evaluations(dep.job, q)
		if err == nil {
			d.mu.Lock()
			dep.takeEvaluations(evals)
			d.mu.Unlock()
		}
		return meta, err
	})
	d.follow(ctx, id, "service", func(q *api.QueryOptions) (*api.QueryMeta, error) {
		regs, meta, err := d.client.Services().Get(dep.service, q)
		if err == nil {
			d.services(ctx, dep, regs)
		}
		return meta, err
	})
	return dep
}

// follow runs query as a blocking query in its own goroutine until ctx
// ends, feeding each answer's index into the next, and notifies after each
// answer if the status changed. Errors back off from 1 s to 30 s.
func (d *Driver) follow(ctx context.Context, id, what string, query func(*api.QueryOptions) (*api.QueryMeta, error)) {
	d.running.Add(1)
	go func() {
		defer d.running.Done()
		var index uint64
		backoff := time.Duration(0)
		for ctx.Err() == nil {
			q := (&api.QueryOptions{WaitIndex: index, WaitTime: d.cfg.WaitTime}).WithContext(ctx)
			meta, err := query(q)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				backoff = nextFollowBackoff(backoff)
				d.cfg.Logger.Warn("nomad: follow "+what, "deployment", id, "err", err, "retry_in", backoff)
				if !d.sleep(ctx, backoff) {
					return
				}
				continue
			}
			backoff = 0
			index = nextIndex(index, meta.LastIndex)
			d.changed(id)
			// A busy cluster wakes every watcher on every allocation change:
			// pause between queries, as Nomad's own watchers (and its
			// autoscaler) rate-limit theirs, so one deployment costs at most
			// a few queries a second however much else changes.
			if !d.sleep(ctx, d.cfg.MinQueryInterval) {
				return
			}
		}
	}()
}

// sleep waits d on the driver's clock; false when ctx ended first.
func (d *Driver) sleep(ctx context.Context, wait time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-d.cfg.Clock.After(wait):
		return true
	}
}

// nextFollowBackoff is the wait after a failed query that followed a wait
// of prev (0 after a success): 1 s, 2 s, 4 s … capped at 30 s.
func nextFollowBackoff(prev time.Duration) time.Duration {
	return min(max(2*prev, time.Second), 30*time.Second)
}

// nextIndex is the index the next blocking query waits past, given the one
// the last query sent and the one Nomad answered with.
//
// Nomad's lists' indexes are table-wide: any change in the cluster wakes
// the query. An index that went backwards means Nomad restored a snapshot:
// start over with 0, which answers at once. Else keep at least 1, as 0
// would never block.
func nextIndex(sent, answered uint64) uint64 {
	if answered < sent && sent > 1 {
		return 0
	}
	return max(answered, 1)
}

// takeEvaluations folds a new list of the job's evaluations into the
// deployment: why Nomad cannot place allocations, and a failure counted for
// each blocked or failed evaluation not counted before. d.mu must be held.
func (dep *deployment) takeEvaluations(evals []*api.Evaluation) {
	dep.placement = placementFailure(evals)
	// Forget evaluations Nomad has garbage-collected.
	current := make(map[string]bool, len(evals))
	for _, e := range evals {
		current[e.ID] = true
	}
	for id := range dep.evals {
		if !current[id] {
			delete(dep.evals, id)
		}
	}
	// Counting a failed start fails the requests held for it.
	for _, id := range failedEvals(evals) {
		if !dep.evals[id] {
			dep.evals[id] = true
			dep.failures++
		}
	}
}

// failedTask is one failure event of an allocation's worker task.
type failedTask struct {
	alloc string
	event *api.TaskEvent
}

// takeAllocations folds a new list of the job's allocations into the
// deployment and counts the failure events not counted before. It returns
// the newest of those, nil when there is none. d.mu must be held.
func (dep *deployment) takeAllocations(list []*api.AllocationListStub) *failedTask {
	var newest *failedTask
	dep.allocs = make(map[string]*api.AllocationListStub, len(list))
	// Nomad garbage-collects old allocations: forget their counts too.
	seen := make(map[string]int, len(list))
	for _, a := range list {
		dep.allocs[a.ID] = a
		failures := taskFailures(a)
		for _, e := range failures[min(dep.seen[a.ID], len(failures)):] {
			dep.failures++
			if newest == nil || e.Time > newest.event.Time {
				newest = &failedTask{a.ID, e}
			}
		}
		seen[a.ID] = max(dep.seen[a.ID], len(failures))
	}
	dep.seen = seen
	return newest
}

// allocations takes a new list of the job's allocations: it counts new
// failure events and, for the newest, fetches the end of the task's
// stderr so that the failure says why.
func (d *Driver) allocations(ctx context.Context, dep *deployment, list []*api.AllocationListStub) {
	d.mu.Lock()
	newest := dep.takeAllocations(list)
	d.mu.Unlock()
	if newest == nil {
		return
	}
	msg := failureMessage(newest.alloc, newest.event)
	if newest.event.Type == api.TaskTerminated {
		if tail := d.stderrTail(ctx, newest.alloc); tail != "" {
			msg += "\n" + tail
		}
	}
	d.mu.Lock()
	dep.failure = msg
	d.mu.Unlock()
}
