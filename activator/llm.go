package activator

import (
	"bytes"
	"encoding/json"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/external"
	"github.com/gantry/gantry/internal/apierr"
	"github.com/gantry/gantry/loggers"
	"github.com/gantry/gantry/openai"
	"github.com/valyala/fasthttp"
)

// Models served by an LLM runtime (the GGUF runtime, whose route has a
// Task, and OpenAI-compatible servers) are replicas like any model:
// slots, the cold-start queue and the pick are the same, and the worker
// decodes and answers the unified request itself. What differs is the
// answer: with stream: true the worker sends server-sent events as it
// generates, and the activator passes each event on and flushes it as it
// arrives (relay), holding the replica's slot until the stream ends; the
// inference record and usage row are written by the stream's writer then,
// with the answer assembled from its chunks, as for external models.

// invokeLLM sends an invocation to en, a model on an LLM runtime. task is
// what an OpenAI path asks for ("" on invocations paths). The request is
// decoded here only when the endpoint has input guardrails or a judge
// (they read, and may mask, its text); the worker checks it anyway. The
// guardrails apply as they do to external entities (guardrails.go,
// judge.go): input before a replica sees the request, output on the whole
// answer, or chunk by chunk in relay. It reports whether the request
// went on to a replica (and so may be mirrored to shadows): false when it
// was refused here.
func (a *Activator) invokeLLM(ctx *fasthttp.RequestCtx, ep *endpoint, en *entity, task string, id []byte, deadline time.Time) (forwarded bool) {
	if task != "" && task != en.task {
		fail(ctx, api.ErrInvalidParameterValue, "endpoint %s serves %s; this path takes %s", ep.name, en.task, task)
		return false
	}
	if ep.input != nil || ep.judge != nil {
		req, err := openai.Decode(en.task, ctx.PostBody())
		if err != nil {
			apierr.WriteFast(ctx, err)
			return false
		}
		if !guardInput(ctx, ep, req) || !a.judgeInput(ctx, ep, req, deadline) {
			return false
		}
	}
	a.proxy(ctx, en, "", false, stickyKey(ctx, ep), id, deadline)
	if !ctx.Response.IsBodyStream() && (ep.output != nil || ep.judge != nil) && ctx.Response.StatusCode() == fasthttp.StatusOK {
		body := bytes.Clone(ctx.Response.Body())
		if a.judgeOutput(ctx, ep, body, deadline) {
			writeGuarded(ctx, ep, body)
		}
	}
	return true
}

// relay answers with the event stream in resp, event by event, after
// forward returns (stream.go). done gives back the slot; relay releases
// resp.
func (a *Activator) relay(ctx *fasthttp.RequestCtx, en *entity, resp *fasthttp.Response, done func(), id []byte, start time.Time) {
	var ep *endpoint
	if t := a.table.Load(); t != nil {
		ep = t.endpoints[en.endpoint]
	}
	events := &workerEvents{en: en, resp: resp}
	s := a.newEventStream(ctx, ep, en, events, done, id, start)
	if s.body != nil {
		s.rec.ClientRequestID = loggers.ClientRequestID(s.body)
		s.usage.ClientRequestID = s.rec.ClientRequestID
	}
	// The answer is assembled for the record, the usage row and the
	// refund of a token reservation.
	events.keep = s.body != nil || s.grant != nil
	if !events.keep && s.guard == nil {
		// Nothing reads the events: their bytes pass unparsed.
		ctx.SetBodyStream(&passThrough{resp: resp, stream: resp.BodyStream(), done: func() {
			done()
			if ep != nil {
				ep.duration.Observe(time.Since(start).Seconds())
			}
		}}, -1)
		return
	}
	events.rd = external.NewSSEReader(resp.BodyStream())
	ctx.SetBodyStream(s, -1)
}

// streamError reads OpenAI's in-stream error event.
func streamError(data []byte) (*api.Error, bool) {
	if !bytes.HasPrefix(data, []byte(`{"error"`)) {
		return nil, false
	}
	var e struct {
		Error struct {
			Message string `json:"message"`
			Code    string `json:"code"`
		} `json:"error"`
	}
	if json.Unmarshal(data, &e) != nil || e.Error.Code == "" {
		return nil, false
	}
	return api.Errorf(e.Error.Code, "%s", e.Error.Message), true
}
