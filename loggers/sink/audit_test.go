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

// auditStore is a fakeStore that holds the audit table too.
type auditStore struct {
	*fakeStore
	mu     sync.Mutex
	down   bool
	events []loggers.AuditEvent
}

func (s *auditStore) InsertAudit(ctx context.Context, events []loggers.AuditEvent) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down {
		return errors.New("connection refused")
	}
	s.events = append(s.events, events...)
	return nil
}

func (s *auditStore) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.events)
}

// TestSinkAuditEvents: audit events on the topic go to the audit table,
// records to their tables, and no offset is committed before both are in.
func TestSinkAuditEvents(t *testing.T) {
	tbl := loggers.Table{Database: "d", Name: "a"}
	r := &fakeReader{}
	for i := range 10 {
		if i%2 == 0 {
			r.msgs = append(r.msgs, message(int64(i), loggers.Record{Table: tbl.String(), RequestID: fmt.Sprint(i)}))
			continue
		}
		e := loggers.AuditEvent{EventID: fmt.Sprint("e", i), Principal: "alice", Action: "DELETE /x", StatusCode: 200}
		r.msgs = append(r.msgs, kafka.Message{Offset: int64(i), Value: loggers.AppendAudit(nil, &e)})
	}
	store := &auditStore{fakeStore: &fakeStore{tables: map[loggers.Table][]loggers.Record{tbl: {}}}, down: true}
	s := New(r, store, Config{FlushInterval: 10 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()
	time.Sleep(300 * time.Millisecond)
	if c := r.commits(); c != 0 {
		t.Fatalf("committed up to offset %d while the audit table was down", c)
	}
	store.mu.Lock()
	store.down = false
	store.mu.Unlock()
	eventually.True(t, 10*time.Second, "every offset committed", func() bool { return r.commits() == 10 })
	cancel()
	<-done
	if store.rows(tbl) != 5 || store.count() != 5 || store.events[0].Principal != "alice" {
		t.Fatalf("%d records, %d events %+v", store.rows(tbl), store.count(), store.events)
	}
}
