// Package autoscaler sizes every deployment from its load. It feeds the
// decider (package decider, pure) with the concurrency the activators
// observe, once a tick and at once when a request arrives at a deployment
// with no replica, and asks the scheduler to scale when a decision changes
// the replica count. All deciders are owned by the Run goroutine.
package autoscaler

import (
	"context"
	"log/slog"
	"time"

	"github.com/gantry/gantry/autoscaler/decider"
)

// Target is one deployment the autoscaler sizes, as the scheduler sees it.
type Target struct {
	Deployment string
	// Min and Max bound the replica count; Max 0 means no bound.
	Min, Max int
	// Current is the replica count asked for now.
	Current int
	// Ready counts replicas that answer; Starting those asked for that do
	// not answer yet and have not failed.
	Ready, Starting int
	// TargetPerReplica is the concurrency one replica holds; 0 keeps the
	// Spec's.
	TargetPerReplica float64
}

// Sample is the load one activator saw on a deployment over the last
// period: the time-weighted average of in-flight plus queued requests.
type Sample struct {
	Deployment  string
	Concurrency float64
}

// scheduler is what the autoscaler needs of the control plane.
type scheduler interface {
	Targets() []Target
	Scale(deployment string, replicas int) error
}

// Config configures an Autoscaler. It works at its zero value.
type Config struct {
	// Spec holds the windows, grace, per-replica target and rates; each
	// deployment's Min and Max replace its MinReplicas and MaxReplicas.
	// Default decider.DefaultSpec().
	Spec *decider.Spec
	// Tick is how often every deployment is decided. Default 1 s.
	Tick time.Duration
	// Now is the clock. Default time.Now.
	Now    func() time.Time
	Logger *slog.Logger
	// Metrics receives desired and ready replicas, panic mode and observed
	// load per deployment; nil: not exported.
	Metrics *Metrics
}

// Autoscaler runs the decide loop.
type Autoscaler struct {
	cfg   Config
	sched scheduler
	stats func() []Sample
	pokes chan string

	// deciders is owned by the Run goroutine.
	deciders map[string]*decider.Decider
}

// New returns an autoscaler that reads load from stats (called once a tick)
// and scales through sched.
func New(cfg Config, sched scheduler, stats func() []Sample) *Autoscaler {
	if cfg.Spec == nil {
		s := decider.DefaultSpec()
		cfg.Spec = &s
	}
	if cfg.Tick <= 0 {
		cfg.Tick = time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Autoscaler{
		cfg:      cfg,
		sched:    sched,
		stats:    stats,
		pokes:    make(chan string, 1024),
		deciders: make(map[string]*decider.Decider),
	}
}

// Poke says a request arrived at a deployment with no ready replica. It
// never blocks: the activator calls it on the request path. A poke that
// finds the channel full is dropped; the next tick decides anyway.
func (a *Autoscaler) Poke(deployment string) {
	select {
	case a.pokes <- deployment:
	default:
	}
}

// Run decides every tick and on every poke until ctx ends.
func (a *Autoscaler) Run(ctx context.Context) error {
	t := time.NewTicker(a.cfg.Tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			a.tick(a.cfg.Now())
		case dep := <-a.pokes:
			a.wake(a.cfg.Now(), dep)
		}
	}
}

// tick records every deployment's load and decides its size.
func (a *Autoscaler) tick(now time.Time) {
	load := map[string]float64{}
	for _, s := range a.stats() {
		load[s.Deployment] += s.Concurrency
	}
	seen := make(map[string]bool, len(a.deciders))
	for _, t := range a.sched.Targets() {
		seen[t.Deployment] = true
		d := a.decider(t)
		d.Record(now, load[t.Deployment])
		dec := d.Decide(now, decider.Inputs{Ready: t.Ready, Starting: t.Starting})
		a.cfg.Metrics.record(t, dec)
		a.apply(t, dec)
	}
	for dep := range a.deciders {
		if !seen[dep] {
			delete(a.deciders, dep)
			a.cfg.Metrics.forget(dep)
		}
	}
}

// wake handles a request that found no replica: it counts as load now, so
// a deployment at zero is scaled up without waiting for the next tick.
func (a *Autoscaler) wake(now time.Time, dep string) {
	for _, t := range a.sched.Targets() {
		if t.Deployment != dep {
			continue
		}
		d := a.decider(t)
		d.Record(now, 1)
		if dec := d.Decide(now, decider.Inputs{Ready: t.Ready, Starting: t.Starting}); dec.Desired > t.Current {
			a.apply(t, dec)
		}
		return
	}
}

// decider returns the deployment's decider, made or updated for t's bounds.
func (a *Autoscaler) decider(t Target) *decider.Decider {
	spec := *a.cfg.Spec
	spec.MinReplicas, spec.MaxReplicas = t.Min, t.Max
	if t.TargetPerReplica > 0 {
		spec.TargetPerReplica = t.TargetPerReplica
	}
	d, ok := a.deciders[t.Deployment]
	if !ok {
		d = decider.New(spec)
		a.deciders[t.Deployment] = d
	} else if err := d.Update(spec); err != nil {
		a.cfg.Logger.Error("update decider", "deployment", t.Deployment, "err", err)
	}
	return d
}

func (a *Autoscaler) apply(t Target, dec decider.Decision) {
	if !dec.Valid || dec.Desired == t.Current {
		return
	}
	a.cfg.Logger.Info("scale", "deployment", t.Deployment, "from", t.Current, "to", dec.Desired, "reason", dec.Reason)
	if err := a.sched.Scale(t.Deployment, dec.Desired); err != nil {
		a.cfg.Logger.Error("scale", "deployment", t.Deployment, "err", err)
	}
}
