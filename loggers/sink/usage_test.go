package sink

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/gantry/gantry/internal/eventually"
	"github.com/gantry/gantry/loggers"
	"github.com/segmentio/kafka-go"
)

// usageStore is a fakeStore that holds the usage table too.
type usageStore struct {
	*fakeStore
	mu          sync.Mutex
	rows        []loggers.UsageRow
	provisioned []loggers.ProvisionedRow
}

func (s *usageStore) InsertProvisioned(ctx context.Context, rows []loggers.ProvisionedRow) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.provisioned = append(s.provisioned, rows...)
	return nil
}

func (s *usageStore) InsertUsage(ctx context.Context, rows []loggers.UsageRow) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rows = append(s.rows, rows...)
	return nil
}

// TestSinkUsageRows: usage rows on the topic go to the usage table,
// provisioned rows to theirs, records to their tables.
func TestSinkUsageRows(t *testing.T) {
	tbl := loggers.Table{Database: "d", Name: "a"}
	r := &fakeReader{}
	for i := range 10 {
		if i%2 == 0 {
			r.msgs = append(r.msgs, message(int64(i), loggers.Record{Table: tbl.String(), RequestID: fmt.Sprint(i)}))
			continue
		}
		if i%5 == 0 {
			p := loggers.ProvisionedRow{RowID: fmt.Sprint("p", i), Endpoint: "fraud", ReplicaSeconds: 60}
			r.msgs = append(r.msgs, kafka.Message{Offset: int64(i), Value: loggers.AppendProvisioned(nil, &p)})
			continue
		}
		u := loggers.UsageRow{RequestID: fmt.Sprint("u", i), Endpoint: "chat", InputTokens: 3, OutputTokens: 4}
		r.msgs = append(r.msgs, kafka.Message{Offset: int64(i), Value: loggers.AppendUsage(nil, &u)})
	}
	store := &usageStore{fakeStore: &fakeStore{tables: map[loggers.Table][]loggers.Record{tbl: {}}}}
	s := New(r, store, Config{FlushInterval: 10 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()
	eventually.True(t, 10*time.Second, "every offset committed", func() bool { return r.commits() == 10 })
	cancel()
	<-done
	store.mu.Lock()
	defer store.mu.Unlock()
	if store.fakeStore.rows(tbl) != 5 || len(store.rows) != 4 || store.rows[0].OutputTokens != 4 ||
		len(store.provisioned) != 1 || store.provisioned[0].RowID != "p5" || store.provisioned[0].ReplicaSeconds != 60 {
		t.Fatalf("%d records, usage %+v, provisioned %+v", store.fakeStore.rows(tbl), store.rows, store.provisioned)
	}
}
