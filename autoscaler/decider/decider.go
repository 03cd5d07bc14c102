package decider

import (
	"fmt"
	"math"
	"time"

	"github.com/gantry/gantry/autoscaler/window"
)

// maxCount caps every count the decider computes, so that float arithmetic on
// absurd samples cannot overflow an int.
const maxCount = math.MaxInt32

// ceilSlack absorbs float error before rounding up: 8.4/2.8 is
// 3.0000000000000004 in float64, and 8.4 concurrent should want 3 replicas,
// not 4.
const ceilSlack = 1e-9

// Decider holds the samples and the panic state of one served entity. See the
// package documentation for the rules it applies.
//
// A Decider is not safe for concurrent use; the loop that owns it calls
// Record, Decide and Update from one goroutine.
type Decider struct {
	spec   Spec
	target float64 // TargetPerReplica × TargetUtilization

	stable *window.Buckets
	panicW *window.Buckets

	// The decider has no clock: it learns the time from its callers.
	// started and start mark its first call (or the first after a change
	// of Granularity emptied the windows); warm-up counts from start.
	started bool
	start   time.Time
	// sampled reports whether Record has ever been called with a usable
	// sample, zero included.
	sampled bool
	// lastLoad is the start of the bucket of the newest non-zero sample, or
	// the decider's first call while there has been none; scale to zero
	// counts from it. seen says whether it is set; the zero time is a valid
	// time, so it cannot say that itself.
	seen     bool
	lastLoad time.Time

	// panicking is true from the decision that crossed PanicThreshold
	// until a stable window passes without crossing it again; panicTime is
	// the last decision that crossed it, and maxPanic the highest count of
	// this panic.
	panicking bool
	panicTime time.Time
	maxPanic  int
}

// New returns a Decider for spec. It panics if spec is not valid: specs come
// from validated entity settings, so an invalid one here is a programmer
// error.
func New(spec Spec) *Decider {
	if err := spec.Validate(); err != nil {
		panic(fmt.Errorf("decider.New: invalid spec: %w", err))
	}
	d := &Decider{}
	d.setSpec(spec)
	d.newWindows()
	return d
}

func (d *Decider) setSpec(spec Spec) {
	d.spec = spec
	d.target = spec.TargetPerReplica * spec.TargetUtilization
}

// newWindows replaces both windows with empty ones sized from d.spec and
// restarts the warm-up, since the decider has lost its history.
func (d *Decider) newWindows() {
	d.stable = window.New(d.spec.StableWindow, d.spec.Granularity)
	d.panicW = window.New(d.spec.PanicWindow, d.spec.Granularity)
	d.started = false
}

// Update changes the spec of a running decider. Window lengths are resized in
// place, keeping the newest samples. A change of Granularity cannot keep the
// buckets, so it starts both windows empty, and the decider warms up again (no
// scale-down for a stable window). An invalid spec is refused and the old one
// kept.
func (d *Decider) Update(spec Spec) error {
	if spec == d.spec {
		// The loop may pass the spec on every tick; an unchanged one
		// costs a comparison. (A spec with a NaN never equals itself,
		// but it is invalid and never stored.)
		return nil
	}
	if err := spec.Validate(); err != nil {
		return fmt.Errorf("decider: invalid spec: %w", err)
	}
	old := d.spec
	d.setSpec(spec)
	if spec.Granularity != old.Granularity {
		d.newWindows()
		return nil
	}
	if spec.StableWindow != old.StableWindow {
		d.stable.ResizeWindow(spec.StableWindow)
	}
	if spec.PanicWindow != old.PanicWindow {
		d.panicW.ResizeWindow(spec.PanicWindow)
	}
	return nil
}

// begin notes the first time the decider hears of.
func (d *Decider) begin(now time.Time) {
	if !d.started {
		d.started, d.start = true, now
	}
	if !d.seen {
		d.seen, d.lastLoad = true, now.Truncate(d.spec.Granularity)
	}
}

// Record adds one sample: the entity's total concurrency (in-flight plus
// queued requests) at now. Samples that fall into the same Granularity bucket
// add up, since they are taken to come from different activators; a source
// should record once per bucket. Negative, NaN and infinite samples are
// dropped.
func (d *Decider) Record(now time.Time, concurrency float64) {
	if !(concurrency >= 0) || math.IsInf(concurrency, 1) {
		return
	}
	d.begin(now)
	d.stable.Record(now, concurrency)
	d.panicW.Record(now, concurrency)
	d.sampled = true
	if t := now.Truncate(d.spec.Granularity); concurrency > 0 && t.After(d.lastLoad) {
		d.lastLoad = t
	}
}

// Decide returns the replica count the entity should have at now, given its
// replicas in in. It updates the panic state, so call it once per tick.
func (d *Decider) Decide(now time.Time, in Inputs) Decision {
	d.begin(now)
	s := &d.spec
	ready, starting := max(in.Ready, 0), max(in.Starting, 0)
	current := ready + starting
	warming := now.Sub(d.start) < s.StableWindow

	if !d.sampled && warming {
		return d.result(current, ruleNoData, Decision{})
	}

	dec := Decision{
		StableConcurrency: max(0, d.stable.WindowAverage(now)),
		PanicConcurrency:  max(0, d.panicW.WindowAverage(now)),
	}
	wantStable := replicasFor(dec.StableConcurrency, d.target)
	wantPanic := replicasFor(dec.PanicConcurrency, d.target)

	// Knative's bounds: scale-up counts Ready 0 as 1, so that with
	// MaxScaleUpRate 1.1, 1 ready replica and 3 wanted the decider still
	// moves to ceil(1.1) = 2 rather than stalling at 1.
	maxUp := toCount(math.Ceil(s.MaxScaleUpRate * float64(max(1, ready))))
	minDown := toCount(math.Floor(float64(ready) / s.MaxScaleDownRate))

	// Capacity counts starting replicas: a burst they will absorb is no
	// reason to panic again. max(1, ...) keeps an entity at zero from
	// panicking at the first sample: 1 concurrent wants 1 replica, 1 < 2.
	if over := float64(wantPanic) >= s.PanicThreshold*float64(max(1, current)); over {
		d.panicking, d.panicTime = true, now
	} else if d.panicking && now.Sub(d.panicTime) >= s.StableWindow {
		d.panicking, d.maxPanic = false, 0
	}
	dec.Panic = d.panicking

	var desired int
	var why rule
	if d.panicking {
		// The stable window can exceed the panic window when the burst is
		// fading; provision for the larger.
		desired, why = max(wantStable, wantPanic), rulePanic
		if desired > maxUp {
			desired, why = maxUp, rulePanicUpRate
		}
		if floor := max(d.maxPanic, current); desired < floor {
			desired, why = floor, rulePanicHold
		}
		d.maxPanic = desired
	} else {
		desired, why = wantStable, ruleStable
		switch {
		case desired > maxUp:
			desired, why = maxUp, ruleStableUpRate
		case desired < minDown:
			desired, why = minDown, ruleStableDownRate
		}
	}

	if desired == 0 && current == 0 && !d.panicW.IsEmpty(now) {
		desired, why = 1, ruleWake
	}

	// Going to zero waits until the stable window has been empty for the
	// grace period. With MinReplicas above 0 the bounds below take care of
	// it, and an entity already at zero has nothing to wait for.
	if desired == 0 && current > 0 && s.MinReplicas == 0 {
		zeroAt := d.lastLoad.Add(s.StableWindow + s.ScaleToZeroGrace)
		if d.stable.IsEmpty(now) && !now.Before(zeroAt) {
			why = ruleZero
		} else {
			desired, why = 1, ruleGrace
		}
	}

	if starting > 0 && desired < current {
		desired, why = current, ruleStarting
	}
	if warming && desired < current {
		desired, why = current, ruleWarmup
	}
	dec.Valid = true
	return d.result(desired, why, dec)
}

// result applies MinReplicas and MaxReplicas to desired and fills in dec. A
// no-data decision stays invalid unless the bounds changed the count, since
// then there is something to do.
func (d *Decider) result(desired int, why rule, dec Decision) Decision {
	b := boundNone
	switch {
	case desired < d.spec.MinReplicas:
		desired, b = d.spec.MinReplicas, boundMin
	case d.spec.MaxReplicas > 0 && desired > d.spec.MaxReplicas:
		desired, b = d.spec.MaxReplicas, boundMax
	}
	if why == ruleNoData {
		dec.Valid = b != boundNone
	}
	dec.Desired = desired
	dec.Reason = reasons[why][b]
	return dec
}

// replicasFor returns how many replicas of per concurrent requests each hold
// load: ceil(load/per), forgiving float error.
func replicasFor(load, per float64) int {
	return toCount(math.Ceil(load/per - ceilSlack))
}

// toCount converts a non-negative whole float to a count, capped at maxCount.
func toCount(f float64) int {
	if !(f > 0) {
		return 0
	}
	if f >= maxCount {
		return maxCount
	}
	return int(f)
}
