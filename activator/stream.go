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
	"github.com/gantry/gantry/loggers"
	"github.com/gantry/gantry/openai"
	"github.com/valyala/fasthttp"
)

// A streamed answer, a served LLM's or an external provider's, is the
// response's body reader. fasthttp's server reads it until io.EOF,
// writes each read as one flushed chunk on the connection's own
// goroutine, and then calls Close once, whether the client stayed or not
// (also when the response is dropped unwritten). A SetBodyStreamWriter
// callback would put a pipe and a second goroutine between every event
// and the client: one more hand-off per token. Read and Close run on that
// one goroutine, one after the other, so nothing here needs a lock.

// eventSource yields a stream's events in the unified (OpenAI) shape.
type eventSource interface {
	// next waits for the next events; end reports a stream that ended
	// as it should, err one that did not (after what came before it).
	next() (events [][]byte, end bool, err error)
	// answer is the answer assembled so far, with its usage.
	answer() ([]byte, *openai.Usage)
	// close ends the call upstream.
	close()
}

// eventStream is a streamed answer's body: the source's events, guarded,
// as server-sent events, then data: [DONE], or an error event in OpenAI's
// in-stream shape, which its SDK raises (the status is already sent).
// Close writes the inference record and the usage row.
type eventStream struct {
	a     *Activator
	ep    *endpoint // nil when the endpoint left the route table meanwhile
	src   eventSource
	done  func() // after src.close: gives back the slot or the in-flight count
	start time.Time

	guard  *streamGuard
	sent   *openai.Assembler   // with a guard: the answer as the client got it, for the record
	grant  *api.RateLimitGrant // a token reservation to refund
	prompt int64
	rec    loggers.Record
	usage  loggers.UsageRow
	body   []byte // the request, when a row needs it

	pending  []byte // events taken from src but not yet read
	finished bool   // src ended, or failed
	ended    error  // why it ended early; nil when it ended well or the client left
	code     string // the API error code it ended with, if any
	status   int32
	closed   bool
}

// newEventStream makes the body of a streamed answer to ctx from src
// for entity en of ep, copying what the record and usage row need from
// the request (its buffers go back to fasthttp when Handler returns,
// before the stream ends), and sets the response's headers; the caller
// sets the body (ctx.SetBodyStream(s, -1)).
func (a *Activator) newEventStream(ctx *fasthttp.RequestCtx, ep *endpoint, en *entity, src eventSource, done func(), id []byte, start time.Time) *eventStream {
	s := &eventStream{a: a, ep: ep, src: src, done: done, start: start, status: fasthttp.StatusOK,
		grant: takeGrant(ctx), prompt: promptTokens(ctx.PostBody())}
	if ep != nil {
		s.rec = loggers.Record{
			Table: ep.inferenceTable, RequestID: string(id), Endpoint: ep.name, ServedEntity: en.name,
			TimestampMs: start.UnixMilli(), SamplingFraction: 1, Requester: requester(ctx),
			LoggingErrorCodes: guardCodes(ctx),
		}
		if (ep.inferenceTable != "" || ep.usage) && a.cfg.Capture != nil {
			s.body = bytes.Clone(ctx.PostBody())
		}
		s.usage = loggers.UsageRow{RequestID: s.rec.RequestID, TimestampMs: s.rec.TimestampMs, Endpoint: ep.name,
			ServedEntity: en.name, Requester: s.rec.Requester, Streaming: true}
		if ep.output != nil {
			s.guard = newStreamGuard(ep.output)
			if s.body != nil {
				s.sent = &openai.Assembler{}
			}
		}
	}
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetContentType("text/event-stream")
	ctx.Response.Header.Set("Cache-Control", "no-cache")
	return s
}

func (s *eventStream) Read(p []byte) (int, error) {
	for len(s.pending) == 0 {
		if s.finished {
			return 0, io.EOF
		}
		s.step()
	}
	n := copy(p, s.pending)
	if n == len(s.pending) {
		s.pending = s.pending[:0] // the next events reuse the buffer
	} else {
		s.pending = s.pending[n:]
	}
	return n, nil
}

// emit queues one chunk of the answer for the client.
func (s *eventStream) emit(data []byte) {
	if s.sent != nil {
		s.sent.Add(data)
	}
	s.queue(data)
}

// queue queues one event for the client.
func (s *eventStream) queue(data []byte) {
	s.pending = append(s.pending, "data: "...)
	s.pending = append(s.pending, data...)
	s.pending = append(s.pending, "\n\n"...)
}

// step takes the source's next events and queues what the client gets
// for them.
func (s *eventStream) step() {
	events, end, err := s.src.next()
	for _, data := range events {
		if s.guard != nil {
			var gerr error
			if data, gerr = s.guard.chunk(data); gerr != nil {
				s.fail(gerr)
				return
			}
		}
		s.emit(data)
	}
	if err != nil {
		s.fail(err)
		return
	}
	if !end {
		return
	}
	if s.guard != nil {
		last, gerr := s.guard.end()
		if gerr != nil {
			s.fail(gerr)
			return
		}
		if last != nil {
			s.emit(last)
		}
	}
	// The unused tokens go back before the client reads [DONE], so that
	// its next call finds them.
	s.refund()
	s.queue([]byte("[DONE]"))
	s.finished = true
}

// fail ends the stream early with an error event.
func (s *eventStream) fail(err error) {
	s.ended, s.finished = err, true
	s.refund()
	ae := errorOf(err)
	s.status, s.code = int32(api.HTTPStatus(ae.Code)), ae.Code
	b, _ := json.Marshal(map[string]any{"error": map[string]string{"message": ae.Message, "code": ae.Code}})
	s.queue(b)
}

func (s *eventStream) refund() {
	if s.grant != nil {
		answer, used := s.src.answer()
		s.a.refundStream(s.grant, s.prompt, answer, used)
		s.grant = nil
	}
}

// Close ends the call upstream (early, when the client went away) and
// writes the record and the usage row. The record keeps the answer as the
// client got it: with an output guard, only what the guard let through.
func (s *eventStream) Close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	s.src.close()
	s.done()
	if !s.finished {
		// The status was sent; the row says the answer is cut short.
		s.code = "CLIENT_GONE"
	}
	s.refund()
	ep := s.ep
	if ep == nil {
		return nil
	}
	elapsed := time.Since(s.start)
	ep.duration.Observe(elapsed.Seconds())
	// The usage row counts what was generated; the record keeps what was
	// sent.
	generated, _ := s.src.answer()
	answer := generated
	if s.sent != nil {
		answer, _ = s.sent.Answer()
	}
	if s.guard != nil {
		var gb *guardBlocked
		if errors.As(s.ended, &gb) {
			s.rec.LoggingErrorCodes = append(s.rec.LoggingErrorCodes, gb.d.Code("output"))
		}
		if ks := s.guard.kinds(); len(ks) > 0 {
			s.rec.LoggingErrorCodes = append(s.rec.LoggingErrorCodes, guardrail.Decision{Guardrail: "pii", Kinds: ks}.Code("output"))
		}
	}
	if s.code != "" {
		s.rec.LoggingErrorCodes = append(s.rec.LoggingErrorCodes, "STREAM_ERROR:"+s.code)
	}
	if s.body != nil && ep.inferenceTable != "" {
		s.rec.StatusCode, s.rec.ExecutionTimeMs = s.status, elapsed.Milliseconds()
		s.rec.SetBodies(s.body, answer)
		s.a.cfg.Capture.Capture(&s.rec)
	}
	if ep.usage {
		s.usage.StatusCode = s.status
		s.a.trackUsage(ep, s.usage, s.body, generated, true)
	}
	return nil
}

// errorOf is the API error a stream ended with.
func errorOf(err error) *api.Error {
	var xe *external.Error
	if errors.As(err, &xe) {
		return xe.Err
	}
	var gb *guardBlocked
	if errors.As(err, &gb) {
		return gb.err
	}
	var ae *api.Error
	if errors.As(err, &ae) {
		return ae
	}
	return api.Errorf(api.ErrTemporarilyUnavailable, "%v", err)
}

// providerEvents is an external provider's stream as an eventSource.
type providerEvents struct{ s *external.Stream }

func (p providerEvents) next() ([][]byte, bool, error) { return p.s.Next() }
func (p providerEvents) close()                        { p.s.Close() }
func (p providerEvents) answer() ([]byte, *openai.Usage) {
	a := p.s.Answer()
	return a.Body, a.Usage
}

// workerEvents is a served LLM's stream (a replica's server-sent events,
// already in the unified shape) as an eventSource.
type workerEvents struct {
	en   *entity
	resp *fasthttp.Response
	rd   *external.SSEReader
	keep bool // assemble the answer: only when something reads it (a JSON decode per event)
	asm  openai.Assembler
	one  [1][]byte
}

func (w *workerEvents) next() ([][]byte, bool, error) {
	ev, err := w.rd.Next()
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = errors.New("the replica ended the stream before [DONE]")
		}
		return nil, false, api.Errorf(api.ErrTemporarilyUnavailable, "served entity %s: %v", w.en.name, err)
	}
	if string(ev.Data) == "[DONE]" {
		return nil, true, nil
	}
	if e, ok := streamError(ev.Data); ok {
		// The worker's own in-stream error, passed on.
		return nil, false, e
	}
	if w.keep {
		w.asm.Add(ev.Data)
	}
	w.one[0] = ev.Data
	return w.one[:], false, nil
}

func (w *workerEvents) answer() ([]byte, *openai.Usage) { return w.asm.Answer() }

// close closes the stream from the replica early when it has not ended,
// which closes the connection to it and ends the generation there.
func (w *workerEvents) close() {
	w.resp.CloseBodyStream()
	fasthttp.ReleaseResponse(w.resp)
}

// passThrough is a served LLM's stream when nothing reads its events:
// the replica's bytes pass as they come, one chunk per read, unparsed.
type passThrough struct {
	resp   *fasthttp.Response
	stream io.Reader
	done   func()
	closed bool
}

func (p *passThrough) Read(b []byte) (int, error) {
	n, err := p.stream.Read(b)
	if err != nil {
		// A broken stream from the replica ends the client's cleanly too,
		// as an ended one does.
		err = io.EOF
	}
	return n, err
}

func (p *passThrough) Close() error {
	if !p.closed {
		p.closed = true
		p.resp.CloseBodyStream()
		fasthttp.ReleaseResponse(p.resp)
		p.done()
	}
	return nil
}
