package decider_test

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/gantry/gantry/autoscaler/decider"
)

const sec = time.Second

// want is what a test expects of a Decision. reason, when set, must appear in
// Decision.Reason.
type want struct {
	valid   bool
	desired int
	panic   bool
	reason  string
}

func expectDecision(t *testing.T, got decider.Decision, w want) {
	t.Helper()
	if got.Valid != w.valid {
		t.Errorf("Valid = %v, want %v (%v)", got.Valid, w.valid, got)
	}
	if got.Desired != w.desired {
		t.Errorf("Desired = %v, want %v (%v)", got.Desired, w.desired, got)
	}
	if got.Panic != w.panic {
		t.Errorf("Panic = %v, want %v (%v)", got.Panic, w.panic, got)
	}
	if !strings.Contains(got.Reason, w.reason) {
		t.Errorf("Reason = %q, want it to contain %q", got.Reason, w.reason)
	}
}

// load is a constant concurrency recorded once a second from from to to,
// both included.
type load struct {
	from, to time.Duration
	c        float64
}

func record(d *decider.Decider, loads []load) {
	for _, l := range loads {
		for at := l.from; at <= l.to; at += sec {
			d.Record(time.Time{}.Add(at), l.c)
		}
	}
}

// TestDecide checks single decisions after a recorded history. With
// DefaultSpec one replica holds 4 × 0.7 = 2.8 concurrent requests.
func TestDecide(t *testing.T) {
	tests := []struct {
		name  string
		spec  func(*decider.Spec)
		loads []load
		at    time.Duration
		in    decider.Inputs
		want  want
	}{{
		name: "no samples yet keeps the current count",
		in:   decider.Inputs{Ready: 3},
		want: want{valid: false, desired: 3, reason: "no samples"},
	}, {
		name: "no samples yet, but below MinReplicas",
		spec: func(s *decider.Spec) { s.MinReplicas = 1 },
		want: want{valid: true, desired: 1, reason: "raised to MinReplicas"},
	}, {
		name:  "bad samples are dropped",
		loads: []load{{0, 5 * sec, -1}, {0, 5 * sec, math.NaN()}, {0, 5 * sec, math.Inf(1)}},
		at:    5 * sec,
		in:    decider.Inputs{Ready: 2},
		want:  want{valid: false, desired: 2, reason: "no samples"},
	}, {
		name:  "stable load",
		loads: []load{{0, 119 * sec, 10}},
		at:    119 * sec,
		in:    decider.Inputs{Ready: 4},
		want:  want{valid: true, desired: 4, reason: "stable window"}, // ceil(10/2.8)
	}, {
		name:  "float error does not add a replica",
		loads: []load{{0, 119 * sec, 8.4}},
		at:    119 * sec,
		in:    decider.Inputs{Ready: 3},
		want:  want{valid: true, desired: 3, reason: "stable window"}, // 8.4/2.8 = 3.0000000000000004
	}, {
		name:  "wake from zero on a single sample",
		loads: []load{{300 * sec, 300 * sec, 1}},
		at:    300 * sec,
		want:  want{valid: true, desired: 1},
	}, {
		name:  "wake from zero on a tiny sample after a quiet window",
		loads: []load{{0, 299 * sec, 0}, {300 * sec, 300 * sec, 1e-12}},
		at:    300 * sec,
		want:  want{valid: true, desired: 1, reason: "waking from zero"},
	}, {
		name:  "a sample from a few seconds ago still wakes",
		loads: []load{{0, 299 * sec, 0}, {300 * sec, 300 * sec, 1e-12}},
		at:    305 * sec,
		want:  want{valid: true, desired: 1, reason: "waking from zero"},
	}, {
		name:  "at zero with no load stays at zero",
		loads: []load{{0, 299 * sec, 0}},
		at:    299 * sec,
		want:  want{valid: true, desired: 0, reason: "stable window"},
	}, {
		name:  "a burst at zero panics straight to its size",
		loads: []load{{300 * sec, 300 * sec, 20}},
		at:    300 * sec,
		want:  want{valid: true, desired: 8, panic: true, reason: "panic window"}, // ceil(20/2.8) ≥ 2×1
	}, {
		name:  "panic at exactly the threshold",
		loads: []load{{0, 119 * sec, 22.4}},
		at:    119 * sec,
		in:    decider.Inputs{Ready: 4},
		want:  want{valid: true, desired: 8, panic: true}, // 8 ≥ 2.0×4
	}, {
		name:  "no panic just below the threshold",
		loads: []load{{0, 119 * sec, 19.6}},
		at:    119 * sec,
		in:    decider.Inputs{Ready: 4},
		want:  want{valid: true, desired: 7, reason: "stable window"}, // 7 < 2.0×4
	}, {
		name:  "starting replicas count as capacity in the panic test",
		loads: []load{{0, 119 * sec, 19.6}},
		at:    119 * sec,
		in:    decider.Inputs{Ready: 2, Starting: 2},
		want:  want{valid: true, desired: 7, reason: "stable window"}, // 7 < 2.0×(2+2)
	}, {
		name:  "without them the same load panics",
		loads: []load{{0, 119 * sec, 19.6}},
		at:    119 * sec,
		in:    decider.Inputs{Ready: 2},
		want:  want{valid: true, desired: 7, panic: true}, // 7 ≥ 2.0×2
	}, {
		name:  "scale-down is bounded by MaxScaleDownRate",
		loads: []load{{0, 119 * sec, 1}},
		at:    119 * sec,
		in:    decider.Inputs{Ready: 10},
		want:  want{valid: true, desired: 5, reason: "MaxScaleDownRate"}, // floor(10/2)
	}, {
		name:  "scale-down rounds the bound down",
		loads: []load{{0, 119 * sec, 1}},
		at:    119 * sec,
		in:    decider.Inputs{Ready: 5},
		want:  want{valid: true, desired: 2, reason: "MaxScaleDownRate"}, // floor(5/2)
	}, {
		name:  "scale-up is bounded by MaxScaleUpRate",
		spec:  func(s *decider.Spec) { s.MaxScaleUpRate = 1.5 },
		loads: []load{{0, 119 * sec, 19}},
		at:    119 * sec,
		in:    decider.Inputs{Ready: 4},
		want:  want{valid: true, desired: 6, reason: "stable window, bounded by MaxScaleUpRate"}, // ceil(1.5×4)
	}, {
		name:  "panic scale-up is bounded by MaxScaleUpRate",
		spec:  func(s *decider.Spec) { s.MaxScaleUpRate = 2 },
		loads: []load{{0, 119 * sec, 28}},
		at:    119 * sec,
		in:    decider.Inputs{Ready: 2},
		want:  want{valid: true, desired: 4, panic: true, reason: "panic window, bounded by MaxScaleUpRate"},
	}, {
		name:  "scale-up from zero counts ready 0 as 1",
		spec:  func(s *decider.Spec) { s.MaxScaleUpRate = 2 },
		loads: []load{{300 * sec, 300 * sec, 28}},
		at:    300 * sec,
		want:  want{valid: true, desired: 2, panic: true, reason: "MaxScaleUpRate"},
	}, {
		name:  "starting replicas block scale-down",
		loads: []load{{0, 119 * sec, 1}},
		at:    119 * sec,
		in:    decider.Inputs{Ready: 2, Starting: 4},
		want:  want{valid: true, desired: 6, reason: "replicas starting"},
	}, {
		name:  "starting replicas block scale to zero",
		loads: []load{{0, 9 * sec, 1}},
		at:    300 * sec,
		in:    decider.Inputs{Starting: 1},
		want:  want{valid: true, desired: 1, reason: "replicas starting"},
	}, {
		name:  "starting replicas do not block scale-up",
		loads: []load{{0, 119 * sec, 28}},
		at:    119 * sec,
		in:    decider.Inputs{Ready: 2, Starting: 4},
		want:  want{valid: true, desired: 10, reason: "stable window"},
	}, {
		name:  "less than a stable window of history blocks scale-down",
		loads: []load{{0, 29 * sec, 1}},
		at:    29 * sec,
		in:    decider.Inputs{Ready: 6},
		want:  want{valid: true, desired: 6, reason: "less than a stable window"},
	}, {
		name:  "less than a stable window of history allows scale-up",
		loads: []load{{0, 29 * sec, 19}},
		at:    29 * sec,
		in:    decider.Inputs{Ready: 4},
		want:  want{valid: true, desired: 7, reason: "stable window"},
	}, {
		name:  "MaxReplicas caps",
		spec:  func(s *decider.Spec) { s.MaxReplicas = 5 },
		loads: []load{{0, 119 * sec, 25}},
		at:    119 * sec,
		in:    decider.Inputs{Ready: 5}, // wants ceil(25/2.8) = 9
		want:  want{valid: true, desired: 5, reason: "stable window; capped at MaxReplicas"},
	}, {
		name:  "MaxReplicas caps starting replicas too",
		spec:  func(s *decider.Spec) { s.MaxReplicas = 3 },
		loads: []load{{0, 119 * sec, 1}},
		at:    119 * sec,
		in:    decider.Inputs{Ready: 2, Starting: 4},
		want:  want{valid: true, desired: 3, reason: "replicas starting, no scale-down; capped at MaxReplicas"},
	}, {
		name:  "MinReplicas keeps an idle entity up",
		spec:  func(s *decider.Spec) { s.MinReplicas = 2 },
		loads: []load{{0, 9 * sec, 1}},
		at:    300 * sec,
		in:    decider.Inputs{Ready: 2},
		want:  want{valid: true, desired: 2, reason: "raised to MinReplicas"},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			spec := decider.DefaultSpec()
			if tc.spec != nil {
				tc.spec(&spec)
			}
			d := decider.New(spec)
			record(d, tc.loads)
			expectDecision(t, d.Decide(time.Time{}.Add(tc.at), tc.in), tc.want)
		})
	}
}

// TestScaleToZero checks the moment an idle entity may go to zero: once the
// stable window has been empty for the grace period, and not a tick before.
// The last load is in the bucket at 9 s, so the 60 s window is empty from 69 s.
func TestScaleToZero(t *testing.T) {
	tests := []struct {
		name  string
		grace time.Duration
		zeros bool // record zeros after the load, as an activator reporting idle does
		at    time.Duration
		want  want
	}{
		{"window not yet empty", 30 * sec, false, 68*sec + 999*time.Millisecond, want{true, 1, false, "stable window"}},
		{"window empty, grace not passed", 30 * sec, false, 69 * sec, want{true, 1, false, "idle, keeping 1"}},
		{"just before the grace ends", 30 * sec, false, 98*sec + 999*time.Millisecond, want{true, 1, false, "idle, keeping 1"}},
		{"grace ended", 30 * sec, false, 99 * sec, want{true, 0, false, "idle through"}},
		{"long after", 30 * sec, false, time.Hour, want{true, 0, false, "idle through"}},
		{"zeros recorded: just before", 30 * sec, true, 98*sec + 999*time.Millisecond, want{true, 1, false, "idle, keeping 1"}},
		{"zeros recorded: grace ended", 30 * sec, true, 99 * sec, want{true, 0, false, "idle through"}},
		{"no grace: window not yet empty", 0, false, 68*sec + 999*time.Millisecond, want{true, 1, false, "stable window"}},
		{"no grace: window empty", 0, false, 69 * sec, want{true, 0, false, "idle through"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			spec := decider.DefaultSpec()
			spec.ScaleToZeroGrace = tc.grace
			d := decider.New(spec)
			record(d, []load{{0, 9 * sec, 1}})
			if tc.zeros {
				record(d, []load{{10 * sec, tc.at, 0}})
			}
			expectDecision(t, d.Decide(time.Time{}.Add(tc.at), decider.Inputs{Ready: 1}), tc.want)
		})
	}
}

// TestNoSamplesEverGoesIdle: a decider that never gets a sample gives no
// decision while it warms up, then treats the silence as no load, counting the
// grace from its first call.
func TestNoSamplesEverGoesIdle(t *testing.T) {
	d := decider.New(decider.DefaultSpec())
	now := time.Time{}
	in := decider.Inputs{Ready: 1}
	expectDecision(t, d.Decide(now, in), want{false, 1, false, "no samples"})
	expectDecision(t, d.Decide(now.Add(59*sec), in), want{false, 1, false, "no samples"})
	expectDecision(t, d.Decide(now.Add(60*sec), in), want{true, 1, false, "idle, keeping 1"})
	expectDecision(t, d.Decide(now.Add(89*sec), in), want{true, 1, false, "idle, keeping 1"})
	expectDecision(t, d.Decide(now.Add(90*sec), in), want{true, 0, false, "idle through"})
}

// sim drives a decider second by second: it records the load, decides, and
// brings Ready to the decision at once (replicas that start instantly).
type sim struct {
	d     *decider.Decider
	now   time.Time
	ready int
}

func (s *sim) step(c float64) decider.Decision {
	s.d.Record(s.now, c)
	dec := s.d.Decide(s.now, decider.Inputs{Ready: s.ready})
	if dec.Valid {
		s.ready = dec.Desired
	}
	s.now = s.now.Add(sec)
	return dec
}

func TestSteadyLoadHoldsSteady(t *testing.T) {
	s := &sim{d: decider.New(decider.DefaultSpec()), ready: 4}
	for range 60 {
		s.step(10)
	}
	// Ten minutes of 10 ± 3 concurrent. One sample alone would ask for 3
	// to 5 replicas; the windows must hold it at ceil(10/2.8) = 4.
	rng := rand.New(rand.NewPCG(7, 11))
	for i := range 600 {
		c := 10 + (rng.Float64()*6 - 3)
		if dec := s.step(c); dec.Desired != 4 || dec.Panic {
			t.Fatalf("second %d, load %.2f: Desired = %v, Panic = %v, want 4, false (%v)", 60+i, c, dec.Desired, dec.Panic, dec)
		}
	}
}

func TestBurstPanicsAndHolds(t *testing.T) {
	s := &sim{d: decider.New(decider.DefaultSpec()), ready: 3}
	for range 60 {
		expectDecision(t, s.step(8), want{true, 3, false, "stable window"}) // ceil(8/2.8)
	}

	// One second at 10× the load. The panic window averages
	// (5×8 + 80)/6 = 20, which wants ceil(20/2.8) = 8 ≥ 2.0 × 3 replicas.
	dec := s.step(80)
	expectDecision(t, dec, want{true, 8, true, "panic window"})
	if got, want := dec.PanicConcurrency, 20.0; math.Abs(got-want) > 1e-9 {
		t.Errorf("PanicConcurrency = %v, want %v", got, want)
	}

	// Back to 8. The burst leaves the panic window after 6 s and the
	// stable window after 60 s, but the count holds at 8 until a whole
	// stable window has passed since the last decision over the threshold.
	for i := 61; i < 120; i++ {
		dec := s.step(8)
		if dec.Desired != 8 || !dec.Panic {
			t.Fatalf("second %d: Desired = %v, Panic = %v, want 8, true (%v)", i, dec.Desired, dec.Panic, dec)
		}
	}
	// Out of panic: 3 wanted, but one decision may only halve.
	expectDecision(t, s.step(8), want{true, 4, false, "MaxScaleDownRate"})
	expectDecision(t, s.step(8), want{true, 3, false, "stable window"})
}

func TestPanicNeverScalesDown(t *testing.T) {
	s := &sim{d: decider.New(decider.DefaultSpec()), ready: 1}
	for range 60 {
		s.step(1)
	}
	// A burst to 50 panics at 60 s; then the load falls away completely
	// while the decider stays in panic.
	expectDecision(t, s.step(50), want{true, 4, true, "panic window"}) // (5×1+50)/6 = 9.2 → 4 ≥ 2×1
	expectDecision(t, s.step(50), want{true, 7, true, "panic window"}) // (4×1+100)/6 = 17.3 → 7 < 2×4
	for i := 62; i < 120; i++ {
		dec := s.step(0)
		if dec.Desired != 7 || !dec.Panic {
			t.Fatalf("second %d: Desired = %v, Panic = %v, want 7, true (%v)", i, dec.Desired, dec.Panic, dec)
		}
	}
	// A stable window after the one decision over the threshold (60 s),
	// the panic ends: 1 wanted, floor(7/2) = 3 allowed.
	expectDecision(t, s.step(0), want{true, 3, false, "MaxScaleDownRate"})
}

func TestUpdate(t *testing.T) {
	now := time.Time{}
	in := decider.Inputs{Ready: 1}

	t.Run("longer stable window delays scale to zero", func(t *testing.T) {
		d := decider.New(decider.DefaultSpec())
		record(d, []load{{0, 9 * sec, 1}})
		spec := decider.DefaultSpec()
		spec.StableWindow = 120 * sec
		if err := d.Update(spec); err != nil {
			t.Fatalf("Update: %v", err)
		}
		// 9 s + 120 s + 30 s.
		expectDecision(t, d.Decide(now.Add(99*sec), in), want{true, 1, false, "stable window"})
		expectDecision(t, d.Decide(now.Add(129*sec), in), want{true, 1, false, "idle, keeping 1"})
		expectDecision(t, d.Decide(now.Add(158*sec), in), want{true, 1, false, "idle, keeping 1"})
		expectDecision(t, d.Decide(now.Add(159*sec), in), want{true, 0, false, "idle through"})
	})

	t.Run("shorter panic window reacts harder", func(t *testing.T) {
		d := decider.New(decider.DefaultSpec())
		record(d, []load{{0, 59 * sec, 8}})
		spec := decider.DefaultSpec()
		spec.PanicWindow = 2 * sec
		if err := d.Update(spec); err != nil {
			t.Fatalf("Update: %v", err)
		}
		record(d, []load{{60 * sec, 60 * sec, 80}})
		// (8+80)/2 = 44 → ceil(44/2.8) = 16, where 6 s would give 8.
		expectDecision(t, d.Decide(now.Add(60*sec), decider.Inputs{Ready: 3}), want{true, 16, true, "panic window"})
	})

	t.Run("invalid spec is refused and the old one kept", func(t *testing.T) {
		d := decider.New(decider.DefaultSpec())
		record(d, []load{{0, 119 * sec, 10}})
		spec := decider.DefaultSpec()
		spec.TargetPerReplica = 0
		if err := d.Update(spec); err == nil {
			t.Fatalf("Update with TargetPerReplica 0 = nil, want an error")
		}
		expectDecision(t, d.Decide(now.Add(119*sec), decider.Inputs{Ready: 4}), want{true, 4, false, "stable window"})
	})

	t.Run("new granularity restarts the windows and the warm-up", func(t *testing.T) {
		d := decider.New(decider.DefaultSpec())
		record(d, []load{{0, 119 * sec, 1}})
		spec := decider.DefaultSpec()
		spec.Granularity = 500 * time.Millisecond
		if err := d.Update(spec); err != nil {
			t.Fatalf("Update: %v", err)
		}
		expectDecision(t, d.Decide(now.Add(120*sec), decider.Inputs{Ready: 5}), want{true, 5, false, "less than a stable window"})
		record(d, []load{{120 * sec, 180 * sec, 1}})
		expectDecision(t, d.Decide(now.Add(180*sec), decider.Inputs{Ready: 5}), want{true, 2, false, "MaxScaleDownRate"})
	})
}

func TestValidate(t *testing.T) {
	if err := decider.DefaultSpec().Validate(); err != nil {
		t.Fatalf("DefaultSpec().Validate() = %v, want nil", err)
	}
	tests := []struct {
		name string
		spec func(*decider.Spec)
		want []string
	}{
		{"target", func(s *decider.Spec) { s.TargetPerReplica = 0 }, []string{"TargetPerReplica must be a positive number, got 0"}},
		{"target NaN", func(s *decider.Spec) { s.TargetPerReplica = math.NaN() }, []string{"TargetPerReplica"}},
		{"utilization", func(s *decider.Spec) { s.TargetUtilization = 1.5 }, []string{"TargetUtilization must be in (0, 1], got 1.5"}},
		{"negative bounds", func(s *decider.Spec) { s.MinReplicas, s.MaxReplicas = -1, -2 }, []string{"MinReplicas must not be negative", "MaxReplicas must not be negative"}},
		{"min above max", func(s *decider.Spec) { s.MinReplicas, s.MaxReplicas = 5, 3 }, []string{"MinReplicas (5) must not exceed MaxReplicas (3)"}},
		{"panic window longer than stable", func(s *decider.Spec) { s.PanicWindow = 2 * time.Minute }, []string{"PanicWindow (2m0s) must not exceed StableWindow (1m0s)"}},
		{"window below granularity", func(s *decider.Spec) { s.PanicWindow = 500 * time.Millisecond }, []string{"PanicWindow (500ms) must be at least Granularity (1s)"}},
		{"too many buckets", func(s *decider.Spec) { s.Granularity = time.Millisecond }, []string{"StableWindow (1m0s) must be at most 10000 buckets"}},
		{"rates", func(s *decider.Spec) { s.MaxScaleUpRate, s.MaxScaleDownRate = 1, 0.5 }, []string{"MaxScaleUpRate must be a number above 1, got 1", "MaxScaleDownRate must be a number above 1, got 0.5"}},
		{"threshold", func(s *decider.Spec) { s.PanicThreshold = math.Inf(1) }, []string{"PanicThreshold must be a number above 1"}},
		{"grace", func(s *decider.Spec) { s.ScaleToZeroGrace = -sec }, []string{"ScaleToZeroGrace must not be negative, got -1s"}},
		{"zero spec reports everything", func(s *decider.Spec) { *s = decider.Spec{} }, []string{
			"TargetPerReplica", "TargetUtilization", "Granularity must be positive", "StableWindow must be positive",
			"PanicWindow must be positive", "PanicThreshold", "MaxScaleUpRate", "MaxScaleDownRate",
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			spec := decider.DefaultSpec()
			tc.spec(&spec)
			err := spec.Validate()
			if err == nil {
				t.Fatalf("Validate() = nil, want errors containing %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %q, want it to contain %q", err, w)
				}
			}
		})
	}
}

func TestNewPanicsOnInvalidSpec(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Errorf("New(Spec{}) did not panic")
		}
	}()
	decider.New(decider.Spec{})
}

func TestDecisionString(t *testing.T) {
	d := decider.Decision{Valid: true, Desired: 8, Panic: true, Reason: "panic window", StableConcurrency: 9.2, PanicConcurrency: 20}
	if got, want := d.String(), "desired 8, panic window; 20.0 concurrent in panic window, 9.2 in stable window"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

func TestRecordAndDecideDoNotAllocate(t *testing.T) {
	d := decider.New(decider.DefaultSpec())
	now := time.Time{}
	if allocs := testing.AllocsPerRun(1000, func() {
		now = now.Add(sec)
		d.Record(now, 10)
		d.Decide(now, decider.Inputs{Ready: 4})
	}); allocs != 0 {
		t.Errorf("Record+Decide allocs = %v, want 0", allocs)
	}
}

func BenchmarkRecordDecide(b *testing.B) {
	d := decider.New(decider.DefaultSpec())
	now := time.Time{}
	b.ReportAllocs()
	for b.Loop() {
		now = now.Add(sec)
		d.Record(now, 10)
		d.Decide(now, decider.Inputs{Ready: 4})
	}
}

func TestUpdateUnchangedDoesNotAllocate(t *testing.T) {
	d := decider.New(decider.DefaultSpec())
	spec := decider.DefaultSpec()
	if allocs := testing.AllocsPerRun(100, func() {
		if err := d.Update(spec); err != nil {
			t.Fatalf("Update: %v", err)
		}
	}); allocs != 0 {
		t.Errorf("Update with the same spec allocs = %v, want 0", allocs)
	}
}
