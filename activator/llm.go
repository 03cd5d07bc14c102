package activator

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/external"
	"github.com/gantry/gantry/guardrail"
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
// answer, or chunk by chunk in relay.
func (a *Activator) invokeLLM(ctx *fasthttp.RequestCtx, ep *endpoint, en *entity, task string, id []byte, deadline time.Time) {
	if task != "" && task != en.task {
		fail(ctx, api.ErrInvalidParameterValue, "endpoint %s serves %s; this path takes %s", ep.name, en.task, task)
		return
	}
	if ep.input != nil || ep.judge != nil {
		req, err := openai.Decode(en.task, ctx.PostBody())
		if err != nil {
			apierr.WriteFast(ctx, err)
			return
		}
		if !guardInput(ctx, ep, req) || !a.judgeInput(ctx, ep, req, deadline) {
			return
		}
	}
	a.proxy(ctx, en, false, stickyKey(ctx, ep), id, deadline)
	if !ctx.Response.IsBodyStream() && (ep.output != nil || ep.judge != nil) && ctx.Response.StatusCode() == fasthttp.StatusOK {
		body := bytes.Clone(ctx.Response.Body())
		if a.judgeOutput(ctx, ep, body, deadline) {
			writeGuarded(ctx, ep, body)
		}
	}
}

// relay answers with the event stream in resp, event by event, after
// forward returns. done gives back the slot; relay releases resp.
//
// The stream is the response's body reader (eventRelay), not a
// SetBodyStreamWriter callback: fasthttp's server then reads each event
// and writes it as one flushed chunk on the connection's own goroutine,
// where a stream writer would add a pipe and a second goroutine, one more
// hand-off per token.
func (a *Activator) relay(ctx *fasthttp.RequestCtx, en *entity, resp *fasthttp.Response, done func(), id []byte, start time.Time) {
	r := &eventRelay{a: a, en: en, resp: resp, stream: resp.BodyStream(), done: done, start: start,
		status: fasthttp.StatusOK, grant: takeGrant(ctx), prompt: promptTokens(ctx.PostBody())}
	if t := a.table.Load(); t != nil {
		r.ep = t.endpoints[en.endpoint]
	}
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetContentType("text/event-stream")
	ctx.Response.Header.Set("Cache-Control", "no-cache")
	// What the record needs, copied: the request's buffers go back to
	// fasthttp when Handler returns, before the stream ends.
	if ep := r.ep; ep != nil {
		r.rec = loggers.Record{
			Table: ep.inferenceTable, RequestID: string(id), Endpoint: ep.name, ServedEntity: en.name,
			TimestampMs: start.UnixMilli(), SamplingFraction: 1, Requester: requester(ctx),
			LoggingErrorCodes: guardCodes(ctx),
		}
		if (ep.inferenceTable != "" || ep.usage) && a.cfg.Capture != nil {
			r.body = bytes.Clone(ctx.PostBody())
			r.rec.ClientRequestID = loggers.ClientRequestID(r.body)
		}
		r.usage = loggers.UsageRow{RequestID: r.rec.RequestID, TimestampMs: r.rec.TimestampMs, Endpoint: ep.name,
			ServedEntity: en.name, Requester: r.rec.Requester, Streaming: true, ClientRequestID: r.rec.ClientRequestID}
		if ep.output != nil {
			r.guard = newStreamGuard(ep.output)
		}
	}
	// The answer is assembled for the record, the usage row, and the
	// refund of a token reservation. When nothing reads the events, their
	// bytes pass as they come, one chunk per read, without being parsed.
	r.keep = r.body != nil || r.grant != nil
	if r.keep || r.guard != nil {
		r.events = external.NewSSEReader(r.stream)
	}
	ctx.SetBodyStream(r, -1)
}

// eventRelay is a streamed answer's body. fasthttp's server calls Read
// until io.EOF and then Close, once, whether the client stayed or not
// (also when the response is dropped unwritten); Close gives back the
// slot and writes the record and usage row. Both run on the connection's
// goroutine, one after the other, so nothing here needs a lock.
type eventRelay struct {
	a      *Activator
	ep     *endpoint // nil when the endpoint left the table meanwhile
	en     *entity
	resp   *fasthttp.Response
	stream io.Reader
	done   func()
	start  time.Time

	events *external.SSEReader // nil: the bytes pass unparsed
	keep   bool                // assemble the answer
	asm    openai.Assembler
	guard  *streamGuard
	grant  *api.RateLimitGrant
	prompt int64
	rec    loggers.Record
	usage  loggers.UsageRow
	body   []byte // the request, when a row needs it

	pending  []byte // events parsed but not yet read
	finished bool   // the worker's stream ended, or failed
	ended    error  // why it ended early; nil when it ended with [DONE]
	status   int32
	closed   bool
}

func (r *eventRelay) Read(p []byte) (int, error) {
	if r.events == nil {
		n, err := r.stream.Read(p)
		if err != nil {
			// A broken worker stream ends the client's cleanly too, as
			// an ended one does.
			err = io.EOF
		}
		return n, err
	}
	for len(r.pending) == 0 {
		if r.finished {
			return 0, io.EOF
		}
		r.next()
	}
	n := copy(p, r.pending)
	r.pending = r.pending[n:]
	return n, nil
}

// emit queues one event for the client.
func (r *eventRelay) emit(data []byte) {
	r.pending = append(r.pending, "data: "...)
	r.pending = append(r.pending, data...)
	r.pending = append(r.pending, "\n\n"...)
}

// next reads one event from the worker and queues what the client gets
// for it: the event (guarded), or the end of the stream.
func (r *eventRelay) next() {
	ev, err := r.events.Next()
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = errors.New("the replica ended the stream before [DONE]")
		}
		r.fail(err)
		return
	}
	data := ev.Data
	if string(data) == "[DONE]" {
		if r.guard != nil {
			last, gerr := r.guard.end()
			if gerr != nil {
				r.fail(gerr)
				return
			}
			if last != nil {
				r.emit(last)
			}
		}
		// The unused tokens go back before the client reads [DONE], so
		// that its next call finds them.
		r.refund()
		r.emit(data)
		r.finished = true
		return
	}
	if e, ok := streamError(data); ok {
		// The worker's own in-stream error: passed on as it is.
		r.status = int32(api.HTTPStatus(e.Code))
		r.rec.LoggingErrorCodes = append(r.rec.LoggingErrorCodes, "STREAM_ERROR:"+e.Code)
		r.emit(data)
		r.finished = true
		return
	}
	if r.guard != nil {
		if data, err = r.guard.chunk(data); err != nil {
			r.fail(err)
			return
		}
	}
	if r.keep {
		r.asm.Add(data) // a JSON decode per chunk: only when a row needs the answer
	}
	r.emit(data)
}

// fail ends the stream early with an error event in OpenAI's in-stream
// shape, which its SDK raises (the status is already sent).
func (r *eventRelay) fail(err error) {
	r.ended, r.finished = err, true
	ae := errorOf(err)
	if !errors.As(err, new(*guardBlocked)) {
		ae = api.Errorf(api.ErrTemporarilyUnavailable, "served entity %s: %v", r.en.name, err)
	}
	r.status = int32(api.HTTPStatus(ae.Code))
	b, _ := json.Marshal(map[string]any{"error": map[string]string{"message": ae.Message, "code": ae.Code}})
	r.rec.LoggingErrorCodes = append(r.rec.LoggingErrorCodes, "STREAM_ERROR:"+ae.Code)
	r.emit(b)
}

func (r *eventRelay) refund() {
	if r.grant != nil {
		answer, used := r.asm.Answer()
		r.a.refundStream(r.grant, r.prompt, answer, used)
		r.grant = nil
	}
}

// Close ends the stream: closing the worker's stream early closes the
// connection to it, which ends the generation there.
func (r *eventRelay) Close() error {
	if r.closed {
		return nil
	}
	r.closed = true
	r.resp.CloseBodyStream()
	fasthttp.ReleaseResponse(r.resp)
	r.done()
	if r.events != nil && !r.finished {
		r.ended = errClientGone
	}
	r.refund()
	ep := r.ep
	if ep == nil {
		return nil
	}
	elapsed := time.Since(r.start)
	ep.duration.Observe(elapsed.Seconds())
	if r.events == nil {
		return nil
	}
	answer, _ := r.asm.Answer()
	if r.guard != nil {
		var gb *guardBlocked
		if errors.As(r.ended, &gb) {
			r.rec.LoggingErrorCodes = append(r.rec.LoggingErrorCodes, gb.d.Code("output"))
		}
		if ks := r.guard.kinds(); len(ks) > 0 {
			r.rec.LoggingErrorCodes = append(r.rec.LoggingErrorCodes, guardrail.Decision{Guardrail: "pii", Kinds: ks}.Code("output"))
			answer = maskJSON(answer)
		}
	}
	if r.body != nil && ep.inferenceTable != "" {
		r.rec.StatusCode, r.rec.ExecutionTimeMs = r.status, elapsed.Milliseconds()
		r.rec.SetBodies(r.body, answer)
		r.a.cfg.Capture.Capture(&r.rec)
	}
	if ep.usage {
		r.usage.StatusCode = r.status
		r.a.trackUsage(ep, r.usage, r.body, answer, true)
	}
	return nil
}

var errClientGone = errors.New("the client went away")

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
