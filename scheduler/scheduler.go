// Package scheduler is Gantry's control plane: it owns serving endpoints
// (REST API and durable store), turns their served entities into deployments
// on an orchestrator, follows the deployments' state, and publishes the route
// table that activators follow.
//
// All decisions happen in reconcile, a level-triggered pass over every
// endpoint that one goroutine runs whenever something changed (an API call, a
// driver's status) and once a second regardless. It compares what the store
// says with what the orchestrator reports, so it is correct however many
// notifications were coalesced or lost. A pass decides under the lock with
// the pure plan (plan.go) and calls the orchestrator after releasing it
// (apply.go), so a driver that hangs never stalls the API.
package scheduler

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"sync"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/autoscaler"
	"github.com/gantry/gantry/loggers"
	"github.com/gantry/gantry/monitors"
	"github.com/gantry/gantry/ratelimit"
	"github.com/gantry/gantry/scheduler/orchestrator"
	"github.com/gantry/gantry/scheduler/registry"
	"github.com/gantry/gantry/scheduler/routes"
	"github.com/gantry/gantry/scheduler/store"
	"github.com/gantry/gantry/secrets"
)

// Orchestrator runs deployments: local processes, Docker containers or Nomad
// jobs. Ensure and Remove must not block on the workers themselves and must
// honour their context's deadline. Status must answer from memory, without
// waiting on the network: the scheduler calls it under its lock.
type Orchestrator interface {
	Ensure(ctx context.Context, d orchestrator.Deployment) error
	Remove(ctx context.Context, id string) error
	Status(id string) orchestrator.Status
}

// Tables holds endpoints' inference tables (ClickHouse). Exec runs the
// drift monitors' writes (it makes Tables a monitors.Store).
type Tables interface {
	Ensure(ctx context.Context, t loggers.Table) error
	Query(ctx context.Context, sql string, args ...any) (*api.QueryResult, error)
	Exec(ctx context.Context, sql string, args ...any) error
}

// pruner is implemented by drivers whose deployments outlive the
// scheduler (Nomad jobs). After the first reconcile that ensured every
// wanted deployment, Prune removes the driver's deployments not in keep:
// those of endpoints deleted while the scheduler was down.
type pruner interface {
	Prune(ctx context.Context, keep []string) error
}

// logSource is implemented by drivers that keep their workers' output.
type logSource interface {
	Logs(id string) (string, bool)
}

// Config configures a Scheduler.
type Config struct {
	Store    *store.Store
	Registry *registry.Registry
	// Orchestrator runs the deployments; required.
	Orchestrator Orchestrator
	Routes       *routes.Table
	// BaseURL is how clients and workers reach this control plane, e.g.
	// http://127.0.0.1:8080; it makes endpoint_url and artifact URLs.
	BaseURL string
	// InvocationURL is the base of endpoint_url; default BaseURL.
	InvocationURL string
	// Resync is the period of the safety-net reconcile. Default 1 s.
	Resync time.Duration
	// Tables creates and queries inference tables; nil turns them off,
	// and TablesOff says why (users see it when they enable capture).
	Tables    Tables
	TablesOff string
	// Monitors runs drift monitors on demand (POST …/monitors/{name}/run);
	// default: one over Tables. Share it with the logger's monitors.Runner
	// in one process, so that a monitor has one refresh at a time.
	Monitors *monitors.Refresher
	// CallTimeout bounds each orchestrator call (Ensure, Remove, Prune).
	// Default 30 s.
	CallTimeout time.Duration
	// TablesTimeout bounds creating an inference table while an API call
	// waits (a ClickHouse that hangs answers 503). Default 10 s.
	TablesTimeout time.Duration
	// Now is the clock; default time.Now.
	Now    func() time.Time
	Logger *slog.Logger

	// Limits on what callers can grow (limits.go); zero means the default.
	// MaxEndpoints bounds the number of endpoints (default 100);
	// MaxProvisionedConcurrency bounds a served entity's concurrency, so
	// its replicas (default 200, Databricks' default per model).
	MaxEndpoints              int
	MaxProvisionedConcurrency int
	// WebhookAllow names the private addresses monitor webhooks may
	// reach; nil allows public addresses only.
	WebhookAllow *monitors.WebhookAllow
	// Auth authenticates callers and checks their permissions (auth.go);
	// nil turns both off: every caller may do everything.
	Auth Auth
	// Secrets keeps secret scopes (secrets.go); nil turns the secrets API
	// off, and configs with {{secrets/...}} references are refused.
	Secrets *secrets.Store
	// Audit takes an event per control-plane change (audit.go); nil
	// records none.
	Audit Auditor
	// Features is the online store and publisher of feature serving
	// (features.go); nil turns the feature-store API off and leaves
	// models' feature_spec.yaml unread.
	Features *FeatureStore
	// FeaturesOff says why Features is nil, for the feature-store API's
	// answers; "" gives the default reason.
	FeaturesOff string
	// DeploymentKey derives the credentials that deployments' workers
	// carry (credentials.go): artifact tokens for remote workers. Keep
	// it secret and stable across restarts (gantry keeps it in the data
	// dir); nil gives none, for a scheduler without Auth.
	DeploymentKey []byte
	// Provisioned takes the rows of provisioned time (provisioned.go):
	// replica-seconds per served entity and MeterPeriod; nil meters
	// nothing.
	Provisioned ProvisionedWriter
	// MeterPeriod is the length of a provisioned row (default a minute);
	// MeterSample how often the replicas are counted (default 5 s).
	MeterPeriod, MeterSample time.Duration
	// UnitCosts price a replica-hour by workload (unitKey); default
	// DefaultUnitCosts.
	UnitCosts map[string]float64
}

// Scheduler serves the endpoints API and reconciles endpoints with the
// orchestrator.
type Scheduler struct {
	cfg  Config
	kick chan struct{}

	// mu guards eps and the fields below it, and serializes a pass's plan
	// with API writes. It is never held across a network call.
	mu  sync.Mutex
	eps map[string]*store.Endpoint
	led *ledger
	// published is the route table last published.
	published []api.EndpointRoute
	// limiter is the rate limits' coordinator (ratelimits.go); its
	// counters have their own lock.
	limiter ratelimit.Limiter
	// changed wakes the endpoints' blocking queries (watch.go); it has
	// its own lock, as Notify may be called with s.mu held.
	changed changes
}

// New loads the stored endpoints and returns a scheduler. Call Run to start
// reconciling.
func New(cfg Config) (*Scheduler, error) {
	if cfg.Resync <= 0 {
		cfg.Resync = time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = 30 * time.Second
	}
	if cfg.TablesTimeout <= 0 {
		cfg.TablesTimeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.InvocationURL == "" {
		cfg.InvocationURL = cfg.BaseURL
	}
	if cfg.MeterPeriod <= 0 {
		cfg.MeterPeriod = time.Minute
	}
	if cfg.MeterSample <= 0 {
		cfg.MeterSample = 5 * time.Second
	}
	if cfg.UnitCosts == nil {
		cfg.UnitCosts = DefaultUnitCosts
	}
	if cfg.Monitors == nil && cfg.Tables != nil {
		cfg.Monitors = monitors.NewRefresher(cfg.Tables, &monitors.Alerter{Logger: cfg.Logger, Allow: cfg.WebhookAllow})
	}
	all, err := cfg.Store.List()
	if err != nil {
		return nil, err
	}
	s := &Scheduler{
		cfg:  cfg,
		kick: make(chan struct{}, 1),
		eps:  make(map[string]*store.Endpoint, len(all)),
	}
	if cfg.Features != nil {
		cfg.Features.notify = func() { s.Notify("") }
		cfg.Features.attached = cfg.Registry.FeatureSpec
	}
	_, canPrune := cfg.Orchestrator.(pruner)
	s.led = newLedger(!canPrune)
	for _, e := range all {
		s.eps[e.Name] = e
	}
	return s, nil
}

// Notify asks for a reconcile soon. Drivers call it when a deployment's
// status changes; it never blocks.
func (s *Scheduler) Notify(string) {
	s.changed.fire()
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Run reconciles until ctx ends.
func (s *Scheduler) Run(ctx context.Context) error {
	if s.cfg.Provisioned != nil {
		done := make(chan struct{})
		defer func() { <-done }() // the last rows are written before Run returns
		go func() { defer close(done); s.meterLoop(ctx) }()
	}
	t := time.NewTicker(s.cfg.Resync)
	defer t.Stop()
	for {
		// The pass's driver calls run on while the next pass plans: a
		// write (Notify) publishes its route change at once, not after a
		// slow call of the pass before (a worker draining, a hung Nomad);
		// the ledger keeps each deployment to one call at a time, and each
		// call's end asks for the next pass.
		s.pass(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-s.kick:
		case <-t.C:
		}
	}
}

// world returns what the scheduler knows now, for plan and the views.
// s.mu must be held while the world is used.
func (s *Scheduler) world() *world {
	return &world{
		now: s.cfg.Now(), status: s.cfg.Orchestrator.Status, modelDir: s.cfg.Registry.ModelDir,
		signature: s.cfg.Registry.Signature, task: s.cfg.Registry.Task, flavors: s.cfg.Registry.Flavors, featureRoute: s.featureRoute(), specRoute: s.specRoute(),
		baseURL: s.cfg.BaseURL, ledger: s.led, callTimeout: s.cfg.CallTimeout,
		creds: credentials{s.cfg.DeploymentKey},
	}
}

// pass plans and commits under the lock, then starts the orchestrator
// calls without it, and returns a channel closed once they have all
// returned.
func (s *Scheduler) pass(ctx context.Context) <-chan struct{} {
	s.mu.Lock()
	w := s.world()
	eps := make([]*store.Endpoint, 0, len(s.eps))
	for _, n := range keysOf(s.eps) {
		eps = append(eps, s.eps[n])
	}
	p := plan(w, eps)
	s.commit(p, w.now)
	s.mu.Unlock()
	s.changed.fire()
	return s.apply(ctx, p)
}

// reconcile makes one pass and waits for its orchestrator calls, up to
// CallTimeout (a driver that ignores its context keeps its call running,
// as in Run).
func (s *Scheduler) reconcile(ctx context.Context) {
	done := s.pass(ctx)
	t := time.NewTimer(s.cfg.CallTimeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	case <-ctx.Done():
	}
}

// Targets lists the deployments the autoscaler sizes: those of every
// endpoint's serving config and of configs rolling out.
func (s *Scheduler) Targets() []autoscaler.Target {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.world()
	var out []autoscaler.Target
	for _, e := range w.allEntities(s.eps) {
		if e.err != nil {
			continue
		}
		st := w.status(e.d.ID)
		t := autoscaler.Target{Deployment: e.d.ID, Current: e.d.Replicas, Ready: st.Ready(),
			TargetPerReplica: float64(replicaConcurrency(e.served))}
		t.Min, t.Max = replicaBounds(e.served)
		if throughputBounded(e.served) {
			// Sized on tokens: the autoscaler polls the ready replicas.
			t.TokensPerReplica = float64(e.served.ThroughputChunkSize)
			for _, in := range st.Instances {
				if in.Ready {
					t.Replicas = append(t.Replicas, in.Addr)
				}
			}
		}
		if st.Failure == "" {
			// A failing replica is no capacity on the way: it must not
			// hold the deployment up when idle.
			t.Starting = max(0, e.d.Replicas-t.Ready)
		}
		out = append(out, t)
	}
	return out
}

// Scale sets a deployment's replica count, within its entity's bounds.
func (s *Scheduler) Scale(deployment string, replicas int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.world().allEntities(s.eps) {
		if e.d.ID == deployment {
			lo, hi := replicaBounds(e.served)
			s.led.scale[deployment] = min(max(replicas, lo), hi)
			s.Notify(deployment)
			return nil
		}
	}
	return api.Errorf(api.ErrResourceDoesNotExist, "deployment %q does not exist", deployment)
}

// endpoint renders the API view of a stored endpoint. s.mu must be held.
func (s *Scheduler) endpoint(ep *store.Endpoint) api.Endpoint {
	return s.world().endpointView(ep, s.cfg.InvocationURL)
}

// captureConfig is the capture config in force: the endpoint config's
// auto_capture_config, or else the AI gateway's inference_table_config;
// nil when neither is enabled.
func captureConfig(gw *api.AIGateway, c *api.EndpointConfig) *api.AutoCaptureConfig {
	switch {
	case loggers.Enabled(c.AutoCaptureConfig):
		return c.AutoCaptureConfig
	case gw != nil && loggers.Enabled(gw.InferenceTableConfig):
		return gw.InferenceTableConfig
	}
	return nil
}

// payloadTable names the inference table of capture config c, if it
// captures. Stored configs were checked, so the name is valid.
func payloadTable(ep string, c *api.AutoCaptureConfig) (loggers.Table, bool) {
	if !loggers.Enabled(c) {
		return loggers.Table{}, false
	}
	t, err := loggers.PayloadTable(ep, "", c)
	return t, err == nil
}

// withTableState is a copy of c with its table named in State, for views.
func withTableState(ep string, c *api.AutoCaptureConfig) *api.AutoCaptureConfig {
	t, ok := payloadTable(ep, c)
	if !ok {
		return c
	}
	v := *c
	v.State = &api.AutoCaptureState{PayloadTable: api.PayloadTable{Name: t.String()}}
	return &v
}

func newID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}
