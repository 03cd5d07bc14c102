package nomad

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gantry/gantry/scheduler/orchestrator"
	"github.com/hashicorp/nomad/api"
)

func spec(id string) orchestrator.Deployment {
	return orchestrator.Deployment{ID: id, Endpoint: "ep", Entity: "binary-1", Replicas: 1}
}

// TestTakeAllocationsCountsOnce follows one crash-looping allocation as the
// watcher sees it over four answers: each failure event counts once, and
// an allocation Nomad garbage-collects is forgotten.
func TestTakeAllocationsCountsOnce(t *testing.T) {
	full := load[[]*api.AllocationListStub](t, "allocs-crashloop.json")
	// The first answer: the worker has crashed once (events up to the
	// first Terminated and its Restarting).
	early := *full[0]
	early.TaskStates = map[string]*api.TaskState{"worker": {State: "pending", Events: full[0].TaskStates["worker"].Events[:6]}}

	dep := newDeployment(spec("ep"), func() {})
	for _, s := range []struct {
		what     string
		list     []*api.AllocationListStub
		newest   string // Time of the newest failure not counted before; "" for none
		failures uint64
	}{
		{"crashed once", []*api.AllocationListStub{&early}, "1760000002000000000", 1},
		{"crashed again", full, "1760000018200000000", 2},
		{"the same answer again", full, "", 2},
		{"garbage-collected", nil, "", 2},
	} {
		got := ""
		if f := dep.takeAllocations(s.list); f != nil {
			got = strconv.FormatInt(f.event.Time, 10)
		}
		if got != s.newest || dep.failures != s.failures {
			t.Errorf("%s: newest new failure at %q, %d failures; want %q, %d", s.what, got, dep.failures, s.newest, s.failures)
		}
	}
	if len(dep.seen) != 0 || len(dep.allocs) != 0 {
		t.Errorf("after garbage collection: seen %v, allocs %v; want both empty", dep.seen, dep.allocs)
	}
}

// TestTakeEvaluations follows a GPU job's evaluations: blocked, blocked
// again (the same answer), a failed evaluation on top, then scaled to zero.
func TestTakeEvaluations(t *testing.T) {
	blocked := load[[]*api.Evaluation](t, "evals-constraint.json")
	failed := load[[]*api.Evaluation](t, "evals-failed.json")
	moot := load[[]*api.Evaluation](t, "evals-blocked-moot.json")
	dep := newDeployment(spec("ep"), func() {})
	for _, s := range []struct {
		what      string
		evals     []*api.Evaluation
		placement string
		failures  uint64
	}{
		{"blocked", blocked, `Nomad cannot place 1 allocation of group "worker": constraint "missing devices" filtered 3 nodes`, 1},
		{"the same answer again", blocked, `Nomad cannot place 1 allocation of group "worker": constraint "missing devices" filtered 3 nodes`, 1},
		{"a failed evaluation, newer", append(append([]*api.Evaluation{}, blocked...), failed...), "Nomad evaluation f00dfeed failed: evaluation reached delivery limit (3)", 2},
		// The failed evaluation was garbage-collected; the blocked one is
		// still the one counted.
		{"scaled to zero", moot, "", 2},
	} {
		dep.takeEvaluations(s.evals)
		if dep.placement != s.placement || dep.failures != s.failures {
			t.Errorf("%s: placement %q, %d failures; want %q, %d", s.what, dep.placement, dep.failures, s.placement, s.failures)
		}
	}
	if len(dep.evals) != 1 {
		t.Errorf("evaluations remembered: %v, want only the blocked one still listed", dep.evals)
	}
}

func TestNextIndex(t *testing.T) {
	for _, tc := range []struct {
		sent, answered, want uint64
	}{
		{0, 0, 1},    // an empty cluster answers 0: 0 would never block
		{0, 42, 42},  // the first answer
		{42, 57, 57}, // a change
		{57, 57, 57}, // the wait timed out
		{57, 12, 0},  // a restored snapshot: start over
		{1, 0, 1},    // from 1, 0 is no snapshot: keep blocking
	} {
		if got := nextIndex(tc.sent, tc.answered); got != tc.want {
			t.Errorf("nextIndex(%d, %d) = %d, want %d", tc.sent, tc.answered, got, tc.want)
		}
	}
}

func TestBackoffs(t *testing.T) {
	for _, tc := range []struct {
		name string
		next func(time.Duration) time.Duration
		want string
	}{
		{"follow", nextFollowBackoff, "1s 2s 4s 8s 16s 30s 30s"},
		{"submit", nextSubmitBackoff, "1s 2s 4s 8s 16s 32s 1m0s 1m0s"},
	} {
		var got []string
		var d time.Duration
		for range len(strings.Fields(tc.want)) {
			d = tc.next(d)
			got = append(got, d.String())
		}
		if g := strings.Join(got, " "); g != tc.want {
			t.Errorf("%s backoff: %s, want %s", tc.name, g, tc.want)
		}
	}
}
