package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gantry/gantry/activator"
	"github.com/gantry/gantry/autoscaler"
	"github.com/gantry/gantry/autoscaler/decider"
	"github.com/gantry/gantry/monitors"
	"github.com/gantry/gantry/scheduler"
	"github.com/gantry/gantry/scheduler/registry"
	"github.com/gantry/gantry/scheduler/routes"
	"github.com/gantry/gantry/scheduler/store"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"
)

// controlPlaneOptions are the flags of every command that runs a scheduler.
type controlPlaneOptions struct {
	listen        string
	dataDir       string
	driver        string
	advertiseURL  string
	maxUploadSize int64
	// tables holds inference tables; nil turns them off for the reason in
	// tablesOff. Set by the command, not a flag.
	tables    scheduler.Tables
	tablesOff string
	docker    dockerOptions
	nomad     nomadOptions

	// monitors runs drift monitors for the API and the in-process logger;
	// set by the command with tables.
	monitors *monitors.Refresher

	// Limits on what API callers can grow (scheduler/limits.go).
	maxEndpoints, maxProvisionedConcurrency int
	webhookAllow                            []string
}

func (o *controlPlaneOptions) flags(c *cobra.Command, defaultListen string) {
	c.Flags().StringVar(&o.listen, "listen", defaultListen, "address to serve the API (and, for dev, invocations) on")
	c.Flags().StringVar(&o.dataDir, "data-dir", ".gantry", "directory for the endpoint store and the model registry")
	c.Flags().StringVar(&o.driver, "driver", "local", "orchestrator that runs workers: "+strings.Join(driverNames, ", "))
	c.Flags().StringVar(&o.advertiseURL, "advertise-url", "", "URL that clients and workers use to reach this control plane (default http://LISTEN)")
	c.Flags().Int64Var(&o.maxUploadSize, "max-upload-size", registry.DefaultMaxUploadSize, "largest model upload accepted, in bytes")
	c.Flags().IntVar(&o.maxEndpoints, "max-endpoints", scheduler.DefaultMaxEndpoints, "most serving endpoints this Gantry holds; creates beyond get 400")
	c.Flags().IntVar(&o.maxProvisionedConcurrency, "max-provisioned-concurrency", scheduler.DefaultMaxProvisionedConcurrency, "ceiling of a served entity's concurrency (max_provisioned_concurrency, workload_size), so of its replicas")
	c.Flags().StringSliceVar(&o.webhookAllow, "webhook-allow", nil, "non-public addresses (IPs, CIDR ranges, host names) that monitor webhooks may reach; default none")
	o.docker.flags(c)
	o.nomad.flags(c)
}

// controlPlane is a scheduler with its store, registry and driver.
type controlPlane struct {
	ln     net.Listener
	sched  *scheduler.Scheduler
	routes *routes.Table
	store  *store.Store
	driver driver
}

// openControlPlane listens on o.listen (first, so that :0 resolves to the
// address the scheduler advertises) and opens the store, registry and driver.
func openControlPlane(o *controlPlaneOptions, log *slog.Logger, metrics prometheus.Registerer) (cp *controlPlane, err error) {
	if err := os.MkdirAll(o.dataDir, 0o755); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	cp = &controlPlane{routes: routes.NewTable()}
	if cp.ln, err = net.Listen("tcp", o.listen); err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	// The error returns set cp to nil: the cleanup keeps its own pointer.
	opened := cp
	defer func() {
		if err != nil {
			opened.ln.Close()
			if opened.store != nil {
				opened.store.Close()
			}
		}
	}()
	o.listen = cp.ln.Addr().String()
	if cp.store, err = store.Open(filepath.Join(o.dataDir, "state.db")); err != nil {
		return nil, err
	}
	reg, err := registry.Open(filepath.Join(o.dataDir, "models"))
	if err != nil {
		return nil, err
	}
	reg.MaxUploadSize = o.maxUploadSize

	// The driver and the scheduler point at each other: the driver tells the
	// scheduler about status changes. sched is set before anything runs.
	var sched atomic.Pointer[scheduler.Scheduler]
	cp.driver, err = newDriver(o, log, metrics, func(id string) {
		if s := sched.Load(); s != nil {
			s.Notify(id)
		}
	})
	if err != nil {
		return nil, err
	}
	base := o.advertiseURL
	if base == "" {
		base = "http://" + o.listen
	}
	allow, err := monitors.ParseWebhookAllow(o.webhookAllow)
	if err != nil {
		return nil, fmt.Errorf("--webhook-allow: %w", err)
	}
	if o.monitors == nil && o.tables != nil {
		o.monitors = monitors.NewRefresher(o.tables, &monitors.Alerter{Logger: log, Allow: allow})
	}
	cp.sched, err = scheduler.New(scheduler.Config{
		Store: cp.store, Registry: reg, Orchestrator: cp.driver, Routes: cp.routes,
		BaseURL: base, Logger: log, Tables: o.tables, TablesOff: o.tablesOff, Monitors: o.monitors,
		MaxEndpoints: o.maxEndpoints, MaxProvisionedConcurrency: o.maxProvisionedConcurrency, WebhookAllow: allow,
	})
	if err != nil {
		return nil, err
	}
	sched.Store(cp.sched)
	return cp, nil
}

// close stops the workers, giving in-flight requests time to finish.
func (cp *controlPlane) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 35*time.Second)
	defer cancel()
	cp.driver.Close(ctx)
	cp.store.Close()
}

func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// scalingOptions are the autoscaler's flags.
type scalingOptions struct {
	stableWindow, panicWindow, grace time.Duration
}

func (o *scalingOptions) flags(c *cobra.Command) {
	def := decider.DefaultSpec()
	c.Flags().DurationVar(&o.stableWindow, "stable-window", def.StableWindow, "window over which load is averaged to size a deployment")
	c.Flags().DurationVar(&o.panicWindow, "panic-window", def.PanicWindow, "short window that triggers fast scale-up on a burst")
	c.Flags().DurationVar(&o.grace, "scale-to-zero-grace", def.ScaleToZeroGrace, "idle time after the stable window empties before an entity scales to zero")
}

func (o *scalingOptions) spec() (*decider.Spec, error) {
	s := decider.DefaultSpec()
	s.StableWindow, s.PanicWindow, s.ScaleToZeroGrace = o.stableWindow, o.panicWindow, o.grace
	s.TargetPerReplica = activator.DefaultConcurrency
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("autoscaler flags: %w", err)
	}
	return &s, nil
}

// queueOptions are the activator's cold-start queue flags.
type queueOptions struct {
	depth   int
	bytes   int64
	timeout time.Duration
}

func (o *queueOptions) flags(c *cobra.Command) {
	c.Flags().IntVar(&o.depth, "queue-depth", activator.DefaultQueueDepth, "requests held per served entity while it has no free replica; beyond, 503")
	c.Flags().Int64Var(&o.bytes, "queue-bytes", activator.DefaultQueueBytes, "bytes of request bodies held per served entity; beyond, 503")
	c.Flags().DurationVar(&o.timeout, "queue-timeout", activator.DefaultQueueTimeout, "longest a request waits for a replica; then 504")
}

func devCmd() *cobra.Command {
	var o controlPlaneOptions
	var so scalingOptions
	var qo queueOptions
	var io devInferenceOptions
	c := &cobra.Command{
		Use:   "dev",
		Short: "Run scheduler, activator, autoscaler and workers in one process, with embedded defaults",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDev(cmd.Context(), &o, &so, &qo, &io)
		},
	}
	o.flags(c, "127.0.0.1:8080")
	so.flags(c)
	qo.flags(c)
	io.flags(c)
	return c
}

func runDev(ctx context.Context, o *controlPlaneOptions, so *scalingOptions, qo *queueOptions, io *devInferenceOptions) error {
	spec, err := so.spec()
	if err != nil {
		return err
	}
	log := slog.Default()
	reg := newRegistry()
	inf, err := startDevInference(ctx, o.dataDir, io, log, reg)
	if err != nil {
		return err
	}
	defer inf.close()
	if inf.db != nil {
		o.tables = inf.db // openControlPlane makes o.monitors over it
	}
	o.tablesOff = inf.off
	cp, err := openControlPlane(o, log, reg)
	if err != nil {
		return err
	}
	defer cp.close()

	// The autoscaler reads the activator's load and the activator pokes the
	// autoscaler: act is set before either runs.
	var act *activator.Activator
	asc := autoscaler.New(autoscaler.Config{Spec: spec, Logger: log, Metrics: autoscaler.NewMetrics(reg)}, cp.sched, func() []autoscaler.Sample {
		return samples(act.Stats())
	})
	acfg := activator.Config{
		Logger: log, Metrics: activator.NewMetrics(reg), Poke: asc.Poke,
		QueueDepth: qo.depth, QueueBytes: qo.bytes, QueueTimeout: qo.timeout,
	}
	if inf.capture != nil {
		acfg.Capture = inf.capture
	}
	act = activator.New(acfg, cp.routes)
	control := http.NewServeMux()
	control.Handle("/api/", cp.sched.Handler())
	health(control, reg, act.Ready)
	front := &fasthttp.Server{
		Handler:            devHandler(act.Handler, fasthttpadaptor.NewFastHTTPHandler(control)),
		MaxRequestBodySize: int(max(o.maxUploadSize, activator.DefaultMaxRequestBodySize)) + 1,
		ErrorHandler:       frontError,
		IdleTimeout:        90 * time.Second,
		// Held requests would otherwise keep a 4 KiB read buffer each
		// while they wait for a cold start.
		ReduceMemoryUsage: true,
		Name:              "gantry",
		NoDefaultDate:     true,
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go cp.sched.Run(ctx)
	go act.Run(ctx)
	go asc.Run(ctx)
	captured := inf.run(ctx, io, log, reg)
	if inf.db != nil && io.runLogger {
		inf.goBackground(func() { runMonitors(ctx, &io.monitors, o.monitors, cp.sched.Monitors, log) })
	}
	serving := make(chan error, 1)
	go func() { serving <- front.Serve(cp.ln) }()
	log.Info("gantry dev is up", "url", "http://"+o.listen, "data_dir", o.dataDir)
	var serveErr error
	select {
	case serveErr = <-serving:
	case <-ctx.Done():
		log.Info("shutting down")
	}
	// In order: the last answers, their shadows, their records into
	// Kafka; then the logger and the monitors stop, before the deferred
	// closes stop the broker, ClickHouse and the workers under them.
	sctx, scancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer scancel()
	if serveErr == nil {
		serveErr = front.ShutdownWithContext(sctx)
	}
	act.WaitShadows(sctx)
	captured()
	cancel()
	inf.wait()
	return serveErr
}

func samples(stats []activator.EntityStats) []autoscaler.Sample {
	out := make([]autoscaler.Sample, len(stats))
	for i, s := range stats {
		out[i] = autoscaler.Sample{Deployment: s.Deployment, Concurrency: s.Concurrency}
	}
	return out
}

var invocationsPrefix = []byte("/serving-endpoints/")

// devHandler sends invocations to the activator and the rest to the control
// plane, so that one address serves both in dev mode.
func devHandler(invoke, control fasthttp.RequestHandler) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		if bytes.HasPrefix(ctx.Path(), invocationsPrefix) {
			invoke(ctx)
			return
		}
		control(ctx)
	}
}

// frontError answers errors fasthttp hits before a handler runs (a body
// over the server's limit, a malformed request) in API.md's shape.
func frontError(ctx *fasthttp.RequestCtx, err error) {
	status, code := fasthttp.StatusBadRequest, "MALFORMED_REQUEST"
	if errors.Is(err, fasthttp.ErrBodyTooLarge) {
		status, code = fasthttp.StatusRequestEntityTooLarge, "PAYLOAD_TOO_LARGE"
	}
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	fmt.Fprintf(ctx, `{"error_code":%q,"message":%q}`, code, err.Error())
}

// health adds /healthz, /readyz and /metrics, which every component serves.
func health(mux *http.ServeMux, reg *prometheus.Registry, ready func() bool) {
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
}
