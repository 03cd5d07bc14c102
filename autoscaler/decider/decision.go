package decider

import "fmt"

// Inputs is what the orchestrator knows about the entity's replicas at the
// time of a decision.
type Inputs struct {
	// Ready is the number of replicas answering requests.
	Ready int
	// Starting is the number of replicas asked for that are not ready yet:
	// placed, pulling, or loading the model. They count as capacity on its
	// way.
	Starting int
}

// Decision is the outcome of one Decide.
type Decision struct {
	// Valid is false when the decider has nothing to go on yet; the caller
	// then keeps the current count. Desired is still filled in.
	Valid bool
	// Desired is the replica count to ask for.
	Desired int
	// Panic reports whether the decider is in panic mode.
	Panic bool
	// Reason names, in words, the rule that settled Desired, and says when
	// MinReplicas or MaxReplicas changed it. It is one of a fixed set of
	// phrases, so that Decide does not allocate; String adds the numbers.
	Reason string
	// StableConcurrency and PanicConcurrency are the average concurrency
	// the decision saw in the stable and panic windows.
	StableConcurrency, PanicConcurrency float64
}

// String formats d for a log line, for example
// "desired 8, panic window; 20.0 concurrent in panic window, 9.2 in stable window".
func (d Decision) String() string {
	valid := ""
	if !d.Valid {
		valid = " (not valid)"
	}
	return fmt.Sprintf("desired %d%s, %s; %.1f concurrent in panic window, %.1f in stable window",
		d.Desired, valid, d.Reason, d.PanicConcurrency, d.StableConcurrency)
}

// rule is the rule of Decide that settled a count.
type rule uint8

const (
	ruleNoData rule = iota
	ruleStable
	ruleStableUpRate
	ruleStableDownRate
	rulePanic
	rulePanicUpRate
	rulePanicHold
	ruleWake
	ruleGrace
	ruleZero
	ruleStarting
	ruleWarmup
	numRules
)

var rulePhrases = [numRules]string{
	ruleNoData:         "no samples yet, keeping the current count",
	ruleStable:         "stable window",
	ruleStableUpRate:   "stable window, bounded by MaxScaleUpRate",
	ruleStableDownRate: "stable window, bounded by MaxScaleDownRate",
	rulePanic:          "panic window",
	rulePanicUpRate:    "panic window, bounded by MaxScaleUpRate",
	rulePanicHold:      "panic, no scale-down while panicking",
	ruleWake:           "waking from zero",
	ruleGrace:          "idle, keeping 1 until the stable window has been empty for the scale-to-zero grace",
	ruleZero:           "idle through the stable window and the scale-to-zero grace",
	ruleStarting:       "replicas starting, no scale-down",
	ruleWarmup:         "less than a stable window of history, no scale-down",
}

// bound says whether MinReplicas or MaxReplicas changed a count.
type bound uint8

const (
	boundNone bound = iota
	boundMin
	boundMax
	numBounds
)

// reasons holds every Reason, built once so that Decide only picks one.
var reasons = func() (r [numRules][numBounds]string) {
	for i, p := range rulePhrases {
		r[i][boundNone] = p
		r[i][boundMin] = p + "; raised to MinReplicas"
		r[i][boundMax] = p + "; capped at MaxReplicas"
	}
	return r
}()
