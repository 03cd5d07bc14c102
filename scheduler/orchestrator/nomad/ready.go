package nomad

// Readiness: Nomad lists a service's instances whether or not they answer,
// so the driver probes each instance itself, by package probe's policy, and
// counts it ready only while its allocation runs too.

import (
	"cmp"
	"context"
	"net"
	"slices"
	"strconv"
	"time"

	"github.com/gantry/gantry/jobs"
	"github.com/gantry/gantry/scheduler/orchestrator"
	"github.com/gantry/gantry/scheduler/orchestrator/probe"
	"github.com/hashicorp/nomad/api"
)

// replicaProbe is the driver's readiness check of one service instance.
// addr and cancel never change; Driver.mu guards ready and the times of
// the instance's first answer and first 200 (its cold start's model_load
// phase and its end).
type replicaProbe struct {
	addr     string
	ready    bool
	answered time.Time
	readyAt  time.Time
	notice   string      // the worker's, from the /ping that made it ready
	first    probe.First // the worker's first answered request; no Phase until one
	cancel   context.CancelFunc
}

// services takes a new list of the service's registrations and starts or
// stops the probes to match.
func (d *Driver) services(ctx context.Context, dep *deployment, regs []*api.ServiceRegistration) {
	d.mu.Lock()
	defer d.mu.Unlock()
	dep.services = regs
	want := map[string]string{}
	for _, sr := range regs {
		want[sr.AllocID] = net.JoinHostPort(sr.Address, strconv.Itoa(sr.Port))
	}
	for alloc, p := range dep.probes {
		if want[alloc] != p.addr {
			p.cancel()
			delete(dep.probes, alloc)
		}
	}
	for alloc, addr := range want {
		if _, ok := dep.probes[alloc]; ok {
			continue
		}
		pctx, cancel := context.WithCancel(ctx)
		p := &replicaProbe{addr: addr, cancel: cancel}
		dep.probes[alloc] = p
		d.running.Add(1)
		go d.probe(pctx, dep, p)
	}
}

// probe runs the shared prober on one instance until its registration goes
// (ctx ends). Nomad restarts failed tasks itself, so the driver only
// reports readiness; it never gives up on a starting instance.
func (d *Driver) probe(ctx context.Context, dep *deployment, p *replicaProbe) {
	defer d.running.Done()
	pr := *d.prober
	pr.Answered = func(at time.Time) {
		d.mu.Lock()
		p.answered = at
		id := dep.spec.ID
		d.mu.Unlock()
		d.changed(id)
	}
	pr.FirstResponse = func(f probe.First) {
		d.mu.Lock()
		p.first = f
		id := dep.spec.ID
		d.mu.Unlock()
		d.changed(id)
	}
	pr.Run(ctx, p.addr, func(ready bool, notice string) {
		d.mu.Lock()
		p.ready, p.notice = ready, notice
		if ready {
			dep.failure = "" // a replica answers: older failures are history
			if p.readyAt.IsZero() {
				p.readyAt = time.Now()
			}
		}
		id := dep.spec.ID
		d.mu.Unlock()
		d.changed(id)
	})
}

// running reports whether an allocation runs and Nomad holds it healthy
// (when a deployment tracks its health).
func running(a *api.AllocationListStub) bool {
	if a.ClientStatus != api.AllocClientStatusRunning || a.DesiredStatus != api.AllocDesiredStatusRun {
		return false
	}
	if ts := a.TaskStates[jobs.Task]; ts == nil || ts.State != "running" {
		return false
	}
	ds := a.DeploymentStatus
	return ds == nil || ds.Healthy == nil || *ds.Healthy
}

// downloading is when the client began to download the task's artifact
// (the model's tar.gz), zero if it has not: Nomad does it before the
// task starts, so without it the model's download would count as
// scheduling. A client downloads an allocation's artifact once, not at
// each restart.
func downloading(ts *api.TaskState) time.Time {
	for _, e := range ts.Events {
		if e.Type == api.TaskDownloadingArtifacts {
			return time.Unix(0, e.Time)
		}
	}
	return time.Time{}
}

// starts is each allocation's cold start, oldest first: asked for when
// Nomad created the allocation, the artifact's download, started when its
// task began, and the probe's first answer and first 200. d.mu must be
// held.
func (dep *deployment) starts() []orchestrator.Start {
	var out []orchestrator.Start
	for id, a := range dep.allocs {
		switch a.ClientStatus {
		case api.AllocClientStatusComplete, api.AllocClientStatusFailed, api.AllocClientStatusLost:
			continue // over: Nomad places a new allocation if one is wanted
		}
		if a.DesiredStatus != api.AllocDesiredStatusRun {
			continue
		}
		st := orchestrator.Start{ID: id, Requested: time.Unix(0, a.CreateTime)}
		if ts := a.TaskStates[jobs.Task]; ts != nil {
			st.Downloading = downloading(ts)
			if !ts.StartedAt.IsZero() {
				st.Started = ts.StartedAt
			}
		}
		if p := dep.probes[id]; p != nil && !st.Started.IsZero() {
			st.Answered, st.Ready = p.answered, p.readyAt
			st.FirstPhase, st.FirstRequest, st.FirstResponse = p.first.Phase, p.first.Arrived, p.first.Answered
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(x, y orchestrator.Start) int {
		return cmp.Or(x.Requested.Compare(y.Requested), cmp.Compare(x.ID, y.ID))
	})
	return out
}
