// Package capture sends the activator's invocation records to Kafka.
//
// Capture never blocks and never slows a request: it encodes the record into
// a buffer and hands it to a bounded queue, or drops it (and counts the drop
// in gantry_capture_dropped_total) when the queue is full. One goroutine,
// Run, drains the queue into Kafka in batches: while one batch is in flight
// the next one gathers, so batches grow with the load (group commit).
package capture

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gantry/gantry/loggers"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
)

// Writer produces messages; *kafka.Writer in production.
type Writer interface {
	WriteMessages(ctx context.Context, msgs ...kafka.Message) error
}

// Defaults of Config's fields.
const (
	DefaultMaxRecords = 100_000
	DefaultMaxBytes   = 64 << 20
	DefaultMaxBatch   = 5_000
)

// Config tunes a Capturer; it works at its zero value.
type Config struct {
	// MaxRecords and MaxBytes bound the records waiting to be produced;
	// beyond either, records are dropped. Defaults 100,000 and 64 MiB.
	MaxRecords int
	MaxBytes   int64
	// MaxBatch bounds the records of one produce call. Default 5,000.
	MaxBatch int
	// WriteTimeout bounds one produce call, retries included. Default 10 s.
	WriteTimeout time.Duration
	Logger       *slog.Logger
	// Metrics gets the capture metrics; default a private registry.
	Metrics prometheus.Registerer
}

// Capturer buffers records and produces them to Kafka.
type Capturer struct {
	cfg   Config
	w     Writer
	queue chan []byte
	bytes atomic.Int64 // encoded bytes in queue
	bufs  sync.Pool    // *[]byte, reused once a batch is written

	sent, dropped prometheus.Counter
	lastDropLog   atomic.Int64 // unix nanoseconds
	droppedSince  atomic.Int64 // drops since the last log line
	droppedTotal  atomic.Int64
	stopped       atomic.Bool // Run has ended: nobody drains the queue
}

// New returns a Capturer producing with w. Run must run for records to leave.
func New(w Writer, cfg Config) *Capturer {
	if cfg.MaxRecords <= 0 {
		cfg.MaxRecords = DefaultMaxRecords
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = DefaultMaxBytes
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = DefaultMaxBatch
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = prometheus.NewRegistry()
	}
	c := &Capturer{
		cfg:   cfg,
		w:     w,
		queue: make(chan []byte, cfg.MaxRecords),
		sent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gantry_capture_records_total", Help: "Invocation records produced to Kafka.",
		}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gantry_capture_dropped_total", Help: "Invocation records dropped: buffer full or Kafka unavailable.",
		}),
	}
	cfg.Metrics.MustRegister(c.sent, c.dropped,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "gantry_capture_buffered_records", Help: "Invocation records waiting to be produced.",
		}, func() float64 { return float64(len(c.queue)) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "gantry_capture_buffered_bytes", Help: "Encoded bytes of the records waiting to be produced.",
		}, func() float64 { return float64(c.bytes.Load()) }))
	return c
}

// Capture encodes r (copying its bodies) and queues it. It reports false,
// counting a drop, when the queue is full or Run has ended. It does not
// keep r.
func (c *Capturer) Capture(r *loggers.Record) bool {
	if c.stopped.Load() {
		c.drop(1)
		return false
	}
	bp, _ := c.bufs.Get().(*[]byte)
	if bp == nil {
		bp = new([]byte)
	}
	b := loggers.AppendRecord(slices.Grow((*bp)[:0], loggers.EncodedSize(r)), r)
	*bp = b
	if c.bytes.Add(int64(len(b))) <= c.cfg.MaxBytes {
		select {
		case c.queue <- b:
			return true
		default:
		}
	}
	c.bytes.Add(-int64(len(b)))
	c.bufs.Put(bp)
	c.drop(1)
	return false
}

// Dropped counts the records dropped so far.
func (c *Capturer) Dropped() int64 { return c.droppedTotal.Load() }

func (c *Capturer) drop(n int) {
	c.dropped.Add(float64(n))
	c.droppedTotal.Add(int64(n))
	c.droppedSince.Add(int64(n))
	now := time.Now().UnixNano()
	last := c.lastDropLog.Load()
	// One line per 10 s at most: a broker outage drops thousands a second.
	if now-last > int64(10*time.Second) && c.lastDropLog.CompareAndSwap(last, now) {
		c.cfg.Logger.Warn("inference records dropped; inference tables miss these requests",
			"dropped", c.droppedSince.Swap(0), "buffered", len(c.queue), "buffered_bytes", c.bytes.Load())
	}
}

// Run produces queued records until ctx ends, then tries for up to
// WriteTimeout in all to produce what is still queued, counting what it
// could not as dropped. Records captured after that are dropped too.
func (c *Capturer) Run(ctx context.Context) {
	batch := make([][]byte, 0, c.cfg.MaxBatch)
	msgs := make([]kafka.Message, 0, c.cfg.MaxBatch)
	for {
		batch = batch[:0]
		// Checked first: select picks at random among ready cases, and a
		// full queue must not keep Run writing after ctx has ended.
		if ctx.Err() != nil {
			c.stopped.Store(true)
			c.flush(batch, msgs)
			return
		}
		select {
		case b := <-c.queue:
			batch = append(batch, b)
		case <-ctx.Done():
			continue
		}
		batch = c.gather(batch)
		c.write(context.Background(), batch, msgs)
	}
}

// gather adds what is queued, up to MaxBatch, without waiting.
func (c *Capturer) gather(batch [][]byte) [][]byte {
	for len(batch) < c.cfg.MaxBatch {
		select {
		case b := <-c.queue:
			batch = append(batch, b)
		default:
			return batch
		}
	}
	return batch
}

// flush writes everything still queued, on shutdown, within one
// WriteTimeout: a broker that hangs must not hold the shutdown for a
// timeout per batch.
func (c *Capturer) flush(batch [][]byte, msgs []kafka.Message) {
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.WriteTimeout)
	defer cancel()
	for {
		batch = c.gather(batch[:0])
		if len(batch) == 0 {
			return
		}
		if ctx.Err() != nil {
			c.bytes.Add(-batchBytes(batch))
			c.drop(len(batch))
			continue
		}
		c.write(ctx, batch, msgs)
	}
}

func batchBytes(batch [][]byte) int64 {
	var n int64
	for _, b := range batch {
		n += int64(len(b))
	}
	return n
}

// write produces batch, counting its records as sent or dropped, and
// recycles the buffers once the writer is done with them.
func (c *Capturer) write(ctx context.Context, batch [][]byte, msgs []kafka.Message) {
	msgs = msgs[:0]
	for _, b := range batch {
		msgs = append(msgs, kafka.Message{Value: b})
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.WriteTimeout)
	err := c.w.WriteMessages(ctx, msgs...)
	cancel()
	c.bytes.Add(-batchBytes(batch))
	failed := len(msgs)
	var werrs kafka.WriteErrors
	switch {
	case err == nil:
		failed = 0
	case errors.As(err, &werrs):
		failed = werrs.Count()
	}
	c.sent.Add(float64(len(msgs) - failed))
	if failed > 0 {
		c.cfg.Logger.Debug("produce inference records", "records", len(msgs), "failed", failed, "err", err)
		c.drop(failed)
		c.logLostAudits(batch, werrs, err)
	}
	// A write that ended with its context may leave batches queued in
	// kafka-go that still point at the buffers: those go to the GC, not
	// back to the pool. Nil and WriteErrors mean every message is done.
	if err != nil && !errors.As(err, &werrs) {
		clear(batch)
		clear(msgs)
		return
	}
	for i, b := range batch {
		b := b[:0]
		c.bufs.Put(&b)
		batch[i], msgs[i] = nil, kafka.Message{}
	}
}

// NewKafkaWriter returns a writer for Run's batches, compressed with LZ4
// and acknowledged by all replicas. A partial batch waits BatchTimeout
// (10 ms) for more: fewer, larger produce requests cost the activator's
// CPU less, and the logger batches for 200 ms anyway.
func NewKafkaWriter(brokers []string, topic string) *kafka.Writer {
	return &kafka.Writer{
		Addr:                   kafka.TCP(brokers...),
		Topic:                  topic,
		Balancer:               &runBalancer{},
		BatchSize:              balancerRun,
		BatchBytes:             16 << 20,
		BatchTimeout:           10 * time.Millisecond,
		Compression:            kafka.Lz4,
		RequiredAcks:           kafka.RequireAll,
		AllowAutoTopicCreation: true,
		MaxAttempts:            3,
		ReadTimeout:            5 * time.Second,
		WriteTimeout:           5 * time.Second,
		Transport:              &kafka.Transport{DialTimeout: 2 * time.Second},
	}
}

// runBalancer sends runs of balancerRun records to one partition, then the
// next: a produce call usually goes to one or two partitions instead of a
// slice to each, while over time the partitions fill evenly. Records of an
// invocation have no key that needs a partition.
type runBalancer struct{ n atomic.Uint64 }

const balancerRun = 1024

func (b *runBalancer) Balance(_ kafka.Message, partitions ...int) int {
	n := b.n.Add(1) - 1
	return partitions[(n/balancerRun)%uint64(len(partitions))]
}
