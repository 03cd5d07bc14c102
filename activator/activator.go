// Package activator is Gantry's data plane. It follows the route table the
// scheduler publishes and proxies every invocation to a ready replica of the
// served entity that the endpoint's traffic split picks.
//
// Who does what:
//   - Run, on the caller's goroutine, is the only writer. It waits for route
//     tables, builds an immutable snapshot of each one and swaps it in with
//     one atomic store.
//   - Handler runs on fasthttp's server goroutines, one per request. It reads
//     the current snapshot with one atomic load and takes no global lock:
//     replica slots and the cold-start queue live in one queue.Breaker per
//     served entity (its own mutex), penalties are atomic counters. A
//     request that finds no free slot waits in its entity's queue, on its
//     own goroutine, until Run's next table brings a replica, a slot frees
//     up, or the wait ends (queue timeout, failed start, entity removed).
//   - Timer goroutines (time.AfterFunc) lift replica penalties.
//   - Stats may be called from any goroutine (the autoscaler's loop).
package activator

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gantry/gantry/activator/queue"
	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/external"
	"github.com/gantry/gantry/features"
	"github.com/gantry/gantry/identity"
	"github.com/gantry/gantry/loggers"
	"github.com/prometheus/client_golang/prometheus"
)

// Defaults of Config's fields.
const (
	DefaultMaxRequestBodySize = 16 << 20
	DefaultTimeout            = 297 * time.Second
	DefaultQueueDepth         = queue.DefaultQueueDepth // 10,000
	DefaultQueueBytes         = queue.DefaultQueueBytes // 256 MiB
	DefaultQueueTimeout       = 120 * time.Second
	// DefaultMaxBufferedBytes bounds the request bodies held in memory at
	// once, over every endpoint: twice one entity's queue, so that the
	// queue's own bound stays the one a single busy entity meets.
	DefaultMaxBufferedBytes = 2 * DefaultQueueBytes // 512 MiB
	// DefaultConcurrency is the slots of one replica when the route table
	// gives none (EntityRoute.Concurrency 0).
	DefaultConcurrency = 4
)

// Config tunes an Activator. It works at its zero value; it must not change
// after New.
type Config struct {
	// MaxRequestBodySize is the largest request body forwarded to a worker;
	// larger bodies get 413 PAYLOAD_TOO_LARGE. Default 16 MiB.
	//
	// The fasthttp.Server in front must accept somewhat more
	// (Server.MaxRequestBodySize, whose own default is 4 MiB); otherwise
	// fasthttp refuses the body before Handler runs and answers in its own
	// shape instead of API.md's. A server with StreamRequestBody (what
	// gantry runs) is better: Handler then refuses a Content-Length over
	// the limit before reading a byte, and reads the rest itself.
	MaxRequestBodySize int

	// MaxBufferedBytes bounds the request bodies that the activator holds
	// in memory at once, summed over every request being read, waiting in
	// a queue or being forwarded. Bodies are counted as their bytes arrive
	// (with a StreamRequestBody server), so clients that claim a large
	// Content-Length and trickle it hold only what they sent. A request
	// whose body would go over gets 503 TEMPORARILY_UNAVAILABLE with
	// Retry-After. Default 512 MiB.
	MaxBufferedBytes int64

	// Timeout bounds one invocation from its arrival to the worker's answer;
	// past it the client gets 504 DEADLINE_EXCEEDED. Default 297 s, the
	// execution limit Databricks users know.
	Timeout time.Duration

	// Logger gets route table changes and upstream failures.
	// Default slog.Default().
	Logger *slog.Logger

	// Metrics receives the activator's metrics. One Metrics serves one
	// Activator, because the activator deletes the series of endpoints that
	// leave the route table. Default: metrics on a private registry.
	Metrics *Metrics

	// QueueDepth bounds, per served entity, the requests that wait for a
	// replica slot (during a cold start, or when every replica is busy);
	// beyond it requests get 503 TEMPORARILY_UNAVAILABLE with Retry-After.
	// Default 10,000.
	QueueDepth int

	// QueueBytes bounds, per served entity, the sum of the body sizes of
	// the waiting requests, with the same 503 beyond. Default 256 MiB.
	QueueBytes int64

	// QueueTimeout bounds one request's wait for a slot; past it the
	// client gets 504 DEADLINE_EXCEEDED. Timeout still bounds the whole
	// request. Default 120 s.
	QueueTimeout time.Duration

	// Poke is told the deployment of a served entity that has no ready
	// replica when a request arrives there, so that the autoscaler can
	// start one without waiting for its next tick. It is called on the
	// request's goroutine and must not block (hand the news to a channel
	// with a default case, or set a flag). Calls are rate-limited to one
	// per entity per 100 ms: the first request at zero replicas pokes at
	// once, and while requests keep arriving one of them pokes again every
	// 100 ms. Default nil: nobody to tell.
	Poke func(deployment string)

	// Capture receives a record of every answered invocation of an
	// endpoint whose route names an inference table, after the answer is
	// written. It must not block and must not keep the record (its bodies
	// belong to the request). Default nil: no capture.
	Capture Capturer

	// External calls the providers of external entities. Default: a
	// gateway with external's defaults and Timeout.
	External *external.Gateway

	// JudgeTimeout bounds a judge model's answer to a judged guardrail
	// (judge.go), within the request's own Timeout. Default
	// DefaultJudgeTimeout.
	JudgeTimeout time.Duration

	// Features fetches the features of entities whose route has a
	// feature spec (the online store, *onlinestore.Store). Default nil:
	// such entities answer 503 naming --online-store.
	Features features.Looker

	// Access, when set, turns on authentication: every invocation needs
	// a bearer token that may query (CAN_QUERY) its endpoint, checked in
	// memory against the newest snapshot Access yields (Run follows it),
	// and its principal is the requester of the inference record. Before
	// the first snapshot, invocations get 503. Default nil: no checks.
	Access AccessSource

	// RateLimits reserves the budget of every call of an endpoint with
	// ai_gateway.rate_limits: the scheduler's coordinator (in process in
	// gantry dev, HTTPRateLimiter in gantry activator). Default: an
	// HTTPRateLimiter to the scheduler of an *HTTPAccess Access, else a
	// LocalRateLimiter, exact for this activator alone.
	RateLimits RateLimiter

	// Clock reads the time for Stats' load averages, for
	// gantry_cold_start_seconds, for Poke's rate limit and for token
	// expiry, so that tests can fake it. Deadlines (Timeout, QueueTimeout) run on real time
	// regardless. Default time.Now.
	Clock func() time.Time
}

// Capturer takes invocation records; *capture.Capturer sends them to Kafka.
type Capturer interface {
	Capture(r *loggers.Record) bool
}

// routeSource yields route tables. Wait blocks until a table with
// Index > index exists (or its own wait time passes, and then it returns the
// current table), or ctx ends. HTTPRoutes follows a remote scheduler; the
// scheduler's in-process publisher serves `gantry dev`.
type routeSource interface {
	Wait(ctx context.Context, index uint64) (*api.RouteTable, error)
}

// Activator routes invocations to worker replicas. Build one with New, run
// Run in a goroutine and serve Handler.
type Activator struct {
	cfg     Config // defaults filled in by New; read-only afterwards
	routes  routeSource
	log     *slog.Logger
	metrics *Metrics
	// localLimits decides rate limits when Config.RateLimits is nil.
	localLimits LocalRateLimiter

	// table is the snapshot Handler reads. Run is its only writer.
	table atomic.Pointer[table]

	// access checks invocations (Config.Access); followAccess, started by
	// Run, is its only writer. nil until the first snapshot.
	access atomic.Pointer[identity.Checker]

	// replicas holds every replica of the current table by address, so that
	// connection pools and penalties outlive table updates.
	// Only Run's goroutine touches it.
	replicas map[string]*replica

	// pools holds the long-lived state of every served entity of the
	// current table (slots, queue, load), so that it outlives table
	// updates. Only Run's goroutine touches the map; the pools themselves
	// are safe for any goroutine.
	pools map[poolKey]*pool

	// epoch is Config.Clock at New; pool.lastPoke counts from it.
	epoch time.Time

	// Tunables that tests shrink; New sets them.
	penalty    time.Duration // how long a replica whose connection failed is avoided
	minPoll    time.Duration // least time between the starts of two route waits
	minBackoff time.Duration // first pause after a failed route wait; doubles up to maxBackoff
	maxBackoff time.Duration

	// intN draws the traffic split; tests seed it.
	intN func(n int) int

	// shadowSlots bounds the mirrored requests in flight; a request finding
	// it full is not mirrored.
	shadowSlots chan struct{}
	shadows     sync.WaitGroup // mirrors in flight

	// buffered is the bytes of request bodies held now; see
	// Config.MaxBufferedBytes.
	buffered atomic.Int64

	// notFound counts answers for paths and endpoints that do not exist, under
	// empty labels: naming unknown endpoints would let any client mint series.
	notFound prometheus.Counter
	// unauthenticated and forbidden count refused invocations the same
	// way: a token's endpoint is not a label either. nil without
	// Config.Access.
	unauthenticated, forbidden prometheus.Counter
}

// New returns an activator that follows routes. It serves nothing until Run
// has received a first table (see Ready).
func New(cfg Config, routes routeSource) *Activator {
	if cfg.MaxRequestBodySize <= 0 {
		cfg.MaxRequestBodySize = DefaultMaxRequestBodySize
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.JudgeTimeout <= 0 {
		cfg.JudgeTimeout = DefaultJudgeTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(prometheus.NewRegistry())
	}
	// An activator that follows a remote scheduler's access snapshot
	// (gantry activator) asks the same scheduler to coordinate rate
	// limits, so that several activators share one budget.
	if h, ok := cfg.Access.(*HTTPAccess); ok && cfg.RateLimits == nil {
		cfg.RateLimits = &HTTPRateLimiter{Base: h.Base, Token: h.Token, Client: PooledClient(h.Client)}
	}
	if cfg.QueueDepth <= 0 {
		cfg.QueueDepth = DefaultQueueDepth
	}
	if cfg.QueueBytes <= 0 {
		cfg.QueueBytes = DefaultQueueBytes
	}
	if cfg.QueueTimeout <= 0 {
		cfg.QueueTimeout = DefaultQueueTimeout
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.MaxBufferedBytes <= 0 {
		cfg.MaxBufferedBytes = DefaultMaxBufferedBytes
	}
	if cfg.External == nil {
		// Fails only on a CA file, which the zero Config has not.
		cfg.External, _ = external.NewGateway(external.Config{Timeout: cfg.Timeout})
	}
	a := &Activator{
		cfg:         cfg,
		routes:      routes,
		log:         cfg.Logger,
		metrics:     cfg.Metrics,
		replicas:    map[string]*replica{},
		pools:       map[poolKey]*pool{},
		epoch:       cfg.Clock(),
		penalty:     3 * time.Second, // fasthttp lbclient's penaltyDuration
		minPoll:     50 * time.Millisecond,
		minBackoff:  100 * time.Millisecond,
		maxBackoff:  10 * time.Second,
		notFound:    cfg.Metrics.requests.WithLabelValues("", "", "404"),
		intN:        rand.IntN,
		shadowSlots: make(chan struct{}, maxShadowInFlight),
	}
	if cfg.Access != nil {
		// Only an activator that checks tokens refuses any: one that does
		// not exports no such series.
		a.unauthenticated = cfg.Metrics.requests.WithLabelValues("", "", "401")
		a.forbidden = cfg.Metrics.requests.WithLabelValues("", "", "403")
	}
	return a
}

// Ready reports whether the activator has received a first route table,
// and with Config.Access a first access snapshot.
func (a *Activator) Ready() bool {
	return a.table.Load() != nil && (a.cfg.Access == nil || a.access.Load() != nil)
}

// Run follows the route table until ctx ends, then returns nil; call it once
// per Activator, in a goroutine of its own. Errors from
// the route source are logged and retried with exponential backoff. Tables
// are snapshots, not diffs, so Run starts at most one wait per minPoll: a
// source that answers at once cannot make it spin, and a burst of changes
// costs one rebuild per minPoll.
//
// When ctx ends, requests that wait for a replica get 503 with Retry-After
// (no table will come to serve them) and so do later ones that would have
// to wait; requests that find a free slot are still served, so that a
// server shutting down can drain.
func (a *Activator) Run(ctx context.Context) error {
	defer a.closePools(shuttingDown)
	if a.cfg.Access != nil {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		go a.followAccess(ctx)
	}
	var index uint64
	var backoff time.Duration
	for {
		started := time.Now()
		rt, err := a.routes.Wait(ctx, index)
		if ctx.Err() != nil {
			return nil
		}
		switch {
		case err != nil:
			backoff = a.nextBackoff(backoff)
			a.log.Warn("route table wait failed", "err", err, "retry_in", backoff)
		case rt == nil:
			backoff = a.nextBackoff(backoff)
			a.log.Warn("route source answered no table", "retry_in", backoff)
		default:
			backoff = 0
			// An index below ours means the scheduler started afresh
			// (Nomad's rule): take its table and its index.
			if cur := a.table.Load(); cur == nil || cur.index != rt.Index {
				a.apply(rt)
			}
			index = rt.Index
		}
		pause := backoff
		if pause == 0 {
			pause = a.minPoll - time.Since(started)
		}
		if pause > 0 {
			t := time.NewTimer(pause)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.C:
			}
		}
	}
}

// nextBackoff doubles the pause up to maxBackoff and adds up to 25% jitter,
// so that activators restarted together do not hammer the scheduler in step.
func (a *Activator) nextBackoff(prev time.Duration) time.Duration {
	d := min(max(prev*2, a.minBackoff), a.maxBackoff)
	return d + rand.N(d/4+1)
}

// apply builds a snapshot of rt, swaps it in and lets go of what the new
// table no longer names. Run's goroutine only.
func (a *Activator) apply(rt *api.RouteTable) {
	old := a.table.Load()
	t, live, pools := a.build(rt)
	a.table.Store(t)

	for k, p := range a.pools {
		if pools[k] == nil {
			// Requests on the old snapshot may still reach p: those that
			// find a free slot are served, the others get the refusal.
			// Waiting requests move to the entity that took p's place
			// (see relocate), or get this refusal when none did.
			r := newRefusal("served entity %s of endpoint %s was removed from the route table; retry later", k.name, k.endpoint)
			r.removed = true
			if n := p.breaker.Close(r); n > 0 {
				a.log.Info("waiting requests leave a removed deployment", "endpoint", k.endpoint,
					"served_entity", k.name, "deployment", k.deployment, "requests", n)
			}
		}
	}
	a.pools = pools

	for addr, r := range a.replicas {
		if live[addr] == nil {
			// Requests still running on the old snapshot keep their
			// connections; only idle ones go now.
			r.client.CloseIdleConnections()
		}
	}
	a.replicas = live
	if old != nil {
		a.metrics.forget(old, t)
	}

	replicas := 0
	for _, ep := range t.endpoints {
		for _, en := range ep.entities {
			replicas += en.ready
		}
	}
	a.log.Info("route table applied", "index", t.index, "endpoints", len(t.endpoints), "replicas", replicas)
}

// shuttingDown is what waiting requests get when Run ends.
var shuttingDown = newRefusal("the activator is shutting down; retry later")

// closePools ends every wait with r. Run's goroutine only.
func (a *Activator) closePools(r *refusal) {
	for _, p := range a.pools {
		p.breaker.Close(r)
	}
}
