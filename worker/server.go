package worker

import (
	"bytes"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/internal/apierr"
	"github.com/gantry/gantry/worker/scoring"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// server answers the worker's HTTP endpoints.
type server struct {
	log     *slog.Logger
	maxBody int64
	metrics *Metrics
	model   atomic.Pointer[model] // nil while loading
	mux     *http.ServeMux
	handler http.Handler // mux, with API.md's 404 and 405 for what it does not serve
	secret  []byte       // Config.Secret; nil: invocations need none
	// first is the first request answered with success, nil until one
	// was: /ping reports it (api.FirstResponseHeader). Set once, by
	// CompareAndSwap, so concurrent first requests race without a lock.
	first atomic.Pointer[firstAnswer]
}

// firstAnswer is the worker's first successful answer: the last phase of
// its cold start.
type firstAnswer struct {
	phase    string    // api.PhaseFirstToken or api.PhaseFirstResponse
	arrived  time.Time // the request arrived
	answered time.Time // the answer's first byte was written
}

// answered notes a successful answer of a request that arrived at start,
// unless one was noted before.
func (s *server) answered(phase string, arrived time.Time) {
	if s.first.Load() != nil {
		return
	}
	s.first.CompareAndSwap(nil, &firstAnswer{phase: phase, arrived: arrived, answered: time.Now()})
}

// SecretHeader carries the worker secret (Config.Secret) on invocations.
const SecretHeader = "X-Gantry-Worker-Secret"

func newServer(cfg Config, m *Metrics, g prometheus.Gatherer) *server {
	cfg = cfg.withDefaults()
	s := &server{log: cfg.Logger, maxBody: cfg.MaxRequestBodySize, metrics: m, mux: http.NewServeMux()}
	if cfg.Secret != "" {
		s.secret = []byte(cfg.Secret)
	}
	s.mux.HandleFunc("GET /ping", s.ping)
	s.mux.HandleFunc("GET /health", s.ping)
	s.mux.HandleFunc("POST /invocations", s.invocations)
	s.mux.HandleFunc("GET /load", s.load)
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	s.handler = apierr.Unrouted(s.mux)
	return s
}

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

func (s *server) setModel(m *model, elapsed time.Duration) {
	s.model.Store(m)
	s.metrics.loaded(elapsed)
}

// ping is the readiness probe the activator and Nomad check before sending
// traffic. The 200 body is MLflow's.
func (s *server) ping(w http.ResponseWriter, r *http.Request) {
	m := s.model.Load()
	if m == nil {
		writeError(w, http.StatusServiceUnavailable, loadingError())
		return
	}
	if rr, ok := m.rt.(readyRuntime); ok {
		if err := rr.Ready(); err != nil {
			writeError(w, http.StatusServiceUnavailable, api.Errorf(api.ErrTemporarilyUnavailable, "%v", err))
			return
		}
	}
	if nr, ok := m.rt.(noticeRuntime); ok {
		if n := nr.Notice(); n != "" {
			w.Header().Set(api.NoticeHeader, n)
		}
	}
	f := s.first.Load()
	if ft, ok := m.rt.(firstTokenRuntime); ok {
		if arrived, at, ok := ft.FirstToken(); ok {
			f = &firstAnswer{phase: api.PhaseFirstToken, arrived: arrived, answered: at}
		}
	}
	if f != nil {
		// Durations, not instants: the driver that reads them may run on
		// another machine's clock.
		w.Header().Set(api.FirstResponseHeader, api.FirstResponse{
			Phase: f.phase, Ago: time.Since(f.answered), Took: f.answered.Sub(f.arrived),
		}.String())
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write([]byte("\n"))
}

func loadingError() *api.Error {
	return api.Errorf(api.ErrTemporarilyUnavailable, "the model is loading")
}

func (s *server) invocations(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	if s.secret != nil && subtle.ConstantTimeCompare([]byte(r.Header.Get(SecretHeader)), s.secret) != 1 {
		w.Header().Set("WWW-Authenticate", `Bearer realm="gantry"`)
		s.metrics.observe(writeError(w, http.StatusUnauthorized, api.Errorf(api.ErrUnauthenticated,
			"this worker answers invocations from Gantry's activators only; send them to /serving-endpoints/{name}/invocations")), time.Since(start))
		return
	}
	if m := s.model.Load(); m != nil {
		if hr, ok := m.rt.(HTTPRuntime); ok {
			s.metrics.observe(s.serveHTTPRuntime(w, r, hr, start), time.Since(start))
			return
		}
	}
	code := s.invoke(w, r)
	if code == http.StatusOK {
		// invoke writes its answer whole, just before it returns.
		s.answered(api.PhaseFirstResponse, start)
	}
	s.metrics.observe(code, time.Since(start))
}

// serveHTTPRuntime hands an invocation to a runtime that answers it from
// the raw request, with the body bounded as for any other, and returns
// the status it wrote. A successful answer's first byte is the worker's
// first response (its first token when the runtime generates tokens and
// streams: a stream's first event carries it, and its status goes with
// it).
func (s *server) serveHTTPRuntime(w http.ResponseWriter, r *http.Request, hr HTTPRuntime, start time.Time) int {
	// Read here, under readBody's deadline and bound, so that a client
	// that trickles its body holds no runtime.
	buf, err := s.readBody(w, r)
	if err != nil {
		return writeAPIError(w, err)
	}
	defer putBuffer(buf) // the runtime is done with it when it returns
	r.Body = io.NopCloser(bytes.NewReader(buf.Bytes()))
	sw := &statusWriter{ResponseWriter: w}
	if s.first.Load() == nil {
		_, tokens := hr.(TokenReporter)
		sw.first = func(sw *statusWriter) {
			if sw.code != 0 && sw.code/100 != 2 {
				return
			}
			phase := api.PhaseFirstResponse
			if ct, _, _ := mime.ParseMediaType(sw.Header().Get("Content-Type")); tokens && ct == "text/event-stream" {
				phase = api.PhaseFirstToken
			}
			s.answered(phase, start)
		}
	}
	hr.ServeInvocation(sw, r)
	if sw.code == 0 {
		return http.StatusOK
	}
	return sw.code
}

// statusWriter remembers the status a runtime wrote. Unwrap lets
// http.ResponseController reach the connection's Flush, which a streamed
// answer calls after every chunk.
type statusWriter struct {
	http.ResponseWriter
	code int
	// first, when set, is called before the first byte of the body is
	// written.
	first func(*statusWriter)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if f := w.first; f != nil && len(b) > 0 {
		w.first = nil
		f(w)
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

type predictions struct {
	Predictions any `json:"predictions"`
}

// invoke answers one invocation and returns the status it wrote.
func (s *server) invoke(w http.ResponseWriter, r *http.Request) int {
	m := s.model.Load()
	if m == nil {
		return writeError(w, http.StatusServiceUnavailable, loadingError())
	}
	var parse func([]byte) (*scoring.Request, error)
	ct := r.Header.Get("Content-Type")
	mediaType, _, _ := mime.ParseMediaType(ct) // params such as charset or MLflow's old format= do not matter
	switch mediaType {
	case "application/json":
		parse = scoring.ParseJSON
	case "text/csv":
		parse = scoring.ParseCSV
	default:
		return writeError(w, http.StatusUnsupportedMediaType, api.Errorf(api.ErrMalformedRequest,
			"content type %q is not supported; send application/json or text/csv", ct))
	}

	buf, err := s.readBody(w, r)
	if err != nil {
		return writeAPIError(w, err)
	}
	req, err := parse(buf.Bytes())
	putBuffer(buf) // the parsers keep nothing of the body
	if err != nil {
		return writeAPIError(w, err)
	}
	if len(req.Params) > 0 {
		// MLflow ignores params that a model's signature does not declare,
		// and native runtimes declare none.
		s.log.Debug("ignoring params: the runtime takes none", "flavor", m.flavor)
	}
	var preds any
	if fr, ok := m.rt.(FrameRuntime); ok {
		// The process runtime types the columns by the signature itself:
		// its models take strings, which Floats would refuse.
		preds, err = s.predictFrame(r, m, fr, &req.Frame)
	} else {
		var rows [][]float64
		rows, err = req.Frame.Floats(m.inputs, m.nFeatures)
		if err != nil {
			return s.writeFailure(w, "convert features", err)
		}
		preds, err = s.predict(m, rows)
	}
	if err != nil {
		return s.writeFailure(w, "predict", err)
	}
	out, err := json.Marshal(predictions{preds})
	if err != nil {
		return s.writeFailure(w, "encode predictions", err)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(out)))
	w.Write(out)
	return http.StatusOK
}

// predict calls the runtime, turning a panic into an error so that one bad
// batch does not take the connection, or the worker, down with it.
func (s *server) predict(m *model, rows [][]float64) (preds any, err error) {
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("runtime panicked", "flavor", m.flavor, "panic", p, "stack", string(debug.Stack()))
			err = fmt.Errorf("%s runtime panicked: %v", m.flavor, p)
		}
	}()
	return m.rt.Predict(rows)
}

// predictFrame is predict for a FrameRuntime.
func (s *server) predictFrame(r *http.Request, m *model, fr FrameRuntime, f *scoring.Frame) (preds any, err error) {
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("runtime panicked", "flavor", m.flavor, "panic", p, "stack", string(debug.Stack()))
			err = fmt.Errorf("%s runtime panicked: %v", m.flavor, p)
		}
	}()
	return fr.PredictFrame(r.Context(), f)
}

// writeFailure answers an error from the model side: an *api.Error is the
// input's fault and goes back as it is; anything else is ours, a 500.
func (s *server) writeFailure(w http.ResponseWriter, what string, err error) int {
	var ae *api.Error
	if errors.As(err, &ae) {
		return writeError(w, api.HTTPStatus(ae.Code), ae)
	}
	s.log.Error("invocation failed", "step", what, "err", err)
	return writeError(w, http.StatusInternalServerError, api.Errorf(api.ErrInternal, "%s: %v", what, err))
}

var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// maxPooled keeps the occasional huge body from pinning its buffer.
const maxPooled = 1 << 20

func putBuffer(b *bytes.Buffer) {
	if b.Cap() <= maxPooled {
		b.Reset()
		bufPool.Put(b)
	}
}

// bodyTimeout bounds the time from the end of an invocation's headers to
// the end of its body (ReadHeaderTimeout bounds the headers). The
// activator forwards bodies it holds whole, so a slow body is a client
// that reached the worker directly, or a stuck connection. A variable for
// tests.
var bodyTimeout = time.Minute

// readBody reads the request body up to the size limit, within bodyTimeout.
func (s *server) readBody(w http.ResponseWriter, r *http.Request) (*bytes.Buffer, error) {
	if r.ContentLength > s.maxBody {
		return nil, s.tooLarge()
	}
	// Not the server's ReadTimeout: that deadline would stand while the
	// model predicts, and net/http cancels the request when it passes.
	// This one goes once the body is in.
	rc := http.NewResponseController(w)
	if rc.SetReadDeadline(time.Now().Add(bodyTimeout)) == nil {
		defer rc.SetReadDeadline(time.Time{})
	}
	buf := bufPool.Get().(*bytes.Buffer)
	if r.ContentLength > 0 {
		// Sized by the claim only up to maxPooled; past it the buffer grows
		// as bytes arrive, so that clients claiming 16 MiB and trickling
		// hold what they sent, not what they claimed.
		buf.Grow(int(min(r.ContentLength, maxPooled)))
	}
	_, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, s.maxBody))
	if err != nil {
		putBuffer(buf)
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, s.tooLarge()
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil, api.Errorf(api.ErrMalformedRequest, "the request body did not arrive within %s", bodyTimeout)
		}
		return nil, api.Errorf(api.ErrMalformedRequest, "read request body: %v", err)
	}
	return buf, nil
}

func (s *server) tooLarge() *api.Error {
	limit := fmt.Sprintf("%d bytes", s.maxBody)
	if s.maxBody%(1<<20) == 0 {
		limit = fmt.Sprintf("%d MiB", s.maxBody>>20)
	}
	return api.Errorf(api.ErrPayloadTooLarge, "request body is larger than the limit of %s; send smaller batches", limit)
}

// writeAPIError answers err, which the parsers and readBody make an
// *api.Error, with the status of its code.
func writeAPIError(w http.ResponseWriter, err error) int { return apierr.Write(w, err) }

// writeError answers e with status, which may differ from its code's (415).
func writeError(w http.ResponseWriter, status int, e *api.Error) int {
	return apierr.WithStatus(status, e).Write(w)
}
