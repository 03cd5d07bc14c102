package activator

import (
	"bytes"
	"context"
	"errors"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/external"
	"github.com/gantry/gantry/internal/apierr"
	"github.com/gantry/gantry/loggers"
	"github.com/gantry/gantry/openai"
	"github.com/valyala/fasthttp"
)

// maxShadowInFlight bounds the mirrored requests in flight at once. Each
// holds a copy of its body, at most loggers.MaxBodySize (larger requests
// are not mirrored), so mirrors hold at most 256 MiB; past the bound they
// are skipped (and counted), never waited for.
const maxShadowInFlight = 256

// mirror sends a copy of the request to each shadow route of ep whose draw
// hits. The copies run on goroutines of their own after the real answer is
// written: the client never waits for them and never sees their answers,
// which go to the inference table.
func (a *Activator) mirror(ctx *fasthttp.RequestCtx, ep *endpoint, id, sent []byte) {
	if len(ctx.PostBody()) > loggers.MaxBodySize {
		return
	}
	who := requester(ctx) // the mirror is the caller's request too
	for _, s := range ep.shadows {
		if a.intN(100) >= s.percent {
			continue
		}
		select {
		case a.shadowSlots <- struct{}{}:
		default:
			a.metrics.shadowSkipped.Inc()
			continue
		}
		shadowID := string(id) + loggers.ShadowSuffix
		if s.en.external != nil {
			// No replicas: the mirror calls the entity's provider. The
			// copy is needed: ctx is reused once Handler returns.
			a.shadows.Add(1)
			go a.shadowExternal(ep, s.en, bytes.Clone(ctx.PostBody()), shadowID, who)
			continue
		}
		req := fasthttp.AcquireRequest()
		req.Header.SetMethod(fasthttp.MethodPost)
		req.SetRequestURI("/invocations")
		req.Header.SetContentTypeBytes(ctx.Request.Header.ContentType())
		if ce := ctx.Request.Header.ContentEncoding(); len(ce) > 0 {
			req.Header.SetContentEncodingBytes(ce)
		}
		req.Header.Set(headerRequestID, shadowID)
		if s.en.secret != nil {
			req.Header.SetBytesV(headerWorkerSecret, s.en.secret)
		}
		req.SetBody(ctx.PostBody()) // a copy: ctx is reused once Handler returns
		a.shadows.Add(1)
		go a.shadowInvoke(ep, s.en, req, sent, shadowID, who)
	}
}

// WaitShadows waits until the mirrored requests in flight are answered and
// captured, or ctx ends. A server shutting down calls it after the last
// real answer and before it stops capturing.
func (a *Activator) WaitShadows(ctx context.Context) error {
	done := make(chan struct{})
	go func() { a.shadows.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// shadowInvoke sends req to en and records the answer; requester is the
// caller of the request mirrored, and sent, when not nil, the request to
// log in place of req's body (the request as sent, before a lookup; it is
// the handler's own copy, which outlives it).
func (a *Activator) shadowInvoke(ep *endpoint, en *entity, req *fasthttp.Request, sent []byte, id, requester string) {
	defer a.shadows.Done()
	defer func() { <-a.shadowSlots }()
	defer fasthttp.ReleaseRequest(req)
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)

	start := time.Now()
	a.sendToReplica(en, req, resp, start.Add(a.cfg.Timeout), "shadow")
	en.requests.inc(resp.StatusCode())
	if ep.inferenceTable == "" || a.cfg.Capture == nil {
		return
	}
	status, answer := resp.StatusCode(), resp.Body()
	var codes []string
	if en.task != "" && ep.output != nil && status == fasthttp.StatusOK {
		status, answer, codes = guardShadowAnswer(ep, answer, isEventStream(resp.Header.ContentType()))
	}
	body := req.Body()
	if sent != nil {
		body = sent
	}
	a.captureShadow(ep, en, id, requester, start, status, codes, body, answer)
}

// captureShadow records a shadow's answer in ep's inference table, alike
// whether a replica (shadowInvoke) or a provider (shadowExternal) gave
// it; start is when the shadow was sent.
func (a *Activator) captureShadow(ep *endpoint, en *entity, id, requester string, start time.Time, status int, codes []string, body, answer []byte) {
	r := loggers.Record{
		Table:             ep.inferenceTable,
		RequestID:         id,
		Endpoint:          ep.name,
		ServedEntity:      en.name,
		TimestampMs:       start.UnixMilli(),
		StatusCode:        int32(status),
		ExecutionTimeMs:   time.Since(start).Milliseconds(),
		SamplingFraction:  1,
		Shadow:            true,
		Requester:         requester,
		LoggingErrorCodes: codes,
	}
	r.SetBodies(body, answer)
	a.cfg.Capture.Capture(&r)
}

// guardShadowAnswer applies ep's output guardrails to the answer of a
// served LLM entity's shadow, as to the client's (shadowExternal does the
// same for external ones), so that the inference table holds no more
// than a client would have seen; a stream, read whole, is assembled into
// one answer first, as a client's stream is for its record. It returns the
// status and answer to record and the decisions.
func guardShadowAnswer(ep *endpoint, answer []byte, stream bool) (int, []byte, []string) {
	if stream {
		var asm openai.Assembler
		rd := external.NewSSEReader(bytes.NewReader(answer))
		for {
			ev, err := rd.Next()
			if err != nil || string(ev.Data) == "[DONE]" {
				break
			}
			asm.Add(ev.Data)
		}
		answer, _ = asm.Answer()
	}
	var gctx fasthttp.RequestCtx // the decisions' notes; never sent
	out, err := guardAnswer(&gctx, ep, answer)
	if err != nil {
		ans := apierr.For(err)
		return ans.Status, ans.Body, guardCodes(&gctx)
	}
	return fasthttp.StatusOK, out, guardCodes(&gctx)
}

// shadowExternal calls external entity en's provider with a mirrored
// body and records the answer, as shadowInvoke does for a model's
// replicas. The endpoint's guardrails apply as they do to the client's
// call (the input's PII masked before the provider sees it, the answer's
// before the inference table does); a stream is read to its end and
// recorded as its assembled answer. A shadow never falls back: its answer
// is what the shadow entity says.
func (a *Activator) shadowExternal(ep *endpoint, en *entity, body []byte, id, requester string) {
	defer a.shadows.Done()
	defer func() { <-a.shadowSlots }()
	start := time.Now()
	// The guardrails note their decisions on a RequestCtx; this one is
	// the shadow's own, never sent.
	var gctx fasthttp.RequestCtx
	status, answer := a.shadowCall(&gctx, ep, en, body, start.Add(a.cfg.Timeout))
	en.requests.inc(status)
	if ep.inferenceTable == "" || a.cfg.Capture == nil {
		return
	}
	a.captureShadow(ep, en, id, requester, start, status, guardCodes(&gctx), body, answer)
}

// shadowCall makes shadowExternal's call and returns its status and body.
func (a *Activator) shadowCall(gctx *fasthttp.RequestCtx, ep *endpoint, en *entity, body []byte, deadline time.Time) (int, []byte) {
	req, err := external.Decode(en.external.Task, body)
	if err != nil {
		ans := apierr.For(err)
		return ans.Status, ans.Body
	}
	if !guardInput(gctx, ep, req) {
		return gctx.Response.StatusCode(), gctx.Response.Body()
	}
	cctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	en.inFlight.Inc()
	defer en.inFlight.Dec()
	var ans external.Answer
	if req.Stream {
		var s *external.Stream
		if s, err = a.cfg.External.Open(cctx, en.external, req); err == nil {
			ans, err = s.Run(func([]byte) error { return nil })
		}
	} else {
		ans, err = a.cfg.External.Call(cctx, en.external, req)
	}
	if err != nil {
		ae := errorOf(err)
		var xe *external.Error
		status := api.HTTPStatus(ae.Code)
		if errors.As(err, &xe) {
			status = xe.Status
		}
		return status, apierr.For(ae).Body
	}
	out, gerr := guardAnswer(gctx, ep, ans.Body)
	if gerr != nil {
		ans := apierr.For(gerr)
		return ans.Status, ans.Body
	}
	return fasthttp.StatusOK, out
}

// sendToReplica is forward for a request the activator makes itself (a
// mirrored request, a question to a served judge; who says which, in the
// errors): it waits for a slot like a client's request (so an entity at
// zero wakes up), but answers into resp instead of a client's connection,
// and never retries.
func (a *Activator) sendToReplica(en *entity, req *fasthttp.Request, resp *fasthttp.Response, deadline time.Time, who string) {
	r, release, ok := en.pool.breaker.Reserve(context.Background())
	if !ok {
		if en.ready == 0 {
			a.poke(en.pool)
		}
		var err error
		if r, release, err = a.wait(en, int64(len(req.Body())), deadline); err != nil {
			resp.SetStatusCode(fasthttp.StatusServiceUnavailable)
			resp.SetBody(errorBody(api.ErrTemporarilyUnavailable, "%s of served entity %s: %v", who, en.name, err))
			return
		}
	}
	en.inFlight.Inc()
	err := a.send(r, req, resp, deadline)
	release()
	en.inFlight.Dec()
	switch {
	case errors.Is(err, fasthttp.ErrTimeout):
		resp.SetStatusCode(fasthttp.StatusGatewayTimeout)
		resp.SetBody(errorBody(api.ErrDeadlineExceeded, "%s of served entity %s did not answer within its deadline", who, en.name))
	case err != nil:
		resp.SetStatusCode(fasthttp.StatusServiceUnavailable)
		resp.SetBody(errorBody(api.ErrTemporarilyUnavailable, "%s of served entity %s: %v", who, en.name, err))
	}
}
