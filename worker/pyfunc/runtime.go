// Package pyfunc is the worker's process runtime: it serves an MLflow
// model's python_function flavor through a model host, a Python process
// whose source (host.py) ships inside the gantry binary.
//
// Who does what:
//   - the worker parses and checks each request in Go, as for native
//     runtimes, and hands the runtime a scoring.Frame;
//   - the runtime types the frame's columns by the model's signature
//     (columns.go), so a string in a double column is a 400 naming the
//     column before Python sees it;
//   - one dispatcher goroutine owns the host: it merges the requests that
//     wait into one batch (adaptive batching: no wait when the host is
//     idle, the queue's worth when it is busy), sends it over a pipe in a
//     columnar binary form (wire.go), and splits the answer back by rows;
//   - the host loads the model (with mlflow when the interpreter has it,
//     else sklearn, pytorch and custom loader_module models directly) and
//     calls predict.
//
// A host that dies is restarted and the requests it held get a 503; a host
// that takes longer than the execution timeout is killed and replaced, and
// its requests get a 504.
package pyfunc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/worker/mlmodel"
	"github.com/gantry/gantry/worker/scoring"
)

// Defaults for the zero values of Config.
const (
	DefaultPython = "python3"
	// DefaultMaxBatchRows bounds a merged batch. Requests are merged only
	// while the host is busy, so this caps how long one predict call (and
	// so the wait of a request that comes in during it) can grow.
	DefaultMaxBatchRows = 256
	// DefaultMaxBatchWait is 0: a batch leaves as soon as the host is free.
	// Waiting for more requests only adds latency when the host is idle,
	// and under load the queue fills the batch by itself (make
	// bench-pyfunc measures both).
	DefaultMaxBatchWait = 0
	// DefaultTimeout is just under the activator's 297 s, so that a stuck
	// host is replaced and the client told why before the activator gives
	// up on the request.
	DefaultTimeout     = 290 * time.Second
	DefaultLoadTimeout = 10 * time.Minute
)

// Config configures Load. It works at its zero value.
type Config struct {
	Python       string        // the interpreter; DefaultPython (found on PATH) when empty
	MaxBatchRows int           // rows in one predict call; DefaultMaxBatchRows when 0, 1 turns batching off
	MaxBatchWait time.Duration // how long a batch waits for more requests; DefaultMaxBatchWait
	Timeout      time.Duration // longest predict call; DefaultTimeout when 0
	LoadTimeout  time.Duration // longest model load; DefaultLoadTimeout when 0
	Output       io.Writer     // the host's stdout and stderr; os.Stderr when nil
	Logger       *slog.Logger  // nil means slog.Default()
}

func (c Config) withDefaults() Config {
	if c.Python == "" {
		c.Python = DefaultPython
	}
	if c.MaxBatchRows <= 0 {
		c.MaxBatchRows = DefaultMaxBatchRows
	}
	if c.MaxBatchWait < 0 {
		c.MaxBatchWait = 0
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.LoadTimeout <= 0 {
		c.LoadTimeout = DefaultLoadTimeout
	}
	if c.Output == nil {
		c.Output = os.Stderr
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Runtime serves one model through a model host. It is safe for concurrent
// use.
type Runtime struct {
	cfg    Config
	dir    string
	load   []byte // the load request
	schema *schema
	log    *slog.Logger

	jobs    chan *job
	stop    chan struct{}
	stopped chan struct{}
	once    sync.Once

	// noBatch is set once a merged batch came back with a row count unlike
	// its input's: the model's output rows are not its input rows, so
	// requests go one at a time from then on.
	noBatch atomic.Bool
	// down is why the host cannot take requests now (restarting, or a
	// failed restart), nil when it can. Ready reports it.
	down atomic.Pointer[error]
	pid  atomic.Int64
	// notice is what Notice reports, set once the first host loaded.
	notice string

	metrics *metrics
}

type job struct {
	ctx  context.Context
	b    *batch
	key  string
	done chan result // buffered: the dispatcher never waits on a caller
}

type result struct {
	preds Predictions
	err   error
}

// Load starts a model host for the model in dir and returns once the model
// is loaded, or with the host's reason it could not be ("No module named
// 'lightgbm': ...").
func Load(dir string, mm *mlmodel.Model, cfg Config) (*Runtime, error) {
	cfg = cfg.withDefaults()
	load, err := json.Marshal(map[string]any{"flavors": mm.Flavors})
	if err != nil {
		return nil, fmt.Errorf("encode the model's flavors: %w", err)
	}
	r := &Runtime{
		cfg: cfg, dir: dir, load: load, schema: newSchema(mm.Signature),
		log:  cfg.Logger.With("runtime", "python_function"),
		jobs: make(chan *job, 1024), stop: make(chan struct{}), stopped: make(chan struct{}),
		metrics: newMetrics(),
	}
	h, err := r.start()
	if err != nil {
		return nil, err
	}
	for _, m := range h.info.Mismatches {
		r.log.Warn("the model was logged with another version", "package", m)
	}
	r.notice = mismatchNotice(h.info.Mismatches)
	go r.dispatch(h)
	return r, nil
}

func (r *Runtime) start() (*host, error) {
	start := time.Now()
	h, err := startHost(r.cfg.Python, r.dir, r.load, r.cfg.Output, r.cfg.LoadTimeout)
	if err != nil {
		return nil, err
	}
	r.pid.Store(int64(h.cmd.Process.Pid))
	r.log.Info("model host ready", "pid", h.cmd.Process.Pid, "python", h.info.Python,
		"executable", h.info.Executable, "loader", h.info.Loader, "load_seconds", time.Since(start).Seconds())
	return h, nil
}

// Notice names the packages whose installed versions differ from those
// the model was logged with, or is empty; the worker's /ping carries it to
// the deployment's state message. A model that loads may still predict
// differently with other versions, and its owner cannot see the worker's
// log line from the API.
func (r *Runtime) Notice() string { return r.notice }

// mismatchNotice is the notice for the mismatches the host found, cut to
// api.MaxNotice (a model may pin hundreds of packages).
func mismatchNotice(ms []string) string {
	if len(ms) == 0 {
		return ""
	}
	n := "the model was logged with other package versions than this interpreter's: " + strings.Join(ms, ", ")
	if len(n) > api.MaxNotice {
		const more = " …"
		cut := api.MaxNotice - len(more)
		for cut > 0 && !utf8.RuneStart(n[cut]) {
			cut--
		}
		n = n[:cut] + more
	}
	return n
}

// PID is the process id of the current model host (0 before the first).
func (r *Runtime) PID() int { return int(r.pid.Load()) }

// Ready is nil while a host is up, and says why not while one is being
// replaced: the worker's /ping answers 503 with it, so the activator holds
// requests instead of sending them here.
func (r *Runtime) Ready() error {
	if e := r.down.Load(); e != nil {
		return *e
	}
	return nil
}

// Close stops the host. Requests still queued get a 503.
func (r *Runtime) Close() error {
	r.once.Do(func() { close(r.stop) })
	<-r.stopped
	return nil
}

// Predict serves rows of float features, for callers that have no frame:
// the columns are the signature's inputs in order.
func (r *Runtime) Predict(rows [][]float64) (any, error) {
	f := &scoring.Frame{Rows: make([][]any, len(rows))}
	for i, row := range rows {
		f.Rows[i] = make([]any, len(row))
		for j, x := range row {
			f.Rows[i][j] = x
		}
	}
	return r.PredictFrame(context.Background(), f)
}

// PredictFrame types the frame's columns, queues them for the host and
// waits for this request's rows of the answer.
func (r *Runtime) PredictFrame(ctx context.Context, f *scoring.Frame) (any, error) {
	b, err := r.schema.toBatch(f)
	if err != nil {
		return nil, err
	}
	if b.rows == 0 {
		// No rows, no predictions: models raise on an empty frame
		// (scikit-learn: "Found array with 0 sample(s)"), and the native
		// runtimes answer [].
		return Predictions{o: &output{kind: 'A', arr: array{typ: typeDouble}}}, nil
	}
	j := &job{ctx: ctx, b: b, key: b.key(), done: make(chan result, 1)}
	select {
	case r.jobs <- j:
	case <-r.stop:
		return nil, errStopping
	case <-ctx.Done():
		return nil, ctxError(ctx)
	}
	select {
	case res := <-j.done:
		if res.err != nil {
			return nil, res.err
		}
		return res.preds, nil
	case <-ctx.Done():
		// The dispatcher still answers into done, which nobody reads.
		return nil, ctxError(ctx)
	}
}

var errStopping = api.Errorf(api.ErrTemporarilyUnavailable, "the worker is stopping")

func ctxError(ctx context.Context) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return api.Errorf(api.ErrDeadlineExceeded, "the request's deadline passed while it waited for the model")
	}
	return api.Errorf(api.ErrTemporarilyUnavailable, "the request was cancelled while it waited for the model")
}

// dispatch owns the host: it batches queued jobs, calls the host and
// replaces it when it dies or hangs. It runs until Close.
func (r *Runtime) dispatch(h *host) {
	defer close(r.stopped)
	var carry *job // a job taken from the queue that did not fit the last batch
	backoff := 100 * time.Millisecond
	for {
		if h == nil {
			var err error
			h, err = r.start()
			if err != nil {
				e := fmt.Errorf("the model host could not be restarted: %w", err)
				r.down.Store(&e)
				r.log.Error("model host restart failed", "err", err, "retry_in", backoff)
				// Requests that come meanwhile fail fast with the reason
				// instead of waiting out a restart that may not come.
				if !r.failFor(backoff, &carry, api.Errorf(api.ErrTemporarilyUnavailable, "%v", e)) {
					return
				}
				backoff = min(2*backoff, 10*time.Second)
				continue
			}
			backoff = 100 * time.Millisecond
			r.down.Store(nil)
		}
		first := carry
		carry = nil
		if first == nil {
			select {
			case first = <-r.jobs:
			case <-h.exited:
				r.replace(h, fmt.Sprintf("the model host exited (%s) while idle", h.exitStatus()))
				h = nil
				continue
			case <-r.stop:
				h.kill()
				r.drain(nil)
				return
			}
		}
		group := r.collect(first, &carry)
		if len(group) == 0 {
			continue
		}
		if !r.run(h, group) {
			h = nil
		}
	}
}

// collect takes first and what else is queued with the same columns, up to
// MaxBatchRows rows, waiting up to MaxBatchWait for more. A job that does
// not fit goes to carry, first in line for the next batch.
func (r *Runtime) collect(first *job, carry **job) []*job {
	group := make([]*job, 0, 8)
	rows := 0
	add := func(j *job) bool {
		if j.ctx.Err() != nil {
			j.done <- result{err: ctxError(j.ctx)}
			return true
		}
		if len(group) > 0 && (r.noBatch.Load() || j.key != group[0].key || rows+j.b.rows > r.cfg.MaxBatchRows) {
			*carry = j
			return false
		}
		group = append(group, j)
		rows += j.b.rows
		return true
	}
	if !add(first) {
		return group
	}
	var timer <-chan time.Time
	if r.cfg.MaxBatchWait > 0 {
		t := time.NewTimer(r.cfg.MaxBatchWait)
		defer t.Stop()
		timer = t.C
	}
	for rows < r.cfg.MaxBatchRows && !r.noBatch.Load() {
		select {
		case j := <-r.jobs:
			if !add(j) {
				return group
			}
			continue
		default:
		}
		if timer == nil {
			break
		}
		select {
		case j := <-r.jobs:
			if !add(j) {
				return group
			}
		case <-timer:
			return group
		}
	}
	return group
}

// run sends one batch and answers its jobs. It returns false when the host
// is gone (dead, or killed for taking too long).
func (r *Runtime) run(h *host, group []*job) bool {
	bs := make([]*batch, len(group))
	rows := 0
	for k, j := range group {
		bs[k] = j.b
		rows += j.b.rows
	}
	r.metrics.batch.Observe(float64(len(group)))
	r.metrics.rows.Observe(float64(rows))
	msg := appendPredict(make([]byte, 0, 64+rows*16), bs)
	kind, body, err := h.call(msg, time.Now().Add(r.cfg.Timeout))
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		r.log.Error("model took too long; replacing its host", "timeout", r.cfg.Timeout, "requests", len(group), "rows", rows)
		e := api.Errorf(api.ErrDeadlineExceeded,
			"the model took longer than the execution timeout (%s) to predict; its host was replaced", r.cfg.Timeout)
		r.markDown("the model host is being replaced after a timeout")
		r.metrics.restarts.WithLabelValues("timeout").Inc()
		h.kill()
		answerAll(group, e)
		return false
	case err != nil:
		status := h.exitStatus()
		r.log.Error("model host died while predicting", "status", status, "requests", len(group), "rows", rows)
		r.markDown("the model host is restarting")
		r.metrics.restarts.WithLabelValues("exited").Inc()
		answerAll(group, api.Errorf(api.ErrTemporarilyUnavailable,
			"the model host exited (%s) while predicting; it is being restarted, retry the request", status))
		h.kill()
		return false
	}
	switch kind {
	case 'E':
		if len(group) > 1 {
			// One request's rows may be the cause: each goes again alone,
			// so that only the culprit fails.
			return r.alone(h, group)
		}
		answerAll(group, hostError(body))
		return true
	case 'O':
		out, err := parseOutput(body)
		if err != nil {
			answerAll(group, fmt.Errorf("model host answer: %w", err))
			return true
		}
		n := out.rowCount()
		if len(group) == 1 {
			lo, hi := 0, max(n, 0)
			group[0].done <- result{preds: Predictions{o: out, lo: lo, hi: hi}}
			return true
		}
		if n != rows {
			r.log.Warn("the model's output rows are not its input rows; batching is off for it",
				"input_rows", rows, "output_rows", n)
			r.noBatch.Store(true)
			return r.alone(h, group)
		}
		at := 0
		for _, j := range group {
			j.done <- result{preds: Predictions{o: out, lo: at, hi: at + j.b.rows}}
			at += j.b.rows
		}
		return true
	}
	answerAll(group, fmt.Errorf("model host answered a message of kind %q", kind))
	return true
}

// alone runs each job of a batch by itself.
func (r *Runtime) alone(h *host, group []*job) bool {
	for k, j := range group {
		if !r.run(h, []*job{j}) {
			answerAll(group[k+1:], api.Errorf(api.ErrTemporarilyUnavailable,
				"the model host exited while predicting; it is being restarted, retry the request"))
			return false
		}
	}
	return true
}

func (r *Runtime) markDown(why string) {
	e := errors.New(why)
	r.down.Store(&e)
}

func (r *Runtime) replace(h *host, why string) {
	r.log.Error("replacing the model host", "why", why)
	r.markDown("the model host is restarting")
	r.metrics.restarts.WithLabelValues("exited").Inc()
	h.kill()
}

// failFor answers every job that arrives within d with err. It returns
// false when the runtime is closed meanwhile.
func (r *Runtime) failFor(d time.Duration, carry **job, err error) bool {
	if *carry != nil {
		(*carry).done <- result{err: err}
		*carry = nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case j := <-r.jobs:
			j.done <- result{err: err}
		case <-t.C:
			return true
		case <-r.stop:
			r.drain(nil)
			return false
		}
	}
}

// drain answers what is queued when the runtime stops.
func (r *Runtime) drain(carry *job) {
	if carry != nil {
		carry.done <- result{err: errStopping}
	}
	for {
		select {
		case j := <-r.jobs:
			j.done <- result{err: errStopping}
		default:
			return
		}
	}
}

func answerAll(group []*job, err error) {
	for _, j := range group {
		j.done <- result{err: err}
	}
}

// hostError turns an 'E' answer into the error the worker answers: the
// input's fault is a 400, the model's a 500. Either way the message is the
// exception's last line, never a traceback (that goes to the log).
func hostError(body []byte) error {
	if len(body) == 0 {
		return errors.New("model host answered an empty error")
	}
	msg := string(body[1:])
	if body[0] == 'I' {
		return api.Errorf(api.ErrInvalidParameterValue, "the model could not take the input: %s", msg)
	}
	return fmt.Errorf("the model failed: %s", msg)
}
