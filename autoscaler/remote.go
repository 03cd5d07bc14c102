package autoscaler

// The network side of the autoscaler, for `gantry autoscaler` running apart
// from the scheduler and the activators:
//
//   - RemoteScheduler is the loop's scheduler over the scheduler's HTTP API
//     (GET /api/2.0/gantry/deployments, POST .../deployments/{id}/scale).
//   - Collector receives what activators push (POST /v1/stats every second,
//     POST /v1/poke when a request finds no replica) and hands it to the loop:
//     Samples is the loop's stats func, and pokes go to Autoscaler.Poke.

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/internal/apierr"
)

// DefaultRemoteTimeout is RemoteScheduler.Timeout's default.
const DefaultRemoteTimeout = 3 * time.Second

// RemoteScheduler is the scheduler seam over HTTP. It works at its zero
// value except for Client, and must not change after first use.
type RemoteScheduler struct {
	// Client reaches the scheduler's API. Required.
	Client *api.Client
	// Timeout bounds one call. The loop waits on every call, pokes
	// included, so a hung scheduler must not hold it long.
	// Default 3 s (DefaultRemoteTimeout).
	Timeout time.Duration
	// Logger gets the scheduler's outages. Default slog.Default().
	Logger *slog.Logger

	// mu guards last, synced and failing.
	mu sync.Mutex
	// last is the newest list the scheduler answered.
	last []Target
	// synced reports whether the scheduler ever answered; failing whether
	// its last call failed (so that an outage is logged once).
	synced, failing bool
}

var _ scheduler = (*RemoteScheduler)(nil)

// Targets lists the deployments to size. The loop has no use for an error
// here, so when the scheduler cannot be reached Targets returns the last
// list it got (nil before the first) and logs the outage once: an empty
// list would make the loop forget every deployment's windows, and a
// scheduler that restarts would then find its deployments sized from
// nothing. Decisions taken on the old list are harmless: Scale fails while
// the scheduler is away.
func (r *RemoteScheduler) Targets() []Target {
	ctx, cancel := context.WithTimeout(context.Background(), r.timeout())
	defer cancel()
	list, _, err := r.Client.Deployments().List((*api.QueryOptions)(nil).WithContext(ctx))

	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		if !r.failing {
			r.logger().Warn("cannot list deployments; deciding on the last list until the scheduler answers",
				"scheduler", r.Client.Address(), "deployments", len(r.last), "err", err)
		}
		r.failing = true
		return slices.Clone(r.last)
	}
	if r.failing {
		r.logger().Info("scheduler answers again", "scheduler", r.Client.Address())
	}
	r.failing, r.synced = false, true
	r.last = make([]Target, len(list))
	for i, d := range list {
		r.last[i] = Target{
			Deployment: d.Deployment, Min: d.MinReplicas, Max: d.MaxReplicas,
			Current: d.Current, Ready: d.Ready, Starting: d.Starting,
			TargetPerReplica: d.TargetPerReplica,
			TokensPerReplica: d.TokensPerReplica, Replicas: d.Replicas,
		}
	}
	return slices.Clone(r.last)
}

// Scale asks the scheduler for replicas replicas of deployment.
func (r *RemoteScheduler) Scale(deployment string, replicas int) error {
	ctx, cancel := context.WithTimeout(context.Background(), r.timeout())
	defer cancel()
	if _, err := r.Client.Deployments().Scale(deployment, replicas, (*api.WriteOptions)(nil).WithContext(ctx)); err != nil {
		return fmt.Errorf("scale deployment %s to %d: %w", deployment, replicas, err)
	}
	return nil
}

// Synced reports whether the scheduler has answered a Targets call once:
// the autoscaler's readiness.
func (r *RemoteScheduler) Synced() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.synced
}

func (r *RemoteScheduler) timeout() time.Duration {
	if r.Timeout > 0 {
		return r.Timeout
	}
	return DefaultRemoteTimeout
}

func (r *RemoteScheduler) logger() *slog.Logger {
	if r.Logger != nil {
		return r.Logger
	}
	return slog.Default()
}

// Defaults of CollectorConfig.
const (
	// DefaultStaleness is how long the collector keeps counting an
	// activator after its last report: three missed pushes.
	DefaultStaleness = 3 * time.Second
	// DefaultReportPeriod is the span of a report that does not give its
	// own (api.LoadReport.PeriodMS 0): the activators' push interval.
	DefaultReportPeriod = time.Second
)

// maxReportBody bounds a push's body. A report holds one small sample per
// served entity; 1 MiB is thousands of them.
const maxReportBody = 1 << 20

// CollectorConfig configures a Collector. It works at its zero value and
// must not change after NewCollector.
type CollectorConfig struct {
	// Staleness is how long after its last report an activator stops
	// counting: one that crashed or lost its way to the autoscaler must not
	// hold its last load forever. It also bounds the span that one report
	// may claim to cover. Default 3 s (DefaultStaleness).
	Staleness time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Logger gets activators that appear and go. Default slog.Default().
	Logger *slog.Logger
	// Auth, when set, checks the bearer token of every report and poke
	// before it counts (ReportAuth: Gantry's components and admins only).
	// nil takes them from anyone who reaches the port: gantry autoscaler
	// --auth=false, for a scheduler without authentication.
	Auth Authorizer
}

// Authorizer decides whether a request's Authorization header value may
// report load; *ReportAuth is the one Gantry uses.
type Authorizer interface {
	Authorize(authorization string) *api.Error
}

// Collector gathers the load that activators push and serves it to the
// loop, once: build one with NewCollector, serve it (it handles /v1/stats
// and /v1/poke) and pass Samples to New.
//
// The counting rule. Each report carries, per deployment, the average
// concurrency over the activator's last period (about 1 s), and the loop
// asks for samples once a tick (also about 1 s), but the two clocks are not
// in step. The collector therefore keeps concurrency-seconds: a report adds
// concurrency × period to its activator's account, and Samples returns each
// account divided by the time since the previous Samples call, then empties
// it. Every report is counted exactly once, none is lost, and the result is
// the activator's average load over the tick, whatever the two intervals:
//
//   - one report of 4.0 per 1 s tick: 4.0 × 1 s / 1 s = 4.0 (the latest
//     report, as plain "take the latest" would say);
//   - an activator pushing every 0.5 s: 4.0 × 0.5 s × 2 / 1 s = 4.0, where
//     summing the averages would say 8.0;
//   - a tick that sees no report (a late push) returns nothing for that
//     activator, and the next one gets both reports, 8.0: over the stable
//     window the average stays 4.0. The one high tick can reach the panic
//     window, which only ever scales up, the safe side; "take the latest"
//     would instead drop a report and read low, the side that scales down
//     under load.
//
// An activator that stops pushing thus stops counting at the next tick;
// after Staleness without a report it is forgotten altogether, with
// whatever its account still held.
type Collector struct {
	cfg  CollectorConfig
	poke func(deployment string)
	mux  *http.ServeMux

	// mu guards activators and lastCall.
	mu         sync.Mutex
	activators map[string]*activatorLoad
	// lastCall is the previous Samples call (NewCollector's time before
	// the first): the start of the span the accounts cover.
	lastCall time.Time
}

// activatorLoad is one activator's account.
type activatorLoad struct {
	// seen is when its newest report arrived.
	seen time.Time
	// load is the concurrency-seconds reported since the last Samples
	// call, by deployment.
	load map[string]float64
}

var _ http.Handler = (*Collector)(nil)

// NewCollector returns a collector that passes pokes to poke: the
// Autoscaler's Poke, which never blocks. A nil poke accepts pokes and
// drops them.
func NewCollector(cfg CollectorConfig, poke func(deployment string)) *Collector {
	if cfg.Staleness <= 0 {
		cfg.Staleness = DefaultStaleness
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	c := &Collector{cfg: cfg, poke: poke, activators: map[string]*activatorLoad{}, lastCall: cfg.Now()}
	c.mux = http.NewServeMux()
	c.mux.HandleFunc("POST /v1/stats", c.authorized(c.stats))
	c.mux.HandleFunc("POST /v1/poke", c.authorized(c.pokeHandler))
	c.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeAPIError(w, api.Errorf(api.ErrResourceDoesNotExist, "no API at %s %s", r.Method, r.URL.Path))
	})
	return c
}

// authorized runs next only for a request that cfg.Auth admits: a report
// from anyone else is refused before its body is read, and counts for
// nothing.
func (c *Collector) authorized(next http.HandlerFunc) http.HandlerFunc {
	if c.cfg.Auth == nil {
		return next
	}
	return func(w http.ResponseWriter, r *http.Request) {
		if err := c.cfg.Auth.Authorize(r.Header.Get("Authorization")); err != nil {
			if err.Code == api.ErrUnauthenticated {
				w.Header().Set("WWW-Authenticate", `Bearer realm="gantry"`)
			}
			writeAPIError(w, err)
			return
		}
		next(w, r)
	}
}

// ServeHTTP serves POST /v1/stats (body api.LoadReport) and POST /v1/poke
// (body api.PokeRequest); both answer {} or an error in API.md's shape.
func (c *Collector) ServeHTTP(w http.ResponseWriter, r *http.Request) { c.mux.ServeHTTP(w, r) }

// Samples returns the load reported since the previous call: per activator
// and deployment, the average concurrency over the time since then (see
// Collector). It is the loop's stats func; calls from more than one loop
// would split the reports between them.
func (c *Collector) Samples() []Sample {
	now := c.cfg.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	span := now.Sub(c.lastCall).Seconds()
	if span <= 0 {
		// No time has passed (or the clock stepped back): keep the
		// accounts for a call that can divide by something.
		return nil
	}
	c.lastCall = now
	ids := make([]string, 0, len(c.activators))
	for id, a := range c.activators {
		if now.Sub(a.seen) > c.cfg.Staleness {
			c.cfg.Logger.Info("activator stopped reporting; its load no longer counts",
				"activator", id, "last_report", a.seen)
			delete(c.activators, id)
			continue
		}
		ids = append(ids, id)
	}
	slices.Sort(ids) // a stable order for callers and tests
	var out []Sample
	for _, id := range ids {
		a := c.activators[id]
		start := len(out)
		for dep, sec := range a.load {
			out = append(out, Sample{Deployment: dep, Concurrency: sec / span})
		}
		slices.SortFunc(out[start:], func(x, y Sample) int { return cmp.Compare(x.Deployment, y.Deployment) })
		clear(a.load)
	}
	return out
}

// record adds a checked report to its activator's account.
func (c *Collector) record(now time.Time, rep *api.LoadReport) {
	period := DefaultReportPeriod
	if rep.PeriodMS > 0 {
		period = time.Duration(rep.PeriodMS) * time.Millisecond
	}
	// A report cannot speak for more than the staleness bound: load older
	// than that would not count anyway.
	period = min(period, c.cfg.Staleness)

	c.mu.Lock()
	defer c.mu.Unlock()
	a, ok := c.activators[rep.Activator]
	if !ok {
		a = &activatorLoad{load: map[string]float64{}}
		c.activators[rep.Activator] = a
		c.cfg.Logger.Info("activator reports load", "activator", rep.Activator)
	}
	a.seen = now
	for _, s := range rep.Samples {
		a.load[s.Deployment] += s.Concurrency * period.Seconds()
	}
}

func (c *Collector) stats(w http.ResponseWriter, r *http.Request) {
	var rep api.LoadReport
	if err := decodeBody(w, r, &rep); err != nil {
		writeAPIError(w, err)
		return
	}
	if err := checkReport(&rep); err != nil {
		writeAPIError(w, err)
		return
	}
	c.record(c.cfg.Now(), &rep)
	writeAPIJSON(w, http.StatusOK, struct{}{})
}

// checkReport refuses a report as a whole rather than count part of it.
func checkReport(rep *api.LoadReport) error {
	if rep.Activator == "" {
		return api.Errorf(api.ErrInvalidParameterValue, "activator: required; name the activator that saw the load")
	}
	if rep.PeriodMS < 0 {
		return api.Errorf(api.ErrInvalidParameterValue, "period_ms: %d is negative", rep.PeriodMS)
	}
	for i, s := range rep.Samples {
		if s.Deployment == "" {
			return api.Errorf(api.ErrInvalidParameterValue, "samples[%d].deployment: required", i)
		}
		if s.Concurrency < 0 || math.IsNaN(s.Concurrency) || math.IsInf(s.Concurrency, 0) {
			return api.Errorf(api.ErrInvalidParameterValue, "samples[%d].concurrency: %v is not a finite number of 0 or more", i, s.Concurrency)
		}
	}
	return nil
}

func (c *Collector) pokeHandler(w http.ResponseWriter, r *http.Request) {
	var req api.PokeRequest
	if err := decodeBody(w, r, &req); err != nil {
		writeAPIError(w, err)
		return
	}
	if req.Deployment == "" {
		writeAPIError(w, api.Errorf(api.ErrInvalidParameterValue, "deployment: required"))
		return
	}
	if c.poke != nil {
		c.poke(req.Deployment)
	}
	writeAPIJSON(w, http.StatusOK, struct{}{})
}

// decodeBody reads a JSON body of at most maxReportBody bytes. Unknown
// fields are ignored, unlike on the public API: activators and the
// autoscaler are upgraded one at a time, and a newer activator's extra
// field must not cost the older autoscaler its load reports.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxReportBody))
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		switch {
		case errors.As(err, &tooBig):
			return api.Errorf(api.ErrPayloadTooLarge, "request body is over %d bytes", maxReportBody)
		case errors.Is(err, io.EOF):
			return api.Errorf(api.ErrMalformedRequest, "request body is empty; send a JSON object")
		}
		return api.Errorf(api.ErrMalformedRequest, "request body is not valid JSON of the expected shape: %v", err)
	}
	return nil
}

// writeAPIError answers with API.md's error shape.
func writeAPIError(w http.ResponseWriter, err error) { apierr.Write(w, err) }

func writeAPIJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
