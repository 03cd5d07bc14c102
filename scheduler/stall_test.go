package scheduler

import (
	"context"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/internal/eventually"
	"github.com/gantry/gantry/loggers"
	"github.com/gantry/gantry/scheduler/orchestrator"
	"github.com/gantry/gantry/scheduler/routes"
)

// hungOrchestrator is a driver whose every call blocks until released,
// ignoring its context: the worst a paused Nomad leader or a wedged dockerd
// can do. Status still answers from memory, as drivers must.
type hungOrchestrator struct {
	*fakeOrchestrator
	release chan struct{}
	mu      sync.Mutex
	calls   int
}

func (o *hungOrchestrator) Ensure(ctx context.Context, d orchestrator.Deployment) error {
	o.mu.Lock()
	o.calls++
	o.mu.Unlock()
	<-o.release
	return o.fakeOrchestrator.Ensure(ctx, d)
}

func (o *hungOrchestrator) Remove(ctx context.Context, id string) error {
	<-o.release
	return o.fakeOrchestrator.Remove(ctx, id)
}

// onHungDriver creates endpoint fraud, ready on 127.0.0.1:9001, then
// restarts the scheduler, running, on a driver that hangs until released
// (at the test's end at the latest) with callTimeout and resync.
func onHungDriver(t *testing.T, callTimeout, resync time.Duration) (*harness, *hungOrchestrator, *routes.Table) {
	t.Helper()
	h := newHarness(t, t.TempDir())
	h.upload(t, "m")
	if code, e := h.call(t, "POST", "/api/2.0/serving-endpoints", createBody, nil); code != 200 {
		t.Fatalf("create: %d %v", code, e)
	}
	h.reconcile()
	h.orch.set("v1", ready("127.0.0.1:9001"))

	hung := &hungOrchestrator{fakeOrchestrator: h.orch, release: make(chan struct{})}
	rt := routes.NewTable()
	s, err := New(Config{Store: h.s.cfg.Store, Registry: h.s.cfg.Registry, Orchestrator: hung, Routes: rt,
		BaseURL: "http://gantry.test", CallTimeout: callTimeout, Resync: resync})
	if err != nil {
		t.Fatal(err)
	}
	h.s, h.srv = s, httptest.NewServer(s.Handler())
	t.Cleanup(h.srv.Close)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	t.Cleanup(func() {
		select {
		case <-hung.release:
		default:
			close(hung.release)
		}
		cancel()
		<-done
	})
	return h, hung, rt
}

// TestHungOrchestratorStallsNothing restarts the scheduler on a driver that
// hangs: API reads answer at once, a create is accepted and shows that the
// orchestrator is not answering, the ready endpoint keeps its replicas in
// the route table, and once the driver answers everything converges
// without a restart.
func TestHungOrchestratorStallsNothing(t *testing.T) {
	h, hung, rt := onHungDriver(t, 100*time.Millisecond, 20*time.Millisecond)
	s := h.s
	eventually.True(t, 5*time.Second, "the restarted scheduler to call its driver", func() bool {
		hung.mu.Lock()
		defer hung.mu.Unlock()
		return hung.calls > 0
	})

	// Reads answer while the driver hangs (before the split, they waited
	// on the lock that reconcile held across the driver call, forever).
	var slowest time.Duration
	for range 50 {
		start := time.Now()
		var list api.ListEndpointsResponse
		if code, e := h.call(t, "GET", "/api/2.0/serving-endpoints", "", &list); code != 200 {
			t.Fatalf("list: %d %v", code, e)
		}
		slowest = max(slowest, time.Since(start))
	}
	if slowest > time.Second {
		t.Errorf("slowest API read with the driver hung took %s", slowest)
	}
	if ep := h.get(t, "fraud"); ep.State.Ready != api.EndpointReady {
		t.Errorf("ready endpoint with the driver hung: %+v, want READY", ep.State)
	}
	if r := rt.Current(); len(r.Endpoints) != 1 || len(r.Endpoints[0].Entities[0].Replicas) != 1 {
		t.Errorf("route table with the driver hung = %+v, want fraud's ready replica", r.Endpoints)
	}

	body := strings.Replace(createBody, `"fraud"`, `"stuck"`, 1)
	var created api.Endpoint
	if code, e := h.call(t, "POST", "/api/2.0/serving-endpoints", body, &created); code != 200 {
		t.Fatalf("create with the driver hung: %d %v", code, e)
	}
	if created.State.ConfigUpdate != api.ConfigInProgress {
		t.Errorf("created endpoint state = %+v, want IN_PROGRESS", created.State)
	}
	var msg string
	eventually.True(t, 5*time.Second, "the endpoint to say the orchestrator is not answering", func() bool {
		msg = h.get(t, "stuck").Config.ServedEntities[0].State.DeploymentStateMessage
		return strings.Contains(msg, "orchestrator is not answering")
	})
	if err := s.Scale(deploymentID("stuck", &created.Config.ServedEntities[0]), 1); err != nil {
		t.Errorf("scale with the driver hung: %v", err)
	}

	close(hung.release)
	eventually.True(t, 5*time.Second, "stuck to become ready once the driver answers", func() bool {
		h.orch.set("v1", ready("127.0.0.1:9002")) // once ensured; both endpoints' entities are v1
		ep := h.get(t, "stuck")
		return ep.State.Ready == api.EndpointReady && ep.State.ConfigUpdate == api.ConfigNotUpdating
	})
}

// hungTables is a ClickHouse that accepts connections and never answers.
type hungTables struct{ fakeTables }

func (*hungTables) Ensure(ctx context.Context, _ loggers.Table) error {
	<-ctx.Done()
	return ctx.Err()
}

// TestHungClickHouseStallsNothing creates an endpoint with an inference
// table while ClickHouse hangs: the create answers a retryable 503 once
// its table deadline passes, and reads answer at once meanwhile.
func TestHungClickHouseStallsNothing(t *testing.T) {
	h := newHarness(t, t.TempDir())
	h.upload(t, "m")
	h.s.cfg.Tables, h.s.cfg.TablesTimeout = &hungTables{}, 300*time.Millisecond
	created := make(chan int, 1)
	go func() {
		code, _ := h.call(t, "POST", "/api/2.0/serving-endpoints", endpointBody("fraud", "",
			`"auto_capture_config": {"catalog_name": "ml", "schema_name": "logs", "enabled": true}`), nil)
		created <- code
	}()
	start := time.Now()
	for time.Since(start) < 200*time.Millisecond {
		t0 := time.Now()
		var list api.ListEndpointsResponse
		if code, e := h.call(t, "GET", "/api/2.0/serving-endpoints", "", &list); code != 200 {
			t.Fatalf("list while ClickHouse hangs: %d %v", code, e)
		}
		if d := time.Since(t0); d > 100*time.Millisecond {
			t.Errorf("a read took %s while a create waited on ClickHouse", d)
		}
	}
	select {
	case code := <-created:
		if code != 503 {
			t.Errorf("create with ClickHouse hung: %d, want 503", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the create waited past its table deadline")
	}
}

// TestWriteRoutesAtOnceWhileDriverCallRuns: a write's route change is
// published by the next pass at once, even while a driver call of the
// pass before still runs (here one that hangs for good, with a minute of
// CallTimeout and no resync to come): a deleted endpoint stops being
// routed before its deployment's call has returned.
func TestWriteRoutesAtOnceWhileDriverCallRuns(t *testing.T) {
	h, hung, rt := onHungDriver(t, time.Minute, time.Hour)
	eventually.True(t, 5*time.Second, "the first pass to route fraud and call its driver", func() bool {
		hung.mu.Lock()
		defer hung.mu.Unlock()
		return hung.calls > 0 && len(rt.Current().Endpoints) == 1
	})
	if code, e := h.call(t, "DELETE", "/api/2.0/serving-endpoints/fraud", "", nil); code != 200 {
		t.Fatalf("delete: %d %v", code, e)
	}
	eventually.True(t, 2*time.Second, "fraud to leave the route table while its driver call hangs", func() bool {
		return len(rt.Current().Endpoints) == 0
	})
}
