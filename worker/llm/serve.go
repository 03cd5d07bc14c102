package llm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/internal/apierr"
	"github.com/gantry/gantry/openai"
	"github.com/gantry/gantry/worker"
	"github.com/prometheus/client_golang/prometheus"
)

// Flavor is the MLmodel flavor this runtime serves:
//
//	flavors:
//	  gguf:
//	    model_file: model.gguf   # in the model directory
//	    task: llm/v1/chat        # or llm/v1/completions, llm/v1/embeddings
const Flavor = "gguf"

// Runtime answers a worker's /invocations for a GGUF model: Databricks'
// unified requests of its task (package openai decodes and checks them as
// it does for external models), OpenAI's answers, streamed as server-sent
// events when the request says stream. It is the worker's Runtime,
// HTTPRuntime and TokenReporter.
type Runtime struct {
	m     *Model
	task  string
	name  string // the answers' "model" when the request names none
	clock func() time.Time

	ttft       prometheus.Histogram
	firstToken prometheus.Gauge
	firstOnce  sync.Once
	first      atomic.Pointer[firstTokenAt] // set in firstOnce, read by FirstToken
}

// firstTokenAt is the replica's first generated token: its request's
// arrival and the token.
type firstTokenAt struct{ arrived, at time.Time }

// FirstToken is the replica's first generated token (ok false until one
// came): its request's arrival and the token's time. The worker's /ping
// reports it as the cold start's last phase, first_token, for whole
// answers too, whose first byte leaves only with the last token.
func (rt *Runtime) FirstToken() (arrived, at time.Time, ok bool) {
	f := rt.first.Load()
	if f == nil {
		return time.Time{}, time.Time{}, false
	}
	return f.arrived, f.at, true
}

var (
	_ worker.HTTPRuntime   = (*Runtime)(nil)
	_ worker.TokenReporter = (*Runtime)(nil)
)

// OpenRuntime loads the model that a gguf flavor names in dir.
func OpenRuntime(dir string, flavor map[string]any, cfg Config) (*Runtime, error) {
	file, _ := flavor["model_file"].(string)
	if file == "" {
		return nil, errors.New(`the gguf flavor needs model_file: the GGUF file's path in the model directory`)
	}
	p := filepath.Join(dir, filepath.FromSlash(file))
	if rel, err := filepath.Rel(dir, p); err != nil || strings.HasPrefix(rel, "..") {
		return nil, fmt.Errorf("gguf model_file %q leaves the model directory", file)
	}
	task, _ := flavor["task"].(string)
	if task == "" {
		task = api.TaskChat
	}
	switch task {
	case api.TaskChat, api.TaskCompletions:
	case api.TaskEmbeddings:
		cfg.Embeddings = true
	default:
		return nil, fmt.Errorf("gguf task %q: one of %s, %s, %s", task, api.TaskChat, api.TaskCompletions, api.TaskEmbeddings)
	}
	m, err := Open(p, cfg)
	if err != nil {
		return nil, err
	}
	return &Runtime{
		m: m, task: task, name: strings.TrimSuffix(filepath.Base(file), ".gguf"), clock: time.Now,
		ttft: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "gantry_worker_llm_time_to_first_token_seconds",
			Help:    "From an LLM request's arrival to its first generated token: queue, prompt and one step.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}),
		firstToken: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gantry_worker_llm_first_token_seconds",
			Help: "Cold start's last phase: the replica's first request, from its arrival to its first token (0 until one came).",
		}),
	}, nil
}

// Model is the loaded model.
func (rt *Runtime) Model() *Model { return rt.m }

// Close frees the model.
func (rt *Runtime) Close() error { return rt.m.Close() }

// Predict refuses tabular rows: an LLM takes the unified bodies, which
// ServeInvocation answers.
func (rt *Runtime) Predict([][]float64) (any, error) {
	return nil, invalid("this endpoint serves an LLM (%s): send {\"messages\": [...]}, {\"prompt\": ...} or {\"input\": ...}", rt.task)
}

// TokenLoad reports the engine's tokens and sequences to the autoscaler.
func (rt *Runtime) TokenLoad(context.Context) (api.TokenLoad, error) {
	q, r := rt.m.Sequences()
	return api.TokenLoad{GeneratedTokens: rt.m.Tokens(), Queued: q, Running: r}, nil
}

// Describe and Collect export the runtime's latency metrics beside the
// worker's.
func (rt *Runtime) Describe(ch chan<- *prometheus.Desc) {
	rt.ttft.Describe(ch)
	rt.firstToken.Describe(ch)
}

func (rt *Runtime) Collect(ch chan<- prometheus.Metric) {
	rt.ttft.Collect(ch)
	rt.firstToken.Collect(ch)
}

// ServeInvocation answers one unified request.
func (rt *Runtime) ServeInvocation(w http.ResponseWriter, r *http.Request) {
	start := rt.clock()
	body, err := io.ReadAll(r.Body) // the worker read and bounded it
	if err != nil {
		apierr.Write(w, api.Errorf(api.ErrMalformedRequest, "read request body: %v", err))
		return
	}
	// An OpenAI SDK path names its task (the activator checks it too).
	if t := r.Header.Get(worker.TaskHeader); t != "" && t != rt.task {
		apierr.Write(w, invalid("this model serves %s; the request is %s", rt.task, t))
		return
	}
	req, err := openai.Decode(rt.task, body)
	if err != nil {
		apierr.Write(w, err)
		return
	}
	id := r.Header.Get("x-request-id")
	if id == "" {
		id = strconv.FormatUint(rand.Uint64(), 16)
	}
	model := req.Model
	if model == "" {
		model = rt.name
	}
	if rt.task == api.TaskEmbeddings {
		rt.embed(w, r.Context(), req, model)
		return
	}
	jobs, err := rt.jobs(req)
	if err != nil {
		apierr.Write(w, err)
		return
	}
	a := &answer{rt: rt, id: "cmpl-" + id, model: model, created: start.Unix(), start: start, chat: rt.task == api.TaskChat}
	if a.chat {
		a.id = "chatcmpl-" + id
	}
	if req.Stream {
		// A stream's status goes with its first byte: refuse what can be
		// refused before it.
		for _, j := range jobs {
			if err := rt.m.Check(j); err != nil {
				writeErr(w, err)
				return
			}
		}
		a.stream(w, r.Context(), jobs, req.IncludeUsage)
		return
	}
	a.whole(w, r.Context(), jobs)
}

// jobs are the generations a request asks for: each prompt n times, in
// the order of the answer's choices. They run at once, each in a sequence
// of its own.
func (rt *Runtime) jobs(req *openai.Request) ([]Request, error) {
	var prompts []string
	if rt.task == api.TaskChat {
		msgs := make([]Message, len(req.Messages))
		for i, m := range req.Messages {
			msgs[i] = Message{m.Role, m.Content}
		}
		p, err := rt.m.FormatChat(msgs)
		if err != nil {
			return nil, err
		}
		prompts = []string{p}
	} else {
		prompts = req.Prompt
	}
	base := Request{Stop: req.Stop, Temperature: 1} // Databricks' default temperature
	if req.Temperature != nil {
		base.Temperature = *req.Temperature
	}
	if req.MaxTokens != nil {
		base.MaxTokens = *req.MaxTokens
	}
	for k, v := range req.ExtraParams {
		switch k {
		case "top_p":
			var p float64
			if json.Unmarshal(v, &p) != nil || p <= 0 || p > 1 || math.IsNaN(p) {
				return nil, invalid("extra_params.top_p: a number above 0 and at most 1")
			}
			base.TopP = p
		case "seed":
			var s int64
			if json.Unmarshal(v, &s) != nil || s < 0 || s > math.MaxUint32 {
				return nil, invalid("extra_params.seed: an integer from 0 to %d", uint32(math.MaxUint32))
			}
			seed := uint32(s)
			base.Seed = &seed
		default:
			return nil, invalid("extra_params.%s: not a parameter of this model; it takes top_p and seed", k)
		}
	}
	n := 1
	if req.N != nil {
		n = *req.N
	}
	if len(prompts)*n > openai.MaxN {
		return nil, invalid("%d prompts × n %d: at most %d choices per request", len(prompts), n, openai.MaxN)
	}
	var jobs []Request
	for _, p := range prompts {
		for range n {
			j := base
			j.Prompt = p
			jobs = append(jobs, j)
		}
	}
	return jobs, nil
}

// answer writes one request's answer.
type answer struct {
	rt       *Runtime
	id       string
	model    string
	created  int64
	start    time.Time
	chat     bool
	mu       sync.Mutex // guards anyToken, and writes to the stream
	anyToken bool
}

// token notes that a choice produced its first text.
func (a *answer) token() {
	a.mu.Lock()
	first := !a.anyToken
	a.anyToken = true
	a.mu.Unlock()
	if first {
		now := a.rt.clock()
		d := now.Sub(a.start).Seconds()
		a.rt.ttft.Observe(d)
		a.rt.firstOnce.Do(func() {
			a.rt.firstToken.Set(d)
			a.rt.first.Store(&firstTokenAt{arrived: a.start, at: now})
		})
	}
}

func (a *answer) whole(w http.ResponseWriter, ctx context.Context, jobs []Request) {
	results := make([]Result, len(jobs))
	errs := make([]error, len(jobs))
	var wg sync.WaitGroup
	for i, j := range jobs {
		wg.Go(func() {
			results[i], errs[i] = a.rt.m.Generate(ctx, j, func(string) error { a.token(); return nil })
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			writeErr(w, err)
			return
		}
	}
	out := openai.Completion{ID: a.id, Object: openai.ObjChat, Created: a.created, Model: a.model}
	if !a.chat {
		out.Object = openai.ObjText
	}
	prompt, completion := 0, 0
	for i, res := range results {
		c := openai.Choice{Index: i, FinishReason: &results[i].FinishReason}
		if a.chat {
			c.Message = &openai.Message{Role: "assistant", Content: res.Text}
		} else {
			c.Text = &results[i].Text
		}
		out.Choices = append(out.Choices, c)
		completion += res.CompletionTokens
		if i == 0 || !a.chat {
			// One chat prompt however many choices; completions count
			// each prompt, once per n as OpenAI does.
			prompt += res.PromptTokens
		}
	}
	out.Usage = openai.NewUsage(prompt, completion)
	b, _ := json.Marshal(out)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.Write(b)
}

// stream writes each piece of text as a chunk as soon as the model makes
// it, one flush per chunk, then a closing chunk per choice, the usage and
// data: [DONE]. A client that goes away ends the generations.
func (a *answer) stream(w http.ResponseWriter, ctx context.Context, jobs []Request, includeUsage bool) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	obj := openai.ObjChunk
	if !a.chat {
		obj = openai.ObjText
	}
	var failed error
	send := func(c openai.Completion) error {
		c.ID, c.Object, c.Created, c.Model = a.id, obj, a.created, a.model
		b, _ := json.Marshal(c)
		a.mu.Lock()
		defer a.mu.Unlock()
		if failed != nil {
			return failed
		}
		if _, err := fmt.Fprintf(w, "data: %s\n\n", b); err != nil {
			failed = err
			return err
		}
		if err := rc.Flush(); err != nil {
			failed = err
			return err
		}
		return nil
	}
	chunk := func(i int, text string, role string, finish *string) openai.Completion {
		c := openai.Choice{Index: i, FinishReason: finish}
		if a.chat {
			c.Delta = &openai.Delta{Role: role, Content: &text}
		} else {
			c.Text = &text
		}
		return openai.Completion{Choices: []openai.Choice{c}}
	}
	// The usage goes on the closing chunk of a single choice, or in a last
	// chunk of its own, with no choices, when asked for (OpenAI's
	// stream_options.include_usage) or when there are several: clients
	// that read choices[0] of every chunk trip on one without choices.
	// The activator reads it either way, for the usage table.
	single := len(jobs) == 1 && !includeUsage
	results := make([]Result, len(jobs))
	errs := make([]error, len(jobs))
	var wg sync.WaitGroup
	for i, j := range jobs {
		wg.Go(func() {
			role := "assistant" // the first chunk of a chat choice says whose it is
			results[i], errs[i] = a.rt.m.Generate(ctx, j, func(s string) error {
				a.token()
				err := send(chunk(i, s, role, nil))
				role = ""
				if err != nil {
					cancel()
				}
				return err
			})
			if errs[i] != nil {
				cancel()
				return
			}
			last := chunk(i, "", role, &results[i].FinishReason)
			if single {
				last.Usage = openai.NewUsage(results[i].PromptTokens, results[i].CompletionTokens)
			}
			if err := send(last); err != nil {
				cancel()
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil && failed == nil {
			// The status is sent; the error goes in OpenAI's in-stream
			// shape, which its SDK raises.
			ae := apiError(err)
			b, _ := json.Marshal(map[string]any{"error": map[string]string{"message": ae.Message, "code": ae.Code}})
			fmt.Fprintf(w, "data: %s\n\n", b)
			rc.Flush()
			return
		}
	}
	if failed != nil {
		return
	}
	if !single {
		prompt, completion := 0, 0
		for i, res := range results {
			completion += res.CompletionTokens
			if i == 0 || !a.chat {
				prompt += res.PromptTokens
			}
		}
		if send(openai.Completion{Usage: openai.NewUsage(prompt, completion), Choices: []openai.Choice{}}) != nil {
			return
		}
	}
	fmt.Fprint(w, "data: [DONE]\n\n")
	rc.Flush()
}

func (rt *Runtime) embed(w http.ResponseWriter, ctx context.Context, req *openai.Request, model string) {
	if len(req.ExtraParams) > 0 {
		for k := range req.ExtraParams {
			apierr.Write(w, invalid("extra_params.%s: this model takes no extra parameters for embeddings", k))
			return
		}
	}
	vecs, tokens, err := rt.m.Embed(ctx, req.Input)
	if err != nil {
		writeErr(w, err)
		return
	}
	out := openai.EmbeddingList{Object: openai.ObjEmbedList, Model: model, Data: make([]openai.Embedding, len(vecs)),
		Usage: &openai.Usage{PromptTokens: tokens, TotalTokens: tokens}}
	for i, v := range vecs {
		b, _ := json.Marshal(v)
		out.Data[i] = openai.Embedding{Object: "embedding", Index: i, Embedding: b}
	}
	b, _ := json.Marshal(out)
	w.Header().Set("Content-Type", "application/json")
	w.Write(b)
}

func apiError(err error) *api.Error {
	var ae *api.Error
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return api.Errorf(api.ErrDeadlineExceeded, "the request ended before its answer: %v", err)
	case errors.Is(err, ErrClosed):
		return api.Errorf(api.ErrTemporarilyUnavailable, "the replica is stopping; retry")
	}
	return api.Errorf(api.ErrInternal, "%v", err)
}

func writeErr(w http.ResponseWriter, err error) { apierr.Write(w, apiError(err)) }
