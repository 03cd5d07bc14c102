package activator

import (
	"bufio"
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

// relay passes the event stream in resp to the client, event by event,
// after forward returns. done gives back the slot; relay releases resp.
func (a *Activator) relay(ctx *fasthttp.RequestCtx, en *entity, resp *fasthttp.Response, done func(), id []byte, start time.Time) {
	var ep *endpoint
	if t := a.table.Load(); t != nil {
		ep = t.endpoints[en.endpoint]
	}
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetContentType("text/event-stream")
	ctx.Response.Header.Set("Cache-Control", "no-cache")
	// What the record needs, copied: the request's buffers go back to
	// fasthttp when Handler returns, before the stream ends.
	var rec loggers.Record
	var usage loggers.UsageRow
	var body []byte
	var sg *streamGuard
	g := takeGrant(ctx)
	prompt := promptTokens(ctx.PostBody())
	if ep != nil {
		rec = loggers.Record{
			Table: ep.inferenceTable, RequestID: string(id), Endpoint: ep.name, ServedEntity: en.name,
			TimestampMs: start.UnixMilli(), SamplingFraction: 1, Requester: requester(ctx),
			LoggingErrorCodes: guardCodes(ctx),
		}
		if (ep.inferenceTable != "" || ep.usage) && a.cfg.Capture != nil {
			body = bytes.Clone(ctx.PostBody())
			rec.ClientRequestID = loggers.ClientRequestID(body)
		}
		usage = loggers.UsageRow{RequestID: rec.RequestID, TimestampMs: rec.TimestampMs, Endpoint: ep.name,
			ServedEntity: en.name, Requester: rec.Requester, Streaming: true, ClientRequestID: rec.ClientRequestID}
		if ep.output != nil {
			sg = newStreamGuard(ep.output)
		}
	}
	ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
		defer fasthttp.ReleaseResponse(resp)
		defer done()
		stream := resp.BodyStream()
		// The answer is assembled for the record, the usage row, and the
		// refund of a token reservation.
		keep := body != nil || g != nil
		if !keep && sg == nil {
			// Nothing reads the events: pass the bytes as they come, one
			// write and flush per read, without parsing them.
			passThrough(w, stream)
			resp.CloseBodyStream()
			if ep != nil {
				ep.duration.Observe(time.Since(start).Seconds())
			}
			return
		}
		rd := external.NewSSEReader(stream)
		var asm openai.Assembler
		write := func(data []byte) error {
			w.WriteString("data: ")
			w.Write(data)
			w.WriteString("\n\n")
			return w.Flush()
		}
		// The unused tokens go back before the client reads [DONE], so
		// that its next call finds them (and at the end otherwise).
		refund := func() {
			if g != nil {
				answer, used := asm.Answer()
				a.refundStream(g, prompt, answer, used)
				g = nil
			}
		}
		status := int32(fasthttp.StatusOK)
		var ended error // why the stream ended early; nil when it ended with [DONE]
		for {
			ev, err := rd.Next()
			if err != nil {
				ended = err
				if errors.Is(err, io.EOF) {
					ended = errors.New("the replica ended the stream before [DONE]")
				}
				break
			}
			data := ev.Data
			if string(data) == "[DONE]" {
				if sg != nil {
					last, gerr := sg.end()
					if gerr != nil {
						ended = gerr
						break
					}
					if last != nil && write(last) != nil {
						ended = errClientGone
						break
					}
				}
				refund()
				write(data)
				break
			}
			if e, ok := streamError(data); ok {
				// The worker's own in-stream error: passed on as it is.
				status = int32(api.HTTPStatus(e.Code))
				rec.LoggingErrorCodes = append(rec.LoggingErrorCodes, "STREAM_ERROR:"+e.Code)
				write(data)
				break
			}
			if sg != nil {
				if data, err = sg.chunk(data); err != nil {
					ended = err
					break
				}
			}
			if keep {
				asm.Add(data) // a JSON decode per chunk: only when a row needs the answer
			}
			if write(data) != nil {
				ended = errClientGone
				break
			}
		}
		// Closing the stream early closes the connection to the worker,
		// which ends the generation there.
		resp.CloseBodyStream()
		if ended != nil && ended != errClientGone {
			ae := errorOf(ended)
			if !errors.As(ended, new(*guardBlocked)) {
				ae = api.Errorf(api.ErrTemporarilyUnavailable, "served entity %s: %v", en.name, ended)
			}
			status = int32(api.HTTPStatus(ae.Code))
			b, _ := json.Marshal(map[string]any{"error": map[string]string{"message": ae.Message, "code": ae.Code}})
			rec.LoggingErrorCodes = append(rec.LoggingErrorCodes, "STREAM_ERROR:"+ae.Code)
			write(b)
		}
		refund()
		if ep == nil {
			return
		}
		answer, _ := asm.Answer()
		if sg != nil {
			var gb *guardBlocked
			if errors.As(ended, &gb) {
				rec.LoggingErrorCodes = append(rec.LoggingErrorCodes, gb.d.Code("output"))
			}
			if ks := sg.kinds(); len(ks) > 0 {
				rec.LoggingErrorCodes = append(rec.LoggingErrorCodes, guardrail.Decision{Guardrail: "pii", Kinds: ks}.Code("output"))
				answer = maskJSON(answer)
			}
		}
		elapsed := time.Since(start)
		ep.duration.Observe(elapsed.Seconds())
		if body != nil && ep.inferenceTable != "" {
			rec.StatusCode, rec.ExecutionTimeMs = status, elapsed.Milliseconds()
			rec.SetBodies(body, answer)
			a.cfg.Capture.Capture(&rec)
		}
		if ep.usage {
			usage.StatusCode = status
			a.trackUsage(ep, usage, body, answer, true)
		}
	})
}

var errClientGone = errors.New("the client went away")

// passThrough copies a worker's stream to the client, flushing after each
// read, until either side ends.
func passThrough(w *bufio.Writer, r io.Reader) {
	buf := make([]byte, 4096)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil || w.Flush() != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
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
