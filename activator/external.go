package activator

import (
	"bytes"
	"context"
	"errors"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/external"
	"github.com/gantry/gantry/internal/apierr"
	"github.com/gantry/gantry/openai"
	"github.com/valyala/fasthttp"
)

// External entities have no replicas: the activator calls their provider
// itself, through Config.External, with no slot, queue or cold start.
//
// A streamed answer (stream: true) is written by fasthttp's body stream
// writer after Handler returns: each provider event is translated and
// flushed to the client as it arrives, so the first token reaches the
// client as soon as the provider sends it and the answer is never held
// whole. A flush that fails (the client went away) ends the call
// upstream. The inference record of a stream is written by the stream
// writer once the stream ends, with the answer assembled from its chunks.

// openAIPaths are the paths the OpenAI SDK calls with
// base_url=<gantry>/serving-endpoints, the endpoint named by the body's
// "model", and the task each one takes.
var openAIPaths = map[string]string{
	"/serving-endpoints/chat/completions": api.TaskChat,
	"/serving-endpoints/completions":      api.TaskCompletions,
	"/serving-endpoints/embeddings":       api.TaskEmbeddings,
}

// openAI serves the OpenAI SDK's paths: the body's model names the
// endpoint, which must serve an LLM (external, or a model on an LLM
// runtime) of the path's task.
func (a *Activator) openAI(ctx *fasthttp.RequestCtx, task string, id []byte, start time.Time) {
	t := a.table.Load()
	if t == nil {
		a.metrics.requests.WithLabelValues("", "", "503").Inc()
		fail(ctx, api.ErrTemporarilyUnavailable, "the activator has not received its route table yet; retry later")
		return
	}
	if !ctx.IsPost() {
		ctx.Response.Header.Set(fasthttp.HeaderAllow, fasthttp.MethodPost)
		apierr.WithStatus(fasthttp.StatusMethodNotAllowed, api.Errorf(api.ErrMalformedRequest,
			"method %s is not allowed; this path takes POST", ctx.Method())).WriteFast(ctx)
		return
	}
	release, ok := a.readBody(ctx)
	defer release()
	if !ok {
		return
	}
	// Only the model is read here (scanned for, not decoded whole): the
	// entity decodes the body.
	var model string
	if err := openai.DecodeMember(ctx.PostBody(), "model", &model); err != nil || model == "" {
		fail(ctx, api.ErrInvalidParameterValue, "model: required; the name of the serving endpoint")
		return
	}
	// The endpoint is in the body, so the token is checked once it is
	// read (its size was bounded by readBody).
	if !a.authorized(ctx, []byte(model)) {
		return
	}
	ep := t.endpoints[model]
	if ep == nil {
		a.notFound.Inc()
		fail(ctx, api.ErrResourceDoesNotExist, "model: endpoint %s does not exist", clip([]byte(model)))
		return
	}
	if len(ep.limits) > 0 {
		g, pass := a.limit(ctx, ep)
		if !pass {
			return
		}
		if g != nil {
			defer a.refund(ctx, g)
		}
	}
	en := ep.pick(stickyKey(ctx, ep), a.intN)
	switch {
	case en == nil:
		ep.requests.WithLabelValues("503").Inc()
		fail(ctx, api.ErrTemporarilyUnavailable, "endpoint %s routes no traffic to any served entity", ep.name)
	case en.features != nil || en.featureErr != nil:
		ep.requests.WithLabelValues("400").Inc()
		fail(ctx, api.ErrInvalidParameterValue, "model: endpoint %s serves features, not an LLM; call /serving-endpoints/%s/invocations", ep.name, ep.name)
	case en.task != "":
		// A model on the GGUF runtime: its task is known here.
		ctx.Response.Header.Set(headerServedModel, en.name)
		a.invokeLLM(ctx, ep, en, task, id, start.Add(a.cfg.Timeout))
		en.requests.inc(ctx.Response.StatusCode())
	case en.external == nil:
		// A model served by replicas (an openai_server or GGUF entity):
		// the body goes to the worker as an invocation, with the path's
		// task, which the worker checks against what the model serves.
		ctx.Response.Header.Set(headerServedModel, en.name)
		en = a.proxy(ctx, en, task, false, stickyKey(ctx, ep), id, start.Add(a.cfg.Timeout))
		en.requests.inc(ctx.Response.StatusCode())
	default:
		ctx.Response.Header.Set(headerServedModel, en.name)
		called := a.callExternal(ctx, ep, en, task, id, start)
		en.requests.inc(ctx.Response.StatusCode())
		if called && len(ep.shadows) > 0 {
			// After finish: the client's record first, as on invocations.
			defer a.mirror(ctx, ep, id, nil)
		}
	}
	a.finish(ctx, ep, id, start)
}

// finish observes an answered invocation and captures it, unless a body
// stream writer will (its answer is not written yet).
func (a *Activator) finish(ctx *fasthttp.RequestCtx, ep *endpoint, id []byte, start time.Time) {
	if ctx.Response.IsBodyStream() {
		return
	}
	elapsed := time.Since(start)
	ep.duration.Observe(elapsed.Seconds())
	if ep.inferenceTable != "" && a.cfg.Capture != nil {
		a.capture(ctx, ep, id, start, elapsed, nil)
	}
	if ep.usage {
		a.trackUsage(ep, usageOf(ctx, ep, id, start), ctx.PostBody(), ctx.Response.Body(), true)
	}
}

// callExternal answers one invocation of external entity en, trying the
// next external entities of ep in order when ep falls back and the
// provider answered 429 or 5xx (or not at all). task is what the path
// asks for ("" on invocations paths: the entity's own task). called is
// false when the request was refused before any provider saw it (a bad
// body, a blocking guardrail): shadow routes do not mirror those.
func (a *Activator) callExternal(ctx *fasthttp.RequestCtx, ep *endpoint, en *entity, task string, id []byte, start time.Time) (called bool) {
	if task == "" {
		task = en.external.Task
	}
	if task != en.external.Task {
		fail(ctx, api.ErrInvalidParameterValue, "endpoint %s serves %s; this path takes %s", ep.name, en.external.Task, task)
		return false
	}
	req, err := external.Decode(task, ctx.PostBody())
	if err != nil {
		apierr.WriteFast(ctx, err)
		return false
	}
	if !guardInput(ctx, ep, req) {
		return false
	}
	deadline := start.Add(a.cfg.Timeout)
	if !a.judgeInput(ctx, ep, req, deadline) {
		return false
	}
	called = true
	var tried []string // "entity=status" of each failed attempt, for the record
	for cur := en; cur != nil; cur = ep.next(cur) {
		ctx.Response.Header.Set(headerServedModel, cur.name)
		err := a.attempt(ctx, ep, cur, req, id, start, deadline, tried)
		var xe *external.Error
		if err == nil || !errors.As(err, &xe) {
			return called
		}
		if !xe.Retryable || !ep.fallback || ep.next(cur) == nil {
			if len(tried) > 0 {
				ctx.Response.Header.Set(headerFallbacks, joinTried(tried))
			}
			apierr.WithStatus(xe.Status, xe.Err).WriteFast(ctx)
			return called
		}
		tried = append(tried, cur.name+"="+xe.Reason())
	}
	return called
}

// headerFallbacks lists the entities that failed before the one that
// answered ("gpt=429,claude=502"); the record keeps it too.
const headerFallbacks = "x-gantry-fallbacks"

func joinTried(tried []string) string {
	var b bytes.Buffer
	for i, t := range tried {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(t)
	}
	return b.String()
}

// next is the external entity after en in the config's order, for a
// fallback; nil at the end.
func (ep *endpoint) next(en *entity) *entity {
	for i, x := range ep.order {
		if x == en {
			for _, y := range ep.order[i+1:] {
				if y.external != nil && !y.shadow && !y.judge {
					return y
				}
			}
			return nil
		}
	}
	return nil
}

// attempt makes one call to en's provider and writes its answer to ctx;
// a retryable failure is returned unwritten so the caller may fall back.
func (a *Activator) attempt(ctx *fasthttp.RequestCtx, ep *endpoint, en *entity, req *external.Request, id []byte, start, deadline time.Time, tried []string) error {
	// Not the RequestCtx: fasthttp never cancels it when a client leaves,
	// and the stream outlives Handler.
	cctx, cancel := context.WithDeadline(context.Background(), deadline)
	en.inFlight.Inc()
	if !req.Stream {
		defer en.inFlight.Dec()
		defer cancel()
		ans, err := a.cfg.External.Call(cctx, en.external, req)
		if err != nil {
			return err
		}
		if len(tried) > 0 {
			ctx.Response.Header.Set(headerFallbacks, joinTried(tried))
		}
		if a.judgeOutput(ctx, ep, ans.Body, deadline) {
			writeGuarded(ctx, ep, ans.Body)
		}
		return nil
	}
	s, err := a.cfg.External.Open(cctx, en.external, req)
	if err != nil {
		en.inFlight.Dec()
		cancel()
		return err
	}
	if len(tried) > 0 {
		ctx.Response.Header.Set(headerFallbacks, joinTried(tried))
	}
	st := a.newEventStream(ctx, ep, en, providerEvents{s}, func() {
		cancel()
		en.inFlight.Dec()
	}, id, start)
	st.rec.ClientRequestID, st.usage.ClientRequestID, st.usage.UsageContext = req.ClientRequestID, req.ClientRequestID, req.UsageContext
	var fallbacks []string
	for _, t := range tried {
		fallbacks = append(fallbacks, "FALLBACK_FROM:"+t)
	}
	st.rec.LoggingErrorCodes = append(fallbacks, st.rec.LoggingErrorCodes...)
	ctx.SetBodyStream(st, -1)
	return nil
}
