package sink_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/gantry/gantry/internal/chtest"
	"github.com/gantry/gantry/internal/eventually"
	"github.com/gantry/gantry/loggers"
	"github.com/gantry/gantry/loggers/capture"
	"github.com/gantry/gantry/loggers/local"
	"github.com/gantry/gantry/loggers/sink"
	"github.com/gantry/gantry/loggers/tables"
	"github.com/segmentio/kafka-go"
)

// TestPipeline sends records through a real broker (kfake) and a real
// ClickHouse, stopping the logger halfway to start another in its group.
func TestPipeline(t *testing.T) {
	db := chtest.Open(t, chtest.Start(t))
	broker, err := local.StartBroker(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer broker.Close()
	brokers := []string{broker.Addr()}
	ctx := context.Background()
	const topic = "inference"
	if err := sink.EnsureTopic(ctx, brokers, topic, 4); err != nil {
		t.Fatal(err)
	}
	tbl := loggers.Table{Database: "p_logs", Name: "ep_payload"}

	w := capture.NewKafkaWriter(brokers, topic)
	defer w.Close()
	c := capture.New(w, capture.Config{})
	cctx, stopCapture := context.WithCancel(ctx)
	captured := make(chan struct{})
	go func() { c.Run(cctx); close(captured) }()

	startSink := func() (stop func()) {
		r := kafka.NewReader(sink.ReaderConfig(brokers, topic, "loggers", 2*time.Second))
		s := sink.New(r, db, sink.Config{IsMissingTable: tables.IsMissingTable})
		sctx, cancel := context.WithCancel(ctx)
		done := make(chan error)
		go func() { done <- s.Run(sctx) }()
		return func() {
			cancel()
			if err := <-done; err != nil {
				t.Error(err)
			}
			r.Close()
		}
	}
	const n = 10_000
	send := func(from, to int) {
		for i := from; i < to; i++ {
			r := loggers.Record{Table: tbl.String(), RequestID: fmt.Sprintf("req-%05d", i), Endpoint: "ep",
				TimestampMs: time.Now().UnixMilli(), StatusCode: 200, Request: []byte(fmt.Sprintf(`{"inputs": [%d]}`, i))}
			for !c.Capture(&r) {
				time.Sleep(time.Millisecond)
			}
		}
	}
	stop := startSink()
	send(0, n/2)
	count := func() int {
		res, err := db.Query(ctx, "SELECT count() FROM "+tbl.Quoted()+" FINAL")
		if err != nil {
			return -1 // the table may not exist yet
		}
		var v int
		fmt.Sscan(res.Rows[0][0], &v)
		return v
	}
	eventually.True(t, 60*time.Second, "the condition", func() bool { return count() > 0 })
	stop()
	send(n/2, n)
	stop = startSink()
	defer stop()
	eventually.True(t, 60*time.Second, "the condition", func() bool { return count() == n })
	stopCapture()
	<-captured
	if c.Dropped() != 0 {
		t.Fatalf("%d records dropped", c.Dropped())
	}
	res, err := db.Query(ctx, "SELECT count(), uniqExact(request), min(request_id), max(request_id) FROM "+tbl.Quoted()+" FINAL")
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(res.Rows[0]); got != fmt.Sprintf("[%d %d req-00000 req-%05d]", n, n, n-1) {
		t.Fatalf("table holds %s", got)
	}
}
