// Package queue is the activator's per-entity concurrency breaker and
// cold-start buffer: it hands out per-replica request slots and holds, in a
// bounded FIFO queue, the requests that find no free slot.
//
// It follows Knative's pkg/queue/breaker.go (Maybe and Reserve, an overflow
// sentinel) and pkg/activator/net/throttler.go (per-backend slots that
// follow the set of ready backends). It does no I/O, starts no goroutines
// and sets no timers: a wait ends when a slot is handed over, when the
// caller's context ends, or when the owner calls Fail or Close. The only
// time it reads is through the injected Params.Clock, for the load average
// that Stats reports.
package queue

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"
)

// Defaults of Params' fields.
const (
	DefaultQueueDepth = 10_000
	DefaultQueueBytes = 256 << 20
)

// ErrQueueFull is returned when a request would have to wait and the queue
// already holds QueueDepth requests, or its QueueBytes would overflow.
var ErrQueueFull = errors.New("queue: the request queue is full")

// Backend is what the breaker spreads requests over: a replica. Its only
// signal is fasthttp lbclient's health penalty. A penalized backend keeps
// its place and its slots; it is picked only when no healthy backend has a
// free slot, so a replica that dropped one connection is avoided for a
// while, not dropped.
type Backend interface {
	comparable
	Penalized() bool
}

// Params tunes a Breaker. It works at its zero value.
type Params struct {
	// QueueDepth bounds how many requests may wait. Default 10,000.
	QueueDepth int
	// QueueBytes bounds the sum of the costs (body sizes) of the waiting
	// requests. Default 256 MiB.
	QueueBytes int64
	// Clock times the load average of Stats. Default time.Now.
	Clock func() time.Time
	// OnQueue, if set, hears every change of the number of waiting
	// requests, as a difference. It runs with the breaker's lock held, so
	// changes arrive in order; it must be quick and must not call the
	// breaker. The activator feeds its queue depth gauge from it.
	OnQueue func(delta int)
}

// Breaker hands out request slots: Concurrency slots per backend (Update).
// A request that finds none free waits in a FIFO queue, and slots go to
// waiters oldest first as they free up or as backends are added, so a
// replica that comes up takes at most Concurrency requests at once, never
// the whole queue.
//
// All methods may be called from any goroutine. The pick takes one mutex
// per breaker (that is, per served entity) and allocates nothing; only a
// request that has to wait allocates its place in the queue.
type Breaker[R Backend] struct {
	maxDepth int
	maxBytes int64
	clock    func() time.Time
	onQueue  func(int)

	// mu guards every field below: the backends, their in-flight counts,
	// the queue, the failure count, closed, and the load integral.
	mu       sync.Mutex
	backends []*backend[R] // the current set, in the order Update gave
	draining []*backend[R] // removed backends with requests still in flight
	capacity int           // slots per backend
	next     int           // where the next pick starts, so that ties rotate

	head, tail  *waiter[R] // the queue, oldest first
	queued      int
	queuedBytes int64

	inFlight int    // slots handed out and not released, on any backend
	requests uint64 // requests that asked for a slot, ever
	failures uint64 // the owner's failure count (Fail)
	closed   error  // set by Close: waiting is over for good

	// area is ∫(inFlight+queued)dt in request·seconds from since to last;
	// every change to inFlight or queued first calls touch.
	area        float64
	since, last time.Time
}

// backend is one backend's slots. A removed backend keeps its record, in
// Breaker.draining, until its requests finish, so that if it comes back
// before then its slots are still counted.
type backend[R Backend] struct {
	r        R
	inFlight int  // guarded by the breaker's mu
	removed  bool // guarded by the breaker's mu
	// release is built once per backend, so handing out a slot does not
	// allocate a closure (Knative builds its release in NewBreaker).
	release func()
}

// waiter is one request in the queue. Whoever ends the wait (a grant,
// Fail, Close) unlinks it, sets granted or err and then closes ready, all
// under the breaker's mu.
type waiter[R Backend] struct {
	prev, next *waiter[R]
	ready      chan struct{}
	cost       int64
	failures   uint64 // the failure count when the request arrived
	granted    *backend[R]
	err        error
}

// NewBreaker returns a breaker with no backends: every request waits until
// Update adds some.
func NewBreaker[R Backend](p Params) *Breaker[R] {
	if p.QueueDepth <= 0 {
		p.QueueDepth = DefaultQueueDepth
	}
	if p.QueueBytes <= 0 {
		p.QueueBytes = DefaultQueueBytes
	}
	if p.Clock == nil {
		p.Clock = time.Now
	}
	now := p.Clock()
	return &Breaker[R]{
		maxDepth: p.QueueDepth,
		maxBytes: p.QueueBytes,
		clock:    p.Clock,
		onQueue:  p.OnQueue,
		capacity: 1,
		since:    now,
		last:     now,
	}
}

// Reserve takes a free slot if there is one and nobody is waiting for one;
// it never waits. On success it returns the backend with the fewest
// requests in flight among those with a free slot (healthy ones first) and
// the function that gives the slot back, which must be called exactly once.
//
// ctx is unused; the signature matches Knative's, where callers pass the
// request's context either way.
func (b *Breaker[R]) Reserve(_ context.Context) (r R, release func(), ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.head != nil { // a free slot belongs to the oldest waiter
		return r, nil, false
	}
	be := b.pick()
	if be == nil {
		return r, nil, false
	}
	b.requests++
	b.grant(be)
	return be.r, be.release, true
}

// Acquire takes a slot like Reserve, or else waits in the queue for one,
// as long as ctx lasts. cost counts against QueueBytes while the request
// waits; pass the size of what the request holds on to (its body).
//
// It returns ErrQueueFull when the queue has no room, ctx.Err() when ctx
// ends first, the error given to Fail or Close when the owner ends the
// wait, and else the backend and the release function, which must be called
// exactly once.
func (b *Breaker[R]) Acquire(ctx context.Context, cost int64) (r R, release func(), err error) {
	b.mu.Lock()
	b.requests++
	if b.head == nil {
		if be := b.pick(); be != nil {
			b.grant(be)
			b.mu.Unlock()
			return be.r, be.release, nil
		}
	}
	switch {
	case b.closed != nil:
		err = b.closed
	case b.queued >= b.maxDepth || b.queuedBytes+cost > b.maxBytes:
		err = ErrQueueFull
	default:
		err = ctx.Err()
	}
	if err != nil {
		b.mu.Unlock()
		return r, nil, err
	}
	w := &waiter[R]{ready: make(chan struct{}), cost: cost, failures: b.failures}
	b.touch()
	b.push(w)
	b.mu.Unlock()

	select {
	case <-w.ready:
	case <-ctx.Done():
		b.mu.Lock()
		if w.granted == nil && w.err == nil { // still queued
			b.touch()
			b.unlink(w)
			b.notify(-1)
			b.mu.Unlock()
			return r, nil, ctx.Err()
		}
		b.mu.Unlock()
		if w.granted != nil {
			// The slot came as ctx ended. The request is out of time
			// either way: hand the slot on to the next waiter.
			w.granted.release()
			return r, nil, ctx.Err()
		}
	}
	if w.err != nil {
		return r, nil, w.err
	}
	return w.granted.r, w.granted.release, nil
}

// Maybe runs fn with a slot from Acquire and gives the slot back when fn
// returns. It returns Acquire's error without running fn. Unlike Knative's
// Maybe it takes the request's cost, for the byte bound of the queue.
func (b *Breaker[R]) Maybe(ctx context.Context, cost int64, fn func(R)) error {
	r, release, err := b.Acquire(ctx, cost)
	if err != nil {
		return err
	}
	defer release()
	fn(r)
	return nil
}

// Update sets the backends and the slots each one has (concurrency, at
// least 1; anything less is a programmer error and panics). Backends that
// stay keep their in-flight counts. Removed backends finish their requests
// but get no new ones. Waiters take the new free slots at once, oldest
// first.
func (b *Breaker[R]) Update(rs []R, concurrency int) {
	if concurrency < 1 {
		panic("queue: Breaker.Update with concurrency below 1")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	// byR maps each known backend to its record until rs claims it, then
	// to nil, which also drops repeats in rs.
	byR := make(map[R]*backend[R], len(b.backends)+len(b.draining))
	for _, be := range b.draining {
		byR[be.r] = be
	}
	for _, be := range b.backends {
		byR[be.r] = be
	}
	next := make([]*backend[R], 0, len(rs))
	for _, r := range rs {
		be, ok := byR[r]
		switch {
		case ok && be == nil:
			continue
		case !ok:
			be = b.newBackend(r)
		}
		byR[r] = nil
		be.removed = false
		next = append(next, be)
	}
	var draining []*backend[R]
	for _, old := range [][]*backend[R]{b.draining, b.backends} {
		for _, be := range old {
			if byR[be.r] != nil && be.inFlight > 0 {
				be.removed = true
				draining = append(draining, be)
			}
		}
	}
	b.backends, b.draining, b.capacity = next, draining, concurrency
	b.dispatch()
}

// Fail records the owner's count of failed backend starts. When err is not
// nil, every request that is waiting since before the count reached
// failures stops waiting and gets err. Requests that arrive later record
// the new count, so they wait for the next failure (or a slot). A count
// below the recorded one means the owner's count started afresh (a
// restarted scheduler); waiters then count from the new number. It returns
// how many waits it ended.
func (b *Breaker[R]) Fail(failures uint64, err error) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	if failures < b.failures {
		for w := b.head; w != nil; w = w.next {
			w.failures = min(w.failures, failures)
		}
	}
	b.failures = failures
	if err == nil {
		return 0
	}
	return b.end(err, func(w *waiter[R]) bool { return w.failures < failures })
}

// Close ends every wait with err, and later requests that would have to
// wait get err at once. Slots keep working: requests in flight finish, and
// a request that finds a free slot still gets it. It returns how many
// waits it ended. Closing again replaces err.
func (b *Breaker[R]) Close(err error) int {
	if err == nil {
		panic("queue: Breaker.Close with a nil error")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = err
	return b.end(err, func(*waiter[R]) bool { return true })
}

// Stats is a breaker's load.
type Stats struct {
	// Average is the time-weighted mean of InFlight+Queued since the
	// previous Stats call (or NewBreaker): a burst that came and went in
	// between still counts for its duration.
	Average float64
	// InFlight and Queued are the counts now.
	InFlight, Queued int
	// Requests counts the requests that ever asked for a slot.
	Requests uint64
}

// Stats returns the load and starts a new averaging period.
func (b *Breaker[R]) Stats() Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.touch()
	load := float64(b.inFlight + b.queued)
	avg := load
	if d := b.last.Sub(b.since); d > 0 {
		avg = b.area / d.Seconds()
	}
	b.area, b.since = 0, b.last
	return Stats{Average: avg, InFlight: b.inFlight, Queued: b.queued, Requests: b.requests}
}

func (b *Breaker[R]) newBackend(r R) *backend[R] {
	be := &backend[R]{r: r}
	be.release = func() { b.release(be) }
	return be
}

// release gives back a slot of be and hands free slots to waiters.
func (b *Breaker[R]) release(be *backend[R]) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.touch()
	be.inFlight--
	b.inFlight--
	switch {
	case !be.removed:
		b.dispatch()
	case be.inFlight == 0:
		b.draining = slices.DeleteFunc(b.draining, func(d *backend[R]) bool { return d == be })
	}
}

// pick returns the backend with a free slot that a request should go to:
// healthy before penalized, then the fewest in flight, ties to the first
// seen from a start that rotates with every pick, so that light traffic
// still spreads over all backends. nil if no slot is free. mu must be held.
func (b *Breaker[R]) pick() *backend[R] {
	n := len(b.backends)
	if n == 0 {
		return nil
	}
	i := b.next
	if i >= n {
		i = 0
	}
	b.next = i + 1
	var best *backend[R]
	bestPenalized := false
	for range n {
		be := b.backends[i]
		if i++; i == n {
			i = 0
		}
		if be.inFlight >= b.capacity {
			continue
		}
		p := be.r.Penalized()
		if best == nil || bestPenalized && !p || p == bestPenalized && be.inFlight < best.inFlight {
			best, bestPenalized = be, p
		}
	}
	return best
}

// grant counts a new request in flight on be. mu must be held.
func (b *Breaker[R]) grant(be *backend[R]) {
	b.touch()
	be.inFlight++
	b.inFlight++
}

// dispatch hands free slots to waiters, oldest first, until either runs
// out. mu must be held.
func (b *Breaker[R]) dispatch() {
	n := 0
	for b.head != nil {
		be := b.pick()
		if be == nil {
			break
		}
		w := b.head
		b.grant(be) // touches before queued changes below
		b.unlink(w)
		w.granted = be
		close(w.ready)
		n++
	}
	b.notify(-n)
}

// end ends, with err, the wait of every waiter that match selects. mu must
// be held.
func (b *Breaker[R]) end(err error, match func(*waiter[R]) bool) int {
	b.touch()
	n := 0
	for w := b.head; w != nil; {
		next := w.next
		if match(w) {
			b.unlink(w)
			w.err = err
			close(w.ready)
			n++
		}
		w = next
	}
	b.notify(-n)
	return n
}

// push queues w last and counts it. The caller calls touch first. mu must
// be held.
func (b *Breaker[R]) push(w *waiter[R]) {
	w.prev = b.tail
	if b.tail != nil {
		b.tail.next = w
	} else {
		b.head = w
	}
	b.tail = w
	b.queued++
	b.queuedBytes += w.cost
	b.notify(1)
}

// unlink takes w out of the queue and uncounts it. The caller calls touch
// first and notify after. mu must be held.
func (b *Breaker[R]) unlink(w *waiter[R]) {
	if w.prev != nil {
		w.prev.next = w.next
	} else {
		b.head = w.next
	}
	if w.next != nil {
		w.next.prev = w.prev
	} else {
		b.tail = w.prev
	}
	w.prev, w.next = nil, nil
	b.queued--
	b.queuedBytes -= w.cost
}

// notify tells OnQueue of a change in the queue's length. mu must be held.
func (b *Breaker[R]) notify(delta int) {
	if delta != 0 && b.onQueue != nil {
		b.onQueue(delta)
	}
}

// touch adds the load since the last change to the integral. It must run
// before every change to inFlight or queued. mu must be held.
func (b *Breaker[R]) touch() {
	now := b.clock()
	if d := now.Sub(b.last); d > 0 {
		b.area += float64(b.inFlight+b.queued) * d.Seconds()
	}
	// A clock that steps back restarts the count from now rather than
	// subtracting load.
	b.last = now
}
