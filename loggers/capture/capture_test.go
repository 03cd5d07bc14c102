package capture

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/gantry/gantry/internal/eventually"
	"github.com/gantry/gantry/loggers"
	"github.com/segmentio/kafka-go"
)

// fakeWriter records what it is given; while blocked it holds every call.
type fakeWriter struct {
	mu      sync.Mutex
	got     []loggers.Record
	calls   int
	err     error
	blocked chan struct{} // nil: never blocks
}

func (w *fakeWriter) WriteMessages(ctx context.Context, msgs ...kafka.Message) error {
	if w.blocked != nil {
		select {
		case <-w.blocked:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.calls++
	if w.err != nil {
		return w.err
	}
	for _, m := range msgs {
		r, err := loggers.DecodeRecord(append([]byte(nil), m.Value...))
		if err != nil {
			panic(err)
		}
		w.got = append(w.got, r)
	}
	return nil
}

func (w *fakeWriter) records() []loggers.Record {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]loggers.Record(nil), w.got...)
}

func TestCaptureBatchesInOrder(t *testing.T) {
	w := &fakeWriter{blocked: make(chan struct{})}
	c := New(w, Config{MaxBatch: 100})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()

	body := []byte("body")
	for i := range 1000 {
		r := loggers.Record{Table: "a.b", RequestID: string(rune('a' + i%26)), TimestampMs: int64(i), Request: body}
		if !c.Capture(&r) {
			t.Fatalf("record %d dropped with room in the queue", i)
		}
	}
	body[0] = 'X' // Capture copied the body
	close(w.blocked)
	eventually.True(t, 10*time.Second, "the condition", func() bool { return len(w.records()) == 1000 })
	cancel()
	<-done
	for i, r := range w.records() {
		if r.TimestampMs != int64(i) || string(r.Request) != "body" {
			t.Fatalf("record %d: %+v", i, r)
		}
	}
	if w.calls > 1000/100+1 {
		t.Errorf("%d produce calls for 1000 records in batches of 100", w.calls)
	}
}

func TestCaptureDropsWhenFullAndNeverBlocks(t *testing.T) {
	w := &fakeWriter{blocked: make(chan struct{})}
	c := New(w, Config{MaxRecords: 10, MaxBatch: 1})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()

	start := time.Now()
	accepted := 0
	for range 100 {
		if c.Capture(&loggers.Record{Table: "a.b", RequestID: "r"}) {
			accepted++
		}
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("100 captures against a stuck broker took %s", d)
	}
	// 10 queued plus at most 1 taken by Run into its stuck batch.
	if accepted < 10 || accepted > 11 || c.Dropped() != int64(100-accepted) {
		t.Fatalf("accepted %d, dropped %d", accepted, c.Dropped())
	}
	close(w.blocked)
	cancel()
	<-done
	if got := len(w.records()); got != accepted {
		t.Fatalf("%d records produced after shutdown; want the %d accepted", got, accepted)
	}
}

func TestCaptureBoundsBytes(t *testing.T) {
	c := New(&fakeWriter{}, Config{MaxBytes: 1000})
	big := make([]byte, 600)
	if !c.Capture(&loggers.Record{Request: big}) {
		t.Fatal("first record dropped")
	}
	if c.Capture(&loggers.Record{Request: big}) {
		t.Fatal("second record fit in 1000 bytes with the first")
	}
}

func TestCaptureCountsFailedWrites(t *testing.T) {
	w := &fakeWriter{err: errors.New("broker down")}
	c := New(w, Config{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	for range 5 {
		c.Capture(&loggers.Record{RequestID: "r"})
	}
	eventually.True(t, 10*time.Second, "the condition", func() bool { return c.Dropped() == 5 })
	cancel()
	<-done
}

func TestShutdownIsBoundedAndLaterCapturesDrop(t *testing.T) {
	w := &fakeWriter{blocked: make(chan struct{})} // a broker that hangs
	c := New(w, Config{MaxBatch: 10, WriteTimeout: 300 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	for range 100 {
		c.Capture(&loggers.Record{RequestID: "r"})
	}
	cancel()
	start := time.Now()
	<-done
	// One write may be in flight when ctx ends (one WriteTimeout), then the
	// flush gets one WriteTimeout in all (0.6 s), not one per batch of 10
	// (3 s).
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("shutdown took %s against a hung broker", d)
	}
	if c.Dropped() != 100 {
		t.Fatalf("dropped %d; want all 100 counted", c.Dropped())
	}
	if c.Capture(&loggers.Record{RequestID: "late"}) || c.Dropped() != 101 {
		t.Fatalf("a capture after Run ended was taken, or not counted (dropped %d)", c.Dropped())
	}
}
