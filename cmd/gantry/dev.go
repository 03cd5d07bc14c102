package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gantry/gantry/activator"
	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/autoscaler/decider"
	"github.com/gantry/gantry/features"
	"github.com/gantry/gantry/identity"
	"github.com/gantry/gantry/internal/apierr"
	"github.com/gantry/gantry/monitors"
	"github.com/gantry/gantry/scheduler"
	"github.com/gantry/gantry/scheduler/registry"
	"github.com/gantry/gantry/scheduler/routes"
	"github.com/gantry/gantry/scheduler/store"
	"github.com/gantry/gantry/secrets"
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
	maxStorage    int64
	// tables holds inference tables; nil turns them off for the reason in
	// tablesOff. Set by the command, not a flag.
	tables    scheduler.Tables
	tablesOff string
	docker    dockerOptions
	nomad     nomadOptions
	python    string // --python: the interpreter local workers serve Python models with
	llamaLib  string // --llama-lib-dir: the llama.cpp libraries local workers serve GGUF models with
	// auth turns on authentication and authorization (--auth, default
	// on): every API call and invocation needs a bearer token.
	auth bool
	tls  tlsOptions // --tls-cert, --tls-key: the listener serves HTTPS

	// monitors runs drift monitors for the API and the in-process logger;
	// set by the command with tables.
	monitors *monitors.Refresher

	// Limits on what API callers can grow (scheduler/limits.go).
	maxEndpoints, maxProvisionedConcurrency int
	webhookAllow                            []string

	// secretsKeyFile is --secrets-key-file (secrets.go).
	secretsKeyFile string
	// audit takes the control plane's audit events; set by the command.
	audit scheduler.Auditor
	// auditKafka is where gantry scheduler produces them (secrets.go).
	auditKafka kafkaOptions
	// features is feature serving's store (features.go); nil turns it off
	// for the reason in featuresOff. Set by the command.
	features    *scheduler.FeatureStore
	featuresOff string
	// onlineStore is --online-store.
	onlineStore onlineStoreOptions
	// provisioned takes the meter's rows of provisioned time (the
	// capture producer); nil meters nothing. Set by the command.
	provisioned scheduler.ProvisionedWriter
	// unitCosts is --unit-costs; meterPeriod the hidden --meter-period.
	unitCosts   string
	meterPeriod time.Duration
}

func (o *controlPlaneOptions) flags(c *cobra.Command, defaultListen string) {
	c.Flags().StringVar(&o.listen, "listen", defaultListen, "address to serve the API (and, for dev, invocations) on")
	c.Flags().StringVar(&o.dataDir, "data-dir", api.DefaultDataDir, "directory for the endpoint store, the model registry and the identity store")
	c.Flags().BoolVar(&o.auth, "auth", true, "require a bearer token on every API call and invocation; on first start an admin token is written to DATA_DIR/"+api.AdminTokenFile+" (--auth=false: anyone who reaches the port may do anything)")
	c.Flags().StringVar(&o.driver, "driver", "local", "orchestrator that runs workers: "+strings.Join(driverNames, ", "))
	o.pythonFlag(c)
	o.tls.flags(c)
	c.Flags().StringVar(&o.advertiseURL, "advertise-url", "", "URL that clients and workers use to reach this control plane (default http://LISTEN)")
	c.Flags().Int64Var(&o.maxUploadSize, "max-upload-size", registry.DefaultMaxUploadSize, "largest model upload accepted, in bytes")
	c.Flags().Int64Var(&o.maxStorage, "max-model-storage", registry.DefaultMaxStorage, "bytes on disk of every stored model version together; beyond, uploads are refused")
	c.Flags().IntVar(&o.maxEndpoints, "max-endpoints", scheduler.DefaultMaxEndpoints, "most serving endpoints this Gantry holds; creates beyond get 400")
	c.Flags().IntVar(&o.maxProvisionedConcurrency, "max-provisioned-concurrency", scheduler.DefaultMaxProvisionedConcurrency, "ceiling of a served entity's concurrency (max_provisioned_concurrency, workload_size), so of its replicas")
	c.Flags().StringSliceVar(&o.webhookAllow, "webhook-allow", nil, "non-public addresses (IPs, CIDR ranges, host names) that monitor webhooks may reach; default none")
	o.docker.flags(c)
	o.nomad.flags(c)
	o.secretsKeyFlag(c)
	c.Flags().StringVar(&o.unitCosts, "unit-costs", "", "prices of a replica-hour for gantry usage, KEY=PRICE,... over the defaults (CPU/Small=0.05, CPU/Medium=0.10, CPU/Large=0.20, GPU_SMALL=0.53, GPU_MEDIUM=1.01, GPU_LARGE=3.67, MULTIGPU_MEDIUM=5.67)")
	c.Flags().DurationVar(&o.meterPeriod, "meter-period", time.Minute, "length of a row of provisioned time")
	c.Flags().MarkHidden("meter-period") // tests shorten it
}

// controlPlane is a scheduler with its store, registry and driver.
type controlPlane struct {
	ln     net.Listener
	sched  *scheduler.Scheduler
	routes *routes.Table
	secret *secrets.Store
	store  *store.Store
	driver driver
	// id is the identity store; nil with --auth=false.
	id *identity.Service
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
			if opened.id != nil {
				opened.id.Close()
			}
		}
	}()
	o.listen = cp.ln.Addr().String()
	ln, err := o.tls.wrap(cp.ln, log)
	if err != nil {
		return nil, err // the deferred cleanup closes cp.ln
	}
	cp.ln = ln
	if cp.store, err = store.Open(filepath.Join(o.dataDir, "state.db")); err != nil {
		return nil, err
	}
	reg, err := registry.Open(filepath.Join(o.dataDir, "models"))
	if err != nil {
		return nil, err
	}
	reg.MaxUploadSize, reg.MaxStorage = o.maxUploadSize, o.maxStorage
	var auth scheduler.Auth // a nil *identity.Service in it would not be nil
	if cp.id, err = openIdentity(o, log); err != nil {
		return nil, err
	}
	if cp.id != nil {
		auth = cp.id
	}
	if cp.secret, err = openSecretStore(o, log); err != nil {
		return nil, err
	}
	// The key of deployments' credentials (artifact tokens): made on
	// first start next to the data, 0600, stable across restarts so that
	// jobs submitted before one still fetch their models.
	var deploymentKey []byte
	if cp.id != nil {
		if deploymentKey, _, err = secrets.LoadKey(filepath.Join(o.dataDir, "deployment-key"), true); err != nil {
			return nil, fmt.Errorf("deployment key: %w", err)
		}
	}

	// The driver tells the scheduler, built after it, about status changes.
	var changed relay
	cp.driver, err = newDriver(o, log, metrics, changed.send)
	if err != nil {
		return nil, err
	}
	base := o.advertiseURL
	if base == "" {
		base = o.tls.scheme() + "://" + o.listen
	}
	allow, err := monitors.ParseWebhookAllow(o.webhookAllow)
	if err != nil {
		return nil, fmt.Errorf("--webhook-allow: %w", err)
	}
	if o.monitors == nil && o.tables != nil {
		o.monitors = monitors.NewRefresher(o.tables, &monitors.Alerter{Logger: log, Allow: allow})
	}
	costs, err := scheduler.ParseUnitCosts(o.unitCosts)
	if err != nil {
		return nil, fmt.Errorf("--unit-costs: %w", err)
	}
	cfg := scheduler.Config{
		Store: cp.store, Registry: reg, Orchestrator: cp.driver, Routes: cp.routes,
		BaseURL: base, Logger: log, Tables: o.tables, TablesOff: o.tablesOff, Monitors: o.monitors,
		MaxEndpoints: o.maxEndpoints, MaxProvisionedConcurrency: o.maxProvisionedConcurrency, WebhookAllow: allow,
		Secrets: cp.secret, Audit: o.audit, Features: o.features, FeaturesOff: o.featuresOff,
		Auth: auth, DeploymentKey: deploymentKey,
		UnitCosts: costs, MeterPeriod: o.meterPeriod,
	}
	if o.provisioned != nil { // a nil *capture.Capturer in it would not be nil
		cfg.Provisioned = o.provisioned
	}
	cp.sched, err = scheduler.New(cfg)
	if err != nil {
		return nil, err
	}
	changed.connect(cp.sched.Notify)
	return cp, nil
}

// openIdentity opens the identity store in the data dir, and on first
// start makes the admin service principal and writes its token to
// DATA_DIR/admin-token (0600), and the components' service principal's
// to DATA_DIR/components-token; nil with --auth=false. The log says where
// each token is, never what it is.
func openIdentity(o *controlPlaneOptions, log *slog.Logger) (*identity.Service, error) {
	if !o.auth {
		log.Warn("authentication is off (--auth=false): anyone who reaches this port may create, read and delete every endpoint, read every inference table and invoke every model")
		return nil, nil
	}
	id, err := identity.Open(filepath.Join(o.dataDir, "identity.db"), nil)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(o.dataDir, api.AdminTokenFile)
	wrote, err := id.Bootstrap(path)
	if err != nil {
		id.Close()
		return nil, err
	}
	if wrote {
		log.Info("created the admin service principal "+identity.BootstrapName+"; its token is in the file (clients in this directory use it when GANTRY_TOKEN is unset)", "admin_token_file", path)
	} else {
		log.Info("authentication is on", "admin_token_file", path)
	}
	// The components' token, for activators, autoscalers and loggers run
	// apart: they need no admin's.
	cpath := filepath.Join(o.dataDir, api.ComponentsTokenFile)
	if wrote, err = id.BootstrapComponents(cpath); err != nil {
		id.Close()
		return nil, err
	}
	if wrote {
		log.Info("created the components' service principal "+identity.ComponentsName+"; give its token to gantry activator, autoscaler and logger as --token", "components_token_file", cpath)
	}
	return id, nil
}

// close stops the workers, giving in-flight requests time to finish.
func (cp *controlPlane) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 35*time.Second)
	defer cancel()
	cp.driver.Close(ctx)
	cp.store.Close()
	cp.secret.Close()
	if cp.id != nil {
		cp.id.Close()
	}
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
	// buffered bounds the request bodies in memory over all entities.
	buffered int64
}

func (o *queueOptions) flags(c *cobra.Command) {
	c.Flags().IntVar(&o.depth, "queue-depth", activator.DefaultQueueDepth, "requests held per served entity while it has no free replica; beyond, 503")
	c.Flags().Int64Var(&o.bytes, "queue-bytes", activator.DefaultQueueBytes, "bytes of request bodies held per served entity; beyond, 503")
	c.Flags().DurationVar(&o.timeout, "queue-timeout", activator.DefaultQueueTimeout, "longest a request waits for a replica; then 504")
	bufferedFlag(c, &o.buffered)
}

func bufferedFlag(c *cobra.Command, v *int64) {
	c.Flags().Int64Var(v, "max-buffered-bytes", activator.DefaultMaxBufferedBytes,
		"bytes of invocation bodies held in memory at once, over all endpoints; beyond, 503")
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
	o.onlineStore.flags(c, true)
	o.onlineStore.cacheFlags(c)
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
	o.audit = auditor(inf.capture, log)
	if inf.capture != nil {
		o.provisioned = inf.capture
	}
	stopRedis, off, err := devOnlineStore(ctx, o.dataDir, &o.onlineStore, log)
	if err != nil {
		return err
	}
	defer stopRedis()
	var look features.Looker // nil: feature serving is off
	if o.featuresOff = off; off == "" {
		fs, closeFeatures, err := schedulerFeatures(ctx, &o.onlineStore, &io.clickhouse, log)
		if err != nil {
			return err
		}
		defer closeFeatures()
		o.features, look = fs, o.onlineStore.looker(fs.Store, reg)
	}
	cp, err := openControlPlane(o, log, reg)
	if err != nil {
		return err
	}
	defer cp.close()

	// The activator pokes the autoscaler, built after it, which reads the
	// activator's load.
	var pokes relay
	var access activator.AccessSource // nil: --auth=false
	if cp.id != nil {
		access = accessFunc(cp.sched.AccessWait)
	}
	act := newActivator(cp.routes, access, pokes.send, inf.capture, look, qo, log, reg)
	asc := newAutoscaler(spec, cp.sched, activatorSamples(act), log, reg)
	pokes.connect(asc.Poke)
	control := http.NewServeMux()
	control.Handle("/", cp.sched.Handler()) // the API, the console at /, and API.md's JSON errors for every other path
	health(control, reg, act.Ready)
	front := newFront(act.Handler, control, o.maxUploadSize)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go cp.sched.Run(ctx)
	go act.Run(ctx)
	go asc.Run(ctx)
	captured := inf.run(ctx, io, log, reg)
	if inf.db != nil && io.runLogger {
		inf.goBackground(func() { runMonitors(ctx, &io.monitors, o.monitors, cp.sched.Monitors, log) })
	}
	log.Info("gantry dev is up", "url", o.tls.scheme()+"://"+o.listen, "data_dir", o.dataDir)
	serveErr := serve(ctx, cp.ln, fastServer{front})
	log.Info("shutting down")
	// In order, after the last answers: their shadows, their records into
	// Kafka; then the logger and the monitors stop, before the deferred
	// closes stop the broker, ClickHouse and the workers under them.
	sctx, scancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer scancel()
	act.WaitShadows(sctx)
	captured()
	cancel()
	inf.wait()
	return serveErr
}

// Limits of the fasthttp servers in front of the activator: gantry dev's,
// which serves the control plane too, and gantry activator's. The README's
// Limits section lists them.
const (
	// headerTimeout bounds a new connection's wait for its first request,
	// and a request's headers from their first byte.
	headerTimeout = 10 * time.Second
	// bodyTimeout bounds a request body from the end of its headers: a
	// 16 MiB invocation in a minute is 280 KB/s.
	bodyTimeout = time.Minute
	// uploadTimeout is bodyTimeout for model uploads, whose bodies may be
	// up to --max-upload-size (1 GiB in 15 minutes is 1.2 MB/s).
	uploadTimeout = 15 * time.Minute
	// idleTimeout bounds a keep-alive connection's wait for its next
	// request.
	idleTimeout = 90 * time.Second
	// maxControlBody bounds control-plane bodies other than uploads (the
	// scheduler reads configs of up to 1 MiB) and bodies sent to /healthz
	// and /metrics.
	maxControlBody = 16 << 20
)

// newFront is the fasthttp server in front of the activator's handler
// invoke and the net/http handler control, which gets every path outside
// /serving-endpoints/. Bodies are streamed (StreamRequestBody), so no
// buffer is sized by what a client claims: the activator reads an
// invocation as it arrives, up to its 16 MiB, under its memory bound
// (--max-buffered-bytes); control is given the connection to read from, so
// that an upload goes to disk as it arrives, up to maxUpload (0: control
// takes no uploads, and their path gets no upload's limits). A
// Content-Length over its path's limit is refused before a byte of the
// body is read (see refuseDeclared).
func newFront(invoke fasthttp.RequestHandler, control http.Handler, maxUpload int64) *fasthttp.Server {
	lim := frontLimits{upload: maxUpload}
	return &fasthttp.Server{
		Handler:           lim.handler(invoke, controlHandler(control, lim)),
		StreamRequestBody: true,
		HeaderReceived:    lim.headerReceived,
		ReadTimeout:       headerTimeout, // headerReceived sets the body's
		IdleTimeout:       idleTimeout,
		ErrorHandler:      frontError,
		// fasthttp's errors otherwise quote up to 4 KiB of the request,
		// headers (and so bearer tokens) included; frontLog drops what
		// SecureErrorLogMessage leaves (the header line that failed).
		SecureErrorLogMessage: true,
		Logger:                frontLog{},
		// Held requests would otherwise keep a 4 KiB read buffer each
		// while they wait for a cold start. (With StreamRequestBody,
		// fasthttp keeps it anyway while a handler runs.)
		ReduceMemoryUsage: true,
		Name:              "gantry",
		NoDefaultDate:     true,
	}
}

// frontLimits are the body limits of the front server's paths.
type frontLimits struct {
	upload int64 // model uploads; 0: none served
}

// limit is the largest body a request for method and path (as sent) may
// carry, and whether it is a model upload.
func (l frontLimits) limit(method, path []byte) (int64, bool) {
	switch {
	case isInvocation(path):
		return activator.DefaultMaxRequestBodySize, false
	case l.upload > 0 && isUpload(method, path):
		return l.upload, true
	}
	return maxControlBody, false
}

// refusedLength is the header under which headerReceived hands a refused
// Content-Length to the handler; headerReceived drops any a client sent.
const refusedLength = "X-Gantry-Refused-Length"

// headerReceived runs once a request's headers are in, before fasthttp
// reads any of the body. It gives the body its deadline, and refuses a
// Content-Length over the path's limit: fasthttp with StreamRequestBody
// would otherwise wait for the first 8 KiB of the body before calling the
// handler, so a client claiming 1 GiB and sending nothing would hold its
// connection until the deadline. The request goes on to the handler with
// no body, marked for a 413, and its connection closes after the answer
// (the body would otherwise be read as the next request).
func (l frontLimits) headerReceived(h *fasthttp.RequestHeader) fasthttp.RequestConfig {
	h.Del(refusedLength)
	limit, upload := l.limit(h.Method(), requestPath(h.RequestURI()))
	if n := h.ContentLength(); int64(n) > limit {
		h.Set(refusedLength, strconv.Itoa(n))
		h.SetContentLength(0)
		h.Del(fasthttp.HeaderExpect) // no 100 Continue for a body refused
		h.SetConnectionClose()
	}
	if upload {
		return fasthttp.RequestConfig{ReadTimeout: uploadTimeout}
	}
	return fasthttp.RequestConfig{ReadTimeout: bodyTimeout}
}

var invocationsPrefix = []byte("/serving-endpoints/")

// handler sends invocations to the activator and the rest to the control
// plane, so that one address serves both, after answering 413 to what
// headerReceived refused. It goes by the path as sent, as the activator
// matches it: fasthttp's ctx.Path() is decoded and normalized, and would
// send /api/..%2fserving-endpoints/x elsewhere than the path says.
func (l frontLimits) handler(invoke, control fasthttp.RequestHandler) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		path := ctx.URI().PathOriginal()
		if n := ctx.Request.Header.Peek(refusedLength); n != nil {
			limit, _ := l.limit(ctx.Method(), path)
			apierr.WriteFast(ctx, api.Errorf(api.ErrPayloadTooLarge,
				"request body is %s bytes; the limit is %d", n, limit))
			return
		}
		if isInvocation(path) {
			invoke(ctx)
			return
		}
		control(ctx)
	}
}

// isUpload reports whether method and the path as sent are a model upload,
// POST /api/2.0/gantry/models/{name}/versions.
func isUpload(method, path []byte) bool {
	name, ok := bytes.CutPrefix(path, []byte("/api/2.0/gantry/models/"))
	if !ok || string(method) != fasthttp.MethodPost {
		return false
	}
	name, ok = bytes.CutSuffix(name, []byte("/versions"))
	return ok && len(name) > 0 && bytes.IndexByte(name, '/') < 0
}

// requestPath is the path of a request target as sent: origin form
// (/path?query) or absolute form (http://host/path?query).
func requestPath(uri []byte) []byte {
	if len(uri) > 0 && uri[0] != '/' {
		if _, rest, ok := bytes.Cut(uri, []byte("://")); ok {
			uri = nil
			if i := bytes.IndexByte(rest, '/'); i >= 0 {
				uri = rest[i:]
			}
		}
	}
	if i := bytes.IndexAny(uri, "?#"); i >= 0 {
		uri = uri[:i]
	}
	return uri
}

// bodyKey is the user value under which controlHandler hands the body
// stream to the net/http side.
type bodyKey struct{}

// controlHandler serves the net/http handler h on the front server without
// buffering request bodies. fasthttpadaptor reads the whole body with
// ctx.PostBody() before h runs, which for a model upload would hold up to
// --max-upload-size in memory; here h reads the body from the connection
// as h consumes it, up to the path's limit.
func controlHandler(h http.Handler, lim frontLimits) fasthttp.RequestHandler {
	adapted := fasthttpadaptor.NewFastHTTPHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if b, ok := r.Context().Value(bodyKey{}).(*streamedBody); ok {
			r.Body, r.ContentLength = b, b.length
		}
		h.ServeHTTP(w, r)
	}))
	return func(ctx *fasthttp.RequestCtx) {
		limit, _ := lim.limit(ctx.Method(), ctx.URI().PathOriginal())
		declared := int64(ctx.Request.Header.ContentLength()) // -1: chunked
		if !ctx.Request.IsBodyStream() {
			adapted(ctx)
			return
		}
		// One byte over the limit passes: handlers that bound a body
		// themselves read limit+1 to see that it is over, and answer in
		// their own words.
		b := &streamedBody{r: ctx.RequestBodyStream(), left: limit + 1, limit: limit, length: declared}
		ctx.SetUserValue(bodyKey{}, b)
		// Takes the stream off the request, so that the adaptor's
		// PostBody() finds no body to read; the stream itself stays the
		// server's until this handler returns.
		ctx.Request.SetBodyRaw(nil)
		adapted(ctx)
		// A handler that flushed its answer may still run; the stream is
		// the server's again from here.
		b.close()
		ctx.RemoveUserValue(bodyKey{})
	}
}

// streamedBody is a request body read from the connection by a net/http
// handler, up to left bytes (then *http.MaxBytesError, as with
// http.MaxBytesReader).
type streamedBody struct {
	mu     sync.Mutex // guards r and left
	r      io.Reader  // nil once closed
	left   int64
	limit  int64
	length int64 // the declared length; -1 when chunked
}

var errBodyGone = errors.New("the request body is no longer readable: the request was answered")

func (b *streamedBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.r == nil {
		return 0, errBodyGone
	}
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1] // one byte over, to see that it is over
	}
	n, err := b.r.Read(p)
	if int64(n) > b.left {
		n = int(b.left)
		b.left = 0
		return n, &http.MaxBytesError{Limit: b.limit}
	}
	b.left -= int64(n)
	return n, err
}

// Close is a no-op: the connection is the server's to close or reuse.
func (b *streamedBody) Close() error { return nil }

func (b *streamedBody) close() {
	b.mu.Lock()
	b.r = nil
	b.mu.Unlock()
}

// frontLog is fasthttp's logger on the front servers. fasthttp formats its
// errors with the bytes that failed to parse (a header line, or the whole
// buffer), so only the message's fixed words and the connection's
// addresses reach the log.
type frontLog struct{}

func (frontLog) Printf(format string, args ...any) {
	msg, _, _ := strings.Cut(format, "%")
	var attrs []any
	for _, a := range args {
		if addr, ok := a.(net.Addr); ok {
			attrs = append(attrs, "addr", addr.String())
		}
	}
	slog.Warn("front server: "+strings.TrimRight(msg, " :<->"), attrs...)
}

// frontError answers errors fasthttp hits before a handler runs (a
// malformed request, headers too large or too slow) in API.md's shape. The
// message never quotes err: fasthttp's errors can hold up to 4 KiB of the
// raw request, headers and their tokens included.
func frontError(ctx *fasthttp.RequestCtx, err error) {
	var ne net.Error
	var small *fasthttp.ErrSmallBuffer
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		apierr.WriteFast(ctx, api.Errorf(api.ErrPayloadTooLarge, "request body is over the limit"))
	case errors.As(err, &small):
		apierr.WithStatus(fasthttp.StatusRequestHeaderFieldsTooLarge,
			api.Errorf(api.ErrMalformedRequest, "request headers are too large")).WriteFast(ctx)
	case errors.As(err, &ne) && ne.Timeout():
		apierr.WithStatus(fasthttp.StatusRequestTimeout,
			api.Errorf(api.ErrMalformedRequest, "the request did not arrive in time")).WriteFast(ctx)
	default:
		apierr.WriteFast(ctx, api.Errorf(api.ErrMalformedRequest, "the request is not valid HTTP/1.1"))
	}
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
