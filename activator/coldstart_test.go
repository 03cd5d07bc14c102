package activator

import (
	"bytes"
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/internal/eventually"
	"github.com/gantry/gantry/internal/fakeclock"
	"github.com/valyala/fasthttp"
)

// gate is a worker handler that holds every request until open is closed.
type gate struct {
	open chan struct{}
	once sync.Once
}

func newGate() *gate { return &gate{open: make(chan struct{})} }

func (g *gate) handle(ctx *fasthttp.RequestCtx) {
	<-g.open
	ctx.SetContentType("application/json")
	ctx.SetBodyString(`{"predictions":[]}`)
}

func (g *gate) release() { g.once.Do(func() { close(g.open) }) }

func TestColdStartHoldsThenServes(t *testing.T) {
	pokes := make(chan string, 100)
	h := newHarness(t, Config{Poke: func(d string) {
		select {
		case pokes <- d:
		default:
		}
	}})
	h.push(oneEndpoint(1, "ep", nil, coldEntity("m")))

	const n = 10
	answers := make([]<-chan answer, n)
	for i := range answers {
		answers[i] = h.invokeAsync("ep", []byte(`{"inputs":[1]}`))
	}
	h.waitQueued("ep", "m", n)
	select {
	case d := <-pokes:
		if d != "m-d1" {
			t.Errorf("Poke(%q), want the deployment m-d1", d)
		}
	default:
		t.Error("no Poke for requests at zero replicas")
	}

	// The replica comes up with 4 slots; the worker holds what it gets, so
	// the first grant is all there is to see.
	g := newGate()
	w := startWorker(t, "w", g.handle)
	e := coldEntity("m")
	e.State, e.Replicas = api.DeploymentReady, []api.Replica{{ID: "a", Addr: w.addr}}
	h.push(oneEndpoint(2, "ep", nil, e))
	eventually.True(t, 5*time.Second, "4 requests at the worker", func() bool { return w.holding.Load() == 4 })
	h.waitQueued("ep", "m", n-4)
	time.Sleep(20 * time.Millisecond) // room for a burst, if there were one
	if got := w.most.Load(); got != 4 {
		t.Fatalf("the worker held %d requests at once, want its concurrency 4", got)
	}

	g.release()
	for i, ch := range answers {
		if got := receive(t, ch); got.status != http.StatusOK || got.header.Get("served-model-name") != "m" {
			t.Errorf("request %d: %d %s", i, got.status, got.body)
		}
	}
	if w.most.Load() > 4 {
		t.Errorf("the worker held %d requests at once, more than its concurrency 4", w.most.Load())
	}
	if w.hits.Load() != n {
		t.Errorf("worker got %d requests, want %d", w.hits.Load(), n)
	}
}

func TestNeverAboveConcurrency(t *testing.T) {
	// Two replicas of 3 slots, 40 requests at once, each held a little by
	// the worker: the workers themselves count what they hold.
	slow := func(ctx *fasthttp.RequestCtx) {
		time.Sleep(2 * time.Millisecond)
		ctx.SetBodyString(`{}`)
	}
	w1, w2 := startWorker(t, "w1", slow), startWorker(t, "w2", slow)
	h := newHarness(t, Config{})
	e := readyEntity("m", w1.addr, w2.addr)
	e.Concurrency = 3
	h.push(oneEndpoint(1, "ep", nil, e))

	var answers []<-chan answer
	for range 40 {
		answers = append(answers, h.invokeAsync("ep", []byte(`{}`)))
	}
	for _, ch := range answers {
		if got := receive(t, ch); got.status != http.StatusOK {
			t.Errorf("%d %s", got.status, got.body)
		}
	}
	if w1.most.Load() > 3 || w2.most.Load() > 3 {
		t.Errorf("workers held up to %d and %d requests at once, want at most 3", w1.most.Load(), w2.most.Load())
	}
	if w1.hits.Load()+w2.hits.Load() != 40 || w1.hits.Load() == 0 || w2.hits.Load() == 0 {
		t.Errorf("hits %d and %d, want 40 spread over both", w1.hits.Load(), w2.hits.Load())
	}
}

func TestWaitersServedInOrder(t *testing.T) {
	var mu sync.Mutex
	var order []string
	release := make(chan struct{}, 100)
	w := startWorker(t, "w", func(ctx *fasthttp.RequestCtx) {
		mu.Lock()
		order = append(order, string(ctx.PostBody()))
		mu.Unlock()
		<-release
		ctx.SetBodyString(`{}`)
	})
	h := newHarness(t, Config{})
	e := readyEntity("m", w.addr)
	e.Concurrency = 1
	h.push(oneEndpoint(1, "ep", nil, e))

	// The first request takes the only slot; the others queue up one by
	// one, so their arrival order is known.
	var answers []<-chan answer
	answers = append(answers, h.invokeAsync("ep", []byte("0")))
	eventually.True(t, 5*time.Second, "the first request at the worker", func() bool { return w.holding.Load() == 1 })
	for i := 1; i < 6; i++ {
		answers = append(answers, h.invokeAsync("ep", []byte(fmt.Sprint(i))))
		h.waitQueued("ep", "m", i)
	}
	for range answers {
		release <- struct{}{}
	}
	for _, ch := range answers {
		receive(t, ch)
	}
	mu.Lock()
	defer mu.Unlock()
	if got := strings.Join(order, ","); got != "0,1,2,3,4,5" {
		t.Errorf("the worker got %s, want 0,1,2,3,4,5 (arrival order)", got)
	}
}

func TestQueueFull(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		body []byte
		fits int
	}{
		{"count", Config{QueueDepth: 3}, []byte(`{"inputs":[1]}`), 3},
		{"bytes", Config{QueueBytes: 2500}, bytes.Repeat([]byte("x"), 1024), 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, tc.cfg)
			h.push(oneEndpoint(1, "ep", nil, coldEntity("m")))
			var held []<-chan answer
			for i := range tc.fits {
				held = append(held, h.invokeAsync("ep", tc.body))
				h.waitQueued("ep", "m", i+1)
			}

			got := receive(t, h.invokeAsync("ep", tc.body))
			if got.status != http.StatusServiceUnavailable || got.apiError(t).Code != api.ErrTemporarilyUnavailable {
				t.Fatalf("answer = %d %s, want 503 %s", got.status, got.body, api.ErrTemporarilyUnavailable)
			}
			if got.header.Get("Retry-After") != "1" {
				t.Errorf("Retry-After = %q, want 1", got.header.Get("Retry-After"))
			}
			if msg := got.apiError(t).Message; !strings.Contains(msg, "too many requests waiting") {
				t.Errorf("message %q does not say the queue is full", msg)
			}

			// The held requests are still there, and are served once a
			// replica comes up.
			w := startWorker(t, "w", nil)
			h.push(oneEndpoint(2, "ep", nil, readyEntity("m", w.addr)))
			for _, ch := range held {
				if got := receive(t, ch); got.status != http.StatusOK {
					t.Errorf("held request: %d %s", got.status, got.body)
				}
			}
		})
	}
}

func TestQueueTimeout(t *testing.T) {
	h := newHarness(t, Config{QueueTimeout: 50 * time.Millisecond})
	h.push(oneEndpoint(1, "ep", nil, coldEntity("m")))

	start := time.Now()
	got := h.invoke("ep")
	if got.status != http.StatusGatewayTimeout || got.apiError(t).Code != api.ErrDeadlineExceeded {
		t.Fatalf("answer = %d %s, want 504 %s", got.status, got.body, api.ErrDeadlineExceeded)
	}
	if d := time.Since(start); d < 50*time.Millisecond || d > 2*time.Second {
		t.Errorf("504 after %s, want just after the 50ms queue timeout", d)
	}
	msg := got.apiError(t).Message
	for _, s := range []string{"did not become ready within the queue timeout", "50ms", api.DeploymentCreating} {
		if !strings.Contains(msg, s) {
			t.Errorf("message %q does not mention %q", msg, s)
		}
	}
	if n := h.queued("ep", "m"); n != 0 {
		t.Errorf("%d requests left in the queue", n)
	}
}

func TestFailedStartFailsHeldRequests(t *testing.T) {
	h := newHarness(t, Config{})
	e := coldEntity("m")
	e.Failures = 1 // an earlier failure: requests that come now wait for the next start
	h.push(oneEndpoint(1, "ep", nil, e))

	var held []<-chan answer
	for i := range 3 {
		held = append(held, h.invokeAsync("ep", []byte(`{}`)))
		h.waitQueued("ep", "m", i+1)
	}

	// A new failure while not FAILED (the scheduler retries by itself)
	// fails nobody.
	e.Failures = 2
	h.push(oneEndpoint(2, "ep", nil, e))
	if n := h.queued("ep", "m"); n != 3 {
		t.Fatalf("%d requests held after a failure in state CREATING, want 3", n)
	}

	e.State, e.Message, e.Failures = api.DeploymentFailed, "model load: no MLmodel file", 3
	failedAt := time.Now()
	h.push(oneEndpoint(3, "ep", nil, e))
	for _, ch := range held {
		got := receive(t, ch)
		if got.status != http.StatusServiceUnavailable || got.apiError(t).Code != api.ErrTemporarilyUnavailable {
			t.Fatalf("answer = %d %s, want 503", got.status, got.body)
		}
		if msg := got.apiError(t).Message; !strings.Contains(msg, "model load: no MLmodel file") || !strings.Contains(msg, "failed to start") {
			t.Errorf("message %q does not give the reason", msg)
		}
		if got.header.Get("Retry-After") != "1" {
			t.Errorf("Retry-After = %q, want 1", got.header.Get("Retry-After"))
		}
	}
	if d := time.Since(failedAt); d > time.Second {
		t.Errorf("held requests failed %s after the table that reported the failure", d)
	}

	// A request that arrives while FAILED waits for the next start: the
	// same table again fails nobody, a higher count fails it, and a
	// replica would serve it.
	next := h.invokeAsync("ep", []byte(`{}`))
	h.waitQueued("ep", "m", 1)
	h.push(oneEndpoint(4, "ep", nil, e))
	if n := h.queued("ep", "m"); n != 1 {
		t.Fatalf("the same failure count failed a request that came after it")
	}
	e.Failures = 4
	h.push(oneEndpoint(5, "ep", nil, e))
	if got := receive(t, next); got.status != http.StatusServiceUnavailable {
		t.Fatalf("after the next failure: %d %s, want 503", got.status, got.body)
	}

	last := h.invokeAsync("ep", []byte(`{}`))
	h.waitQueued("ep", "m", 1)
	w := startWorker(t, "w", nil)
	e.State, e.Message, e.Replicas = api.DeploymentReady, "", []api.Replica{{ID: "a", Addr: w.addr}}
	h.push(oneEndpoint(6, "ep", nil, e))
	if got := receive(t, last); got.status != http.StatusOK {
		t.Fatalf("after the replica came up: %d %s, want 200", got.status, got.body)
	}
}

func TestEntityRemovedFailsHeldRequests(t *testing.T) {
	h := newHarness(t, Config{})
	w := startWorker(t, "w", nil)
	h.push(&api.RouteTable{Index: 1, Endpoints: []api.EndpointRoute{
		{Name: "ep", Entities: []api.EntityRoute{coldEntity("m")}},
		{Name: "other", Entities: []api.EntityRoute{readyEntity("o", w.addr)}},
	}})
	held := h.invokeAsync("ep", []byte(`{}`))
	h.waitQueued("ep", "m", 1)

	// A new config: the entity's deployment changes. The held request
	// moves to the new deployment and waits there until it has a replica.
	e := coldEntity("m")
	e.Deployment = "m-d2"
	h.push(&api.RouteTable{Index: 2, Endpoints: []api.EndpointRoute{
		{Name: "ep", Entities: []api.EntityRoute{e}},
		{Name: "other", Entities: []api.EntityRoute{readyEntity("o", w.addr)}},
	}})
	h.waitQueued("ep", "m", 1)
	e = readyEntity("m", w.addr)
	e.Deployment = "m-d2"
	h.push(&api.RouteTable{Index: 3, Endpoints: []api.EndpointRoute{
		{Name: "ep", Entities: []api.EntityRoute{e}},
		{Name: "other", Entities: []api.EntityRoute{readyEntity("o", w.addr)}},
	}})
	if got := receive(t, held); got.status != http.StatusOK {
		t.Fatalf("request held across a deployment change: %d %s; want 200 from the new one", got.status, got.body)
	}

	// The endpoint goes: nothing takes the entity's place.
	h.push(&api.RouteTable{Index: 4, Endpoints: []api.EndpointRoute{
		{Name: "ep", Entities: []api.EntityRoute{coldEntity("m")}},
		{Name: "other", Entities: []api.EntityRoute{readyEntity("o", w.addr)}},
	}})
	held = h.invokeAsync("ep", []byte(`{}`))
	h.waitQueued("ep", "m", 1)
	h.push(&api.RouteTable{Index: 5, Endpoints: []api.EndpointRoute{
		{Name: "other", Entities: []api.EntityRoute{readyEntity("o", w.addr)}},
	}})
	got := receive(t, held)
	if got.status != http.StatusServiceUnavailable || got.header.Get("Retry-After") != "1" {
		t.Fatalf("endpoint removed: %d %s, Retry-After %q; want 503, 1", got.status, got.body, got.header.Get("Retry-After"))
	}
	if msg := got.apiError(t).Message; !strings.Contains(msg, "removed") {
		t.Errorf("message %q does not say the entity was removed", msg)
	}
}

func TestShutdownFailsHeldRequests(t *testing.T) {
	h := newHarness(t, Config{})
	h.push(oneEndpoint(1, "ep", nil, coldEntity("m")))
	held := h.invokeAsync("ep", []byte(`{}`))
	h.waitQueued("ep", "m", 1)

	// Run ends before the server shuts down (newHarness's cleanup does
	// the same); fasthttp's Shutdown would wait for a held request.
	h.stopRun()
	got := receive(t, held)
	if got.status != http.StatusServiceUnavailable || got.header.Get("Retry-After") != "1" {
		t.Fatalf("held request at shutdown: %d %s, Retry-After %q; want 503, 1", got.status, got.body, got.header.Get("Retry-After"))
	}
	if msg := got.apiError(t).Message; !strings.Contains(msg, "shutting down") {
		t.Errorf("message %q", msg)
	}
	// Later requests that would have to wait are refused at once.
	if got := h.invoke("ep"); got.status != http.StatusServiceUnavailable {
		t.Errorf("request after shutdown: %d %s, want 503", got.status, got.body)
	}
}

func TestPokeRateLimited(t *testing.T) {
	clock := &fakeclock.Clock{}
	var mu sync.Mutex
	var pokes []string
	h := newHarness(t, Config{Clock: clock.Now, QueueTimeout: time.Minute, Poke: func(d string) {
		mu.Lock()
		defer mu.Unlock()
		pokes = append(pokes, d)
	}})
	w := startWorker(t, "w", nil)
	h.push(&api.RouteTable{Index: 1, Endpoints: []api.EndpointRoute{
		{Name: "ep", Entities: []api.EntityRoute{coldEntity("m"), coldEntity("n")}},
		{Name: "warm", Entities: []api.EntityRoute{readyEntity("o", w.addr)}},
	}})
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(pokes)
	}

	var held []<-chan answer
	hold := func(served string) {
		held = append(held, h.invokeServedAsync("ep", served))
	}
	hold("m")
	eventually.True(t, 5*time.Second, "the first poke", func() bool { return count() == 1 })
	hold("m")
	hold("m")
	h.waitQueued("ep", "m", 3)
	if n := count(); n != 1 {
		t.Errorf("%d pokes for 3 requests within 100 ms, want 1", n)
	}
	hold("n") // another entity has its own limit
	eventually.True(t, 5*time.Second, "n's poke", func() bool { return count() == 2 })
	clock.Add(100 * time.Millisecond)
	hold("m")
	eventually.True(t, 5*time.Second, "a poke 100 ms later", func() bool { return count() == 3 })
	h.invoke("warm") // replicas: no poke
	if n := count(); n != 3 {
		t.Errorf("%d pokes, want 3", n)
	}
	mu.Lock()
	if got := strings.Join(pokes, ","); got != "m-d1,n-d1,m-d1" {
		t.Errorf("pokes = %s, want m-d1,n-d1,m-d1", got)
	}
	mu.Unlock()

	h.push(&api.RouteTable{Index: 2, Endpoints: []api.EndpointRoute{
		{Name: "ep", Entities: []api.EntityRoute{readyEntity("m", w.addr), readyEntity("n", w.addr)}},
	}})
	for _, ch := range held {
		receive(t, ch)
	}
}

// invokeServedAsync invokes one served entity of endpoint, bypassing the
// split, from a goroutine of its own.
func (h *harness) invokeServedAsync(endpoint, served string) <-chan answer {
	return h.invokeAsync(endpoint+"/served-models/"+served, []byte(`{}`))
}

func TestStats(t *testing.T) {
	clock := &fakeclock.Clock{}
	g := newGate()
	w := startWorker(t, "w", g.handle)
	h := newHarness(t, Config{Clock: clock.Now})
	defer g.release()
	h.push(&api.RouteTable{Index: 1, Endpoints: []api.EndpointRoute{
		{Name: "ep", Entities: []api.EntityRoute{readyEntity("m", w.addr), coldEntity("z")}},
	}})
	h.a.Stats() // start the period now

	// 2 requests in flight for 0.5 s, then 2 more queued at z for 0.5 s:
	// m averages (2 × 1 s) / 1 s = 2, z (2 × 0.5 s) / 1 s = 1.
	var answers []<-chan answer
	for range 2 {
		answers = append(answers, h.invokeServedAsync("ep", "m"))
	}
	eventually.True(t, 5*time.Second, "2 requests at the worker", func() bool { return w.holding.Load() == 2 })
	clock.Add(500 * time.Millisecond)
	for range 2 {
		answers = append(answers, h.invokeServedAsync("ep", "z"))
	}
	h.waitQueued("ep", "z", 2)
	clock.Add(500 * time.Millisecond)

	got := h.a.Stats()
	want := []EntityStats{
		{Deployment: "m-d1", Endpoint: "ep", Entity: "m", Concurrency: 2, InFlight: 2, Queued: 0, Requests: 2},
		{Deployment: "z-d1", Endpoint: "ep", Entity: "z", Concurrency: 1, InFlight: 0, Queued: 2, Requests: 2},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Stats =\n%+v\nwant\n%+v", got, want)
	}

	// A burst that comes and goes between two calls still counts: m's
	// requests end after 0.25 s of the next second.
	clock.Add(250 * time.Millisecond)
	g.release()
	for _, ch := range answers[:2] {
		receive(t, ch)
	}
	clock.Add(750 * time.Millisecond)
	if got := h.a.Stats(); got[0].Concurrency != 0.5 || got[0].InFlight != 0 {
		t.Errorf("m after its burst: %+v, want concurrency 0.5 and nothing in flight", got[0])
	}

	e := readyEntity("z", w.addr)
	h.push(oneEndpoint(2, "ep", nil, readyEntity("m", w.addr), e))
	for _, ch := range answers[2:] {
		receive(t, ch)
	}
}

// The queue timeout is long enough that no request times out between the
// queue count reaching 50 and the goroutine count on a loaded machine
// (100 ms did, in a CI run beside other builds).
func TestHeldRequestsLeaveNoGoroutines(t *testing.T) {
	h := newHarness(t, Config{QueueTimeout: time.Second})
	h.push(oneEndpoint(1, "ep", nil, coldEntity("m")))

	var answers []<-chan answer
	for range 50 {
		answers = append(answers, h.invokeAsync("ep", []byte(`{}`)))
	}
	h.waitQueued("ep", "m", 50)
	if n := waiting(); n != 50 {
		t.Fatalf("%d goroutines wait in the activator, want 50", n)
	}
	for _, ch := range answers {
		if got := receive(t, ch); got.status != http.StatusGatewayTimeout {
			t.Fatalf("%d %s, want 504", got.status, got.body)
		}
	}
	// fasthttp keeps idle workers for a while, so counting all goroutines
	// proves nothing; count those still inside the activator's wait.
	eventually.True(t, 5*time.Second, "no goroutine left waiting", func() bool { return waiting() == 0 })
	if n := h.queued("ep", "m"); n != 0 {
		t.Errorf("%d requests left in the queue", n)
	}
}

// waiting counts the goroutines that wait for a replica slot.
func waiting() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	return strings.Count(string(buf), "activator.(*Activator).wait(")
}
