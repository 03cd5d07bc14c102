package sink

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/gantry/gantry/internal/eventually"
	"github.com/gantry/gantry/loggers"
	"github.com/segmentio/kafka-go"
)

// fakeReader serves msgs in order and records commits.
type fakeReader struct {
	mu        sync.Mutex
	msgs      []kafka.Message
	next      int
	committed int64 // highest committed offset + 1
	// failures is how many fetches fail, as while the broker restarts.
	failures int
}

func (r *fakeReader) FetchMessage(ctx context.Context) (kafka.Message, error) {
	for {
		r.mu.Lock()
		if r.failures > 0 {
			r.failures--
			r.mu.Unlock()
			return kafka.Message{}, errors.New("failed to dial: connection refused")
		}
		if r.next < len(r.msgs) {
			m := r.msgs[r.next]
			r.next++
			r.mu.Unlock()
			return m, nil
		}
		r.mu.Unlock()
		select {
		case <-ctx.Done():
			return kafka.Message{}, ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
}

func (r *fakeReader) CommitMessages(ctx context.Context, msgs ...kafka.Message) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, m := range msgs {
		r.committed = max(r.committed, m.Offset+1)
	}
	return nil
}

func (r *fakeReader) commits() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.committed
}

// fakeStore fails inserts while down and knows which tables exist.
type fakeStore struct {
	mu      sync.Mutex
	down    bool
	tables  map[loggers.Table][]loggers.Record
	inserts int // successful Insert calls
}

var errMissing = errors.New("no such table")

func (s *fakeStore) Ensure(ctx context.Context, t loggers.Table) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.tables[t]; !ok {
		s.tables[t] = []loggers.Record{}
	}
	return nil
}

func (s *fakeStore) Insert(ctx context.Context, t loggers.Table, recs []loggers.Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down {
		return errors.New("connection refused")
	}
	if _, ok := s.tables[t]; !ok {
		return errMissing
	}
	s.tables[t] = append(s.tables[t], recs...)
	s.inserts++
	return nil
}

func (s *fakeStore) rows(t loggers.Table) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.tables[t])
}

func (s *fakeStore) setDown(down bool) {
	s.mu.Lock()
	s.down = down
	s.mu.Unlock()
}

func message(offset int64, r loggers.Record) kafka.Message {
	return kafka.Message{Offset: offset, Value: loggers.AppendRecord(nil, &r)}
}

func TestSinkCommitsOnlyAfterInsert(t *testing.T) {
	a := loggers.Table{Database: "d", Name: "a"}
	b := loggers.Table{Database: "d", Name: "b"}
	r := &fakeReader{}
	for i := range 100 {
		tbl := a
		if i%2 == 1 {
			tbl = b
		}
		r.msgs = append(r.msgs, message(int64(i), loggers.Record{
			Table: tbl.String(), RequestID: fmt.Sprint(i), Request: []byte(`{"client_request_id": "c", "inputs": [1]}`)}))
	}
	r.msgs = append(r.msgs, kafka.Message{Offset: 100, Value: []byte("not a record")})
	store := &fakeStore{down: true, tables: map[loggers.Table][]loggers.Record{a: {}}} // b is missing
	s := New(r, store, Config{FlushInterval: 10 * time.Millisecond, IsMissingTable: func(err error) bool { return errors.Is(err, errMissing) }})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()

	time.Sleep(300 * time.Millisecond)
	if c := r.commits(); c != 0 {
		t.Fatalf("committed up to offset %d while ClickHouse was down", c)
	}
	store.setDown(false)
	eventually.True(t, 10*time.Second, "the condition", func() bool { return r.commits() == 101 })
	if store.rows(a) != 50 || store.rows(b) != 50 {
		t.Fatalf("rows: a %d, b %d; want 50 each", store.rows(a), store.rows(b))
	}
	if got := store.tables[a][0].ClientRequestID; got != "c" {
		t.Fatalf("client_request_id %q; want it taken from the request body", got)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestSinkBoundsBatchBytes(t *testing.T) {
	tbl := loggers.Table{Database: "d", Name: "a"}
	r := &fakeReader{}
	for i := range 10 {
		r.msgs = append(r.msgs, message(int64(i), loggers.Record{Table: tbl.String(), RequestID: fmt.Sprint(i), Request: make([]byte, 100)}))
	}
	store := &fakeStore{tables: map[loggers.Table][]loggers.Record{tbl: {}}}
	s := New(r, store, Config{MaxBatchBytes: 250, FlushInterval: 50 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()
	eventually.True(t, 10*time.Second, "the condition", func() bool { return r.commits() == 10 })
	cancel()
	<-done
	// Each record encodes to over 100 bytes: at most 3 fit under 250.
	if store.rows(tbl) != 10 || store.inserts < 4 {
		t.Fatalf("%d rows in %d inserts; want 10 rows in at least 4", store.rows(tbl), store.inserts)
	}
}

// A broker that restarts fails the reader's fetches for a while; the sink
// retries them and moves every record (before, the logger exited).
func TestSinkRetriesFetchErrors(t *testing.T) {
	tbl := loggers.Table{Database: "d", Name: "a"}
	r := &fakeReader{failures: 3}
	for i := range 5 {
		r.msgs = append(r.msgs, message(int64(i), loggers.Record{Table: tbl.String(), RequestID: fmt.Sprint(i)}))
	}
	store := &fakeStore{tables: map[loggers.Table][]loggers.Record{tbl: {}}}
	s := New(r, store, Config{FlushInterval: 20 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	eventually.True(t, 10*time.Second, "every record committed after the fetch errors", func() bool {
		select {
		case err := <-done:
			t.Fatalf("Run returned %v on a fetch error; want it to retry", err)
		default:
		}
		return r.commits() == 5
	})
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run after cancel: %v", err)
	}
	if store.rows(tbl) != 5 {
		t.Errorf("%d rows, want 5", store.rows(tbl))
	}
}
