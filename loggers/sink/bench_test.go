package sink_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gantry/gantry/internal/chtest"
	"github.com/gantry/gantry/loggers"
	"github.com/gantry/gantry/loggers/capture"
	"github.com/gantry/gantry/loggers/local"
	"github.com/gantry/gantry/loggers/sink"
	"github.com/gantry/gantry/loggers/tables"
	"github.com/segmentio/kafka-go"
)

// timedStore notes, for each row, the time from its capture to the end of
// the insert that made it visible in SQL.
type timedStore struct {
	*tables.DB
	mu       sync.Mutex
	captured map[string]time.Time
	delays   []time.Duration
	rows     int
}

func (s *timedStore) Insert(ctx context.Context, t loggers.Table, recs []loggers.Record) error {
	if err := s.DB.Insert(ctx, t, recs); err != nil {
		return err
	}
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range recs {
		if at, ok := s.captured[r.RequestID]; ok {
			s.delays = append(s.delays, now.Sub(at))
			delete(s.captured, r.RequestID)
		}
	}
	s.rows += len(recs)
	return nil
}

func (s *timedStore) done() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rows
}

// BenchmarkPipeline measures the inference table path after the activator:
// capture.Capturer → Kafka-protocol broker (kfake, in this process) →
// sink → ClickHouse (Debian's 18.16 here), all on this machine.
//   - throughput: 200,000 records captured as fast as the capture buffer
//     takes them; rows/s until the last is inserted.
//   - latency: 20,000 records/s for 5 s; p50/p99 from Capture to the end
//     of the insert that makes the row visible in SQL.
//
// Run with -benchtime 1x: each case is one timed run.
func BenchmarkPipeline(b *testing.B) {
	for _, c := range []struct {
		name string
		n    int
		rate int // records per second; 0: as fast as possible
	}{
		{"throughput", 200_000, 0},
		{"latency-20k", 100_000, 20_000},
	} {
		b.Run(c.name, func(b *testing.B) {
			for range b.N {
				runPipeline(b, c.n, c.rate)
			}
		})
	}
}

func runPipeline(b *testing.B, n, rate int) {
	ch := chtest.Start(b)
	db := chtest.Open(b, ch)
	broker, err := local.StartBroker(b.TempDir(), 0)
	if err != nil {
		b.Fatal(err)
	}
	defer broker.Close()
	brokers := []string{broker.Addr()}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := sink.EnsureTopic(ctx, brokers, "bench", 4); err != nil {
		b.Fatal(err)
	}
	tbl := loggers.Table{Database: "bench", Name: "ep_payload"}
	if err := db.Ensure(ctx, tbl); err != nil {
		b.Fatal(err)
	}
	store := &timedStore{DB: db, captured: make(map[string]time.Time, n)}
	r := kafka.NewReader(sink.ReaderConfig(brokers, "bench", "bench", 6*time.Second))
	defer r.Close()
	go sink.New(r, store, sink.Config{IsMissingTable: tables.IsMissingTable}).Run(ctx)
	w := capture.NewKafkaWriter(brokers, "bench")
	defer w.Close()
	// A full buffer makes Capture refuse and count a drop; here the loop
	// below waits and captures again, so the warnings are noise.
	capt := capture.New(w, capture.Config{Logger: slog.New(slog.DiscardHandler)})
	go capt.Run(ctx)

	// A request and answer the size of the binary fixture's.
	request := []byte(`{"dataframe_split": {"columns": ["mean_radius", "mean_texture", "mean_smoothness", "mean_concavity", "mean_concave_points", "worst_texture"], "data": [[12.34, 14.95, 0.08682, 0.02109, 0.05591999739408493, 16.85]]}}`)
	response := []byte(`{"predictions": [0.9891954660415649]}`)
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%032d", i)
	}
	start := time.Now()
	for i, id := range ids {
		if rate > 0 {
			time.Sleep(time.Until(start.Add(time.Duration(i) * time.Second / time.Duration(rate))))
		}
		rec := loggers.Record{Table: tbl.String(), RequestID: id, Endpoint: "ep", ServedEntity: "v1",
			TimestampMs: time.Now().UnixMilli(), StatusCode: 200, Request: request, Response: response, SamplingFraction: 1}
		store.mu.Lock()
		store.captured[id] = time.Now()
		store.mu.Unlock()
		for !capt.Capture(&rec) {
			time.Sleep(100 * time.Microsecond) // the buffer is full: wait, do not drop
		}
	}
	for store.done() < n {
		time.Sleep(5 * time.Millisecond)
	}
	took := time.Since(start)
	slices.Sort(store.delays)
	b.ReportMetric(float64(n)/took.Seconds(), "rows/s")
	b.ReportMetric(float64(store.delays[len(store.delays)/2].Milliseconds()), "p50-ms")
	b.ReportMetric(float64(store.delays[len(store.delays)*99/100].Milliseconds()), "p99-ms")
}
