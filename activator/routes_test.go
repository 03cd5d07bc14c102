package activator

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/internal/eventually"
)

// routeServer answers the scheduler's blocking route query the way the
// scheduler does: it holds a query until its index passes the asked one or
// the asked wait passes.
type routeServer struct {
	// mu guards table and changed.
	mu      sync.Mutex
	table   api.RouteTable
	changed chan struct{} // closed and replaced by every publish

	queries chan url.Values // each query's parameters, as it arrives
}

func newRouteServer(t *testing.T, first api.RouteTable) (*routeServer, *httptest.Server) {
	s := &routeServer{table: first, changed: make(chan struct{}), queries: make(chan url.Values, 100)}
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return s, srv
}

func (s *routeServer) publish(rt api.RouteTable) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.table = rt
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *routeServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/api/2.0/gantry/routes" {
		http.NotFound(w, r)
		return
	}
	q := r.URL.Query()
	s.queries <- q
	index, err := strconv.ParseUint(q.Get("index"), 10, 64)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	wait, err := time.ParseDuration(q.Get("wait"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	var t api.RouteTable
	for {
		s.mu.Lock()
		cur, changed := s.table, s.changed
		s.mu.Unlock()
		if cur.Index > index {
			break
		}
		select {
		case <-changed:
			continue
		case <-timer.C:
		case <-r.Context().Done():
			return
		}
		break
	}
	s.mu.Lock()
	t = s.table
	s.mu.Unlock()
	w.Header().Set("X-Gantry-Index", strconv.FormatUint(t.Index, 10))
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(t)
}

func TestHTTPRoutesBlockingQuery(t *testing.T) {
	rs, srv := newRouteServer(t, api.RouteTable{Index: 5})
	h := &HTTPRoutes{Base: srv.URL + "/", WaitTime: 10 * time.Second}
	ctx := context.Background()

	// Index 0 is below anything: the answer comes at once.
	rt, err := h.Wait(ctx, 0)
	if err != nil || rt.Index != 5 {
		t.Fatalf("Wait(0) = %+v, %v; want index 5", rt, err)
	}
	if q := <-rs.queries; q.Get("index") != "0" || q.Get("wait") != "10s" {
		t.Errorf("query = %v, want index=0 wait=10s", q)
	}

	// At the current index the query blocks until the next table.
	got := make(chan *api.RouteTable, 1)
	go func() {
		rt, err := h.Wait(ctx, 5)
		if err != nil {
			t.Error(err)
		}
		got <- rt
	}()
	<-rs.queries
	select {
	case rt := <-got:
		t.Fatalf("Wait(5) returned %+v before a new table", rt)
	case <-time.After(50 * time.Millisecond):
	}
	want := api.RouteTable{Index: 6, Endpoints: []api.EndpointRoute{{
		Name: "ep", Routes: []api.Route{{ServedModelName: "m", TrafficPercentage: 100}},
		Entities: []api.EntityRoute{readyEntity("m", "127.0.0.1:9")},
	}}}
	rs.publish(want)
	select {
	case rt := <-got:
		if rt.Index != 6 || len(rt.Endpoints) != 1 || rt.Endpoints[0].Entities[0].Replicas[0].Addr != "127.0.0.1:9" {
			t.Errorf("Wait(5) = %+v, want %+v", rt, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Wait(5) still blocked after table 6")
	}
}

func TestHTTPRoutesWaitPasses(t *testing.T) {
	_, srv := newRouteServer(t, api.RouteTable{Index: 6})
	h := &HTTPRoutes{Base: srv.URL, WaitTime: 100 * time.Millisecond}

	start := time.Now()
	rt, err := h.Wait(context.Background(), 6)
	if err != nil || rt.Index != 6 {
		t.Fatalf("Wait(6) = %+v, %v; want the current table, index 6", rt, err)
	}
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Errorf("Wait(6) returned after %s, before the 100ms wait", d)
	}
}

func TestHTTPRoutesCancel(t *testing.T) {
	rs, srv := newRouteServer(t, api.RouteTable{Index: 6})
	h := &HTTPRoutes{Base: srv.URL, WaitTime: time.Minute}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := h.Wait(ctx, 6)
		done <- err
	}()
	<-rs.queries
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Wait = %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Wait ignored its context")
	}
}

func TestHTTPRoutesAnswers(t *testing.T) {
	for _, tc := range []struct {
		name      string
		status    int
		header    string
		body      string
		wantIndex uint64
		wantCode  string // error_code of an *api.Error in the chain
		wantErr   bool
	}{
		{name: "index from the header", status: 200, header: "9", body: `{"endpoints":[]}`, wantIndex: 9},
		{name: "index from the body", status: 200, body: `{"index":4}`, wantIndex: 4},
		{name: "header and body agree", status: 200, header: "4", body: `{"index":4}`, wantIndex: 4},
		{name: "header and body disagree", status: 200, header: "5", body: `{"index":4}`, wantErr: true},
		{name: "bad header", status: 200, header: "x", body: `{"index":4}`, wantErr: true},
		{name: "bad body", status: 200, body: `{"index":`, wantErr: true},
		{name: "API error", status: 500, body: `{"error_code":"INTERNAL_ERROR","message":"store closed"}`, wantCode: api.ErrInternal, wantErr: true},
		{name: "other error", status: 502, body: `bad gateway`, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tc.header != "" {
					w.Header().Set("X-Gantry-Index", tc.header)
				}
				w.WriteHeader(tc.status)
				_, _ = w.Write([]byte(tc.body))
			}))
			defer srv.Close()
			rt, err := (&HTTPRoutes{Base: srv.URL}).Wait(context.Background(), 0)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("Wait = %+v, want an error", rt)
				}
				var apiErr *api.Error
				if tc.wantCode != "" && (!errors.As(err, &apiErr) || apiErr.Code != tc.wantCode) {
					t.Errorf("Wait = %v, want an *api.Error %s", err, tc.wantCode)
				}
				return
			}
			if err != nil || rt.Index != tc.wantIndex {
				t.Fatalf("Wait = %+v, %v; want index %d", rt, err, tc.wantIndex)
			}
		})
	}
	if _, err := (&HTTPRoutes{}).Wait(context.Background(), 0); err == nil {
		t.Error("Wait without Base succeeded")
	}
}

// TestRunFollowsHTTPRoutes wires the pieces: Run follows a scheduler over
// HTTP and serves each new table.
func TestRunFollowsHTTPRoutes(t *testing.T) {
	rs, srv := newRouteServer(t, api.RouteTable{Index: 1})
	a := New(Config{Logger: slog.New(slog.NewTextHandler(t.Output(), nil))}, &HTTPRoutes{Base: srv.URL, WaitTime: 5 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	}()

	eventually.True(t, 5*time.Second, "the first table", a.Ready)
	rs.publish(api.RouteTable{Index: 2, Endpoints: []api.EndpointRoute{{Name: "ep"}}})
	eventually.True(t, 5*time.Second, "table 2", func() bool { return a.table.Load().index == 2 })
	if a.table.Load().endpoints["ep"] == nil {
		t.Error("table 2 has no endpoint ep")
	}
}
