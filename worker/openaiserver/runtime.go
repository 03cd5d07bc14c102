package openaiserver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/external"
	"github.com/gantry/gantry/internal/apierr"
	"github.com/gantry/gantry/worker"
)

// Options are the worker's settings for the runtime. The zero value works.
type Options struct {
	// LoadTimeout bounds the wait for the server's health path to answer
	// 200. Default DefaultLoadTimeout.
	LoadTimeout time.Duration
	// Timeout bounds one invocation. Default DefaultTimeout.
	Timeout time.Duration
	// Output takes the server's stdout and stderr. Default os.Stderr, the
	// worker's log.
	Output io.Writer
	Logger *slog.Logger
}

// Runtime is a running OpenAI-compatible server behind the worker.
type Runtime struct {
	s       Settings
	opts    Options
	sv      *supervisor
	stop    context.CancelFunc
	stopped chan struct{}
	proxy   *httputil.ReverseProxy
	client  *http.Client // health and metrics: short calls
}

var (
	_ worker.HTTPRuntime   = (*Runtime)(nil)
	_ worker.TokenReporter = (*Runtime)(nil)
)

// Load starts the server of the model in dir and returns once its health
// path answers 200.
func Load(dir string, flavor map[string]any, opts Options) (*Runtime, error) {
	s, err := Parse(dir, flavor)
	if err != nil {
		return nil, err
	}
	if opts.LoadTimeout <= 0 {
		opts.LoadTimeout = DefaultLoadTimeout
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.Output == nil {
		opts.Output = os.Stderr
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	transport := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 256, // every request goes to one host: the child
		IdleConnTimeout:     90 * time.Second,
		// The server may queue a request for long before it answers; the
		// invocation's own deadline (Options.Timeout) bounds that.
	}
	client := &http.Client{Transport: transport, Timeout: healthTimeout}
	c, err := start(s, dir, opts.Output)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), opts.LoadTimeout)
	err = c.waitHealthy(ctx, client, s.Health)
	cancel()
	if err != nil {
		c.stop(5 * time.Second)
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, fmt.Errorf("openai_server: %s did not answer 200 within %s", s.Health, opts.LoadTimeout)
		}
		return nil, err
	}
	rctx, stop := context.WithCancel(context.Background())
	r := &Runtime{s: s, opts: opts, stop: stop, stopped: make(chan struct{}), client: client}
	r.sv = &supervisor{s: s, dir: dir, out: opts.Output, log: opts.Logger, client: client, cur: c}
	r.proxy = &httputil.ReverseProxy{
		Rewrite:   r.rewrite,
		Transport: transport,
		// Every write is flushed at once, so a stream's events pass as
		// they arrive (ReverseProxy does so for text/event-stream
		// whatever this says); a whole answer is written in 32 KiB
		// pieces, each flushed.
		FlushInterval: -1,
		ErrorHandler:  r.proxyError,
	}
	go func() {
		defer close(r.stopped)
		r.sv.run(rctx, c)
	}()
	return r, nil
}

// Close stops the server.
func (r *Runtime) Close() error {
	r.stop()
	<-r.stopped
	return nil
}

// Ready says why the server cannot answer now (it exited and is being
// started again); the worker's /ping answers 503 with it.
func (r *Runtime) Ready() error {
	_, err := r.sv.current()
	return err
}

// Predict refuses tabular input: the entity takes OpenAI bodies, which
// ServeInvocation answers.
func (r *Runtime) Predict([][]float64) (any, error) {
	return nil, api.Errorf(api.ErrInvalidParameterValue,
		"this entity serves an LLM: send a chat (messages), completions (prompt) or embeddings (input) body")
}

// paths are the server's OpenAI paths by task.
var paths = map[string]string{
	api.TaskChat:        "/v1/chat/completions",
	api.TaskCompletions: "/v1/completions",
	api.TaskEmbeddings:  "/v1/embeddings",
}

// target carries the checked task and the child that answers from
// ServeInvocation to rewrite.
type target struct {
	task string
	base *url.URL
}

type targetKey struct{}

// ServeInvocation checks the unified request and proxies it, body as sent,
// to the server's path for its task.
func (r *Runtime) ServeInvocation(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body) // the worker read and bounded it
	if err != nil {
		apierr.Write(w, api.Errorf(api.ErrMalformedRequest, "read request body: %v", err))
		return
	}
	task := r.s.Task
	if asked := req.Header.Get(worker.TaskHeader); asked != "" {
		if _, ok := paths[asked]; !ok {
			apierr.Write(w, api.Errorf(api.ErrInvalidParameterValue, "%s: unknown task %q", worker.TaskHeader, asked))
			return
		}
		if task != "" && task != asked {
			apierr.Write(w, api.Errorf(api.ErrInvalidParameterValue, "this entity serves %s; this path takes %s", task, asked))
			return
		}
		task = asked
	}
	if task == "" {
		task = taskOf(body)
	}
	if _, err := external.Decode(task, body); err != nil {
		apierr.Write(w, err)
		return
	}
	c, err := r.sv.current()
	if err != nil {
		apierr.Write(w, api.Errorf(api.ErrTemporarilyUnavailable, "%v", err))
		return
	}
	ctx, cancel := context.WithTimeout(req.Context(), r.opts.Timeout)
	defer cancel()
	out := req.Clone(context.WithValue(ctx, targetKey{}, target{task, c.url}))
	out.Body = io.NopCloser(bytes.NewReader(body))
	out.ContentLength = int64(len(body))
	out.Header.Set("Content-Type", "application/json")
	out.Header.Del("Content-Encoding") // the body was read, so it was plain
	out.Header.Del(worker.TaskHeader)
	r.proxy.ServeHTTP(w, out)
}

// taskOf tells a body's task by its field: messages, prompt or input. A
// body with none is taken as chat, whose check then names messages.
func taskOf(body []byte) string {
	var probe struct {
		Messages json.RawMessage `json:"messages"`
		Prompt   json.RawMessage `json:"prompt"`
		Input    json.RawMessage `json:"input"`
	}
	if json.Unmarshal(body, &probe) == nil {
		switch {
		case probe.Messages != nil:
			return api.TaskChat
		case probe.Prompt != nil:
			return api.TaskCompletions
		case probe.Input != nil:
			return api.TaskEmbeddings
		}
	}
	return api.TaskChat
}

func (r *Runtime) rewrite(pr *httputil.ProxyRequest) {
	t := pr.In.Context().Value(targetKey{}).(target)
	u := t.base
	pr.Out.URL.Scheme, pr.Out.URL.Host = u.Scheme, u.Host
	pr.Out.URL.Path = paths[t.task]
	pr.Out.URL.RawPath, pr.Out.URL.RawQuery = "", ""
	pr.Out.Host = u.Host
	// The worker secret is Gantry's, not the server's.
	pr.Out.Header.Del(worker.SecretHeader)
}

// proxyError answers a call that reached no answer from the server.
func (r *Runtime) proxyError(w http.ResponseWriter, req *http.Request, err error) {
	if errors.Is(req.Context().Err(), context.DeadlineExceeded) {
		apierr.Write(w, api.Errorf(api.ErrDeadlineExceeded, "the model server did not answer within %s", r.opts.Timeout))
		return
	}
	if req.Context().Err() != nil {
		return // the client went away; nobody reads the answer
	}
	r.opts.Logger.Warn("openai_server call failed", "err", err)
	apierr.Write(w, api.Errorf(api.ErrTemporarilyUnavailable, "the model server did not answer: %v", err))
}
