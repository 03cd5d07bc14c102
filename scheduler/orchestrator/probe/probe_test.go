package probe

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/internal/fakeclock"
)

// TestDecideScripts runs the policy over scripts of ping results: "ok" is
// a 200, "-" a miss. Each step shows the readiness after it, "R" or "-",
// a "!" when it changed, and the wait before the next ping.
func TestDecideScripts(t *testing.T) {
	const interval = 5 * time.Second
	for _, tc := range []struct {
		name, pings, want string
	}{{
		name:  "starts fast and backs off to 200 ms while loading",
		pings: "- - - - - - - - - - ok",
		want:  "-/2ms -/4ms -/8ms -/16ms -/32ms -/64ms -/128ms -/200ms -/200ms -/200ms R!/5s",
	}, {
		name:  "ready at the first ping",
		pings: "ok ok",
		want:  "R!/5s R/5s",
	}, {
		name:  "two misses keep a busy worker in",
		pings: "ok - - ok - - ok",
		want:  "R!/5s R/5s R/5s R/5s R/5s R/5s R/5s",
	}, {
		name:  "three misses in a row take it out, the next 200 puts it back",
		pings: "ok - - - - ok",
		want:  "R!/5s R/5s R/5s -!/5s -/5s R!/5s",
	}, {
		name:  "out again after another three",
		pings: "ok - - - ok - - -",
		want:  "R!/5s R/5s R/5s -!/5s R!/5s R/5s R/5s -!/5s",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			var s State
			var got []string
			for _, p := range strings.Fields(tc.pings) {
				var d Decision
				s, d = Decide(s, p == "ok", interval)
				step := "-"
				if s.Ready {
					step = "R"
				}
				if d.Changed {
					step += "!"
				}
				got = append(got, step+"/"+d.Wait.String())
			}
			if g := strings.Join(got, " "); g != tc.want {
				t.Errorf("pings %q\n got %s\nwant %s", tc.pings, g, tc.want)
			}
		})
	}
}

func TestDecideDefaultInterval(t *testing.T) {
	if _, d := Decide(State{}, true, 0); d.Wait != DefaultInterval {
		t.Errorf("Wait = %v with no interval, want %v", d.Wait, DefaultInterval)
	}
}

func TestPing(t *testing.T) {
	var status atomic.Int32
	var notice atomic.Value
	notice.Store("")
	status.Store(http.StatusServiceUnavailable)
	hang := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/ping" {
			t.Errorf("probed %s, want /ping", r.URL.Path)
		}
		if status.Load() == 0 {
			select {
			case <-hang:
			case <-r.Context().Done():
			}
			return
		}
		if n := notice.Load().(string); n != "" {
			w.Header().Set(api.NoticeHeader, n)
		}
		w.WriteHeader(int(status.Load()))
	}))
	defer srv.Close()
	defer close(hang)
	addr := strings.TrimPrefix(srv.URL, "http://")
	ctx := context.Background()
	if got := Ping(ctx, srv.Client(), addr); got != (Result{Answered: true}) {
		t.Errorf("loading worker: %+v, want answered, not ok", got)
	}
	status.Store(http.StatusOK)
	if got := Ping(ctx, srv.Client(), addr); got != (Result{Answered: true, OK: true}) {
		t.Errorf("ready worker: %+v, want ok", got)
	}
	// A ready worker's notice comes with its answer, cut to api.MaxNotice.
	n := "scikit-learn 1.4.0 logged, 1.2.1 here"
	notice.Store(n)
	if got := Ping(ctx, srv.Client(), addr); got != (Result{Answered: true, OK: true, Notice: n}) {
		t.Errorf("ready worker with a notice: %+v", got)
	}
	notice.Store(strings.Repeat("é", api.MaxNotice))
	if got := Ping(ctx, srv.Client(), addr); len(got.Notice) > api.MaxNotice || !utf8.ValidString(got.Notice) || got.Notice == "" {
		t.Errorf("a long notice came back as %d bytes (valid UTF-8 %v), want at most %d", len(got.Notice), utf8.ValidString(got.Notice), api.MaxNotice)
	}
	notice.Store("")
	status.Store(0)
	start := time.Now()
	if got := Ping(ctx, srv.Client(), addr); got != (Result{}) {
		t.Errorf("hung worker: %+v, want a miss", got)
	}
	if took := time.Since(start); took < Timeout || took > Timeout+time.Second {
		t.Errorf("a hung ping took %v, want about Timeout (%v)", took, Timeout)
	}
	if got := Ping(ctx, srv.Client(), "127.0.0.1:1"); got != (Result{}) {
		t.Errorf("nothing listening: %+v, want a miss", got)
	}
}

// script is a worker whose ping results the test sets, with a fake clock.
type script struct {
	mu      sync.Mutex // guards results and pings
	results []Result   // the next results, in order; empty: a miss
	pings   int
	clock   *fakeclock.Clock
}

func (s *script) ping(context.Context, string) Result {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pings++
	if len(s.results) == 0 {
		return Result{}
	}
	r := s.results[0]
	s.results = s.results[1:]
	return r
}

func (s *script) push(rs ...Result) {
	s.mu.Lock()
	s.results = append(s.results, rs...)
	s.mu.Unlock()
}

func (s *script) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pings
}

// tick waits until the prober waits on the clock, then moves it by d.
func (s *script) tick(t *testing.T, d time.Duration) {
	t.Helper()
	s.waitForWaiter(t)
	s.clock.Add(d)
}

// waitForWaiter waits until the prober waits on the clock.
func (s *script) waitForWaiter(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for s.clock.Waiters() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the prober never waited on the clock")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestAwaitReady(t *testing.T) {
	s := &script{clock: &fakeclock.Clock{}}
	p := &Prober{Clock: s.clock, Ping: s.ping}
	s.push(Result{}, Result{Answered: true}, Result{Answered: true}, Result{Answered: true, OK: true, Notice: "n"})
	type out struct {
		ready  bool
		at     time.Time
		notice string
	}
	done := make(chan out, 1)
	go func() {
		ready, at, notice := p.AwaitReady(context.Background(), "w")
		done <- out{ready, at, notice}
	}()
	// Nothing listens, then the process answers (at 2 ms) while the model
	// loads, then it is ready: pinged at 0, 2, 6 and 14 ms.
	for _, d := range []time.Duration{2 * time.Millisecond, 4 * time.Millisecond, 8 * time.Millisecond} {
		s.tick(t, d)
	}
	got := <-done
	if !got.ready || got.at != (time.Time{}).Add(2*time.Millisecond) || s.count() != 4 || got.notice != "n" {
		t.Errorf("AwaitReady = %v answered at %v after %d pings, notice %q; want ready, first answer at 2ms, 4 pings, the ready answer's notice", got.ready, got.at.Sub(time.Time{}), s.count(), got.notice)
	}

	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		ready, at, notice := p.AwaitReady(ctx, "w")
		done <- out{ready, at, notice}
	}()
	s.tick(t, 2*time.Millisecond)
	cancel()
	if got := <-done; got.ready || !got.at.IsZero() {
		t.Errorf("cancelled AwaitReady = %+v, want not ready, never answered", got)
	}
}

func TestWatch(t *testing.T) {
	s := &script{clock: &fakeclock.Clock{}}
	p := &Prober{Interval: time.Second, Clock: s.clock, Ping: s.ping}
	sets := make(chan bool, 10)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Watch(ctx, "w", func(r bool) { sets <- r }); close(done) }()

	ok := Result{Answered: true, OK: true}
	s.push(ok, Result{}, Result{Answered: true}, Result{}, ok)
	for range 3 { // ok, miss, 503: still in
		s.tick(t, time.Second)
	}
	// Once the prober waits again, it has called set for that ping if it
	// was going to.
	s.waitForWaiter(t)
	select {
	case r := <-sets:
		t.Fatalf("set(%v) after two misses in a row, want nothing", r)
	default:
	}
	s.tick(t, time.Second) // the third miss in a row
	if r := <-sets; r {
		t.Fatal("set(true), want set(false) after three misses")
	}
	s.tick(t, time.Second)
	if r := <-sets; !r {
		t.Fatal("set(false), want set(true) at the next 200")
	}
	cancel()
	<-done
}

// TestPingReadsFirstResponse: a ready worker's api.FirstResponseHeader
// comes back parsed; nonsense, or the header on a 503, counts as none.
func TestPingReadsFirstResponse(t *testing.T) {
	var status atomic.Int32
	var header atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(api.FirstResponseHeader, header.Load().(string))
		w.WriteHeader(int(status.Load()))
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	for _, tc := range []struct {
		status int
		header string
		want   api.FirstResponse
	}{
		{200, "first_token ago=1.5s took=42ms", api.FirstResponse{Phase: api.PhaseFirstToken, Ago: 1500 * time.Millisecond, Took: 42 * time.Millisecond}},
		{200, "first_response ago=0s took=3µs", api.FirstResponse{Phase: api.PhaseFirstResponse, Took: 3 * time.Microsecond}},
		{200, "first_token ago=-1s took=42ms", api.FirstResponse{}},
		{200, "model_load ago=1s took=42ms", api.FirstResponse{}},
		{200, "first_token took=42ms ago=1s", api.FirstResponse{}},
		{503, "first_token ago=1s took=42ms", api.FirstResponse{}},
	} {
		status.Store(int32(tc.status))
		header.Store(tc.header)
		if got := Ping(context.Background(), srv.Client(), addr); got.First != tc.want {
			t.Errorf("%d with %q: First = %+v, want %+v", tc.status, tc.header, got.First, tc.want)
		}
	}
}

// TestWatchReportsFirstResponse: until a ping reports the first
// response, the worker is pinged every FirstResponseWait as well, and those
// pings decide nothing of readiness (three misses among them take nothing
// out); the first 200 that carries a first response calls FirstResponse
// once, with the worker's durations placed on the prober's clock; after
// it, the pace is Interval's again.
func TestWatchReportsFirstResponse(t *testing.T) {
	s := &script{clock: &fakeclock.Clock{}}
	firsts := make(chan First, 10)
	sets := make(chan bool, 10)
	p := &Prober{Interval: time.Second, Clock: s.clock, Ping: s.ping, FirstResponse: func(f First) { firsts <- f }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Watch(ctx, "w", func(r bool) { sets <- r }); close(done) }()

	first := api.FirstResponse{Phase: api.PhaseFirstToken, Ago: 300 * time.Millisecond, Took: 50 * time.Millisecond}
	ok := Result{Answered: true, OK: true}
	// At 0.2, 0.4, 0.6 s: misses, one a 503 with a first response (not a
	// 200: ignored); at 0.8 s the report; at 1 s (Interval's ping) and 2 s
	// the report again.
	s.push(Result{}, Result{Answered: true, First: first}, Result{},
		Result{Answered: true, OK: true, First: first}, Result{Answered: true, OK: true, First: first}, ok)
	for range 3 {
		s.tick(t, FirstResponseWait)
	}
	s.waitForWaiter(t)
	select {
	case f := <-firsts:
		t.Fatalf("FirstResponse(%+v) before a 200 carried one", f)
	default:
	}
	s.tick(t, FirstResponseWait)
	f := <-firsts
	answered := (time.Time{}).Add(4*FirstResponseWait - 300*time.Millisecond)
	if want := (First{Phase: api.PhaseFirstToken, Arrived: answered.Add(-50 * time.Millisecond), Answered: answered}); f != want {
		t.Errorf("FirstResponse(%+v), want %+v", f, want)
	}
	s.tick(t, time.Second-4*FirstResponseWait) // Interval's ping
	s.tick(t, time.Second)
	s.waitForWaiter(t)
	if n := s.count(); n != 6 {
		t.Errorf("%d pings by 2 s, want 6: every %v until the report, then every Interval", n, FirstResponseWait)
	}
	select {
	case f := <-firsts:
		t.Fatalf("FirstResponse(%+v) again", f)
	case r := <-sets:
		t.Fatalf("set(%v): the pings for the first response decided readiness", r)
	default:
	}
	cancel()
	<-done
}
