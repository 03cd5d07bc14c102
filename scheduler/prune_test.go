package scheduler

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/gantry/gantry/scheduler/orchestrator"
	"github.com/gantry/gantry/scheduler/routes"
)

// pruningOrchestrator is a fake whose deployments outlive the scheduler.
type pruningOrchestrator struct {
	*fakeOrchestrator
	failEnsure bool
	keeps      [][]string
}

var _ pruner = (*pruningOrchestrator)(nil)

func (p *pruningOrchestrator) Ensure(ctx context.Context, d orchestrator.Deployment) error {
	if p.failEnsure {
		return errors.New("nomad is down")
	}
	return p.fakeOrchestrator.Ensure(ctx, d)
}

func (p *pruningOrchestrator) Prune(_ context.Context, keep []string) error {
	p.keeps = append(p.keeps, keep)
	return nil
}

// TestPruneAfterFirstFullReconcile restarts the scheduler on a store with
// one endpoint: the driver is pruned once, only after every deployment was
// ensured, keeping that endpoint's deployment.
func TestPruneAfterFirstFullReconcile(t *testing.T) {
	h := newHarness(t, t.TempDir())
	h.upload(t, "m")
	if code, e := h.call(t, "POST", "/api/2.0/serving-endpoints", createBody, nil); code != 200 {
		t.Fatalf("create: %d %v", code, e)
	}
	h.reconcile()

	p := &pruningOrchestrator{fakeOrchestrator: newFake(), failEnsure: true}
	s, err := New(Config{Store: h.s.cfg.Store, Registry: h.s.cfg.Registry, Orchestrator: p, Routes: routes.NewTable(), BaseURL: "http://gantry.test"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	s.reconcile(ctx)
	if len(p.keeps) != 0 {
		t.Fatalf("pruned %v while a deployment could not be ensured; want no prune yet", p.keeps)
	}
	p.failEnsure = false
	s.reconcile(ctx)
	s.reconcile(ctx)
	if want := fmt.Sprint([][]string{h.orch.ids()}); fmt.Sprint(p.keeps) != want {
		t.Errorf("Prune calls = %v, want one keeping %v", p.keeps, want)
	}
}
