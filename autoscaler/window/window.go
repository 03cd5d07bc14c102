// Package window keeps a sliding time window of float64 samples in fixed
// buckets, the way Knative's aggregation.TimedFloat64Buckets does, so that the
// autoscaler can ask for the average concurrency over the last 60 s or 6 s.
//
// Time is always an argument: the package never reads a clock, so a test can
// start at time.Time{} and step with Add.
package window

import (
	"math"
	"time"
)

// Buckets is a ring of ceil(window/granularity) buckets with a running total
// of their contents. Each bucket holds the sum of the samples recorded in its
// granularity-long slice of time.
//
// Record is O(1) amortized and does not allocate; WindowAverage and IsEmpty
// cost O(1) or O(buckets), never allocate, and change nothing.
//
// A Buckets is not safe for concurrent use. It has no mutex because its one
// user, the decider, is itself driven from a single goroutine; a caller that
// shares one must guard it with its own lock.
type Buckets struct {
	buckets     []float64
	granularity time.Duration
	window      time.Duration

	// total is the sum of buckets. It is kept up to date as buckets are
	// added to and cleared, and recomputed from scratch every time head
	// wraps to 0, so that float rounding from the many subtractions cannot
	// pile up beyond one trip around the ring.
	total float64

	// head is the index of the bucket that holds lastWrite.
	head int

	// written reports whether anything was ever recorded; the zero time is
	// a valid timestamp (tests start there), so it cannot mark "never".
	written bool
	// lastWrite is the start of the newest bucket recorded into.
	lastWrite time.Time
	// firstWrite is the start of the oldest bucket recorded into since the
	// ring last ran empty. Until a whole window has passed since then, the
	// average is taken over the buckets from firstWrite on, as Knative does,
	// so that a fresh window is not diluted by buckets nobody measured.
	firstWrite time.Time

	// nonZero reports whether a non-zero value was ever recorded, and
	// lastNonZero is the start of the newest bucket that got one. IsEmpty
	// answers from these, exactly, instead of comparing a float total that
	// may carry rounding error with zero.
	nonZero     bool
	lastNonZero time.Time
}

// New returns an empty window of the given length, divided into buckets of
// granularity each. A window that is not a multiple of granularity is rounded
// up to the next bucket. New panics if either duration is not positive: that is
// a programmer error, and the decider validates its spec before calling it.
func New(window, granularity time.Duration) *Buckets {
	if granularity <= 0 {
		panic("window: granularity must be positive, got " + granularity.String())
	}
	return &Buckets{
		buckets:     make([]float64, bucketCount(window, granularity)),
		granularity: granularity,
		window:      window,
	}
}

// bucketCount is ceil(window/granularity), and panics on a window that is not
// positive (see New).
func bucketCount(window, granularity time.Duration) int {
	if window <= 0 {
		panic("window: window must be positive, got " + window.String())
	}
	n := window / granularity
	if window%granularity != 0 {
		n++
	}
	return int(n)
}

// Window returns the current window length.
func (b *Buckets) Window() time.Duration { return b.window }

// Granularity returns the length of one bucket.
func (b *Buckets) Granularity() time.Duration { return b.granularity }

// steps returns how many whole buckets lie from the bucket starting at from to
// the bucket starting at to; both must already be truncated to granularity.
func (b *Buckets) steps(from, to time.Time) int64 {
	// Sub saturates rather than overflows, so even times centuries apart
	// give a count far beyond any ring length, which is all callers check.
	return int64(to.Sub(from) / b.granularity)
}

// Record adds v to the bucket that holds now. Values that land in the same
// bucket add up: the decider records one total per activator per tick, and
// several activators' totals in one second make the entity's total.
//
// A sample older than the newest one is still added to its own bucket, as
// long as that bucket is inside the window; an older one is dropped. NaN and
// infinite values are dropped, since one of them would spoil the running
// total for good.
func (b *Buckets) Record(now time.Time, v float64) {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return
	}
	t := now.Truncate(b.granularity)
	n := int64(len(b.buckets))
	idx := b.head
	switch d := b.steps(b.lastWrite, t); {
	case !b.written:
		b.written = true
		b.lastWrite, b.firstWrite = t, t
	case d > 0:
		b.advance(d, t)
		idx = b.head
	case d < 0:
		if -d >= n {
			return // slid out of the window already
		}
		idx = int((int64(b.head) + d + n) % n)
		if t.Before(b.firstWrite) {
			b.firstWrite = t
		}
	}
	b.buckets[idx] += v
	b.total += v
	if v != 0 && (!b.nonZero || t.After(b.lastNonZero)) {
		b.nonZero = true
		b.lastNonZero = t
	}
}

// advance moves head d buckets forward to the bucket starting at t, clearing
// the buckets it passes: their time has come round again.
func (b *Buckets) advance(d int64, t time.Time) {
	n := len(b.buckets)
	if d >= int64(n) {
		// Every bucket is stale: start over, and count the average from
		// here, as if this were the first record.
		clear(b.buckets)
		b.total = 0
		b.head = 0
		b.firstWrite = t
	} else {
		for range d {
			b.head++
			if b.head == n {
				b.head = 0
			}
			b.total -= b.buckets[b.head]
			b.buckets[b.head] = 0
			if b.head == 0 {
				b.total = sum(b.buckets)
			}
		}
	}
	b.lastWrite = t
}

func sum(s []float64) float64 {
	var t float64
	for _, v := range s {
		t += v
	}
	return t
}

// WindowAverage returns the average value per bucket over the window that ends
// with the bucket holding now: the sum of the buckets divided by their number.
// Buckets with no record count as 0. Until a full window has passed since the
// first record (or since the first record after the window last ran empty),
// the average is over the buckets from that record on: one sample of 6 after
// 2 s reads as 6/3 = 2, not 6/60 = 0.1. An empty window averages 0.
//
// A now before the newest record is treated as the time of that record, so
// samples stamped by a clock slightly ahead are not lost.
func (b *Buckets) WindowAverage(now time.Time) float64 {
	if b.IsEmpty(now) {
		// Also exact when only zeros were recorded, whatever the rounding
		// left in total.
		return 0
	}
	t := now.Truncate(b.granularity)
	d := b.steps(b.lastWrite, t)
	if d < 0 {
		d, t = 0, b.lastWrite
	}
	n := int64(len(b.buckets))
	s := b.total
	// The d oldest buckets, just after head, have slid out of the window
	// that ends at t, but Record has not cleared them yet.
	for i := int64(1); i <= d; i++ {
		s -= b.buckets[(int64(b.head)+i)%n]
	}
	count := min(n, b.steps(b.firstWrite, t)+1)
	return s / float64(count)
}

// IsEmpty reports whether the window that ends with the bucket holding now has
// no non-zero record.
func (b *Buckets) IsEmpty(now time.Time) bool {
	if !b.nonZero {
		return true
	}
	return b.steps(b.lastNonZero, now.Truncate(b.granularity)) >= int64(len(b.buckets))
}

// ResizeWindow changes the window length, keeping the granularity. The newest
// buckets are kept, as many as fit the new length, so a longer window starts
// with the history it had and a shorter one drops the oldest part. It
// allocates the new ring; resizing is rare. It panics if w is not positive.
func (b *Buckets) ResizeWindow(w time.Duration) {
	n := bucketCount(w, b.granularity)
	b.window = w
	old := len(b.buckets)
	if n == old {
		return
	}
	nb := make([]float64, n)
	keep := min(n, old)
	// Copy oldest to newest, so the newest lands at keep-1, the new head.
	for i := range keep {
		nb[i] = b.buckets[(b.head-keep+1+i+old)%old]
	}
	b.buckets = nb
	b.head = keep - 1
	b.total = sum(nb)
}
