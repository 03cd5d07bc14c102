package worker

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/prometheus/client_golang/prometheus"
)

// LLM runtimes plug into the worker through two interfaces, both optional
// additions to Runtime:
//
//   - HTTPRuntime: the runtime answers /invocations itself, from the raw
//     request (OpenAI bodies: chat, completions, embeddings), and may stream
//     its answer (text/event-stream, flushed chunk by chunk). The worker has
//     checked the worker secret and bounded the body before it calls it.
//
//   - TokenReporter: the runtime reports its load in tokens and sequences.
//     The worker serves it on GET /load (api.TokenLoad, JSON) and on
//     /metrics (gantry_worker_llm_*); the autoscaler polls /load of every
//     ready replica of an entity that scales on tokens and sizes the entity
//     from the tokens per second and the queued sequences it sees.
//
// A backend plugs in by returning, from its Loader, a value that
// implements Runtime (Predict may refuse rows with an *api.Error: LLM
// entities take OpenAI bodies), HTTPRuntime and TokenReporter:
//
//	func (r *myLLM) Predict([][]float64) (any, error)        { return nil, api.Errorf(...) }
//	func (r *myLLM) ServeInvocation(w http.ResponseWriter, r *http.Request) { ... }
//	func (r *myLLM) TokenLoad(ctx context.Context) (api.TokenLoad, error) {
//		return api.TokenLoad{GeneratedTokens: r.generated.Load(), Queued: ..., Running: ...}, nil
//	}
//
// GeneratedTokens is a counter: it only grows while the runtime lives (the
// autoscaler takes its rate, and a counter that goes back is taken as a
// restart). Queued counts sequences accepted but not yet generating (a
// native runtime's queue, vLLM's num_requests_waiting, llama.cpp's
// requests_deferred); Running those generating now.

// TaskHeader carries the task of an invocation that came by an OpenAI SDK
// path (/serving-endpoints/chat/completions, /completions, /embeddings):
// api.TaskChat, api.TaskCompletions or api.TaskEmbeddings. An HTTPRuntime
// answers the body as that task, or refuses it with a 400 when it serves
// another; without the header, the body (or the model) says.
const TaskHeader = "X-Gantry-Task"

// HTTPRuntime is a runtime that answers invocations from the raw request.
type HTTPRuntime interface {
	Runtime
	// ServeInvocation answers one POST /invocations. r.Body is already in
	// memory (read under the worker's deadline and bounded by
	// Config.MaxRequestBodySize); r.Context() ends when the client goes
	// away or the worker stops.
	ServeInvocation(w http.ResponseWriter, r *http.Request)
}

// TokenReporter is a runtime that generates tokens and reports its load.
type TokenReporter interface {
	// TokenLoad returns the runtime's load now. It may ask a process of
	// the runtime's (the OpenAI-compatible server's /metrics), so it takes
	// a deadline in ctx and must return by it.
	TokenLoad(ctx context.Context) (api.TokenLoad, error)
}

// loadTimeout bounds one TokenLoad call, for /load and for /metrics.
const loadTimeout = 2 * time.Second

// load serves GET /load: the runtime's api.TokenLoad. A model that does
// not generate tokens answers 404, so that a poller learns the entity is
// not one to scale on tokens; one still loading answers 503.
func (s *server) load(w http.ResponseWriter, r *http.Request) {
	m := s.model.Load()
	if m == nil {
		writeError(w, http.StatusServiceUnavailable, loadingError())
		return
	}
	tr, ok := m.rt.(TokenReporter)
	if !ok {
		writeError(w, http.StatusNotFound, api.Errorf(api.ErrResourceDoesNotExist,
			"the %s runtime does not generate tokens; /load is for LLM runtimes", m.flavor))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), loadTimeout)
	defer cancel()
	l, err := tr.TokenLoad(ctx)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, api.Errorf(api.ErrTemporarilyUnavailable, "token load: %v", err))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(l)
}

// tokenCollector exports a TokenReporter's load on /metrics.
type tokenCollector struct {
	tr                      TokenReporter
	generated, queued, runn *prometheus.Desc
}

func newTokenCollector(tr TokenReporter) *tokenCollector {
	return &tokenCollector{
		tr:        tr,
		generated: prometheus.NewDesc("gantry_worker_llm_generated_tokens_total", "Tokens the LLM runtime generated since it started.", nil, nil),
		queued:    prometheus.NewDesc("gantry_worker_llm_sequences_queued", "Sequences waiting for the LLM runtime to start generating them.", nil, nil),
		runn:      prometheus.NewDesc("gantry_worker_llm_sequences_running", "Sequences the LLM runtime is generating.", nil, nil),
	}
}

func (c *tokenCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.generated
	ch <- c.queued
	ch <- c.runn
}

// Collect reports nothing when the runtime cannot tell its load: a
// missing sample is better than a zero that is not true.
func (c *tokenCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), loadTimeout)
	defer cancel()
	l, err := c.tr.TokenLoad(ctx)
	if err != nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(c.generated, prometheus.CounterValue, float64(l.GeneratedTokens))
	ch <- prometheus.MustNewConstMetric(c.queued, prometheus.GaugeValue, float64(l.Queued))
	ch <- prometheus.MustNewConstMetric(c.runn, prometheus.GaugeValue, float64(l.Running))
}
