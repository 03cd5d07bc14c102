package autoscaler

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/internal/fakeclock"
)

// fakeAPI is the scheduler's deployments API: it lists targets, records
// scales, and fails or hangs on demand.
type fakeAPI struct {
	mu      sync.Mutex // guards targets and scaled
	targets []api.DeploymentTarget
	scaled  []string

	down atomic.Bool // answer 503
	hang atomic.Bool // answer only when the client gives up or the test ends
	// closed ends every hung request when the test ends.
	closed chan struct{}
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if f.hang.Load() {
		// The server notices a client that gave up only once the body
		// has been read.
		io.Copy(io.Discard, r.Body)
		select {
		case <-r.Context().Done():
		case <-f.closed:
		}
		return
	}
	if f.down.Load() {
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, `{"error_code": "TEMPORARILY_UNAVAILABLE", "message": "restarting"}`)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/api/2.0/gantry/deployments":
		json.NewEncoder(w).Encode(api.ListDeploymentsResponse{Deployments: f.targets})
	case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/scale"):
		id := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/api/2.0/gantry/deployments/"), "/scale")
		var req api.ScaleDeploymentRequest
		json.NewDecoder(r.Body).Decode(&req)
		if id != "d" {
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no such deployment"}`)
			return
		}
		f.scaled = append(f.scaled, fmt.Sprintf("%s=%d", id, *req.Replicas))
		io.WriteString(w, `{}`)
	default:
		w.WriteHeader(http.StatusNotFound)
	}
}

// logCounter counts log records by level.
type logCounter struct {
	mu     sync.Mutex // guards counts
	counts map[slog.Level]int
}

func (l *logCounter) Enabled(context.Context, slog.Level) bool { return true }
func (l *logCounter) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.counts[r.Level]++
	return nil
}
func (l *logCounter) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logCounter) WithGroup(string) slog.Handler      { return l }
func (l *logCounter) count(level slog.Level) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.counts[level]
}

func newRemote(t *testing.T) (*RemoteScheduler, *fakeAPI, *logCounter) {
	t.Helper()
	f := &fakeAPI{
		targets: []api.DeploymentTarget{{Deployment: "d", MinReplicas: 0, MaxReplicas: 4, Current: 2, Ready: 1, Starting: 1,
			TokensPerReplica: 250, Replicas: []string{"10.0.0.1:9000"}}},
		closed: make(chan struct{}),
	}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(f.closed) }) // runs first
	c, err := api.NewClient(&api.Config{Address: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	logs := &logCounter{counts: map[slog.Level]int{}}
	return &RemoteScheduler{Client: c, Timeout: 200 * time.Millisecond, Logger: slog.New(logs)}, f, logs
}

func TestRemoteSchedulerTargetsAndScale(t *testing.T) {
	r, f, _ := newRemote(t)
	if r.Synced() {
		t.Error("Synced before any call")
	}
	// A deployment that scales on tokens keeps its rate and the replicas
	// the autoscaler polls.
	want := []Target{{Deployment: "d", Min: 0, Max: 4, Current: 2, Ready: 1, Starting: 1, TokensPerReplica: 250, Replicas: []string{"10.0.0.1:9000"}}}
	if got := r.Targets(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Targets = %+v, want %+v", got, want)
	}
	if !r.Synced() {
		t.Error("not Synced after the scheduler answered")
	}
	if err := r.Scale("d", 0); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(f.scaled) != "[d=0]" {
		t.Errorf("scheduler got %v, want [d=0]", f.scaled)
	}
	err := r.Scale("gone", 1)
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != api.ErrResourceDoesNotExist || !strings.Contains(err.Error(), "scale deployment gone to 1") {
		t.Errorf("Scale of an unknown deployment: %v, want RESOURCE_DOES_NOT_EXIST with context", err)
	}
}

func TestRemoteSchedulerKeepsLastListThroughOutage(t *testing.T) {
	r, f, logs := newRemote(t)
	first := r.Targets()

	// The scheduler goes away: every call answers the last list, and the
	// outage is logged once, not once a tick.
	f.down.Store(true)
	for range 3 {
		if got := r.Targets(); fmt.Sprint(got) != fmt.Sprint(first) {
			t.Errorf("Targets during an outage = %+v, want the last list %+v", got, first)
		}
	}
	if n := logs.count(slog.LevelWarn); n != 1 {
		t.Errorf("%d warnings for one outage, want 1", n)
	}
	// A hung scheduler costs at most Timeout.
	f.down.Store(false)
	f.hang.Store(true)
	start := time.Now()
	if got := r.Targets(); fmt.Sprint(got) != fmt.Sprint(first) {
		t.Errorf("Targets from a hung scheduler = %+v, want the last list", got)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("Targets took %s against a hung scheduler, want about Timeout (200ms)", took)
	}
	if err := r.Scale("d", 1); err == nil {
		t.Error("Scale against a hung scheduler succeeded")
	}

	// Back: the new list replaces the old one, and the recovery is logged.
	f.hang.Store(false)
	f.mu.Lock()
	f.targets = append(f.targets, api.DeploymentTarget{Deployment: "e", MaxReplicas: 1})
	f.mu.Unlock()
	if got := r.Targets(); len(got) != 2 {
		t.Errorf("Targets after the outage = %+v, want the new list of 2", got)
	}
	if n := logs.count(slog.LevelInfo); n != 1 {
		t.Errorf("%d info records, want 1 for the recovery", n)
	}
	if n := logs.count(slog.LevelWarn); n != 1 {
		t.Errorf("%d warnings, want still 1", n)
	}
}

func TestRemoteSchedulerBeforeFirstAnswer(t *testing.T) {
	r, f, _ := newRemote(t)
	f.down.Store(true)
	if got := r.Targets(); len(got) != 0 {
		t.Errorf("Targets with no answer yet = %+v, want none", got)
	}
	if r.Synced() {
		t.Error("Synced without an answer")
	}
}

func newCollector(t *testing.T, poke func(string)) (*Collector, *fakeclock.Clock) {
	t.Helper()
	clock := &fakeclock.Clock{}
	return NewCollector(CollectorConfig{Now: clock.Now, Logger: slog.New(slog.NewTextHandler(t.Output(), nil))}, poke), clock
}

// post sends body to the collector and returns the status and error code.
func post(t *testing.T, c *Collector, path, body string) (int, string) {
	t.Helper()
	w := httptest.NewRecorder()
	c.ServeHTTP(w, httptest.NewRequest(http.MethodPost, path, strings.NewReader(body)))
	var e api.Error
	if w.Code != http.StatusOK {
		if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Code == "" || e.Message == "" {
			t.Fatalf("POST %s: %d with a body not in API.md's error shape: %s", path, w.Code, w.Body)
		}
	} else if w.Body.String() != "{}\n" {
		t.Errorf("POST %s: 200 with %q, want {}", path, w.Body)
	}
	return w.Code, e.Code
}

// report pushes one activator's load: deployment=concurrency pairs.
func report(t *testing.T, c *Collector, activator string, periodMS int64, loads ...any) {
	t.Helper()
	rep := api.LoadReport{Activator: activator, PeriodMS: periodMS}
	for i := 0; i < len(loads); i += 2 {
		rep.Samples = append(rep.Samples, api.LoadSample{Deployment: loads[i].(string), Concurrency: loads[i+1].(float64)})
	}
	b, _ := json.Marshal(rep)
	if code, e := post(t, c, "/v1/stats", string(b)); code != http.StatusOK {
		t.Fatalf("report: %d %s", code, e)
	}
}

func samplesString(s []Sample) string {
	var b bytes.Buffer
	for _, x := range s {
		fmt.Fprintf(&b, "%s=%g ", x.Deployment, x.Concurrency)
	}
	return strings.TrimSpace(b.String())
}

func TestCollectorCountsEachReportOnce(t *testing.T) {
	c, clock := newCollector(t, nil)
	tick := func() string { clock.Add(time.Second); return samplesString(c.Samples()) }

	// Tick 1: one report of the last second per activator; two activators
	// give two samples, which the loop adds up.
	report(t, c, "a1", 1000, "d", 4.0, "e", 0.0)
	report(t, c, "a2", 1000, "d", 2.0)
	if got, want := tick(), "d=4 e=0 d=2"; got != want {
		t.Errorf("tick 1 = %q, want %q", got, want)
	}
	// A tick without new reports returns nothing: a report counts once.
	if got := tick(); got != "" {
		t.Errorf("tick 2 without reports = %q, want nothing", got)
	}
	// Two reports in one tick (a push came late, then the next on time):
	// both count, their concurrency-seconds over the tick's one second.
	report(t, c, "a1", 1000, "d", 4.0)
	report(t, c, "a1", 1000, "d", 4.0)
	if got, want := tick(), "d=8"; got != want {
		t.Errorf("tick with two 1 s reports of 4 = %q, want %q (4+4 concurrency-seconds in 1 s)", got, want)
	}
	// An activator that pushes every 0.5 s averages, not sums: 2 × 4 × 0.5 / 1.
	report(t, c, "a1", 500, "d", 4.0)
	report(t, c, "a1", 500, "d", 4.0)
	if got, want := tick(), "d=4"; got != want {
		t.Errorf("tick with two 0.5 s reports of 4 = %q, want %q", got, want)
	}
	// A report without period_ms covers 1 s; a tick of 2 s halves it.
	report(t, c, "a1", 0, "d", 4.0)
	clock.Add(time.Second)
	if got, want := tick(), "d=2"; got != want {
		t.Errorf("2 s tick with one 1 s report of 4 = %q, want %q", got, want)
	}
}

func TestCollectorForgetsStaleActivators(t *testing.T) {
	c, clock := newCollector(t, nil)
	clock.Add(time.Second)
	report(t, c, "a1", 1000, "d", 4.0)
	report(t, c, "a2", 1000, "d", 1.0)
	if got := samplesString(c.Samples()); got != "d=4 d=1" {
		t.Fatalf("samples = %q", got)
	}
	// a2 stops pushing: it no longer counts at once, and is forgotten
	// once the staleness bound (3 s) has passed since its last report.
	for s := 1; s <= 4; s++ {
		clock.Add(time.Second)
		report(t, c, "a1", 1000, "d", 4.0)
		if got := samplesString(c.Samples()); got != "d=4" {
			t.Errorf("%d s after a2's last report: samples = %q, want only a1's d=4", s, got)
		}
	}
	c.mu.Lock()
	_, kept := c.activators["a2"]
	c.mu.Unlock()
	if kept {
		t.Error("a2 still kept 4 s after its last report")
	}
	// A report that arrived more than the bound before the call no longer
	// counts: the loop was away, and this load is old news.
	report(t, c, "a1", 1000, "d", 4.0)
	clock.Add(DefaultStaleness + time.Millisecond)
	if got := c.Samples(); len(got) != 0 {
		t.Errorf("samples of a report older than the staleness bound = %v, want none", got)
	}
	// A report cannot claim more than the bound: 1 h at 4 is 3 s at 4.
	report(t, c, "a1", 3_600_000, "d", 4.0)
	clock.Add(3 * time.Second)
	if got, want := samplesString(c.Samples()), "d=4"; got != want {
		t.Errorf("samples of a 1 h report over 3 s = %q, want %q", got, want)
	}
}

func TestCollectorSameInstant(t *testing.T) {
	c, clock := newCollector(t, nil)
	clock.Add(time.Second)
	c.Samples()
	report(t, c, "a1", 1000, "d", 4.0)
	if got := c.Samples(); got != nil {
		t.Errorf("samples at the instant of the last call = %v, want none (nothing to divide by)", got)
	}
	clock.Add(time.Second)
	if got, want := samplesString(c.Samples()), "d=4"; got != want {
		t.Errorf("next call = %q, want %q: the report was kept", got, want)
	}
}

func TestCollectorRefusesBadRequests(t *testing.T) {
	var pokes []string
	c, clock := newCollector(t, func(d string) { pokes = append(pokes, d) })
	for _, tc := range []struct {
		name, path, body, code string
		status                 int
	}{
		{"empty", "/v1/stats", ``, api.ErrMalformedRequest, 400},
		{"not JSON", "/v1/stats", `{"activator": `, api.ErrMalformedRequest, 400},
		{"wrong type", "/v1/stats", `{"activator": 1}`, api.ErrMalformedRequest, 400},
		{"no activator", "/v1/stats", `{"samples": []}`, api.ErrInvalidParameterValue, 400},
		{"no deployment", "/v1/stats", `{"activator": "a", "samples": [{"concurrency": 1}]}`, api.ErrInvalidParameterValue, 400},
		{"negative load", "/v1/stats", `{"activator": "a", "samples": [{"deployment": "d", "concurrency": 1}, {"deployment": "e", "concurrency": -1}]}`, api.ErrInvalidParameterValue, 400},
		{"negative period", "/v1/stats", `{"activator": "a", "period_ms": -5, "samples": []}`, api.ErrInvalidParameterValue, 400},
		{"too large", "/v1/stats", `{"activator": "` + strings.Repeat("a", maxReportBody) + `"}`, api.ErrPayloadTooLarge, 413},
		{"poke without deployment", "/v1/poke", `{}`, api.ErrInvalidParameterValue, 400},
		{"unknown path", "/v1/nope", `{}`, api.ErrResourceDoesNotExist, 404},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, code := post(t, c, tc.path, tc.body)
			if status != tc.status || code != tc.code {
				t.Errorf("%d %s, want %d %s", status, code, tc.status, tc.code)
			}
		})
	}
	w := httptest.NewRecorder()
	c.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/v1/stats", nil))
	if w.Code != http.StatusNotFound {
		t.Errorf("GET /v1/stats: %d, want 404", w.Code)
	}
	clock.Add(time.Second)
	if got := c.Samples(); len(got) != 0 {
		t.Errorf("refused reports counted: %v (a bad report counts not even in part)", got)
	}
	if len(pokes) != 0 {
		t.Errorf("refused pokes passed on: %v", pokes)
	}
	// Unknown fields are ignored: a newer activator's report still counts.
	if code, e := post(t, c, "/v1/stats", `{"activator": "a", "zone": "x", "samples": [{"deployment": "d", "concurrency": 2, "p99": 1}]}`); code != 200 {
		t.Errorf("report with unknown fields: %d %s, want 200", code, e)
	}
}

// TestCollectorDrivesTheLoop runs the loop on the collector: a poke over
// HTTP scales a deployment at zero at once, and pushed load sizes it.
func TestCollectorDrivesTheLoop(t *testing.T) {
	f := &fakeScheduler{targets: map[string]*Target{"d": {Deployment: "d", Min: 0, Max: 4}}, notify: make(chan int, 10)}
	var a *Autoscaler
	col := NewCollector(CollectorConfig{}, func(d string) { a.Poke(d) })
	a = New(Config{Tick: time.Hour}, f, col.Samples) // only the poke can scale
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()

	srv := httptest.NewServer(col)
	defer srv.Close()
	resp, err := http.Post(srv.URL+"/v1/poke", "application/json", strings.NewReader(`{"deployment": "d"}`))
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("poke: %v %v", resp, err)
	}
	resp.Body.Close()
	select {
	case n := <-f.notify:
		if n != 1 {
			t.Errorf("scaled to %d after a poke, want 1", n)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a poke over HTTP did not scale the deployment")
	}
	cancel()
	<-done

	// Pushed load reaches the decider: 12 concurrent over two activators
	// wants 12 / (4 × 0.7) = 4.3 → 5 replicas, capped at Max 4.
	f.targets["d"].Ready, f.targets["d"].Starting = 1, 0
	clock := &fakeclock.Clock{}
	col = NewCollector(CollectorConfig{Now: clock.Now}, nil)
	a = New(Config{Now: clock.Now}, f, col.Samples)
	clock.Add(time.Second)
	report(t, col, "a1", 1000, "d", 6.0)
	report(t, col, "a2", 1000, "d", 6.0)
	a.tick(clock.Now())
	if got := f.targets["d"].Current; got != 4 {
		t.Errorf("Current = %d after 12 concurrent reported, want 4", got)
	}
}
