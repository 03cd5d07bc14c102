package scheduler

import (
	"testing"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/scheduler/orchestrator"
)

// TestReplicaStarts: a replica's phase is the last it reached, the first
// response's name (as its worker gave it) once it answered a request.
func TestReplicaStarts(t *testing.T) {
	at := func(ms int64) time.Time { return time.UnixMilli(1_700_000_000_000 + ms) }
	ms := func(d int64) int64 { return 1_700_000_000_000 + d }
	got := replicaStarts([]orchestrator.Start{
		{ID: "a", Requested: at(0)},
		{ID: "b", Requested: at(0), Started: at(10)},
		{ID: "g", Requested: at(0), Downloading: at(5)},
		{ID: "h", Requested: at(0), Downloading: at(5), Started: at(10)},
		{ID: "c", Requested: at(0), Started: at(10), Answered: at(20)},
		{ID: "d", Started: at(10), Answered: at(20), Ready: at(30)},
		{ID: "e", Requested: at(0), Started: at(10), Answered: at(20), Ready: at(30),
			FirstPhase: orchestrator.PhaseFirstToken, FirstRequest: at(40), FirstResponse: at(55)},
		{ID: "f", Started: at(10), Answered: at(20), Ready: at(30),
			FirstPhase: orchestrator.PhaseFirstResponse, FirstRequest: at(40), FirstResponse: at(41)},
	})
	want := []api.ReplicaStart{
		{ID: "a", Phase: "schedule", RequestedMs: ms(0)},
		{ID: "b", Phase: "process_start", RequestedMs: ms(0), StartedMs: ms(10)},
		{ID: "g", Phase: "download", RequestedMs: ms(0), DownloadingMs: ms(5)},
		{ID: "h", Phase: "process_start", RequestedMs: ms(0), DownloadingMs: ms(5), StartedMs: ms(10)},
		{ID: "c", Phase: "model_load", RequestedMs: ms(0), StartedMs: ms(10), AnsweredMs: ms(20)},
		{ID: "d", Phase: "ready", StartedMs: ms(10), AnsweredMs: ms(20), ReadyMs: ms(30)},
		{ID: "e", Phase: "first_token", RequestedMs: ms(0), StartedMs: ms(10), AnsweredMs: ms(20), ReadyMs: ms(30), FirstRequestMs: ms(40), FirstResponseMs: ms(55)},
		{ID: "f", Phase: "first_response", StartedMs: ms(10), AnsweredMs: ms(20), ReadyMs: ms(30), FirstRequestMs: ms(40), FirstResponseMs: ms(41)},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d starts, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("replica %s: %+v, want %+v", want[i].ID, got[i], want[i])
		}
	}
}
