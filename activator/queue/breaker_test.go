package queue_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gantry/gantry/activator/queue"
	"github.com/gantry/gantry/internal/fakeclock"
)

// fakeBackend is a Backend whose penalty a test sets.
type fakeBackend struct {
	name      string
	penalized atomic.Bool
}

func (f *fakeBackend) Penalized() bool { return f.penalized.Load() }

// depth follows a breaker's queue length through Params.OnQueue.
type depth struct{ n atomic.Int64 }

func (d *depth) onQueue(delta int) { d.n.Add(int64(delta)) }

// waitQueued waits until n requests wait in the queue.
func (d *depth) waitQueued(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for d.n.Load() != int64(n) {
		if time.Now().After(deadline) {
			t.Fatalf("queue length = %d, want %d", d.n.Load(), n)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

func newBreaker(p queue.Params) (*queue.Breaker[*fakeBackend], *depth) {
	d := &depth{}
	p.OnQueue = d.onQueue
	return queue.NewBreaker[*fakeBackend](p), d
}

func backends(names ...string) []*fakeBackend {
	out := make([]*fakeBackend, len(names))
	for i, n := range names {
		out[i] = &fakeBackend{name: n}
	}
	return out
}

// result is what an Acquire in a goroutine got.
type result struct {
	i       int
	r       *fakeBackend
	release func()
	err     error
}

// acquireAsync starts Acquire(ctx, cost) in a goroutine, reporting on out
// under index i.
func acquireAsync(ctx context.Context, b *queue.Breaker[*fakeBackend], i int, cost int64, out chan<- result) {
	go func() {
		r, release, err := b.Acquire(ctx, cost)
		out <- result{i, r, release, err}
	}()
}

func receive(t *testing.T, ch <-chan result) result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("no Acquire returned")
		return result{}
	}
}

func nothing(t *testing.T, ch <-chan result) {
	t.Helper()
	select {
	case r := <-ch:
		t.Fatalf("Acquire %d returned (%v, %v), want it still waiting", r.i, r.r, r.err)
	case <-time.After(20 * time.Millisecond):
	}
}

func TestReserveSpreadsAndCaps(t *testing.T) {
	b, _ := newBreaker(queue.Params{})
	bs := backends("a", "b")
	b.Update(bs, 2)

	count := map[string]int{}
	var releases []func()
	for i := range 4 {
		r, release, ok := b.Reserve(context.Background())
		if !ok {
			t.Fatalf("Reserve %d failed with %d of 4 slots taken", i, i)
		}
		count[r.name]++
		releases = append(releases, release)
		// Fewest in flight: after each pair, both backends hold the same.
		if i%2 == 1 && count["a"] != count["b"] {
			t.Fatalf("after %d reserves: %v", i+1, count)
		}
	}
	if _, _, ok := b.Reserve(context.Background()); ok {
		t.Fatal("Reserve succeeded with every slot taken")
	}
	releases[0]()
	if _, _, ok := b.Reserve(context.Background()); !ok {
		t.Fatal("Reserve failed after a release")
	}
	if s := b.Stats(); s.InFlight != 4 || s.Queued != 0 || s.Requests != 5 {
		t.Errorf("Stats = %+v, want 4 in flight, 0 queued, 5 requests", s)
	}
}

func TestPickPrefersHealthy(t *testing.T) {
	b, _ := newBreaker(queue.Params{})
	bs := backends("sick", "well")
	bs[0].penalized.Store(true)
	b.Update(bs, 4)

	for i := range 4 {
		if r, _, _ := b.Reserve(context.Background()); r.name != "well" {
			t.Fatalf("pick %d went to %s while well had a free slot", i, r.name)
		}
	}
	// With the healthy backend full, the penalized one still serves: a
	// penalty ranks a backend last, it does not remove it.
	if r, _, ok := b.Reserve(context.Background()); !ok || r.name != "sick" {
		t.Fatalf("Reserve = %v, %v; want sick", r, ok)
	}
}

func TestWaitersGetSlotsInOrder(t *testing.T) {
	b, d := newBreaker(queue.Params{})
	out := make(chan result, 10)
	for i := range 5 {
		acquireAsync(context.Background(), b, i, 1, out)
		d.waitQueued(t, i+1) // so that arrival order is i's order
	}
	nothing(t, out)

	// One backend with two slots: the two oldest waiters go, at once.
	bs := backends("a")
	b.Update(bs, 2)
	got := []result{receive(t, out), receive(t, out)}
	nothing(t, out)
	if got[0].i+got[1].i != 0+1 || got[0].err != nil || got[1].err != nil {
		t.Fatalf("first grants went to %d (%v) and %d (%v), want 0 and 1", got[0].i, got[0].err, got[1].i, got[1].err)
	}
	d.waitQueued(t, 3)

	// Each release hands its slot to the oldest waiter left.
	for want := 2; want < 5; want++ {
		got[0].release()
		r := receive(t, out)
		if r.i != want || r.err != nil || r.r != bs[0] {
			t.Fatalf("after a release, waiter %d got %v (%v); want waiter %d", r.i, r.r, r.err, want)
		}
		got[0] = r
		nothing(t, out)
	}
	if s := b.Stats(); s.InFlight != 2 || s.Queued != 0 {
		t.Errorf("Stats = %+v, want 2 in flight, none queued", s)
	}
}

func TestNewBackendTakesAtMostItsSlots(t *testing.T) {
	b, d := newBreaker(queue.Params{})
	out := make(chan result, 20)
	for i := range 10 {
		acquireAsync(context.Background(), b, i, 1, out)
	}
	d.waitQueued(t, 10)

	bs := backends("a", "b")
	b.Update(bs[:1], 4)
	count := map[string]int{}
	for range 4 {
		count[receive(t, out).r.name]++
	}
	nothing(t, out)
	b.Update(bs, 4)
	for range 4 {
		count[receive(t, out).r.name]++
	}
	nothing(t, out)
	if count["a"] != 4 || count["b"] != 4 {
		t.Errorf("grants = %v, want 4 on each backend", count)
	}
	d.waitQueued(t, 2)
}

func TestRemovedBackendDrains(t *testing.T) {
	b, d := newBreaker(queue.Params{})
	bs := backends("old", "new")
	b.Update(bs[:1], 1)
	r, release, ok := b.Reserve(context.Background())
	if !ok || r != bs[0] {
		t.Fatal("no slot on old")
	}
	b.Update(bs[1:], 1)
	if r, rel, ok := b.Reserve(context.Background()); !ok || r != bs[1] {
		t.Fatalf("Reserve = %v, %v; want new", r, ok)
	} else {
		defer rel()
	}
	out := make(chan result, 1)
	acquireAsync(context.Background(), b, 0, 1, out)
	d.waitQueued(t, 1)
	// The request on the removed backend finishes; its slot is gone with
	// it, so the waiter keeps waiting.
	release()
	nothing(t, out)
	if s := b.Stats(); s.InFlight != 1 || s.Queued != 1 {
		t.Errorf("Stats = %+v, want 1 in flight, 1 queued", s)
	}
	b.Close(errors.New("closed"))
	if r := receive(t, out); r.err == nil {
		t.Error("waiter not ended by Close")
	}
}

func TestBackendBackBeforeDrained(t *testing.T) {
	b, _ := newBreaker(queue.Params{})
	bs := backends("a")
	b.Update(bs, 1)
	_, release, _ := b.Reserve(context.Background())
	b.Update(nil, 1)
	b.Update(bs, 1)
	// The request from before the removal still holds a's only slot.
	if _, _, ok := b.Reserve(context.Background()); ok {
		t.Fatal("a took a second request while its first still runs")
	}
	release()
	if _, _, ok := b.Reserve(context.Background()); !ok {
		t.Fatal("a's slot did not come back")
	}
}

func TestQueueFull(t *testing.T) {
	for _, tc := range []struct {
		name      string
		params    queue.Params
		costs     []int64 // of requests that wait
		overflow  int64   // cost of the one refused
		afterFree int64   // cost that fits once the first waiter leaves
	}{
		{"count", queue.Params{QueueDepth: 3}, []int64{1, 1, 1}, 1, 1},
		{"bytes", queue.Params{QueueBytes: 100}, []int64{40, 40}, 21, 60},
		{"one request above the bytes", queue.Params{QueueBytes: 100}, nil, 101, 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, d := newBreaker(tc.params)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			out := make(chan result, 10)
			first, cancelFirst := context.WithCancel(ctx)
			for i, c := range tc.costs {
				if i == 0 {
					acquireAsync(first, b, i, c, out)
				} else {
					acquireAsync(ctx, b, i, c, out)
				}
				d.waitQueued(t, i+1)
			}
			if _, _, err := b.Acquire(ctx, tc.overflow); !errors.Is(err, queue.ErrQueueFull) {
				t.Fatalf("Acquire = %v, want ErrQueueFull", err)
			}
			if len(tc.costs) > 0 {
				cancelFirst()
				if r := receive(t, out); r.i != 0 || !errors.Is(r.err, context.Canceled) {
					t.Fatalf("cancelled waiter got %d %v", r.i, r.err)
				}
			}
			acquireAsync(ctx, b, 99, tc.afterFree, out)
			d.waitQueued(t, max(len(tc.costs), 1))
			nothing(t, out)
			cancel()
			for range max(len(tc.costs), 1) {
				receive(t, out)
			}
			d.waitQueued(t, 0)
			cancelFirst()
		})
	}
}

func TestDeadline(t *testing.T) {
	b, d := newBreaker(queue.Params{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, _, err := b.Acquire(ctx, 1)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Acquire = %v, want DeadlineExceeded", err)
	}
	if time.Since(start) < 30*time.Millisecond {
		t.Errorf("Acquire returned before the deadline")
	}
	d.waitQueued(t, 0)
	if s := b.Stats(); s.Queued != 0 {
		t.Errorf("Stats = %+v after the deadline, want nothing queued", s)
	}
}

func TestFailEndsEarlierWaiters(t *testing.T) {
	b, d := newBreaker(queue.Params{})
	boom := errors.New("replica failed to start")
	out := make(chan result, 10)

	b.Fail(3, nil) // the count before any request: nothing ends
	acquireAsync(context.Background(), b, 0, 1, out)
	acquireAsync(context.Background(), b, 1, 1, out)
	d.waitQueued(t, 2)

	// A count that has not grown ends nothing, even with an error.
	if n := b.Fail(3, boom); n != 0 {
		t.Fatalf("Fail(3) ended %d waits, want 0", n)
	}
	nothing(t, out)
	if n := b.Fail(4, boom); n != 2 {
		t.Fatalf("Fail(4) ended %d waits, want 2", n)
	}
	for range 2 {
		if r := receive(t, out); r.err != boom {
			t.Errorf("waiter %d got %v, want the failure", r.i, r.err)
		}
	}

	// A request that arrives after the failure waits for the next one.
	acquireAsync(context.Background(), b, 2, 1, out)
	d.waitQueued(t, 1)
	b.Fail(4, boom)
	nothing(t, out)
	b.Fail(5, boom)
	if r := receive(t, out); r.err != boom {
		t.Errorf("waiter 2 got %v, want the failure", r.err)
	}

	// A count that starts afresh (a restarted scheduler) counts from there.
	acquireAsync(context.Background(), b, 3, 1, out)
	d.waitQueued(t, 1)
	b.Fail(0, nil)
	nothing(t, out)
	b.Fail(1, boom)
	if r := receive(t, out); r.err != boom {
		t.Errorf("waiter 3 got %v after the count restarted, want the failure", r.err)
	}
	d.waitQueued(t, 0)
}

func TestClose(t *testing.T) {
	b, d := newBreaker(queue.Params{})
	bs := backends("a")
	b.Update(bs, 1)
	_, release, _ := b.Reserve(context.Background())

	out := make(chan result, 1)
	acquireAsync(context.Background(), b, 0, 1, out)
	d.waitQueued(t, 1)
	gone := errors.New("removed")
	if n := b.Close(gone); n != 1 {
		t.Fatalf("Close ended %d waits, want 1", n)
	}
	if r := receive(t, out); r.err != gone {
		t.Fatalf("waiter got %v, want %v", r.err, gone)
	}
	if _, _, err := b.Acquire(context.Background(), 1); err != gone {
		t.Fatalf("Acquire after Close = %v, want %v at once", err, gone)
	}
	// Slots still work after Close.
	release()
	if _, _, ok := b.Reserve(context.Background()); !ok {
		t.Error("Reserve with a free slot failed after Close")
	}
}

func TestMaybe(t *testing.T) {
	b, _ := newBreaker(queue.Params{})
	bs := backends("a")
	b.Update(bs, 1)
	ran := false
	err := b.Maybe(context.Background(), 1, func(r *fakeBackend) {
		ran = r == bs[0]
		if _, _, ok := b.Reserve(context.Background()); ok {
			t.Error("a second slot inside Maybe")
		}
	})
	if err != nil || !ran {
		t.Fatalf("Maybe = %v, ran = %v", err, ran)
	}
	if _, _, ok := b.Reserve(context.Background()); !ok {
		t.Error("Maybe did not give its slot back")
	}
}

func TestStatsTimeWeighted(t *testing.T) {
	clock := &fakeclock.Clock{}
	b, d := newBreaker(queue.Params{Clock: clock.Now})
	b.Update(backends("a"), 2)

	// 1 in flight for 0.5 s, then 2 for 0.25 s, then 2 in flight plus 1
	// queued for 0.25 s: (0.5 + 0.5 + 0.75) / 1 s = 1.75.
	_, r1, _ := b.Reserve(context.Background())
	clock.Add(500 * time.Millisecond)
	_, r2, _ := b.Reserve(context.Background())
	clock.Add(250 * time.Millisecond)
	out := make(chan result, 1)
	acquireAsync(context.Background(), b, 0, 1, out)
	d.waitQueued(t, 1)
	clock.Add(250 * time.Millisecond)
	if s := b.Stats(); s.Average != 1.75 || s.InFlight != 2 || s.Queued != 1 || s.Requests != 3 {
		t.Fatalf("Stats = %+v, want average 1.75, 2 in flight, 1 queued, 3 requests", s)
	}

	// A burst that comes and goes within the next period still counts:
	// the waiter takes r1's slot and everything ends after 0.1 s, then
	// 0.9 s of nothing. (3 × 0.1) / 1 s = 0.3.
	clock.Add(100 * time.Millisecond)
	r1()
	r3 := receive(t, out).release
	r2()
	r3()
	clock.Add(900 * time.Millisecond)
	if s := b.Stats(); s.Average < 0.2999 || s.Average > 0.3001 || s.InFlight != 0 || s.Queued != 0 {
		t.Fatalf("Stats = %+v, want average 0.3 and nothing left", s)
	}

	// A period of zero length reports the load now.
	if s := b.Stats(); s.Average != 0 {
		t.Errorf("Stats right after Stats = %+v, want average 0", s)
	}
}

func TestReserveDoesNotAllocate(t *testing.T) {
	b, _ := newBreaker(queue.Params{})
	b.Update(backends("a", "b", "c"), 4)
	ctx := context.Background()
	allocs := testing.AllocsPerRun(1000, func() {
		_, release, ok := b.Reserve(ctx)
		if !ok {
			t.Fatal("no slot")
		}
		release()
	})
	if allocs != 0 {
		t.Errorf("Reserve and release allocate %v times, want 0", allocs)
	}
}

// TestNeverAboveConcurrency hammers a breaker from many goroutines while
// backends come and go, and checks in the backends themselves that none
// ever holds more than its slots.
func TestNeverAboveConcurrency(t *testing.T) {
	const conc = 3
	b, _ := newBreaker(queue.Params{})
	bs := backends("a", "b", "c", "d")
	var held [4]atomic.Int32
	index := map[*fakeBackend]int{bs[0]: 0, bs[1]: 1, bs[2]: 2, bs[3]: 3}
	b.Update(bs[:2], conc)

	stop := make(chan struct{})
	var updates sync.WaitGroup
	updates.Go(func() {
		sets := [][]*fakeBackend{bs[:1], bs[1:3], bs, bs[2:], {}}
		for i := 0; ; i++ {
			select {
			case <-stop:
				b.Update(bs, conc)
				return
			default:
			}
			b.Update(sets[i%len(sets)], conc)
			time.Sleep(50 * time.Microsecond)
		}
	})

	var workers sync.WaitGroup
	var served atomic.Int64
	for range 32 {
		workers.Go(func() {
			for range 200 {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				err := b.Maybe(ctx, 1, func(r *fakeBackend) {
					h := &held[index[r]]
					// Removed backends drain, so the count can only
					// exceed conc if the breaker overbooked.
					if n := h.Add(1); n > conc {
						t.Errorf("backend %s holds %d requests, more than %d", r.name, n, conc)
					}
					served.Add(1)
					h.Add(-1)
				})
				cancel()
				if err != nil {
					t.Errorf("Maybe = %v", err)
					return
				}
			}
		})
	}
	workers.Wait()
	close(stop)
	updates.Wait()
	if s := b.Stats(); s.InFlight != 0 || s.Queued != 0 || served.Load() != 32*200 {
		t.Errorf("Stats = %+v, served %d; want everything served and released", s, served.Load())
	}
}

func BenchmarkReserve(b *testing.B) {
	br, _ := newBreaker(queue.Params{})
	br.Update(backends("a", "b", "c", "d"), 1<<20)
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			_, release, _ := br.Reserve(ctx)
			release()
		}
	})
}
