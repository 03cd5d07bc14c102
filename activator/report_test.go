package activator

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/internal/eventually"
)

// fakeAutoscaler takes the reporter's pushes and pokes.
type fakeAutoscaler struct {
	url     string
	reports chan api.LoadReport
	pokes   chan string

	fail      atomic.Bool   // answer 503 to pushes
	pushes    atomic.Int64  // pushes received, answered or not
	holdPokes chan struct{} // while open, pokes wait
	held      chan string   // gets each poke that starts to wait
}

func startAutoscaler(t *testing.T) *fakeAutoscaler {
	t.Helper()
	f := &fakeAutoscaler{reports: make(chan api.LoadReport, 1000), pokes: make(chan string, 1000), held: make(chan string, 1000)}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/stats", func(w http.ResponseWriter, r *http.Request) {
		f.pushes.Add(1)
		if f.fail.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, `{"error_code": "TEMPORARILY_UNAVAILABLE", "message": "restarting"}`)
			return
		}
		var rep api.LoadReport
		if err := json.NewDecoder(r.Body).Decode(&rep); err != nil {
			t.Errorf("push body: %v", err)
		}
		f.reports <- rep
		io.WriteString(w, `{}`)
	})
	mux.HandleFunc("POST /v1/poke", func(w http.ResponseWriter, r *http.Request) {
		var req api.PokeRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			t.Errorf("poke body: %v", err)
		}
		if f.holdPokes != nil {
			f.held <- req.Deployment
			select {
			case <-f.holdPokes:
			case <-r.Context().Done():
			}
		}
		f.pokes <- req.Deployment
		io.WriteString(w, `{}`)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	f.url = srv.URL
	return f
}

// runReporter runs r for h's activator until the test ends.
func runReporter(t *testing.T, r *Reporter, a *Activator) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx, a) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run = %v, want nil", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Run did not return after its context ended")
		}
	})
}

func TestReporterPushesStats(t *testing.T) {
	g := newGate()
	w := startWorker(t, "w", g.handle)
	h := newHarness(t, Config{})
	defer g.release()
	h.push(&api.RouteTable{Index: 1, Endpoints: []api.EndpointRoute{
		{Name: "ep", Entities: []api.EntityRoute{readyEntity("m", w.addr), coldEntity("z")}},
	}})
	// Two requests held at m's worker and one queued at z for the whole
	// test: the averages are exact whatever the timing.
	for range 2 {
		h.invokeServedAsync("ep", "m")
	}
	h.invokeServedAsync("ep", "z")
	eventually.True(t, 5*time.Second, "2 requests at the worker", func() bool { return w.holding.Load() == 2 })
	h.waitQueued("ep", "z", 1)

	as := startAutoscaler(t)
	runReporter(t, &Reporter{URL: as.url + "/", ID: "act-1", Interval: 20 * time.Millisecond}, h.a)
	for i := range 3 {
		select {
		case rep := <-as.reports:
			want := []api.LoadSample{{Deployment: "m-d1", Concurrency: 2}, {Deployment: "z-d1", Concurrency: 1}}
			if rep.Activator != "act-1" || !slices.Equal(rep.Samples, want) {
				t.Errorf("push %d = %+v, want activator act-1 and samples %+v", i, rep, want)
			}
			// The period is the time between two Stats calls: about
			// Interval, more when the machine is slow, and less for the
			// tick that follows a slow push (the ticker does not wait).
			if rep.PeriodMS <= 0 || rep.PeriodMS > 2000 {
				t.Errorf("push %d: period_ms = %d, want about 20", i, rep.PeriodMS)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("push %d did not arrive", i)
		}
	}
}

func TestReporterBacksOffAndRecovers(t *testing.T) {
	h := newHarness(t, Config{})
	h.push(oneEndpoint(1, "ep", nil, coldEntity("z")))
	as := startAutoscaler(t)
	as.fail.Store(true)
	logs := &levelCounter{counts: map[slog.Level]int{}}
	runReporter(t, &Reporter{URL: as.url, Interval: 10 * time.Millisecond, Logger: slog.New(logs)}, h.a)

	// Without backoff, 400 ms would bring about 40 pushes; backing off
	// 1, 2, 4, 5, 5, … intervals, about 11.
	time.Sleep(400 * time.Millisecond)
	if n := as.pushes.Load(); n == 0 || n > 20 {
		t.Errorf("%d pushes in 400 ms at a 10 ms interval while failing, want a few (backed off)", n)
	}
	if n := logs.count(slog.LevelWarn); n != 1 {
		t.Errorf("%d warnings for one outage, want 1", n)
	}

	as.fail.Store(false)
	for i := range 3 {
		select {
		case rep := <-as.reports:
			if rep.Activator == "" || len(rep.Samples) != 1 || rep.Samples[0].Deployment != "z-d1" {
				t.Errorf("push %d after recovery = %+v", i, rep)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no push %d after the autoscaler came back", i)
		}
	}
	if n := logs.count(slog.LevelInfo); n != 1 {
		t.Errorf("%d info records, want 1 for the recovery", n)
	}
}

func TestReporterPokeNeverBlocks(t *testing.T) {
	// Before Run, pokes wait in the buffer; past it they are dropped.
	r := &Reporter{URL: "http://127.0.0.1:1"}
	start := time.Now()
	for range 1000 {
		r.Poke("d")
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("1000 pokes took %s", took)
	}
	if got := r.dropped.Load(); got != 1000-pokeBuffer {
		t.Errorf("dropped %d pokes, want %d (all beyond the buffer)", got, 1000-pokeBuffer)
	}

	// With an autoscaler that holds every poke, Poke still returns at
	// once, and the pokes that queued meanwhile go out once per
	// deployment.
	as := startAutoscaler(t)
	as.holdPokes = make(chan struct{})
	var release sync.Once
	t.Cleanup(func() { release.Do(func() { close(as.holdPokes) }) })
	h := newHarness(t, Config{})
	r = &Reporter{URL: as.url}
	r.Poke("first")
	runReporter(t, r, h.a)
	select {
	case <-as.held: // "first" waits at the autoscaler; the next pokes queue
	case <-time.After(5 * time.Second):
		t.Fatal("the first poke did not reach the autoscaler")
	}
	start = time.Now()
	for i := range 1000 {
		r.Poke([]string{"a", "b"}[i%2])
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("1000 pokes behind a held one took %s", took)
	}
	release.Do(func() { close(as.holdPokes) })
	var got []string
	for len(got) < 3 {
		select {
		case d := <-as.pokes:
			got = append(got, d)
		case <-time.After(5 * time.Second):
			t.Fatalf("pokes = %v, want first, a, b", got)
		}
	}
	if !slices.Equal(got, []string{"first", "a", "b"}) {
		t.Errorf("pokes = %v, want [first a b]: queued pokes coalesced per deployment", got)
	}
	select {
	case d := <-as.pokes:
		t.Errorf("extra poke %q: the queued ones should go once per deployment", d)
	case <-time.After(100 * time.Millisecond):
	}
}

// TestReporterCarriesActivatorPokes wires the reporter as Config.Poke: a
// request at an entity with no replica pokes the autoscaler over HTTP.
func TestReporterCarriesActivatorPokes(t *testing.T) {
	as := startAutoscaler(t)
	r := &Reporter{URL: as.url, Interval: time.Hour}
	h := newHarness(t, Config{Poke: r.Poke, QueueTimeout: 5 * time.Second})
	runReporter(t, r, h.a)
	h.push(oneEndpoint(1, "ep", nil, coldEntity("z")))
	h.invokeAsync("ep", []byte(`{"inputs":[1]}`))
	select {
	case d := <-as.pokes:
		if d != "z-d1" {
			t.Errorf("poke for %q, want z-d1", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a request at zero replicas did not poke the autoscaler")
	}
}

func TestReporterNeedsURL(t *testing.T) {
	h := newHarness(t, Config{})
	for _, u := range []string{"", "127.0.0.1:8082", "ftp://host"} {
		if err := (&Reporter{URL: u}).Run(context.Background(), h.a); err == nil {
			t.Errorf("Run with URL %q = nil, want an error", u)
		}
	}
}

// levelCounter is a slog.Handler that counts records by level.
type levelCounter struct {
	mu     sync.Mutex // guards counts
	counts map[slog.Level]int
}

func (l *levelCounter) Enabled(context.Context, slog.Level) bool { return true }
func (l *levelCounter) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.counts[r.Level]++
	return nil
}
func (l *levelCounter) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *levelCounter) WithGroup(string) slog.Handler      { return l }
func (l *levelCounter) count(level slog.Level) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.counts[level]
}
