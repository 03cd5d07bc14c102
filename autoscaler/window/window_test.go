package window

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

const sec = time.Second

func TestWindowAverage(t *testing.T) {
	start := time.Time{}
	type rec struct {
		at time.Duration
		v  float64
	}
	tests := []struct {
		name    string
		window  time.Duration
		records []rec
		at      time.Duration
		want    float64
	}{{
		name: "nothing recorded",
		at:   10 * sec,
		want: 0,
	}, {
		name:    "one sample, same bucket",
		records: []rec{{0, 6}},
		at:      500 * time.Millisecond,
		want:    6,
	}, {
		name:    "samples in one bucket add up",
		records: []rec{{0, 2}, {300 * time.Millisecond, 3}, {900 * time.Millisecond, 1}},
		at:      0,
		want:    6,
	}, {
		name:    "young window averages since the first record",
		records: []rec{{0, 6}},
		at:      2 * sec,
		want:    2, // 6 over 3 buckets, not over 5
	}, {
		name:    "young window that starts late",
		records: []rec{{10 * sec, 4}, {11 * sec, 2}},
		at:      11 * sec,
		want:    3,
	}, {
		name:    "full window counts silent buckets as zero",
		records: []rec{{0, 5}, {4 * sec, 5}},
		at:      4 * sec,
		want:    2,
	}, {
		name:    "oldest bucket slides out",
		records: []rec{{0, 5}, {4 * sec, 5}},
		at:      5 * sec,
		want:    1,
	}, {
		name:    "everything slid out",
		records: []rec{{0, 5}, {4 * sec, 5}},
		at:      9 * sec,
		want:    0,
	}, {
		name:    "after a gap longer than the window the average restarts",
		records: []rec{{0, 100}, {20 * sec, 4}},
		at:      21 * sec,
		want:    2, // 4 over buckets 20 and 21
	}, {
		name:    "late sample lands in its own bucket",
		records: []rec{{0, 1}, {4 * sec, 1}, {2 * sec, 3}},
		at:      4 * sec,
		want:    1,
	}, {
		name:    "late sample older than the window is dropped",
		records: []rec{{10 * sec, 5}, {2 * sec, 100}},
		at:      10 * sec,
		want:    5,
	}, {
		name:    "query before the newest record reads as of that record",
		records: []rec{{3 * sec, 8}},
		at:      1 * sec,
		want:    8,
	}, {
		name:    "NaN and Inf are dropped",
		records: []rec{{0, 2}, {0, math.NaN()}, {0, math.Inf(1)}},
		at:      0,
		want:    2,
	}, {
		name:    "window rounds up to whole buckets",
		window:  2500 * time.Millisecond, // 3 buckets
		records: []rec{{0, 3}, {1 * sec, 3}, {2 * sec, 3}, {3 * sec, 3}},
		at:      3 * sec,
		want:    3,
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := tc.window
			if w == 0 {
				w = 5 * sec
			}
			b := New(w, sec)
			for _, r := range tc.records {
				b.Record(start.Add(r.at), r.v)
			}
			if got := b.WindowAverage(start.Add(tc.at)); math.Abs(got-tc.want) > 1e-12 {
				t.Errorf("WindowAverage = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestIsEmpty(t *testing.T) {
	now := time.Time{}
	b := New(5*sec, sec)
	if !b.IsEmpty(now) {
		t.Errorf("IsEmpty of a new window = false, want true")
	}
	b.Record(now, 0)
	if !b.IsEmpty(now) {
		t.Errorf("IsEmpty after recording only zero = false, want true")
	}
	if got := b.WindowAverage(now); got != 0 {
		t.Errorf("WindowAverage after recording only zero = %v, want 0", got)
	}
	b.Record(now, 1)
	for _, tc := range []struct {
		at   time.Duration
		want bool
	}{{0, false}, {4 * sec, false}, {4*sec + 999*time.Millisecond, false}, {5 * sec, true}, {time.Hour, true}} {
		if got := b.IsEmpty(now.Add(tc.at)); got != tc.want {
			t.Errorf("IsEmpty(+%v) = %v, want %v", tc.at, got, tc.want)
		}
	}
	// Zeros recorded later do not make the window non-empty again.
	b.Record(now.Add(10*sec), 0)
	if !b.IsEmpty(now.Add(10 * sec)) {
		t.Errorf("IsEmpty after a later zero = false, want true")
	}
}

func TestResizeWindow(t *testing.T) {
	now := time.Time{}
	b := New(4*sec, sec)
	for i := range 4 {
		b.Record(now.Add(time.Duration(i)*sec), float64(i+1)) // 1 2 3 4
	}
	at := now.Add(3 * sec)
	if got, want := b.WindowAverage(at), 2.5; got != want {
		t.Fatalf("WindowAverage = %v, want %v", got, want)
	}

	b.ResizeWindow(2 * sec) // keeps 3 4
	if got, want := b.WindowAverage(at), 3.5; got != want {
		t.Errorf("after shrinking: WindowAverage = %v, want %v", got, want)
	}
	if got, want := b.Window(), 2*sec; got != want {
		t.Errorf("Window = %v, want %v", got, want)
	}

	b.ResizeWindow(6 * sec) // 3 4, and the history before them is gone
	b.Record(now.Add(4*sec), 5)
	// Buckets 0..4 since the first record, holding 0 0 3 4 5.
	if got, want := b.WindowAverage(now.Add(4*sec)), 12.0/5; math.Abs(got-want) > 1e-12 {
		t.Errorf("after growing: WindowAverage = %v, want %v", got, want)
	}
	if got, want := b.WindowAverage(now.Add(9*sec)), 5.0/6; math.Abs(got-want) > 1e-12 {
		t.Errorf("after growing, later: WindowAverage = %v, want %v", got, want)
	}
	b.ResizeWindow(6 * sec) // same size: a no-op
	if got, want := b.WindowAverage(now.Add(9*sec)), 5.0/6; math.Abs(got-want) > 1e-12 {
		t.Errorf("after a same-size resize: WindowAverage = %v, want %v", got, want)
	}
}

// TestAgainstReference drives the ring and a plain list of samples with the
// same random records and compares their averages at every step, which checks
// the ring arithmetic and that the running total does not drift.
func TestAgainstReference(t *testing.T) {
	const n = 7
	rng := rand.New(rand.NewPCG(1, 2))
	b := New(n*sec, sec)
	type sample struct {
		at time.Time
		v  float64
	}
	var samples []sample
	start := time.Time{}
	now := start
	for i := range 20000 {
		if i > 0 {
			// A step under n-1 s crosses at most n-1 buckets: never a
			// gap that restarts the average, so the reference may
			// count from start.
			now = now.Add(time.Duration(rng.IntN((n-1)*1000)) * time.Millisecond)
		}
		v := rng.Float64() * 100
		if rng.IntN(4) == 0 {
			v = 0
		}
		b.Record(now, v)
		samples = append(samples, sample{now.Truncate(sec), v})

		query := now.Add(time.Duration(rng.IntN(3)) * sec).Truncate(sec)
		var want float64
		for j := len(samples) - 1; j >= 0; j-- {
			age := query.Sub(samples[j].at)
			if age >= n*sec {
				break // samples are in time order
			}
			want += samples[j].v
		}
		want /= float64(min(n, int(query.Sub(start)/sec)+1))
		if got := b.WindowAverage(query); math.Abs(got-want) > 1e-9 {
			t.Fatalf("step %d: WindowAverage = %v, want %v", i, got, want)
		}
	}
}

func TestNewPanics(t *testing.T) {
	for _, tc := range []struct{ window, granularity time.Duration }{
		{0, sec}, {-sec, sec}, {sec, 0}, {sec, -sec},
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("New(%v, %v) did not panic", tc.window, tc.granularity)
				}
			}()
			New(tc.window, tc.granularity)
		}()
	}
}

func TestRecordDoesNotAllocate(t *testing.T) {
	b := New(60*sec, sec)
	now := time.Time{}
	if allocs := testing.AllocsPerRun(1000, func() {
		now = now.Add(700 * time.Millisecond)
		b.Record(now, 3)
		b.WindowAverage(now)
		b.IsEmpty(now)
	}); allocs != 0 {
		t.Errorf("Record+WindowAverage+IsEmpty allocs = %v, want 0", allocs)
	}
}

func BenchmarkRecord(b *testing.B) {
	w := New(60*sec, sec)
	now := time.Time{}
	b.ReportAllocs()
	for b.Loop() {
		now = now.Add(100 * time.Millisecond)
		w.Record(now, 3)
	}
}

func BenchmarkWindowAverage(b *testing.B) {
	w := New(60*sec, sec)
	now := time.Time{}
	for range 120 {
		now = now.Add(sec)
		w.Record(now, 3)
	}
	b.ReportAllocs()
	for b.Loop() {
		w.WindowAverage(now)
	}
}
