package api

import (
	"fmt"
	"strings"
	"time"
)

// FirstResponseHeader is on a worker's /ping answer of 200 once the worker
// has answered its first request: the last phase of its cold start, which
// drivers carry into the served entity's replicas.starts. Its value is
// FirstResponse.String's.
const FirstResponseHeader = "X-Gantry-First-Response"

// Names of the cold start's last phase, as in replicas.starts and the
// gantry_cold_start_phase_seconds metric: first_token for a streamed
// answer of a runtime that generates tokens (its first event carries the
// first token), first_response for any other.
const (
	PhaseFirstResponse = "first_response"
	PhaseFirstToken    = "first_token"
)

// FirstResponse is a worker's first answered request. The times are
// durations, not instants, so that a driver on another machine (Nomad)
// places them on its own clock without trusting the worker's: Ago is how
// long before the /ping answer the first byte of the answer left, Took
// from the request's arrival to that byte.
type FirstResponse struct {
	Phase string
	Ago   time.Duration
	Took  time.Duration
}

// String is the header's value: "first_token ago=1.5s took=42ms".
func (f FirstResponse) String() string {
	return fmt.Sprintf("%s ago=%s took=%s", f.Phase, f.Ago, f.Took)
}

// ParseFirstResponse reads a FirstResponseHeader value. It refuses
// anything but the two phase names and non-negative durations, so that a
// worker of another version cannot put nonsense in the endpoint's state.
func ParseFirstResponse(s string) (FirstResponse, bool) {
	phase, rest, _ := strings.Cut(s, " ")
	ago, took, _ := strings.Cut(rest, " ")
	var f FirstResponse
	var err error
	a, okA := strings.CutPrefix(ago, "ago=")
	t, okT := strings.CutPrefix(took, "took=")
	if (phase != PhaseFirstResponse && phase != PhaseFirstToken) || !okA || !okT {
		return FirstResponse{}, false
	}
	f.Phase = phase
	if f.Ago, err = time.ParseDuration(a); err != nil || f.Ago < 0 {
		return FirstResponse{}, false
	}
	if f.Took, err = time.ParseDuration(t); err != nil || f.Took < 0 {
		return FirstResponse{}, false
	}
	return f, true
}
