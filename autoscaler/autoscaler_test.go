package autoscaler

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/gantry/gantry/autoscaler/decider"
)

// fakeScheduler holds targets and applies Scale to them, as the scheduler
// would (replicas become Starting until the test makes them Ready).
type fakeScheduler struct {
	targets map[string]*Target
	scaled  []int
	notify  chan int // if set, receives every Scale
}

func (f *fakeScheduler) Targets() []Target {
	var out []Target
	for _, t := range f.targets {
		out = append(out, *t)
	}
	return out
}

func (f *fakeScheduler) Scale(dep string, n int) error {
	t := f.targets[dep]
	t.Current = n
	t.Starting = max(0, n-t.Ready)
	t.Ready = min(t.Ready, n)
	f.scaled = append(f.scaled, n)
	if f.notify != nil {
		f.notify <- n
	}
	return nil
}

func newTest(load *float64, t Target) (*Autoscaler, *fakeScheduler) {
	spec := decider.DefaultSpec()
	f := &fakeScheduler{targets: map[string]*Target{t.Deployment: &t}}
	a := New(Config{Spec: &spec}, f, func() []Sample {
		// Two activators share the load: the loop must add them up.
		return []Sample{{Deployment: t.Deployment, Concurrency: *load / 2}, {Deployment: t.Deployment, Concurrency: *load / 2}}
	})
	return a, f
}

func TestWakeScalesFromZeroAtOnce(t *testing.T) {
	load := 0.0
	a, f := newTest(&load, Target{Deployment: "d", Min: 0, Max: 4})
	a.wake(time.Time{}, "d")
	if len(f.scaled) != 1 || f.scaled[0] != 1 {
		t.Fatalf("scaled = %v, want [1] right after the poke", f.scaled)
	}
	a.wake(time.Time{}.Add(time.Millisecond), "unknown") // ignored
	if len(f.scaled) != 1 {
		t.Errorf("a poke for an unknown deployment scaled: %v", f.scaled)
	}
}

func TestLoadScalesUpThenIdleScalesToZero(t *testing.T) {
	load := 12.0 // 12 / (4 × 0.7) = 4.3 → 5 replicas, capped at Max 4
	a, f := newTest(&load, Target{Deployment: "d", Min: 0, Max: 4, Current: 1, Ready: 1})
	now := time.Time{}
	a.tick(now)
	if got := f.targets["d"].Current; got != 4 {
		t.Fatalf("Current = %d after a load of 12, want 4 (capped)", got)
	}
	f.targets["d"].Ready, f.targets["d"].Starting = 4, 0

	load = 0
	zeroAt := time.Duration(0)
	for s := 1; s <= 200; s++ {
		a.tick(now.Add(time.Duration(s) * time.Second))
		if f.targets["d"].Current == 0 {
			zeroAt = time.Duration(s) * time.Second
			break
		}
		f.targets["d"].Ready, f.targets["d"].Starting = f.targets["d"].Current, 0
	}
	// Stable window (60 s) must empty, then the grace (30 s) pass.
	if zeroAt < 90*time.Second || zeroAt > 95*time.Second {
		t.Errorf("scaled to zero after %s idle, want about 90 s (window + grace)", zeroAt)
	}
}

func TestForgetsRemovedDeployments(t *testing.T) {
	load := 1.0
	a, f := newTest(&load, Target{Deployment: "d", Min: 1, Max: 1, Current: 1, Ready: 1})
	a.cfg.Metrics = NewMetrics(nil)
	a.tick(time.Time{})
	if len(a.deciders) != 1 {
		t.Fatalf("deciders = %d", len(a.deciders))
	}
	want := `
# HELP gantry_autoscaler_desired_replicas Replicas the autoscaler asks for.
# TYPE gantry_autoscaler_desired_replicas gauge
gantry_autoscaler_desired_replicas{deployment="d"} 1
`
	if err := testutil.CollectAndCompare(a.cfg.Metrics.desired, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
	delete(f.targets, "d")
	a.tick(time.Time{}.Add(time.Second))
	if len(a.deciders) != 0 {
		t.Errorf("decider of a removed deployment kept")
	}
	if n := testutil.CollectAndCount(a.cfg.Metrics.desired); n != 0 {
		t.Errorf("%d desired-replica series left for a removed deployment", n)
	}
}

func TestRunHandlesPokes(t *testing.T) {
	load := 0.0
	a, f := newTest(&load, Target{Deployment: "d", Min: 0, Max: 1})
	a.cfg.Tick = time.Hour // only the poke can scale
	f.notify = make(chan int, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go a.Run(ctx)
	a.Poke("d")
	select {
	case n := <-f.notify:
		if n != 1 {
			t.Errorf("scaled to %d after a poke, want 1", n)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a poke did not scale the deployment")
	}
}

func TestTargetPerReplicaOverridesSpec(t *testing.T) {
	load := 3.0 // 3 / (1 × 0.7) = 4.3 → 5 replicas; with the default 4 per replica it would be 2
	a, f := newTest(&load, Target{Deployment: "d", Min: 0, Max: 10, Current: 1, Ready: 1, TargetPerReplica: 1})
	a.tick(time.Time{})
	if got := f.targets["d"].Current; got != 5 {
		t.Errorf("Current = %d, want 5 at one request per replica", got)
	}
}
