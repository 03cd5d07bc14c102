package activator

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/internal/eventually"
	"github.com/gantry/gantry/internal/fakeclock"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/valyala/fasthttp"
)

var requestIDPattern = regexp.MustCompile(`^[0-9a-f]{32}$`)

func TestInvokeProxiesToReplica(t *testing.T) {
	h := newHarness(t, Config{})
	w := startWorker(t, "w1", nil)
	h.push(oneEndpoint(1, "ep", nil, readyEntity("model-1", w.addr)))

	got := h.invoke("ep")
	if got.status != http.StatusOK || string(got.body) != `{"predictions":["w1"]}` {
		t.Fatalf("answer = %d %s, want 200 from w1", got.status, got.body)
	}
	if ct := got.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want the worker's application/json", ct)
	}
	if s := got.header.Get("served-model-name"); s != "model-1" {
		t.Errorf("served-model-name = %q, want model-1", s)
	}
	id := got.header.Get("x-request-id")
	if !requestIDPattern.MatchString(id) {
		t.Errorf("x-request-id = %q, want 32 hex digits", id)
	}
	if again := h.invoke("ep").header.Get("x-request-id"); again == id {
		t.Errorf("two answers share x-request-id %s", id)
	}
}

func TestBodyPassesUntouched(t *testing.T) {
	type seen struct {
		method, path, contentType, encoding, requestID string
		body                                           []byte
	}
	got := make(chan seen, 1)
	w := startWorker(t, "echo", func(ctx *fasthttp.RequestCtx) {
		got <- seen{
			method:      string(ctx.Method()),
			path:        string(ctx.RequestURI()),
			contentType: string(ctx.Request.Header.ContentType()),
			encoding:    string(ctx.Request.Header.ContentEncoding()),
			requestID:   string(ctx.Request.Header.Peek("x-request-id")),
			body:        bytes.Clone(ctx.PostBody()),
		}
		ctx.SetStatusCode(http.StatusCreated)
		ctx.SetContentType("application/x-echo")
		ctx.SetBody(ctx.PostBody())
	})
	h := newHarness(t, Config{})
	h.push(oneEndpoint(1, "ep", nil, readyEntity("echo", w.addr)))

	body := make([]byte, 200<<10) // bigger than any buffer on the way, and not UTF-8
	for i := range body {
		body[i] = byte(rand.Uint32())
	}
	req, _ := http.NewRequest(http.MethodPost, h.base+"/serving-endpoints/ep/invocations", bytes.NewReader(body))
	req.Header.Set("Content-Type", "text/csv; charset=latin1")
	req.Header.Set("Content-Encoding", "gzip")
	resp, err := h.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var answer bytes.Buffer
	if _, err := answer.ReadFrom(resp.Body); err != nil {
		t.Fatal(err)
	}

	s := <-got
	if s.method != "POST" || s.path != "/invocations" {
		t.Errorf("worker got %s %s, want POST /invocations", s.method, s.path)
	}
	if s.contentType != "text/csv; charset=latin1" || s.encoding != "gzip" {
		t.Errorf("worker got Content-Type %q, Content-Encoding %q; want the client's", s.contentType, s.encoding)
	}
	if !bytes.Equal(s.body, body) {
		t.Errorf("worker got a %d-byte body that differs from the %d bytes sent", len(s.body), len(body))
	}
	if s.requestID != resp.Header.Get("x-request-id") {
		t.Errorf("worker saw x-request-id %q, client %q", s.requestID, resp.Header.Get("x-request-id"))
	}
	if resp.StatusCode != http.StatusCreated || resp.Header.Get("Content-Type") != "application/x-echo" {
		t.Errorf("answer = %d %q, want the worker's 201 application/x-echo", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if !bytes.Equal(answer.Bytes(), body) {
		t.Errorf("answer body (%d bytes) differs from the worker's", answer.Len())
	}
}

func TestTrafficSplit(t *testing.T) {
	h := newHarness(t, Config{})
	a, b := startWorker(t, "a", nil), startWorker(t, "b", nil)
	h.push(oneEndpoint(1, "ep",
		[]api.Route{{ServedModelName: "a", TrafficPercentage: 80}, {ServedModelName: "b", TrafficPercentage: 20}},
		readyEntity("a", a.addr), readyEntity("b", b.addr)))

	const n = 1000
	count := map[string]int{}
	for range n {
		got := h.invoke("ep")
		if got.status != http.StatusOK {
			t.Fatalf("status %d: %s", got.status, got.body)
		}
		count[got.header.Get("served-model-name")]++
	}
	// 80% of 1000 has a standard deviation of about 13: ±80 is six of them.
	if count["a"] < 720 || count["a"] > 880 || count["a"]+count["b"] != n {
		t.Errorf("split = %v, want about 800/200", count)
	}
	if int64(count["a"]) != a.hits.Load() || int64(count["b"]) != b.hits.Load() {
		t.Errorf("served-model-name counts %v, worker hits a=%d b=%d", count, a.hits.Load(), b.hits.Load())
	}
}

func TestServedModelsPathBypassesSplit(t *testing.T) {
	h := newHarness(t, Config{})
	a, b := startWorker(t, "a", nil), startWorker(t, "b", nil)
	h.push(oneEndpoint(1, "ep",
		[]api.Route{{ServedModelName: "a", TrafficPercentage: 100}, {ServedModelName: "b", TrafficPercentage: 0}},
		readyEntity("a", a.addr), readyEntity("b", b.addr)))

	for range 20 {
		got := h.do(http.MethodPost, "/serving-endpoints/ep/served-models/b/invocations", "application/json", []byte(`{}`))
		if got.status != http.StatusOK || got.header.Get("served-model-name") != "b" {
			t.Fatalf("answer = %d %s from %q, want 200 from b", got.status, got.body, got.header.Get("served-model-name"))
		}
	}
	if a.hits.Load() != 0 {
		t.Errorf("a got %d requests through the served-models path of b", a.hits.Load())
	}
}

func TestLeastInFlight(t *testing.T) {
	release := make(chan struct{})
	var held sync.WaitGroup
	hold := func(ctx *fasthttp.RequestCtx) {
		held.Done()
		<-release
		ctx.SetBodyString(`{"predictions":[]}`)
	}
	w1, w2 := startWorker(t, "w1", hold), startWorker(t, "w2", hold)
	h := newHarness(t, Config{})
	h.push(oneEndpoint(1, "ep", nil, readyEntity("m", w1.addr, w2.addr)))

	// Send requests one at a time, each once the one before is held by a
	// worker: the least loaded replica must alternate. Two replicas of 4
	// slots take 8; a ninth would wait in the queue.
	const n = 8
	var answered sync.WaitGroup
	statuses := make(chan int, n)
	for i := range n {
		held.Add(1)
		answered.Go(func() { statuses <- h.invoke("ep").status })
		held.Wait()
		if d := w1.hits.Load() - w2.hits.Load(); d < -1 || d > 1 {
			t.Fatalf("after %d requests: w1 holds %d, w2 %d", i+1, w1.hits.Load(), w2.hits.Load())
		}
	}
	if w1.hits.Load() != n/2 || w2.hits.Load() != n/2 {
		t.Errorf("w1 holds %d, w2 %d; want %d each", w1.hits.Load(), w2.hits.Load(), n/2)
	}
	close(release)
	answered.Wait()
	close(statuses)
	for s := range statuses {
		if s != http.StatusOK {
			t.Errorf("status %d, want 200", s)
		}
	}
}

func TestNotFound(t *testing.T) {
	h := newHarness(t, Config{})
	w := startWorker(t, "w", nil)
	h.push(oneEndpoint(1, "ep", nil, readyEntity("m", w.addr)))

	for _, tc := range []struct{ path, message string }{
		{"/serving-endpoints/nope/invocations", "endpoint nope does not exist"},
		{"/serving-endpoints/ep/served-models/zzz/invocations", "served entity zzz does not exist in endpoint ep"},
		{"/serving-endpoints/ep/predict", ""},
		{"/serving-endpoints/ep/served-models/m/predict", ""},
		{"/serving-endpoints//invocations", ""},
		{"/other", ""},
	} {
		t.Run(tc.path, func(t *testing.T) {
			got := h.do(http.MethodPost, tc.path, "application/json", []byte(`{}`))
			if got.status != http.StatusNotFound {
				t.Fatalf("status = %d, want 404", got.status)
			}
			e := got.apiError(t)
			if e.Code != api.ErrResourceDoesNotExist {
				t.Errorf("error_code = %q, want %s", e.Code, api.ErrResourceDoesNotExist)
			}
			if tc.message != "" && e.Message != tc.message {
				t.Errorf("message = %q, want %q", e.Message, tc.message)
			}
			if !requestIDPattern.MatchString(got.header.Get("x-request-id")) {
				t.Errorf("x-request-id = %q", got.header.Get("x-request-id"))
			}
		})
	}
	if w.hits.Load() != 0 {
		t.Errorf("worker got %d requests", w.hits.Load())
	}
}

func TestMethodNotAllowed(t *testing.T) {
	h := newHarness(t, Config{})
	w := startWorker(t, "w", nil)
	h.push(oneEndpoint(1, "ep", nil, readyEntity("m", w.addr)))

	got := h.do(http.MethodGet, "/serving-endpoints/ep/invocations", "", nil)
	if got.status != http.StatusMethodNotAllowed || got.header.Get("Allow") != "POST" {
		t.Fatalf("answer = %d, Allow %q; want 405, POST", got.status, got.header.Get("Allow"))
	}
	if got.apiError(t).Code == "" || got.header.Get("served-model-name") != "m" {
		t.Errorf("answer %s, served-model-name %q", got.body, got.header.Get("served-model-name"))
	}
	if w.hits.Load() != 0 {
		t.Errorf("worker got %d requests", w.hits.Load())
	}
}

func TestPayloadTooLarge(t *testing.T) {
	h := newHarness(t, Config{MaxRequestBodySize: 1024})
	w := startWorker(t, "w", nil)
	h.push(oneEndpoint(1, "ep", nil, readyEntity("m", w.addr)))

	got := h.do(http.MethodPost, "/serving-endpoints/ep/invocations", "application/json", make([]byte, 1025))
	if got.status != http.StatusRequestEntityTooLarge || got.apiError(t).Code != api.ErrPayloadTooLarge {
		t.Fatalf("answer = %d %s, want 413 %s", got.status, got.body, api.ErrPayloadTooLarge)
	}
	if w.hits.Load() != 0 {
		t.Errorf("worker got the oversized request")
	}
	if got := h.do(http.MethodPost, "/serving-endpoints/ep/invocations", "application/json", make([]byte, 1024)); got.status != http.StatusOK {
		t.Errorf("a body at the limit got %d, want 200", got.status)
	}
}

func TestTimeout(t *testing.T) {
	stop := make(chan struct{})
	defer close(stop)
	w := startWorker(t, "slow", func(ctx *fasthttp.RequestCtx) { <-stop })
	h := newHarness(t, Config{Timeout: 100 * time.Millisecond})
	h.push(oneEndpoint(1, "ep", nil, readyEntity("slow", w.addr)))

	start := time.Now()
	got := h.invoke("ep")
	if got.status != http.StatusGatewayTimeout || got.apiError(t).Code != api.ErrDeadlineExceeded {
		t.Fatalf("answer = %d %s, want 504 %s", got.status, got.body, api.ErrDeadlineExceeded)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("504 came after %s", d)
	}
	if p := h.a.replicas[w.addr].penalty.Load(); p != 0 {
		t.Errorf("a slow replica got penalty %d; only failed connections count", p)
	}
}

func TestRetryOnDeadReplica(t *testing.T) {
	h := newHarness(t, Config{})
	live := startWorker(t, "live", nil)
	dead := deadAddr(t)
	// Until it is penalized, the dead replica is the first pick half the
	// time (ties start at a random replica): twenty tries make sure.
	h.push(oneEndpoint(1, "ep", nil, readyEntity("m", dead, live.addr)))

	for range 20 {
		if got := h.invoke("ep"); got.status != http.StatusOK {
			t.Fatalf("answer = %d %s, want 200 from the live replica", got.status, got.body)
		}
	}
	if live.hits.Load() != 20 {
		t.Errorf("live replica got %d of 20", live.hits.Load())
	}
	if h.a.replicas[dead].penalty.Load() == 0 {
		t.Errorf("the dead replica is not penalized")
	}
}

func TestAllReplicasDead(t *testing.T) {
	h := newHarness(t, Config{})
	h.push(oneEndpoint(1, "ep", nil, readyEntity("m", deadAddr(t), deadAddr(t))))

	got := h.invoke("ep")
	if got.status != http.StatusServiceUnavailable || got.apiError(t).Code != api.ErrTemporarilyUnavailable {
		t.Fatalf("answer = %d %s, want 503", got.status, got.body)
	}
	if got.header.Get("Retry-After") == "" {
		t.Errorf("no Retry-After")
	}
}

func TestPenaltyExpires(t *testing.T) {
	h := newHarness(t, Config{})
	h.a.penalty = 50 * time.Millisecond
	dead := deadAddr(t)
	h.push(oneEndpoint(1, "ep", nil, readyEntity("m", dead)))

	if got := h.invoke("ep"); got.status != http.StatusServiceUnavailable {
		t.Fatalf("status = %d, want 503", got.status)
	}
	r := h.a.replicas[dead]
	if r.penalty.Load() == 0 {
		t.Fatal("no penalty after a refused connection")
	}
	eventually.True(t, 5*time.Second, "the penalty to end", func() bool { return r.penalty.Load() == 0 })
}

func TestRouteTableUpdates(t *testing.T) {
	h := newHarness(t, Config{})
	w1, w2 := startWorker(t, "w1", nil), startWorker(t, "w2", nil)

	if h.a.Ready() {
		t.Fatal("Ready before any route table")
	}
	if got := h.invoke("ep"); got.status != http.StatusServiceUnavailable || got.header.Get("Retry-After") != "1" {
		t.Fatalf("before a table: %d, Retry-After %q; want 503, 1", got.status, got.header.Get("Retry-After"))
	}

	h.push(oneEndpoint(1, "ep", nil, readyEntity("m1", w1.addr)))
	if !h.a.Ready() {
		t.Fatal("not Ready after a route table")
	}
	if got := h.invoke("ep"); string(got.body) != `{"predictions":["w1"]}` {
		t.Fatalf("table 1: %s", got.body)
	}
	r1 := h.a.replicas[w1.addr]

	h.push(&api.RouteTable{Index: 2, Endpoints: []api.EndpointRoute{
		{Name: "ep", Entities: []api.EntityRoute{readyEntity("m2", w2.addr)}},
		{Name: "other", Entities: []api.EntityRoute{readyEntity("o", w1.addr)}},
	}})
	if got := h.invoke("ep"); string(got.body) != `{"predictions":["w2"]}` || got.header.Get("served-model-name") != "m2" {
		t.Fatalf("table 2, ep: %s from %q", got.body, got.header.Get("served-model-name"))
	}
	if got := h.invoke("other"); string(got.body) != `{"predictions":["w1"]}` {
		t.Fatalf("table 2, other: %s", got.body)
	}
	if h.a.replicas[w1.addr] != r1 {
		t.Error("the replica of w1 was rebuilt; its connection pool should carry over")
	}

	h.push(&api.RouteTable{Index: 3})
	if got := h.invoke("ep"); got.status != http.StatusNotFound {
		t.Fatalf("table 3 has no endpoints, got %d", got.status)
	}
	if len(h.a.replicas) != 0 {
		t.Errorf("%d replicas kept after every endpoint left", len(h.a.replicas))
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	// The clock stands still, so the cold start lasts 0 s exactly; the
	// queue timeout is real time.
	h := newHarness(t, Config{Metrics: m, QueueTimeout: 20 * time.Millisecond, Clock: (&fakeclock.Clock{}).Now})
	w := startWorker(t, "w", nil)
	h.push(&api.RouteTable{Index: 1, Endpoints: []api.EndpointRoute{
		{Name: "ep", Entities: []api.EntityRoute{readyEntity("m", w.addr)}},
		{Name: "cold", Entities: []api.EntityRoute{{Name: "c", State: api.DeploymentCreating}}},
	}})

	h.invoke("ep")
	h.invoke("ep")
	if got := h.invoke("cold"); got.status != http.StatusGatewayTimeout {
		t.Fatalf("cold: %d %s, want 504 after the queue timeout", got.status, got.body)
	}
	h.invoke("nope")
	h.do(http.MethodPost, "/serving-endpoints/ep/served-models/x/invocations", "", nil)

	want := `
# HELP gantry_activator_requests_total Invocations answered, by endpoint, served entity and HTTP status.
# TYPE gantry_activator_requests_total counter
gantry_activator_requests_total{code="200",endpoint="cold",served_entity="c"} 0
gantry_activator_requests_total{code="200",endpoint="ep",served_entity="m"} 2
gantry_activator_requests_total{code="404",endpoint="",served_entity=""} 1
gantry_activator_requests_total{code="404",endpoint="ep",served_entity=""} 1
gantry_activator_requests_total{code="504",endpoint="cold",served_entity="c"} 1
# HELP gantry_activator_in_flight Invocations being proxied to a worker now.
# TYPE gantry_activator_in_flight gauge
gantry_activator_in_flight{endpoint="cold",served_entity="c"} 0
gantry_activator_in_flight{endpoint="ep",served_entity="m"} 0
# HELP gantry_activator_queue_depth Invocations waiting for a free replica slot now.
# TYPE gantry_activator_queue_depth gauge
gantry_activator_queue_depth{endpoint="cold",served_entity="c"} 0
gantry_activator_queue_depth{endpoint="ep",served_entity="m"} 0
` + coldStartText(coldStart{"cold", "c", 1}, coldStart{"ep", "m", 0})
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "gantry_activator_requests_total",
		"gantry_activator_in_flight", "gantry_activator_queue_depth", "gantry_cold_start_seconds"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(m.duration, "gantry_activator_request_duration_seconds"); n != 2 {
		t.Errorf("%d duration series, want one per endpoint", n)
	}

	// Entities and endpoints that leave the table take their series along.
	h.push(&api.RouteTable{Index: 2, Endpoints: []api.EndpointRoute{
		{Name: "ep", Entities: []api.EntityRoute{readyEntity("m2", w.addr)}},
	}})
	want = `
# HELP gantry_activator_requests_total Invocations answered, by endpoint, served entity and HTTP status.
# TYPE gantry_activator_requests_total counter
gantry_activator_requests_total{code="404",endpoint="",served_entity=""} 1
gantry_activator_requests_total{code="404",endpoint="ep",served_entity=""} 1
gantry_activator_requests_total{code="200",endpoint="ep",served_entity="m2"} 0
# HELP gantry_activator_in_flight Invocations being proxied to a worker now.
# TYPE gantry_activator_in_flight gauge
gantry_activator_in_flight{endpoint="ep",served_entity="m2"} 0
# HELP gantry_activator_queue_depth Invocations waiting for a free replica slot now.
# TYPE gantry_activator_queue_depth gauge
gantry_activator_queue_depth{endpoint="ep",served_entity="m2"} 0
` + coldStartText(coldStart{"ep", "m2", 0})
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "gantry_activator_requests_total",
		"gantry_activator_in_flight", "gantry_activator_queue_depth", "gantry_cold_start_seconds"); err != nil {
		t.Error(err)
	}
}

// coldStart is one served entity's gantry_cold_start_seconds, all of whose
// count observations took 0 s.
type coldStart struct {
	endpoint, entity string
	count            int
}

// coldStartText is the exposition text of the histograms.
func coldStartText(hs ...coldStart) string {
	var b strings.Builder
	b.WriteString("# HELP gantry_cold_start_seconds Time from the arrival of an invocation that found no ready replica and waited, to its answer.\n")
	b.WriteString("# TYPE gantry_cold_start_seconds histogram\n")
	for _, h := range hs {
		labels := fmt.Sprintf(`endpoint=%q,served_entity=%q`, h.endpoint, h.entity)
		for _, le := range []string{"0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5",
			"1", "2.5", "5", "10", "20", "30", "60", "90", "120", "+Inf"} {
			fmt.Fprintf(&b, "gantry_cold_start_seconds_bucket{%s,le=%q} %d\n", labels, le, h.count)
		}
		fmt.Fprintf(&b, "gantry_cold_start_seconds_sum{%s} 0\n", labels)
		fmt.Fprintf(&b, "gantry_cold_start_seconds_count{%s} %d\n", labels, h.count)
	}
	return b.String()
}

// errRoutes fails every Wait at once and counts the calls.
type errRoutes struct{ calls atomic.Int64 }

func (e *errRoutes) Wait(context.Context, uint64) (*api.RouteTable, error) {
	e.calls.Add(1)
	return nil, errBoom
}

func (e *errRoutes) count() int64 { return e.calls.Load() }

// eagerRoutes answers every Wait at once with the same table, as a broken
// scheduler that ignores the index would.
type eagerRoutes struct{ calls atomic.Int64 }

func (e *eagerRoutes) Wait(context.Context, uint64) (*api.RouteTable, error) {
	e.calls.Add(1)
	return &api.RouteTable{Index: 7}, nil
}

func (e *eagerRoutes) count() int64 { return e.calls.Load() }

func TestRunNeverSpins(t *testing.T) {
	for _, tc := range []struct {
		name   string
		source interface {
			routeSource
			count() int64
		}
		maxCalls int64
	}{
		// Backoff 10, 20, 40, 40, ... ms (plus jitter) over 300 ms: about 10.
		{"errors", &errRoutes{}, 12},
		// One wait per minPoll (20 ms) over 300 ms: about 15.
		{"same table at once", &eagerRoutes{}, 17},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := New(Config{Logger: slog.New(slog.NewTextHandler(t.Output(), nil))}, tc.source)
			a.minPoll = 20 * time.Millisecond
			a.minBackoff = 10 * time.Millisecond
			a.maxBackoff = 40 * time.Millisecond
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			if err := a.Run(ctx); err != nil {
				t.Errorf("Run = %v, want nil when ctx ends", err)
			}
			if n := tc.source.count(); n < 2 || n > tc.maxCalls {
				t.Errorf("%d waits in 300 ms, want 2..%d", n, tc.maxCalls)
			}
		})
	}
}

func TestParsePath(t *testing.T) {
	for _, tc := range []struct {
		path, name, served string
		ok                 bool
	}{
		{"/serving-endpoints/ep/invocations", "ep", "", true},
		{"/serving-endpoints/ep/served-models/m-1/invocations", "ep", "m-1", true},
		{"/serving-endpoints/ep/invocations/", "", "", false},
		{"/serving-endpoints/ep/served-models//invocations", "", "", false},
		{"/serving-endpoints/ep/served-models/m", "", "", false},
		{"/serving-endpoints/ep", "", "", false},
		{"/serving-endpoints/", "", "", false},
		{"/", "", "", false},
	} {
		name, served, ok := parsePath([]byte(tc.path))
		if string(name) != tc.name || string(served) != tc.served || ok != tc.ok {
			t.Errorf("parsePath(%q) = %q, %q, %v; want %q, %q, %v", tc.path, name, served, ok, tc.name, tc.served, tc.ok)
		}
	}
}
