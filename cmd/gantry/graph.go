package main

// The component graph, the same in gantry dev and in the split commands:
//
//	driver ──status──▶ scheduler ──route table──▶ activator ──load, pokes──▶ autoscaler
//	   ▲                   ▲                                                    │
//	   └──────ensure───────┴──────────────────── scale ────────────────────────┘
//
// gantry dev links the components in process (the route table, the
// scheduler's Targets and Scale, the activator's Stats); gantry scheduler,
// activator and autoscaler link them over HTTP (activator.HTTPRoutes,
// activator.Reporter, autoscaler.Collector and RemoteScheduler). Each
// component is built by one function here from its options and its links,
// whichever way they go. The graph's back edges (a driver's status changes
// to the scheduler, a request waiting at zero to the autoscaler) go
// through a relay: the sender is built first with the relay, and the
// receiver is connected once it exists.

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/gantry/gantry/activator"
	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/autoscaler"
	"github.com/gantry/gantry/autoscaler/decider"
	"github.com/gantry/gantry/features"
	"github.com/gantry/gantry/loggers/capture"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
)

// relay carries a fire-and-forget notice naming a deployment from a
// component built before its receiver. connect sets the receiver before
// anything runs; a send before that is dropped, which is safe because
// every receiver also acts on a timer (the scheduler's resync, the
// autoscaler's tick).
type relay struct{ to atomic.Pointer[func(string)] }

func (s *relay) send(deployment string) {
	if f := s.to.Load(); f != nil {
		(*f)(deployment)
	}
}

func (s *relay) connect(f func(string)) { s.to.Store(&f) }

// routeSource is how an activator follows the route table: the
// scheduler's in process, activator.HTTPRoutes across processes.
type routeSource interface {
	Wait(ctx context.Context, index uint64) (*api.RouteTable, error)
}

// accessFunc is an activator.AccessSource made of a function: the
// scheduler's in process (Scheduler.AccessWait).
type accessFunc func(ctx context.Context, index uint64) (*api.AccessSnapshot, error)

func (f accessFunc) Wait(ctx context.Context, index uint64) (*api.AccessSnapshot, error) {
	return f(ctx, index)
}

// newActivator builds the activator of either graph: routes is the
// scheduler's route table, access its access snapshot (nil: invocations
// are not checked), poke reaches the autoscaler, records (nil: off) takes
// invocation records for inference tables, look (nil: off) looks up
// features in the online store.
func newActivator(routes routeSource, access activator.AccessSource, poke func(string), records *capture.Capturer, look features.Looker, qo *queueOptions, log *slog.Logger, reg prometheus.Registerer) *activator.Activator {
	cfg := activator.Config{
		Logger: log, Metrics: activator.NewMetrics(reg), Poke: poke,
		QueueDepth: qo.depth, QueueBytes: qo.bytes, QueueTimeout: qo.timeout,
		MaxBufferedBytes: qo.buffered, Access: access, Features: look,
	}
	if records != nil { // not a nil *Capturer in a non-nil interface
		cfg.Capture = records
	}
	return activator.New(cfg, routes)
}

// targets is how the autoscaler reads and sizes deployments: the
// scheduler in process, autoscaler.RemoteScheduler across processes.
type targets interface {
	Targets() []autoscaler.Target
	Scale(deployment string, replicas int) error
}

// newAutoscaler builds the autoscaler of either graph: sched is the
// scheduler, samples the activators' load.
func newAutoscaler(spec *decider.Spec, sched targets, samples func() []autoscaler.Sample, log *slog.Logger, reg prometheus.Registerer) *autoscaler.Autoscaler {
	return autoscaler.New(autoscaler.Config{Spec: spec, Logger: log, Metrics: autoscaler.NewMetrics(reg)}, sched, samples)
}

// activatorSamples reads an in-process activator's load for the autoscaler.
func activatorSamples(act *activator.Activator) func() []autoscaler.Sample {
	return func() []autoscaler.Sample {
		stats := act.Stats()
		out := make([]autoscaler.Sample, len(stats))
		for i, s := range stats {
			out[i] = autoscaler.Sample{Deployment: s.Deployment, Concurrency: s.Concurrency}
		}
		return out
	}
}

// shutdownGrace is how long a component's server gives the requests in
// flight to finish once it is told to stop.
const shutdownGrace = 30 * time.Second

// server is an HTTP server of either library.
type server interface {
	Serve(net.Listener) error
	Shutdown(context.Context) error
}

// fastServer gives a fasthttp server net/http's Shutdown.
type fastServer struct{ *fasthttp.Server }

func (s fastServer) Shutdown(ctx context.Context) error { return s.ShutdownWithContext(ctx) }

// serve is every component's one shutdown policy: it serves srv on ln until
// ctx ends or serving fails, then stops taking connections and gives the
// requests in flight shutdownGrace to finish.
func serve(ctx context.Context, ln net.Listener, srv server) error {
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	err := srv.Shutdown(sctx)
	<-served
	return err
}

// newHTTPServer is the net/http server of the components that are not
// behind the front server (scheduler, autoscaler, logger), with the
// front's header, body and idle timeouts.
func newHTTPServer(h http.Handler) *http.Server {
	return &http.Server{Handler: withBodyTimeout(h), ReadHeaderTimeout: headerTimeout, IdleTimeout: idleTimeout}
}
