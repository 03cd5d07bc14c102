// Package sink is the logger: it consumes invocation records from Kafka in
// a consumer group and inserts them into their ClickHouse inference tables.
//
// Offsets are committed only after the rows are in ClickHouse, so a crash
// or a ClickHouse outage loses nothing: records wait in Kafka and are read
// again. A record read twice (the insert landed, the commit did not) becomes
// a duplicate row that the table's ReplacingMergeTree collapses on
// request_id, so each request counts once in the table.
package sink

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/gantry/gantry/loggers"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
)

// Reader is a consumer group member; *kafka.Reader in production.
type Reader interface {
	FetchMessage(ctx context.Context) (kafka.Message, error)
	CommitMessages(ctx context.Context, msgs ...kafka.Message) error
}

// Store holds inference tables; *tables.DB in production.
type Store interface {
	Ensure(ctx context.Context, t loggers.Table) error
	Insert(ctx context.Context, t loggers.Table, recs []loggers.Record) error
}

// Defaults of Config's fields.
const (
	DefaultMaxBatch      = 50_000
	DefaultMaxBatchBytes = 64 << 20
	DefaultFlushInterval = 200 * time.Millisecond
)

// Config tunes a Sink; it works at its zero value.
type Config struct {
	// MaxBatch and MaxBatchBytes bound the records of one insert, by count
	// and by encoded size (bodies are up to 1 MiB each). Defaults 50,000
	// and 64 MiB.
	MaxBatch      int
	MaxBatchBytes int
	// FlushInterval is the longest a record waits in the logger for its
	// batch to fill. Default 200 ms.
	FlushInterval time.Duration
	// IsMissingTable tells an insert error that the table does not exist,
	// so the sink creates it and inserts again. Default: never.
	IsMissingTable func(error) bool
	Logger         *slog.Logger
	Metrics        prometheus.Registerer
	Now            func() time.Time
}

// Sink moves records from a Reader to a Store.
type Sink struct {
	cfg   Config
	r     Reader
	store Store

	rows, bad, insertErrors prometheus.Counter
	delay                   prometheus.Histogram
}

// New returns a Sink; Run moves the records.
func New(r Reader, store Store, cfg Config) *Sink {
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = DefaultMaxBatch
	}
	if cfg.MaxBatchBytes <= 0 {
		cfg.MaxBatchBytes = DefaultMaxBatchBytes
	}
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = DefaultFlushInterval
	}
	if cfg.IsMissingTable == nil {
		cfg.IsMissingTable = func(error) bool { return false }
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = prometheus.NewRegistry()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Sink{
		cfg: cfg, r: r, store: store,
		rows: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gantry_logger_rows_total", Help: "Rows inserted into inference tables (redeliveries included).",
		}),
		bad: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gantry_logger_bad_records_total", Help: "Kafka messages that are not invocation records, skipped.",
		}),
		insertErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gantry_logger_insert_errors_total", Help: "Failed inserts into ClickHouse; each is retried.",
		}),
		delay: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "gantry_logger_delay_seconds",
			Help:    "Time from a request's arrival at the activator to its row's insert.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 14),
		}),
	}
	cfg.Metrics.MustRegister(s.rows, s.bad, s.insertErrors, s.delay)
	return s
}

// Backoff of fetches while the broker cannot be read.
const (
	minFetchBackoff = 100 * time.Millisecond
	maxFetchBackoff = 5 * time.Second
)

// Run moves records until ctx ends or the reader is closed. A broker that
// cannot be read is retried with backoff: the records wait in Kafka.
//
// Fetching the next batch overlaps with inserting this one: one goroutine
// fetches, this one inserts and commits, in order, so offsets are still
// committed only for inserted records.
func (s *Sink) Run(parent context.Context) error {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	batches := make(chan []kafka.Message, 1)
	fetchErr := make(chan error, 1)
	go func() {
		defer close(batches)
		backoff := minFetchBackoff
		for {
			msgs, err := s.fetch(ctx)
			if err != nil && ctx.Err() == nil && !errors.Is(err, io.EOF) {
				// A broker that is down or restarting: the reader dials
				// again on the next fetch, and the records wait in Kafka.
				s.cfg.Logger.Warn("read from kafka; retrying", "retry_in", backoff, "err", err)
				select {
				case <-time.After(backoff):
				case <-ctx.Done():
				}
				backoff = min(2*backoff, maxFetchBackoff)
				continue
			}
			if err != nil {
				fetchErr <- err
				return
			}
			backoff = minFetchBackoff
			select {
			case batches <- msgs:
			case <-ctx.Done():
				fetchErr <- ctx.Err()
				return
			}
		}
	}()
	for msgs := range batches {
		if err := s.insert(ctx, msgs); err != nil {
			break // ctx ended; the records stay uncommitted in Kafka
		}
		if err := s.r.CommitMessages(ctx, msgs...); err != nil {
			if ctx.Err() != nil {
				break
			}
			// A rebalance moved the partitions: their new owner reads these
			// records again, and the table collapses the copies.
			s.cfg.Logger.Warn("commit offsets; the records will be read again", "records", len(msgs), "err", err)
		}
	}
	cancel()
	for range batches { // let the fetcher end
	}
	if err := <-fetchErr; parent.Err() == nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("read from kafka: %w", err)
	}
	return nil
}

// fetch waits for one message, then gathers more for up to FlushInterval,
// MaxBatch messages or MaxBatchBytes.
func (s *Sink) fetch(ctx context.Context) ([]kafka.Message, error) {
	m, err := s.r.FetchMessage(ctx)
	if err != nil {
		return nil, err
	}
	msgs := []kafka.Message{m}
	size := len(m.Value)
	fctx, cancel := context.WithTimeout(ctx, s.cfg.FlushInterval)
	defer cancel()
	for len(msgs) < s.cfg.MaxBatch && size < s.cfg.MaxBatchBytes {
		m, err := s.r.FetchMessage(fctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			// The batch is due, or the broker failed: insert what was
			// fetched (the reader has moved past it), and let the next
			// fetch meet the failure.
			break
		}
		msgs = append(msgs, m)
		size += len(m.Value)
	}
	return msgs, nil
}

// insert stores msgs, one block per table, retrying with backoff until
// every table has its rows or ctx ends.
func (s *Sink) insert(ctx context.Context, msgs []kafka.Message) error {
	msgs, events := splitRows(s, msgs, "an audit event", loggers.IsAudit, loggers.DecodeAudit)
	if err := s.insertAudit(ctx, events); err != nil {
		return err
	}
	msgs, usage := splitRows(s, msgs, "a usage row", loggers.IsUsage, loggers.DecodeUsage)
	if err := s.insertUsage(ctx, usage); err != nil {
		return err
	}
	msgs, provisioned := splitRows(s, msgs, "a provisioned row", loggers.IsProvisioned, loggers.DecodeProvisioned)
	if err := s.insertProvisioned(ctx, provisioned); err != nil {
		return err
	}
	byTable := make(map[loggers.Table][]loggers.Record)
	for _, m := range msgs {
		r, err := loggers.DecodeRecord(m.Value)
		var t loggers.Table
		if err == nil {
			t, err = loggers.ParseTable(r.Table)
		}
		if err != nil {
			// Retrying cannot help a record that does not decode.
			s.bad.Inc()
			s.cfg.Logger.Error("skip a message that is not an invocation record",
				"partition", m.Partition, "offset", m.Offset, "err", err)
			continue
		}
		if r.ClientRequestID == "" {
			r.ClientRequestID = loggers.ClientRequestID(r.Request)
		}
		recs, ok := byTable[t]
		if !ok {
			// Most batches hold one table: size for all of it at once
			// rather than grow a slice of big structs step by step.
			recs = make([]loggers.Record, 0, len(msgs))
		}
		byTable[t] = append(recs, r)
	}
	backoff := 100 * time.Millisecond
	for len(byTable) > 0 {
		for t, recs := range byTable {
			err := s.store.Insert(ctx, t, recs)
			if err != nil && s.cfg.IsMissingTable(err) {
				// Dropped by hand, or the scheduler could not create it:
				// the logger can, since it knows the name.
				if err = s.store.Ensure(ctx, t); err == nil {
					err = s.store.Insert(ctx, t, recs)
				}
			}
			if err != nil {
				s.insertErrors.Inc()
				s.cfg.Logger.Warn("insert inference rows; retrying", "table", t.String(), "rows", len(recs), "retry_in", backoff, "err", err)
				continue
			}
			s.rows.Add(float64(len(recs)))
			now := s.cfg.Now()
			for i := range recs {
				s.delay.Observe(now.Sub(time.UnixMilli(recs[i].TimestampMs)).Seconds())
			}
			delete(byTable, t)
		}
		if len(byTable) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
	return nil
}

// splitRows takes the messages that is tells out of msgs: audit events,
// usage and provisioned rows share the topic with invocation records and
// go to tables of their own. One that does not decode (what names it in
// the log) is skipped and counted, as a bad record is: retrying cannot
// help it.
func splitRows[T any](s *Sink, msgs []kafka.Message, what string, is func([]byte) bool, decode func([]byte) (T, error)) (rest []kafka.Message, rows []T) {
	for _, m := range msgs {
		if !is(m.Value) {
			rest = append(rest, m)
			continue
		}
		r, err := decode(m.Value)
		if err != nil {
			s.bad.Inc()
			s.cfg.Logger.Error("skip "+what+" that does not decode", "partition", m.Partition, "offset", m.Offset, "err", err)
			continue
		}
		rows = append(rows, r)
	}
	return rest, rows
}

// insertRows stores the rows splitRows took out with insert, into table t,
// retrying with backoff until they are in or ctx ends, like invocation
// records: their offsets are committed after.
func insertRows[T any](ctx context.Context, s *Sink, kind string, t loggers.Table, rows []T, insert func(context.Context, []T) error) error {
	backoff := 100 * time.Millisecond
	for {
		err := insert(ctx, rows)
		if err == nil {
			s.rows.Add(float64(len(rows)))
			return nil
		}
		s.insertErrors.Inc()
		s.cfg.Logger.Warn("insert "+kind+" rows; retrying", "table", t.String(), "rows", len(rows), "retry_in", backoff, "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// ReaderConfig is the consumer group configuration the logger uses.
// sessionTimeout bounds how long a dead logger's partitions wait before
// another member takes them.
func ReaderConfig(brokers []string, topic, group string, sessionTimeout time.Duration) kafka.ReaderConfig {
	return kafka.ReaderConfig{
		Brokers:           brokers,
		Topic:             topic,
		GroupID:           group,
		MinBytes:          1,
		MaxBytes:          16 << 20,
		MaxWait:           100 * time.Millisecond,
		SessionTimeout:    sessionTimeout,
		RebalanceTimeout:  sessionTimeout,
		HeartbeatInterval: sessionTimeout / 5,
		StartOffset:       kafka.FirstOffset,
		// Fetching goes on while a batch is inserted; kafka-go's default
		// queue of 100 messages would stall it within a millisecond.
		QueueCapacity: 10_000,
		// Commits happen in Run, after the insert, synchronously.
		CommitInterval:        0,
		WatchPartitionChanges: true,
	}
}

// EnsureTopic creates topic with partitions if it does not exist. Records
// of up to two 1 MiB bodies must fit, so the topic allows 4 MiB messages.
func EnsureTopic(ctx context.Context, brokers []string, topic string, partitions int) error {
	c := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second}
	resp, err := c.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
		Topic: topic, NumPartitions: partitions, ReplicationFactor: -1, // the broker's default
		ConfigEntries: []kafka.ConfigEntry{{ConfigName: "max.message.bytes", ConfigValue: "4194304"}},
	}}})
	if err != nil {
		return fmt.Errorf("create topic %s: %w", topic, err)
	}
	if err := resp.Errors[topic]; err != nil && !errors.Is(err, kafka.TopicAlreadyExists) {
		return fmt.Errorf("create topic %s: %w", topic, err)
	}
	return nil
}
