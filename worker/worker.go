// Package worker is the model server that runs inside each allocation
// (gantry worker): it loads an MLflow model with the runtime registered for
// one of its flavors and answers the MLflow scoring protocol on
// /invocations, with /ping for readiness and /metrics for Prometheus.
package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/gantry/gantry/worker/scoring"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Defaults for the zero values of Config.
const (
	DefaultListen             = "127.0.0.1:8080"
	DefaultMaxRequestBodySize = 16 << 20 // API.md's request limit
	DefaultShutdownTimeout    = 30 * time.Second
)

// Config configures Run.
type Config struct {
	ModelDir           string        // an MLflow model directory
	Listen             string        // host:port; DefaultListen when empty
	MaxRequestBodySize int64         // bytes; DefaultMaxRequestBodySize when 0
	ShutdownTimeout    time.Duration // how long in-flight requests may finish; DefaultShutdownTimeout when 0
	Logger             *slog.Logger  // nil means slog.Default()
	// Secret, when set, is the deployment's worker secret: /invocations
	// answers 401 to a request without it in X-Gantry-Worker-Secret, so
	// that only Gantry's activators (which read it from the route table)
	// reach the model, not whoever reaches the worker's port. /ping and
	// /metrics stay open for probes. Empty: every caller is answered.
	Secret string
}

func (c Config) withDefaults() Config {
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.MaxRequestBodySize <= 0 {
		c.MaxRequestBodySize = DefaultMaxRequestBodySize
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Runtime predicts for rows of float64 features, NaN for a missing value.
// The result is encoded as JSON under "predictions". An error that is (or
// wraps) an *api.Error is answered with its code and status, which is how a
// runtime says the input was at fault; any other error is a 500.
type Runtime interface {
	Predict(rows [][]float64) (any, error)
}

// A FrameRuntime takes the parsed request itself instead of float rows:
// the process runtime, whose models take strings and integers, matches and
// types the columns by the model's signature. An error is answered as
// Predict's are. ctx ends when the client goes away.
type FrameRuntime interface {
	Runtime
	PredictFrame(ctx context.Context, f *scoring.Frame) (any, error)
}

// readyRuntime is a runtime that can be briefly unable to predict after it
// loaded (the process runtime while it replaces a model host); /ping
// answers 503 with the reason meanwhile.
type readyRuntime interface {
	Ready() error
}

// noticeRuntime is a runtime that loaded with something to tell the
// deployment's owner (the Python runtime: package versions unlike the
// model's); /ping carries it in api.NoticeHeader.
type noticeRuntime interface {
	Notice() string
}

// firstTokenRuntime is a runtime that knows when it generated its first
// token (the GGUF runtime): /ping reports that as the cold start's last
// phase (api.PhaseFirstToken) rather than the first answer's first byte,
// which for a whole answer leaves only with its last token.
type firstTokenRuntime interface {
	FirstToken() (arrived, at time.Time, ok bool)
}

// A Loader builds a runtime from a model directory and the settings of its
// flavor in the MLmodel file, and says how many features the model takes
// (0 when it cannot tell).
type Loader func(dir string, flavor map[string]any) (rt Runtime, numFeatures int, err error)

// Run serves the model in cfg.ModelDir until ctx ends. It listens before it
// loads, so /ping answers 503 while the model loads and 200 after. A model
// that fails to load makes Run return an error saying why; the process then
// exits non-zero and the orchestrator reports the message. When ctx ends,
// Run stops accepting requests, lets those in flight finish (up to
// cfg.ShutdownTimeout) and returns nil.
func Run(ctx context.Context, cfg Config, loaders map[string]Loader) error {
	cfg = cfg.withDefaults()
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("worker: listen: %w", err)
	}
	return serve(ctx, cfg, loaders, ln)
}

type loadResult struct {
	model   *model
	elapsed time.Duration
	err     error
}

// serve is Run on a listener the caller opened.
func serve(ctx context.Context, cfg Config, loaders map[string]Loader, ln net.Listener) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	s := newServer(cfg, NewMetrics(reg), reg)
	hs := &http.Server{
		Handler: s,
		// Bodies are read by the handler under its own size limit; this
		// only stops clients that never finish their headers.
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
	}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	log := cfg.Logger.With("model_dir", cfg.ModelDir)
	log.Info("worker listening; loading model", "addr", ln.Addr().String())

	// The load runs beside the select so that a stop during a long load is
	// not held up by it; the process exits soon after anyway.
	loaded := make(chan loadResult, 1)
	go func() {
		start := time.Now()
		m, err := loadModel(cfg.ModelDir, loaders)
		loaded <- loadResult{m, time.Since(start), err}
	}()
	select {
	case r := <-loaded:
		if r.err != nil {
			_ = shutdown(hs, cfg.ShutdownTimeout)
			return fmt.Errorf("load model %s: %w", cfg.ModelDir, r.err)
		}
		// A runtime with metrics of its own (the Python runtime's batches
		// and host restarts) shows them beside the worker's.
		if c, ok := r.model.rt.(prometheus.Collector); ok {
			if err := reg.Register(c); err != nil {
				log.Warn("runtime metrics not registered", "err", err)
			}
		}
		if tr, ok := r.model.rt.(TokenReporter); ok {
			if err := reg.Register(newTokenCollector(tr)); err != nil {
				log.Warn("token metrics not registered", "err", err)
			}
		}
		s.setModel(r.model, r.elapsed)
		log.Info("model loaded", "flavor", r.model.flavor, "features", r.model.nFeatures,
			"load_seconds", r.elapsed.Seconds())
	case err := <-served:
		return fmt.Errorf("worker: serve: %w", err)
	case <-ctx.Done():
		log.Info("stopping before the model loaded")
		return shutdown(hs, cfg.ShutdownTimeout)
	}

	// A runtime with a process of its own (the Python model host) stops
	// with the worker, after the requests it serves.
	if c, ok := s.model.Load().rt.(io.Closer); ok {
		defer c.Close()
	}
	select {
	case err := <-served:
		return fmt.Errorf("worker: serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("stopping; letting in-flight requests finish", "timeout", cfg.ShutdownTimeout)
	return shutdown(hs, cfg.ShutdownTimeout)
}

// shutdown stops accepting connections and waits for in-flight requests,
// then closes whatever is left.
func shutdown(hs *http.Server, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := hs.Shutdown(ctx); err != nil {
		_ = hs.Close()
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("worker: requests still running after %s were cut off", timeout)
		}
		return fmt.Errorf("worker: shutdown: %w", err)
	}
	return nil
}
