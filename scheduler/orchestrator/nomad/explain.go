package nomad

// The functions here turn what Nomad's API says of a job (its evaluations,
// its allocations' task events) into the failure message users see in
// deployment_state_message. They do no I/O and hold no locks, so they are
// tested from recorded API structs (explain_test.go, testdata/).

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/gantry/gantry/jobs"
	"github.com/hashicorp/nomad/api"
)

// placementFailure says why Nomad cannot place the job's allocations: the
// failed placements of the evaluation that created the job's blocked
// evaluation, or of a failed evaluation. Empty when nothing is blocked.
//
// Only evaluations newer than the newest complete one that placed
// everything count: Nomad merely untracks the blocked evaluation that
// such an evaluation makes moot, and leaves its status "blocked".
func placementFailure(evals []*api.Evaluation) string {
	byBlocked := map[string]*api.Evaluation{}
	for _, e := range evals {
		if e.BlockedEval != "" {
			byBlocked[e.BlockedEval] = e
		}
	}
	newest := slices.Clone(evals)
	sort.Slice(newest, func(i, j int) bool { return newest[i].CreateIndex > newest[j].CreateIndex })
	for _, e := range newest {
		switch e.Status {
		case api.EvalStatusComplete:
			if len(e.FailedTGAllocs) == 0 {
				return ""
			}
		case api.EvalStatusBlocked:
			if src := byBlocked[e.ID]; src != nil && len(src.FailedTGAllocs) > 0 {
				return describeFailedPlacements(src.FailedTGAllocs)
			}
			return "Nomad cannot place the job's allocations yet (blocked evaluation " + short(e.ID) + ")"
		case api.EvalStatusFailed:
			return "Nomad evaluation " + short(e.ID) + " failed: " + e.StatusDescription
		}
	}
	return ""
}

// failedEvals are the IDs of the blocked and failed evaluations: each is
// a start that failed, which the driver counts once.
func failedEvals(evals []*api.Evaluation) []string {
	var out []string
	for _, e := range evals {
		if e.Status == api.EvalStatusBlocked || e.Status == api.EvalStatusFailed {
			out = append(out, e.ID)
		}
	}
	return out
}

// describeFailedPlacements condenses AllocationMetrics into one line, the
// way `nomad job status` explains them.
func describeFailedPlacements(failed map[string]*api.AllocationMetric) string {
	groups := make([]string, 0, len(failed))
	for g := range failed {
		groups = append(groups, g)
	}
	sort.Strings(groups)
	var out []string
	for _, g := range groups {
		m := failed[g]
		var why []string
		if m.NodesEvaluated == 0 {
			if m.NodesInPool == 0 && m.NodePool != "" {
				why = append(why, fmt.Sprintf("no nodes in node pool %q", m.NodePool))
			} else {
				why = append(why, "no nodes were eligible for evaluation (check the datacenters)")
			}
		}
		for _, c := range sortedKeys(m.ConstraintFiltered) {
			why = append(why, fmt.Sprintf("constraint %q filtered %s", c, nodes(m.ConstraintFiltered[c])))
		}
		for _, dim := range sortedKeys(m.DimensionExhausted) {
			why = append(why, fmt.Sprintf("dimension %q exhausted on %s", dim, nodes(m.DimensionExhausted[dim])))
		}
		if m.NodesExhausted > 0 && len(m.DimensionExhausted) == 0 {
			why = append(why, fmt.Sprintf("resources exhausted on %s", nodes(m.NodesExhausted)))
		}
		n := 1 + m.CoalescedFailures
		plural := "s"
		if n == 1 {
			plural = ""
		}
		out = append(out, fmt.Sprintf("Nomad cannot place %d allocation%s of group %q: %s", n, plural, g, strings.Join(why, "; ")))
	}
	return strings.Join(out, "; ")
}

// failureEvents are the task events that mean a start failed or a worker
// exited.
var failureEvents = map[string]bool{
	api.TaskTerminated: true, api.TaskDriverFailure: true, api.TaskArtifactDownloadFailed: true,
	api.TaskSetupFailure: true, api.TaskFailedValidation: true,
}

// taskFailures are the failure events of the allocation's worker task, in
// the order Nomad recorded them.
//
// Nomad's task runner emits Terminated after every kill, the driver's own
// scale-downs and stops included: a Terminated that follows a Killing (with
// no start in between), or of an allocation Nomad is stopping, is a stop,
// not a failure.
func taskFailures(a *api.AllocationListStub) []*api.TaskEvent {
	ts := a.TaskStates[jobs.Task]
	if ts == nil {
		return nil
	}
	var out []*api.TaskEvent
	killing := false
	for _, e := range ts.Events {
		switch e.Type {
		case api.TaskKilling:
			killing = true
		case api.TaskStarted:
			killing = false
		}
		if !failureEvents[e.Type] {
			continue
		}
		if e.Type == api.TaskTerminated && (killing || a.DesiredStatus == api.AllocDesiredStatusStop) {
			continue
		}
		out = append(out, e)
	}
	return out
}

// failureMessage is the failure users see for a failure event of an
// allocation (before the driver adds the end of a terminated worker's
// stderr).
func failureMessage(alloc string, e *api.TaskEvent) string {
	return fmt.Sprintf("allocation %s: %s: %s", short(alloc), e.Type, eventMessage(e))
}

// eventMessage is what a task event says happened: Nomad's display
// message, else the raw message or the detail its type fills. An OOM kill
// says so in words: its display message is only an exit code.
func eventMessage(e *api.TaskEvent) string {
	msg := "no message"
	for _, m := range []string{e.DisplayMessage, e.Message, e.Details["driver_error"], e.Details["download_error"],
		e.Details["validation_error"], e.Details["setup_error"]} {
		if m != "" {
			msg = m
			break
		}
	}
	if e.Details["oom_killed"] == "true" {
		msg += " (OOM killed: the worker needed more memory than its workload size grants)"
	}
	return msg
}

func nodes(n int) string {
	if n == 1 {
		return "1 node"
	}
	return strconv.Itoa(n) + " nodes"
}

func sortedKeys(m map[string]int) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func short(id string) string { return id[:min(8, len(id))] }
