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
	// TokensPerReplica, when above 0, sizes the deployment on tokens: it
	// is the tokens per second one replica sustains, and Replicas are the
	// addresses of its ready replicas, whose GET /load the autoscaler
	// polls (tokens.go).
	TokensPerReplica float64
	Replicas         []string
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

	// deciders and tokens are owned by the Run goroutine; tokens holds
	// the replicas' last token reports of deployments that scale on
	// tokens.
	deciders map[string]*decider.Decider
	tokens   map[string]map[string]replicaTokens
	measured map[string]capacity
	poller   *tokenPoller
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
		tokens:   make(map[string]map[string]replicaTokens),
		measured: make(map[string]capacity),
		poller:   newTokenPoller(min(cfg.Tick, time.Second), cfg.Now),
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
	go a.poller.run(ctx, a.cfg.Tick)
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
	targets := a.sched.Targets()
	a.poller.set(targets)
	reports := a.poller.latest()
	seen := make(map[string]bool, len(a.deciders))
	for _, t := range targets {
		seen[t.Deployment] = true
		d := a.decider(t)
		sample := load[t.Deployment]
		if t.TokensPerReplica > 0 {
			prev := a.tokens[t.Deployment]
			if prev == nil {
				prev = map[string]replicaTokens{}
				a.tokens[t.Deployment] = prev
			}
			var tps, saturated float64
			var queued int
			sample, tps, queued, saturated = tokenSample(now, t, reports[t.Deployment], prev, load[t.Deployment],
				a.concurrencyPerReplica(t), 3*a.cfg.Tick)
			a.cfg.Metrics.recordTokens(t.Deployment, tps, queued, a.capacity(now, t.Deployment, saturated))
		}
		d.Record(now, sample)
		dec := d.Decide(now, decider.Inputs{Ready: t.Ready, Starting: t.Starting})
		a.cfg.Metrics.record(t, dec)
		a.apply(t, dec)
	}
	for dep := range a.deciders {
		if !seen[dep] {
			delete(a.deciders, dep)
			delete(a.tokens, dep)
			delete(a.measured, dep)
			a.cfg.Metrics.forget(dep)
		}
	}
}

// concurrencyPerReplica is the concurrency one replica of t holds.
func (a *Autoscaler) concurrencyPerReplica(t Target) float64 {
	if t.TargetPerReplica > 0 {
		return t.TargetPerReplica
	}
	return a.cfg.Spec.TargetPerReplica
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
	if t.TokensPerReplica > 0 {
		// Its samples are tokens per second (tokenSample).
		spec.TargetPerReplica = t.TokensPerReplica
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

// capacity is the highest rate a saturated replica of a deployment showed
// lately, and when.
type capacity struct {
	rate float64
	at   time.Time
}

// capacityWindow is how long a measured capacity stands unless a higher
// one replaces it. A saturated replica's rate is what it sustains, but one
// tick's can be low (a replica that was ramping up, a tick whose span had
// a gap between sequences) and never high, so the highest of the last
// minute is the estimate.
const capacityWindow = time.Minute

// capacity records a deployment's saturated rate of this tick (0: none)
// and returns its measured capacity, 0 while it has none.
func (a *Autoscaler) capacity(now time.Time, dep string, saturated float64) float64 {
	c := a.measured[dep]
	if saturated > 0 && (saturated >= c.rate || now.Sub(c.at) > capacityWindow) {
		c = capacity{saturated, now}
		a.measured[dep] = c
	}
	return c.rate
}
