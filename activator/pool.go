package activator

import (
	"cmp"
	"math"
	"slices"
	"sync/atomic"
	"time"

	"github.com/gantry/gantry/activator/queue"
	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/internal/apierr"
	"github.com/prometheus/client_golang/prometheus"
)

// pokeInterval is the least time between two pokes for one entity. The
// first request at zero replicas pokes at once; the ones right behind it
// would only repeat the news, but a poke every 100 ms keeps reminding an
// autoscaler that missed one (or whose start failed) while requests wait.
const pokeInterval = 100 * time.Millisecond

// neverPoked is pool.lastPoke before the first poke.
const neverPoked = math.MinInt64

// pool is the part of a served entity that outlives route tables: its
// breaker (replica slots and the cold-start queue), its load, and its poke
// rate limit. Tables come and go; the pool stays as long as some table
// names its poolKey. Run's goroutine creates and closes pools; request
// goroutines use them through the table.
type pool struct {
	key     poolKey
	breaker *queue.Breaker[*replica]

	// lastPoke is when the last poke went out, in nanoseconds of
	// Config.Clock since Activator.epoch; neverPoked before the first.
	lastPoke atomic.Int64

	coldStart prometheus.Observer
}

// poolKey names a pool. The deployment identifies the replicas (it changes
// with the config); endpoint and name come along so that a pool's metric
// labels never change under it.
type poolKey struct {
	deployment, endpoint, name string
}

// refusal is an error that the activator gives a breaker (Fail, Close) so
// that every request whose wait it ends gets this 503 answer.
type refusal struct {
	reason string
	answer apierr.Answer // TEMPORARILY_UNAVAILABLE
	// removed says the entity's deployment left the route table, so the
	// request may move to whatever took its place.
	removed bool
}

func (r *refusal) Error() string { return r.reason }

func newRefusal(format string, args ...any) *refusal {
	e := api.Errorf(api.ErrTemporarilyUnavailable, format, args...)
	return &refusal{reason: e.Message, answer: apierr.For(e)}
}

func (a *Activator) newPool(k poolKey) *pool {
	depth := a.metrics.queueDepth.WithLabelValues(k.endpoint, k.name)
	p := &pool{
		key: k,
		breaker: queue.NewBreaker[*replica](queue.Params{
			QueueDepth: a.cfg.QueueDepth,
			QueueBytes: a.cfg.QueueBytes,
			Clock:      a.cfg.Clock,
			OnQueue:    func(delta int) { depth.Add(float64(delta)) },
		}),
		coldStart: a.metrics.coldStart.WithLabelValues(k.endpoint, k.name),
	}
	p.lastPoke.Store(neverPoked)
	return p
}

// update gives the pool the replicas and the state of entity e of the new
// route table. Run's goroutine only.
func (a *Activator) update(p *pool, e *api.EntityRoute, replicas []*replica) {
	conc := e.Concurrency
	if conc <= 0 {
		conc = DefaultConcurrency
	}
	p.breaker.Update(replicas, conc)

	// Fail fast: a failed start with no replica left to serve ends the wait
	// of everyone who came before it, with the reason; later requests
	// wait for the next start (their poke asks for it). A FAILED entity
	// that still has replicas keeps serving its queue.
	var failed error
	if e.State == api.DeploymentFailed && len(replicas) == 0 {
		msg := e.Message
		if msg == "" {
			msg = "no reason given"
		}
		failed = newRefusal("served entity %s of endpoint %s failed to start: %s", p.key.name, p.key.endpoint, msg)
	}
	if n := p.breaker.Fail(e.Failures, failed); n > 0 {
		a.log.Warn("failed waiting requests: replica start failed", "endpoint", p.key.endpoint,
			"served_entity", p.key.name, "deployment", p.key.deployment, "requests", n, "reason", e.Message)
	}
}

// poke tells Config.Poke, at most once per pokeInterval, that a request
// waits at p with no ready replica.
func (a *Activator) poke(p *pool) {
	if a.cfg.Poke == nil {
		return
	}
	now := int64(a.cfg.Clock().Sub(a.epoch))
	last := p.lastPoke.Load()
	if last != neverPoked && now-last < int64(pokeInterval) && now >= last {
		return
	}
	// Of the requests that race here, one wins and pokes.
	if p.lastPoke.CompareAndSwap(last, now) {
		a.cfg.Poke(p.key.deployment)
	}
}

// EntityStats is the load of one served entity, as one activator saw it.
type EntityStats struct {
	// Deployment identifies the entity's replicas: what the autoscaler
	// sizes.
	Deployment       string
	Endpoint, Entity string
	// Concurrency is the time-weighted average of requests in flight plus
	// requests waiting, since the previous Stats call.
	Concurrency float64
	// InFlight and Queued are the counts at the time of the call.
	InFlight, Queued int
	// Requests counts the requests that have arrived at the entity since
	// this activator first saw it. It only grows; take differences for a
	// rate.
	Requests uint64
}

// Stats returns the load of every served entity in the current route table,
// ordered by endpoint and entity, and starts a new averaging period for
// each. It is meant to be called by one loop, once a second: a second
// caller would cut the first one's periods short. Safe from any goroutine.
func (a *Activator) Stats() []EntityStats {
	t := a.table.Load()
	if t == nil {
		return nil
	}
	var out []EntityStats
	for _, ep := range t.endpoints {
		for _, en := range ep.entities {
			s := en.pool.breaker.Stats()
			out = append(out, EntityStats{
				Deployment:  en.pool.key.deployment,
				Endpoint:    ep.name,
				Entity:      en.name,
				Concurrency: s.Average,
				InFlight:    s.InFlight,
				Queued:      s.Queued,
				Requests:    s.Requests,
			})
		}
	}
	slices.SortFunc(out, func(x, y EntityStats) int {
		return cmp.Or(cmp.Compare(x.Endpoint, y.Endpoint), cmp.Compare(x.Entity, y.Entity))
	})
	return out
}
