package nomad

// Readiness: Nomad lists a service's instances whether or not they answer,
// so the driver probes each instance itself, by package probe's policy, and
// counts it ready only while its allocation runs too.

import (
	"context"
	"net"
	"strconv"

	"github.com/gantry/gantry/jobs"
	"github.com/hashicorp/nomad/api"
)

// replicaProbe is the driver's readiness check of one service instance.
// addr and cancel never change; Driver.mu guards ready.
type replicaProbe struct {
	addr   string
	ready  bool
	cancel context.CancelFunc
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
	d.prober.Run(ctx, p.addr, func(ready bool) {
		d.mu.Lock()
		p.ready = ready
		if ready {
			dep.failure = "" // a replica answers: older failures are history
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
