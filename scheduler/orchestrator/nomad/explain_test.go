package nomad

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/nomad/api"
)

// load decodes a recorded Nomad API answer from testdata.
func load[T any](t *testing.T, name string) T {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return v
}

func TestPlacementFailureFromEvals(t *testing.T) {
	for _, tc := range []struct {
		file, want string
	}{
		{"evals-constraint.json", `Nomad cannot place 1 allocation of group "worker": constraint "missing devices" filtered 3 nodes`},
		{"evals-exhausted.json", `Nomad cannot place 2 allocations of group "worker": constraint "${attr.kernel.name} = linux" filtered 1 node; dimension "memory" exhausted on 2 nodes`},
		{"evals-no-pool.json", `Nomad cannot place 1 allocation of group "worker": no nodes in node pool "gpu"`},
		// The evaluation that failed to place was garbage-collected: only
		// the blocked one is left to say so.
		{"evals-blocked-gc.json", "Nomad cannot place the job's allocations yet (blocked evaluation 9a9a9a9a)"},
		// Scaled to zero after a blocked placement: Nomad leaves the
		// blocked evaluation "blocked", but nothing waits on it.
		{"evals-blocked-moot.json", ""},
		{"evals-failed.json", "Nomad evaluation f00dfeed failed: evaluation reached delivery limit (3)"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			evals := load[[]*api.Evaluation](t, tc.file)
			first := evals[0].ID
			if got := placementFailure(evals); got != tc.want {
				t.Errorf("placementFailure =\n %q\nwant\n %q", got, tc.want)
			}
			if evals[0].ID != first {
				t.Error("placementFailure reordered its argument")
			}
		})
	}
	if got := placementFailure(nil); got != "" {
		t.Errorf("no evaluations: %q, want none", got)
	}
}

func TestDescribeFailedPlacements(t *testing.T) {
	for _, tc := range []struct {
		name   string
		failed map[string]*api.AllocationMetric
		want   string
	}{{
		name:   "no datacenter matches",
		failed: map[string]*api.AllocationMetric{"worker": {NodesInPool: 4, NodePool: "default"}},
		want:   `Nomad cannot place 1 allocation of group "worker": no nodes were eligible for evaluation (check the datacenters)`,
	}, {
		name:   "exhausted without a dimension",
		failed: map[string]*api.AllocationMetric{"worker": {NodesEvaluated: 1, NodesExhausted: 1}},
		want:   `Nomad cannot place 1 allocation of group "worker": resources exhausted on 1 node`,
	}, {
		name: "groups in name order",
		failed: map[string]*api.AllocationMetric{
			"b": {NodesEvaluated: 2, ConstraintFiltered: map[string]int{"missing drivers": 2}},
			"a": {NodesEvaluated: 2, DimensionExhausted: map[string]int{"cpu": 1, "devices: no devices match request": 1}, NodesExhausted: 2},
		},
		want: `Nomad cannot place 1 allocation of group "a": dimension "cpu" exhausted on 1 node; dimension "devices: no devices match request" exhausted on 1 node; ` +
			`Nomad cannot place 1 allocation of group "b": constraint "missing drivers" filtered 2 nodes`,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			if got := describeFailedPlacements(tc.failed); got != tc.want {
				t.Errorf("got\n %q\nwant\n %q", got, tc.want)
			}
		})
	}
}

// TestAllocationFailures reads recorded allocation lists: which task
// events are failures, and the message of the newest.
func TestAllocationFailures(t *testing.T) {
	for _, tc := range []struct {
		file string
		// events are the failure events, as "Type: message", of every
		// allocation in the list.
		events []string
		want   string // the newest failure's message; "" for none
	}{{
		file:   "allocs-crashloop.json",
		events: []string{"Terminated: Exit Code: 1", "Terminated: Exit Code: 1"},
		want:   "allocation 5d8a1c2e: Terminated: Exit Code: 1",
	}, {
		file:   "allocs-driver-failure.json",
		events: []string{"Driver Failure: Failed to pull `ghcr.io/gantry/worker:9.9`: API error (404): manifest unknown"},
		want:   "allocation d41d8cd9: Driver Failure: Failed to pull `ghcr.io/gantry/worker:9.9`: API error (404): manifest unknown",
	}, {
		file:   "allocs-oom.json",
		events: []string{`Terminated: Exit Code: 137, Exit Message: "OOM Killed" (OOM killed: the worker needed more memory than its workload size grants)`},
		want:   `allocation 0000aaaa: Terminated: Exit Code: 137, Exit Message: "OOM Killed" (OOM killed: the worker needed more memory than its workload size grants)`,
	}, {
		file:   "allocs-validation.json",
		events: []string{"Failed Validation: 1 error occurred:\n\t* failed to parse config: Invalid label \"volumes\": volumes are not enabled; must set client config: docker.volumes.enabled = true\n\n"},
		want:   "allocation 7a7a7a7a: Failed Validation: 1 error occurred:\n\t* failed to parse config: Invalid label \"volumes\": volumes are not enabled; must set client config: docker.volumes.enabled = true\n\n",
	}, {
		file:   "allocs-artifact.json",
		events: []string{`Failed Artifact Download: failed to download artifact "http://gantry.internal:8080/api/2.0/gantry/models/fraud/versions/3/artifact": bad response code: 404`},
		want:   `allocation a7f1a7f1: Failed Artifact Download: failed to download artifact "http://gantry.internal:8080/api/2.0/gantry/models/fraud/versions/3/artifact": bad response code: 404`,
	}, {
		// A scale-down kills a worker (Killing, Terminated, Killed) and a
		// running one is fine: no failure.
		file: "allocs-scaled-down.json",
	}, {
		// A restart the user asked for is no failure; the crash after it is.
		file:   "allocs-restart-signal.json",
		events: []string{`Terminated: Exit Code: 2, Exit Message: "Docker container exited with non-zero exit code: 2"`},
		want:   `allocation 33333333: Terminated: Exit Code: 2, Exit Message: "Docker container exited with non-zero exit code: 2"`,
	}} {
		t.Run(tc.file, func(t *testing.T) {
			list := load[[]*api.AllocationListStub](t, tc.file)
			var events []string
			for _, a := range list {
				for _, e := range taskFailures(a) {
					events = append(events, e.Type+": "+eventMessage(e))
				}
			}
			if strings.Join(events, "|") != strings.Join(tc.events, "|") {
				t.Errorf("failure events\n %q\nwant\n %q", events, tc.events)
			}
			dep := newDeployment(spec("ep"), func() {})
			got := ""
			if f := dep.takeAllocations(list); f != nil {
				got = failureMessage(f.alloc, f.event)
			}
			if got != tc.want {
				t.Errorf("newest failure\n %q\nwant\n %q", got, tc.want)
			}
			if dep.failures != uint64(len(tc.events)) {
				t.Errorf("counted %d failures, want %d", dep.failures, len(tc.events))
			}
		})
	}
}

// TestEventMessage: events with no display message (an old client, a
// double) fall back on the message, then on the detail their type fills.
func TestEventMessage(t *testing.T) {
	for _, tc := range []struct {
		name string
		e    api.TaskEvent
		want string
	}{
		{"display message first", api.TaskEvent{DisplayMessage: "Exit Code: 3", Message: "raw"}, "Exit Code: 3"},
		{"then the message", api.TaskEvent{Message: "raw"}, "raw"},
		{"driver error", api.TaskEvent{Type: api.TaskDriverFailure, Details: map[string]string{"driver_error": "no such image"}}, "no such image"},
		{"download error", api.TaskEvent{Type: api.TaskArtifactDownloadFailed, Details: map[string]string{"download_error": "404"}}, "404"},
		{"validation error", api.TaskEvent{Type: api.TaskFailedValidation, Details: map[string]string{"validation_error": "bad config"}}, "bad config"},
		{"setup error", api.TaskEvent{Type: api.TaskSetupFailure, Details: map[string]string{"setup_error": "no space left"}}, "no space left"},
		{"nothing", api.TaskEvent{Type: api.TaskTerminated}, "no message"},
		{"oom from the exec driver", api.TaskEvent{DisplayMessage: "Exit Code: 0, Signal: 9", Details: map[string]string{"signal": "9", "oom_killed": "true"}},
			"Exit Code: 0, Signal: 9 (OOM killed: the worker needed more memory than its workload size grants)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := eventMessage(&tc.e); got != tc.want {
				t.Errorf("eventMessage = %q, want %q", got, tc.want)
			}
		})
	}
}
