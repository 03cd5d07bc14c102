// Package activator is Gantry's data plane. It follows the route table the
// scheduler publishes and proxies every invocation to a ready replica of the
// served entity that the endpoint's traffic split picks.
//
// Who does what:
//   - Run, on the caller's goroutine, is the only writer. It waits for route
//     tables, builds an immutable snapshot of each one and swaps it in with
//     one atomic store.
//   - Handler runs on fasthttp's server goroutines, one per request. It reads
//     the current snapshot with one atomic load and takes no lock; replica
//     load and penalties are atomic counters.
//   - Timer goroutines (time.AfterFunc) lift replica penalties.
package activator

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/prometheus/client_golang/prometheus"
)

// Defaults of Config's fields.
const (
	DefaultMaxRequestBodySize = 16 << 20
	DefaultTimeout            = 297 * time.Second
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
	// shape instead of API.md's.
	MaxRequestBodySize int

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

	// table is the snapshot Handler reads. Run is its only writer.
	table atomic.Pointer[table]

	// replicas holds every replica of the current table by address, so that
	// connection pools, load counts and penalties outlive table updates.
	// Only Run's goroutine touches it.
	replicas map[string]*replica

	// Tunables that tests shrink; New sets them.
	penalty    time.Duration // how long a replica whose connection failed is avoided
	minPoll    time.Duration // least time between the starts of two route waits
	minBackoff time.Duration // first pause after a failed route wait; doubles up to maxBackoff
	maxBackoff time.Duration

	// notFound counts answers for paths and endpoints that do not exist, under
	// empty labels: naming unknown endpoints would let any client mint series.
	notFound prometheus.Counter
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
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(prometheus.NewRegistry())
	}
	return &Activator{
		cfg:        cfg,
		routes:     routes,
		log:        cfg.Logger,
		metrics:    cfg.Metrics,
		replicas:   map[string]*replica{},
		penalty:    3 * time.Second, // fasthttp lbclient's penaltyDuration
		minPoll:    50 * time.Millisecond,
		minBackoff: 100 * time.Millisecond,
		maxBackoff: 10 * time.Second,
		notFound:   cfg.Metrics.requests.WithLabelValues("", "", "404"),
	}
}

// Ready reports whether the activator has received a first route table.
func (a *Activator) Ready() bool { return a.table.Load() != nil }

// Run follows the route table until ctx ends, then returns nil; call it once
// per Activator, in a goroutine of its own. Errors from
// the route source are logged and retried with exponential backoff. Tables
// are snapshots, not diffs, so Run starts at most one wait per minPoll: a
// source that answers at once cannot make it spin, and a burst of changes
// costs one rebuild per minPoll.
func (a *Activator) Run(ctx context.Context) error {
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
	t, live := a.build(rt)
	a.table.Store(t)

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
			replicas += len(en.replicas)
		}
	}
	a.log.Info("route table applied", "index", t.index, "endpoints", len(t.endpoints), "replicas", replicas)
}
