package activator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/internal/eventually"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/valyala/fasthttp"
)

// fakeRoutes is a routeSource driven by a channel. Each Wait call reports its
// index on waits first, so a test knows when Run has applied a table: Run
// only waits for index N after applying table N.
type fakeRoutes struct {
	tables chan *api.RouteTable
	waits  chan uint64
}

var _ routeSource = (*fakeRoutes)(nil)

func newFakeRoutes() *fakeRoutes {
	return &fakeRoutes{tables: make(chan *api.RouteTable), waits: make(chan uint64, 1000)}
}

func (f *fakeRoutes) Wait(ctx context.Context, index uint64) (*api.RouteTable, error) {
	select {
	case f.waits <- index:
	default:
	}
	select {
	case t := <-f.tables:
		return t, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// harness is an activator behind a real fasthttp server on loopback, fed by
// fakeRoutes.
type harness struct {
	t      *testing.T
	a      *Activator
	routes *fakeRoutes
	base   string
	client *http.Client
	// stopRun ends Run and waits for it; the cleanup calls it too.
	stopRun func()
}

func newHarness(t *testing.T, cfg Config) *harness {
	t.Helper()
	routes := newFakeRoutes()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), nil))
	}
	a := New(cfg, routes)
	a.minPoll = time.Millisecond
	a.penalty = time.Minute // no penalty ends during a test unless it asks

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: a.Handler, MaxRequestBodySize: 64 << 20}
	go func() { _ = srv.Serve(ln) }()
	var stop sync.Once
	stopRun := func() {
		stop.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run = %v, want nil", err)
			}
		})
	}
	t.Cleanup(func() {
		stopRun()
		_ = srv.Shutdown()
	})
	return &harness{
		t: t, a: a, routes: routes, stopRun: stopRun,
		base:   "http://" + ln.Addr().String(),
		client: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}},
	}
}

// push feeds rt to the activator and returns once Run has applied it.
func (h *harness) push(rt *api.RouteTable) {
	h.t.Helper()
	select {
	case h.routes.tables <- rt:
	case <-time.After(5 * time.Second):
		h.t.Fatal("Run did not ask for a route table")
	}
	timeout := time.After(5 * time.Second)
	for {
		select {
		case i := <-h.routes.waits:
			if i == rt.Index {
				return
			}
		case <-timeout:
			h.t.Fatalf("Run did not apply table %d", rt.Index)
		}
	}
}

type answer struct {
	status int
	header http.Header
	body   []byte
	err    error // from invokeAsync, where the test's goroutine cannot Fatal
}

// apiError decodes the body as API.md's error shape.
func (r answer) apiError(t *testing.T) api.Error {
	t.Helper()
	var e api.Error
	if err := json.Unmarshal(r.body, &e); err != nil {
		t.Fatalf("error body %q: %v", r.body, err)
	}
	return e
}

func (h *harness) do(method, path, contentType string, body []byte) answer {
	h.t.Helper()
	req, err := http.NewRequest(method, h.base+path, bytes.NewReader(body))
	if err != nil {
		h.t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := h.client.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	return answer{status: resp.StatusCode, header: resp.Header, body: b}
}

// invokeAsync sends an invocation of endpoint with body from a goroutine
// of its own; its answer comes on the channel.
func (h *harness) invokeAsync(endpoint string, body []byte) <-chan answer {
	out := make(chan answer, 1)
	go func() {
		resp, err := h.client.Post(h.base+"/serving-endpoints/"+endpoint+"/invocations", "application/json", bytes.NewReader(body))
		if err != nil {
			out <- answer{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		out <- answer{status: resp.StatusCode, header: resp.Header, body: b, err: err}
	}()
	return out
}

// invokeAsyncPath posts an invocation to path from a goroutine of its own.
func (h *harness) invokeAsyncPath(path string) <-chan answer {
	out := make(chan answer, 1)
	go func() {
		resp, err := h.client.Post(h.base+path, "application/json", bytes.NewReader([]byte(`{"inputs":[1]}`)))
		if err != nil {
			out <- answer{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		out <- answer{status: resp.StatusCode, header: resp.Header, body: b, err: err}
	}()
	return out
}

// receive waits for an answer from invokeAsync.
func receive(t *testing.T, ch <-chan answer) answer {
	t.Helper()
	select {
	case got := <-ch:
		if got.err != nil {
			t.Fatal(got.err)
		}
		return got
	case <-time.After(10 * time.Second):
		t.Fatal("no answer")
		return answer{}
	}
}

// queued is the queue depth gauge of a served entity.
func (h *harness) queued(endpoint, entity string) int {
	return int(testutil.ToFloat64(h.a.metrics.queueDepth.WithLabelValues(endpoint, entity)))
}

// waitQueued waits until n requests wait at a served entity.
func (h *harness) waitQueued(endpoint, entity string, n int) {
	h.t.Helper()
	eventually.True(h.t, 5*time.Second, fmt.Sprintf("%d requests queued at %s/%s", n, endpoint, entity),
		func() bool { return h.queued(endpoint, entity) == n })
}

func (h *harness) invoke(endpoint string) answer {
	h.t.Helper()
	return h.do(http.MethodPost, "/serving-endpoints/"+endpoint+"/invocations", "application/json", []byte(`{"inputs":[1]}`))
}

// worker is a real upstream on loopback standing in for a Gantry worker.
// It counts the requests it got and the most it ever held at once.
type worker struct {
	addr    string
	hits    atomic.Int64
	holding atomic.Int64
	most    atomic.Int64
}

// startWorker serves handle, or, when handle is nil, answers
// {"predictions":["<name>"]}.
func startWorker(t *testing.T, name string, handle fasthttp.RequestHandler) *worker {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	w := &worker{addr: ln.Addr().String()}
	if handle == nil {
		answer := []byte(`{"predictions":["` + name + `"]}`)
		handle = func(ctx *fasthttp.RequestCtx) {
			ctx.SetContentType("application/json")
			ctx.SetBody(answer)
		}
	}
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		w.hits.Add(1)
		n := w.holding.Add(1)
		for m := w.most.Load(); n > m && !w.most.CompareAndSwap(m, n); m = w.most.Load() {
		}
		defer w.holding.Add(-1)
		handle(ctx)
	}}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	return w
}

// deadAddr is a loopback address where nothing listens.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

// coldEntity is a served entity in DEPLOYMENT_CREATING with no replica.
func coldEntity(name string) api.EntityRoute {
	return api.EntityRoute{Name: name, Deployment: name + "-d1", State: api.DeploymentCreating, Concurrency: 4}
}

// readyEntity is a served entity in DEPLOYMENT_READY with the given replicas.
func readyEntity(name string, addrs ...string) api.EntityRoute {
	e := api.EntityRoute{Name: name, Deployment: name + "-d1", State: api.DeploymentReady, Concurrency: 4}
	for i, addr := range addrs {
		e.Replicas = append(e.Replicas, api.Replica{ID: name + "-" + string(rune('a'+i)), Addr: addr})
	}
	return e
}

// oneEndpoint is a route table with one endpoint whose routes give each
// entity the paired percentage.
func oneEndpoint(index uint64, name string, routes []api.Route, entities ...api.EntityRoute) *api.RouteTable {
	return &api.RouteTable{Index: index, Endpoints: []api.EndpointRoute{{
		Name: name, ConfigVersion: 1, Routes: routes, Entities: entities,
	}}}
}

var errBoom = errors.New("boom")
