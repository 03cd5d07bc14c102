package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/gantry/gantry/loggers"
	"github.com/gantry/gantry/loggers/capture"
	"github.com/gantry/gantry/loggers/local"
	"github.com/gantry/gantry/loggers/sink"
	"github.com/gantry/gantry/loggers/tables"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"github.com/spf13/cobra"
)

// kafkaOptions say where invocation records travel.
type kafkaOptions struct {
	brokers string
	topic   string
}

func (o *kafkaOptions) flags(c *cobra.Command, embedded bool) {
	help := "Kafka brokers (host:port,...) that carry invocation records"
	if embedded {
		help += " (default: an embedded broker with its log under the data dir)"
	}
	c.Flags().StringVar(&o.brokers, "kafka-brokers", "", help)
	c.Flags().StringVar(&o.topic, "kafka-topic", loggers.DefaultTopic, "Kafka topic of invocation records")
}

func (o *kafkaOptions) list() []string {
	var out []string
	for _, b := range strings.Split(o.brokers, ",") {
		if b = strings.TrimSpace(b); b != "" {
			out = append(out, b)
		}
	}
	return out
}

// clickhouseOptions say where inference tables live.
type clickhouseOptions struct {
	addr, user, password string
}

func (o *clickhouseOptions) flags(c *cobra.Command, embedded bool) {
	help := "ClickHouse native protocol address (host:port) that holds inference tables"
	if embedded {
		help += " (default: start clickhouse-server from the PATH with its data under the data dir)"
	}
	c.Flags().StringVar(&o.addr, "clickhouse", "", help)
	c.Flags().StringVar(&o.user, "clickhouse-user", "default", "ClickHouse user")
	c.Flags().StringVar(&o.password, "clickhouse-password", "", "ClickHouse password")
}

func (o *clickhouseOptions) open(ctx context.Context) (*tables.DB, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return tables.Open(ctx, tables.Options{Addr: o.addr, Username: o.user, Password: o.password})
}

// loggerOptions tune the logger's consumer group.
type loggerOptions struct {
	group          string
	partitions     int
	sessionTimeout time.Duration
}

func (o *loggerOptions) flags(c *cobra.Command) {
	c.Flags().StringVar(&o.group, "kafka-group", "gantry-logger", "consumer group of the loggers")
	c.Flags().IntVar(&o.partitions, "kafka-partitions", 4, "partitions of the topic, when the logger creates it")
	c.Flags().DurationVar(&o.sessionTimeout, "kafka-session-timeout", 10*time.Second, "how long a dead logger's partitions wait before another logger takes them")
}

// runLogger moves records from Kafka into ClickHouse until ctx ends.
func runLogger(ctx context.Context, ko *kafkaOptions, lo *loggerOptions, db *tables.DB, log *slog.Logger, reg prometheus.Registerer) error {
	brokers := ko.list()
	if err := sink.EnsureTopic(ctx, brokers, ko.topic, lo.partitions); err != nil {
		return err
	}
	r := kafka.NewReader(sink.ReaderConfig(brokers, ko.topic, lo.group, lo.sessionTimeout))
	defer r.Close()
	s := sink.New(r, db, sink.Config{IsMissingTable: tables.IsMissingTable, Logger: log, Metrics: reg})
	log.Info("logger is up", "brokers", ko.brokers, "topic", ko.topic, "group", lo.group)
	return s.Run(ctx)
}

// newCapture returns the activator's record producer; Run must run.
func newCapture(ko *kafkaOptions, log *slog.Logger, reg prometheus.Registerer) (*capture.Capturer, func()) {
	w := capture.NewKafkaWriter(ko.list(), ko.topic)
	return capture.New(w, capture.Config{Logger: log, Metrics: reg}), func() { w.Close() }
}

// devInferenceOptions are gantry dev's inference table flags.
type devInferenceOptions struct {
	kafka      kafkaOptions
	clickhouse clickhouseOptions
	logger     loggerOptions
	monitors   monitorOptions
	// runLogger runs the logger in-process; off when loggers run as their
	// own processes (gantry logger).
	runLogger bool
}

func (o *devInferenceOptions) flags(c *cobra.Command) {
	o.kafka.flags(c, true)
	o.clickhouse.flags(c, true)
	o.logger.flags(c)
	o.monitors.flags(c, false)
	c.Flags().BoolVar(&o.runLogger, "logger", true, "run the logger (Kafka → ClickHouse) in this process")
}

// devInference is what gantry dev runs for inference tables: the broker
// and ClickHouse (embedded unless given), the capture producer and the
// logger.
type devInference struct {
	capture *capture.Capturer
	db      *tables.DB // nil: tables are off, for the reason in off
	off     string
	closers []func()
	bg      sync.WaitGroup // the logger and the monitors' refresh
}

// startDevInference starts what o does not point elsewhere. Without
// ClickHouse, inference tables are off and the log says why; that is not
// an error, since serving works without them.
func startDevInference(ctx context.Context, dataDir string, o *devInferenceOptions, log *slog.Logger, reg prometheus.Registerer) (in *devInference, err error) {
	ko, co := &o.kafka, &o.clickhouse
	in = &devInference{}
	defer func() {
		if err != nil {
			in.close()
		}
	}()
	if co.addr == "" {
		ch, err := local.NewClickHouse(filepath.Join(dataDir, "clickhouse"))
		if err == nil {
			log.Info("starting the embedded ClickHouse", "dir", filepath.Join(dataDir, "clickhouse"))
			err = ch.Start(ctx)
		}
		if err != nil {
			in.off = fmt.Sprintf("the embedded ClickHouse did not start: %v", err)
			if errors.Is(err, local.ErrNoClickHouse) {
				in.off = err.Error()
			}
			log.Warn("inference tables are off", "reason", in.off)
			return in, nil
		}
		in.closers = append(in.closers, ch.Stop)
		co.addr = ch.Addr()
	}
	if in.db, err = co.open(ctx); err != nil {
		return nil, err
	}
	in.closers = append(in.closers, func() { in.db.Close() })

	if ko.brokers == "" {
		b, err := local.StartBroker(filepath.Join(dataDir, "kafka"), 0)
		if err != nil {
			return nil, err
		}
		in.closers = append(in.closers, b.Close)
		ko.brokers = b.Addr()
	}
	var closeWriter func()
	in.capture, closeWriter = newCapture(ko, log, reg)
	in.closers = append(in.closers, closeWriter)
	log.Info("inference tables are on", "clickhouse", co.addr, "kafka", ko.brokers, "logger", o.runLogger)
	return in, nil
}

// run runs the logger, if asked, until ctx ends, and the capture producer
// until stop is called: after the server has answered its last request,
// so that every answer's record is produced.
func (in *devInference) run(ctx context.Context, o *devInferenceOptions, log *slog.Logger, reg prometheus.Registerer) (stop func()) {
	if in.capture == nil {
		return func() {}
	}
	if o.runLogger {
		in.goBackground(func() {
			if err := runLogger(ctx, &o.kafka, &o.logger, in.db, log, reg); err != nil {
				log.Error("logger stopped; invocation records wait in Kafka", "err", err)
			}
		})
	}
	return runCapture(in.capture)
}

// goBackground runs f on a goroutine that wait joins: what uses the broker
// or ClickHouse must end before close stops them.
func (in *devInference) goBackground(f func()) {
	in.bg.Add(1)
	go func() {
		defer in.bg.Done()
		f()
	}()
}

// wait waits for what goBackground started; their context must have ended.
func (in *devInference) wait() { in.bg.Wait() }

// runCapture runs c until stop is called; stop returns once c has produced
// what it holds.
func runCapture(c *capture.Capturer) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	return func() { cancel(); <-done }
}

// close stops what start started, in reverse order.
func (in *devInference) close() {
	for i := len(in.closers) - 1; i >= 0; i-- {
		in.closers[i]()
	}
}
