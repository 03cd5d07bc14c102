package decider

import (
	"math"
	"time"
)

// Entities that generate tokens (LLMs) scale on tokens per second instead
// of concurrency: the Decider is the same, with TargetPerReplica set to the
// tokens per second one replica sustains (the model's throughput chunk),
// and each sample is the entity's token demand from TokenDemand. The loop
// derives the demand from what each replica's worker reports (its
// generated-tokens counter, and its queued and running sequences) with
// TokenRate and TokenDemand, both pure.

// TokenObservation is one replica's report at one time.
type TokenObservation struct {
	At        time.Time
	Generated uint64 // the replica's generated-tokens counter
	Queued    int    // sequences waiting for a slot
	Running   int    // sequences generating
}

// TokenRate is the tokens per second between two reports of one replica.
// ok is false when there is no rate to tell: the reports are not in time
// order, or the counter went back (the runtime restarted, so the span
// mixes two counters).
func TokenRate(prev, cur TokenObservation) (rate float64, ok bool) {
	dt := cur.At.Sub(prev.At).Seconds()
	if !(dt > 0) || cur.Generated < prev.Generated {
		return 0, false
	}
	return float64(cur.Generated-prev.Generated) / dt, true
}

// TokenDemand is the tokens per second an entity would generate if it had
// room for every sequence it holds: observed tokens per second, scaled up
// by the waiting sequences. A replica at its limit generates no faster
// however many sequences wait, so the observed rate alone would never ask
// for more; each waiting sequence is taken to want what a running one gets
// now. Worked numbers: 1,000 tokens/s from 8 running with 8 waiting is a
// demand of 2,000, and with 500 tokens/s per replica at 0.7 utilization,
// ceil(2000/350) = 6 replicas.
//
// With sequences waiting and none running (a replica that has not started
// generating), the rate says nothing per sequence; the demand is then at
// least perReplica, one replica's worth, so that the entity keeps or gets
// one.
func TokenDemand(tokensPerSec float64, queued, running int, perReplica float64) float64 {
	if math.IsNaN(tokensPerSec) || tokensPerSec < 0 || math.IsInf(tokensPerSec, 0) {
		tokensPerSec = 0
	}
	queued, running = max(0, queued), max(0, running)
	switch {
	case running > 0:
		return tokensPerSec * float64(running+queued) / float64(running)
	case queued > 0:
		return max(tokensPerSec, perReplica)
	}
	return tokensPerSec
}
