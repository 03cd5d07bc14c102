package activator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/url"
	"strconv"
	"time"

	"github.com/gantry/gantry/activator/queue"
	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/internal/apierr"
	"github.com/gantry/gantry/loggers"
	"github.com/valyala/fasthttp"
)

// Headers the activator adds to every answer (and forwards the request id),
// and the one that makes a client's requests stick to one served entity.
const (
	headerServedModel = "served-model-name"
	headerRequestID   = "x-request-id"
	headerStickyKey   = "X-Gantry-Sticky-Key"
	// headerWorkerSecret carries a deployment's worker secret to its
	// replicas (worker.SecretHeader), which answer nothing without it.
	headerWorkerSecret = "X-Gantry-Worker-Secret"
	// headerTask tells an LLM worker the task of an invocation that came
	// by an OpenAI SDK path (worker.TaskHeader): chat/completions,
	// completions or embeddings.
	headerTask = "X-Gantry-Task"
)

// maxMoves bounds how often a held request follows its served entity to a
// new deployment (a config update) before it is refused.
const maxMoves = 3

// Handler serves POST /serving-endpoints/{name}/invocations and
// POST /serving-endpoints/{name}/served-models/{served}/invocations, and the
// Open Inference Protocol under /v2/ (oip.go); any other path gets 404 in
// API.md's error shape. Every answer carries a fresh
// x-request-id, and served-model-name once a served entity is chosen.
//
// Handler keeps nothing of ctx after it returns: the request body travels to
// the worker by reference and the call ends before Handler does.
func (a *Activator) Handler(ctx *fasthttp.RequestCtx) {
	start := time.Now()
	var id [32]byte
	newRequestID(&id)
	ctx.Response.Header.SetBytesV(headerRequestID, id[:])

	// The path as sent, not ctx.Path(): fasthttp decodes that one and then
	// removes dot segments, so /serving-endpoints/other/..%2fep/invocations
	// would reach ep, past anything that judged the request by the
	// endpoint named in its URL. parsePath decodes segment by segment.
	raw := ctx.URI().PathOriginal()
	if bytes.HasPrefix(raw, v2Prefix) {
		a.oip(ctx, raw, start, id[:])
		return
	}
	name, served, ok := parsePath(raw)
	if !ok {
		if task, ok := openAIPaths[string(raw)]; ok {
			a.openAI(ctx, task, id[:], start)
			return
		}
		a.notFound.Inc()
		fail(ctx, api.ErrResourceDoesNotExist,
			"no such path %q; invocations go to /serving-endpoints/{name}/invocations", clip(raw))
		return
	}
	t := a.table.Load()
	if t == nil {
		a.metrics.requests.WithLabelValues("", "", "503").Inc()
		fail(ctx, api.ErrTemporarilyUnavailable,
			"the activator has not received its route table yet; retry later")
		return
	}
	// The token is checked before the endpoint is looked up and before
	// the body is read: a caller without a valid token costs its headers
	// and a hash, and an endpoint it may not view answers as a missing one.
	if !a.authorized(ctx, name) {
		return
	}
	ep := t.endpoints[string(name)] // the compiler does not copy name for the lookup
	if ep == nil {
		a.notFound.Inc()
		fail(ctx, api.ErrResourceDoesNotExist,
			"endpoint %s does not exist", clip(name))
		return
	}
	// The body is read only now, for an endpoint that exists: a request
	// for any other costs no more than its headers.
	release, ok := a.readBody(ctx)
	defer release() // after capture and mirror, which read the body
	a.serve(ctx, ep, served, id[:], start, ok)
}

// serve invokes ep with the body in ctx when ok (when not, ctx holds the
// answer already), then times, captures and mirrors the request. The
// Open Inference Protocol's infer comes here too, its body translated.
func (a *Activator) serve(ctx *fasthttp.RequestCtx, ep *endpoint, served, id []byte, start time.Time, ok bool) {
	forwarded := false
	var sent []byte // the body as sent, when a lookup replaced it and ep logs it so
	if ok && len(ep.limits) > 0 {
		var g *api.RateLimitGrant
		if g, ok = a.limit(ctx, ep); g != nil {
			defer a.refund(ctx, g)
		}
	}
	if ok {
		forwarded, sent = a.invoke(ctx, ep, served, id, start.Add(a.cfg.Timeout))
	} else {
		ep.requests.WithLabelValues(strconv.Itoa(ctx.Response.StatusCode())).Inc()
	}
	if len(ep.shadows) > 0 && served == nil && forwarded {
		// Last, after the client's record; and for a stream too, whose
		// answer its writer sends after Handler returns (mirror copies
		// the body now).
		defer a.mirror(ctx, ep, id, sent)
	}
	if ctx.Response.IsBodyStream() {
		return // an LLM's stream: its writer records it when it ends
	}
	elapsed := time.Since(start)
	ep.duration.Observe(elapsed.Seconds())
	if ep.inferenceTable != "" && a.cfg.Capture != nil {
		a.capture(ctx, ep, id, start, elapsed, sent)
	}
	if ep.usage {
		en := ep.entities[string(ctx.Response.Header.Peek(headerServedModel))]
		a.trackUsage(ep, usageOf(ctx, ep, id, start), ctx.PostBody(), ctx.Response.Body(), en != nil && (en.external != nil || en.task != ""))
	}
}

// firstChunk is the most buffer a streamed body gets before its first
// bytes arrive; it doubles from there as they do, up to the declared length.
const firstChunk = 64 << 10

// readBody makes ctx.PostBody() the whole request body, or answers the
// request and reports false. release, to call once nothing reads the body
// any more, gives its bytes back to Config.MaxBufferedBytes.
//
// Under a fasthttp server with StreamRequestBody, the body is read here:
// a Content-Length over Config.MaxRequestBodySize gets 413 before a byte
// is read; otherwise the body is read as it arrives into a buffer that
// doubles as it fills, each growth counted against MaxBufferedBytes before
// it is allocated, so memory follows the bytes clients send, not the ones
// they claim. The server's read deadline bounds a client that trickles.
// Under a server without StreamRequestBody, fasthttp has read the body
// already and it is only counted.
func (a *Activator) readBody(ctx *fasthttp.RequestCtx) (release func(), ok bool) {
	limit := a.cfg.MaxRequestBodySize
	if !ctx.Request.IsBodyStream() {
		n := int64(len(ctx.PostBody()))
		if n > int64(limit) {
			a.tooLarge(ctx, len(ctx.PostBody()))
			return noRelease, false
		}
		if !a.charge(ctx, n) {
			return noRelease, false
		}
		return func() { a.buffered.Add(-n) }, true
	}
	declared := ctx.Request.Header.ContentLength() // -1: chunked
	if declared > limit {
		a.tooLarge(ctx, declared)
		ctx.SetConnectionClose() // the client may be sending it still
		return noRelease, false
	}
	// Room up to which the buffer grows: the declared length, or one byte
	// over the limit for a chunked body, to see that it is over.
	room := limit + 1
	if declared >= 0 {
		room = declared
	}
	var buf []byte
	var charged int64
	fail := func() (func(), bool) {
		a.buffered.Add(-charged)
		ctx.SetConnectionClose() // the rest of the body may be on its way
		return noRelease, false
	}
	stream := ctx.RequestBodyStream()
	for len(buf) < room {
		if len(buf) == cap(buf) {
			size := min(max(2*cap(buf), firstChunk), room)
			if !a.charge(ctx, int64(size-cap(buf))) {
				return fail()
			}
			charged += int64(size - cap(buf))
			grown := make([]byte, len(buf), size)
			copy(grown, buf)
			buf = grown
		}
		n, err := stream.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			a.unreadable(ctx, err)
			return fail()
		}
	}
	if len(buf) > limit {
		a.tooLarge(ctx, -1)
		// Read (and drop) a little more of what the client still sends:
		// closing a connection with unread bytes resets it, and a client
		// still writing then sees the reset instead of the 413.
		io.CopyN(io.Discard, stream, lingerBytes)
		return fail()
	}
	if declared >= 0 && len(buf) < declared {
		a.unreadable(ctx, io.ErrUnexpectedEOF)
		return fail()
	}
	ctx.Request.SetBodyRaw(buf)
	return func() { a.buffered.Add(-charged) }, true
}

func noRelease() {}

// lingerBytes bounds what is read and dropped after a body is refused as
// too large, so that a client slightly over the limit gets the 413.
const lingerBytes = 1 << 20

// charge counts n bytes of body against Config.MaxBufferedBytes, or
// answers 503 and reports false when they do not fit.
func (a *Activator) charge(ctx *fasthttp.RequestCtx, n int64) bool {
	if a.buffered.Add(n) <= a.cfg.MaxBufferedBytes {
		return true
	}
	a.buffered.Add(-n)
	fail(ctx, api.ErrTemporarilyUnavailable,
		"the activator holds %d bytes of request bodies, its limit; retry later", a.cfg.MaxBufferedBytes)
	return false
}

// tooLarge answers 413 for a body of size bytes, -1 when it was chunked
// and only known to be over.
func (a *Activator) tooLarge(ctx *fasthttp.RequestCtx, size int) {
	if size < 0 {
		fail(ctx, api.ErrPayloadTooLarge,
			"request body is over the limit of %d bytes", a.cfg.MaxRequestBodySize)
		return
	}
	fail(ctx, api.ErrPayloadTooLarge,
		"request body is %d bytes; the limit is %d", size, a.cfg.MaxRequestBodySize)
}

// unreadable answers a request whose body could not be read: the client
// went away, broke the chunked encoding, or was slower than the server's
// read deadline. The message names which, never what was read.
func (a *Activator) unreadable(ctx *fasthttp.RequestCtx, err error) {
	ctx.SetConnectionClose() // the connection is at an unknown place in the body
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		apierr.WithStatus(fasthttp.StatusRequestTimeout, api.Errorf(api.ErrMalformedRequest,
			"the request body did not arrive in time; send it faster, or smaller")).WriteFast(ctx)
		return
	}
	fail(ctx, api.ErrMalformedRequest,
		"the request body could not be read to its end (the connection ended, or its chunked encoding is broken)")
}

// capture hands the record of an answered invocation to Config.Capture,
// which copies what it keeps. sent, when not nil, is the request to log
// instead of the body (the request as sent, before a feature lookup).
func (a *Activator) capture(ctx *fasthttp.RequestCtx, ep *endpoint, id []byte, start time.Time, elapsed time.Duration, sent []byte) {
	r := loggers.Record{
		Table:            ep.inferenceTable,
		RequestID:        string(id),
		Endpoint:         ep.name,
		ServedEntity:     string(ctx.Response.Header.Peek(headerServedModel)),
		TimestampMs:      start.UnixMilli(),
		StatusCode:       int32(ctx.Response.StatusCode()),
		ExecutionTimeMs:  elapsed.Milliseconds(),
		SamplingFraction: 1,
		Requester:        requester(ctx),
	}
	r.LoggingErrorCodes = guardCodes(ctx)
	body := ctx.PostBody()
	if sent != nil {
		body = sent
	}
	r.SetBodies(body, ctx.Response.Body())
	a.cfg.Capture.Capture(&r)
}

// invoke answers one invocation of ep; served names the entity on the
// served-models path and is nil otherwise. It reports whether the request
// was valid and went on to a served entity (served or refused there), the
// requests that shadow routes mirror. sent is the request as the client
// sent it when a feature lookup replaced the body and ep logs requests as
// sent; nil otherwise.
func (a *Activator) invoke(ctx *fasthttp.RequestCtx, ep *endpoint, served, id []byte, deadline time.Time) (forwarded bool, sent []byte) {
	var en *entity
	var key []byte
	if served != nil {
		if en = ep.entities[string(served)]; en == nil {
			ep.requests.WithLabelValues("404").Inc()
			fail(ctx, api.ErrResourceDoesNotExist,
				"served entity %s does not exist in endpoint %s", served, ep.name)
			return false, nil
		}
	} else {
		key = stickyKey(ctx, ep)
		if en = ep.pick(key, a.intN); en == nil {
			ep.requests.WithLabelValues("503").Inc()
			fail(ctx, api.ErrTemporarilyUnavailable,
				"endpoint %s routes no traffic to any served entity", ep.name)
			return false, nil
		}
	}
	ctx.Response.Header.Set(headerServedModel, en.name)

	lookup := en.features != nil || en.featureErr != nil
	if lookup && ctx.IsPost() {
		var goOn bool
		if goOn, sent = a.lookupFeatures(ctx, en, deadline, ep.asSent && ep.inferenceTable != ""); !goOn {
			// Answered here: a feature-serving entity's outputs, or why
			// the lookup failed.
			en.requests.inc(ctx.Response.StatusCode())
			return false, sent
		}
		// A successful lookup of a model's features has replaced the
		// body, and the request goes on below.
	}
	switch {
	case !ctx.IsPost():
		// API.md has no code for this; MALFORMED_REQUEST is the nearest.
		ctx.Response.Header.Set(fasthttp.HeaderAllow, fasthttp.MethodPost)
		apierr.WithStatus(fasthttp.StatusMethodNotAllowed, api.Errorf(api.ErrMalformedRequest,
			"method %s is not allowed; invocations are POST", ctx.Method())).WriteFast(ctx)
	case en.external != nil:
		// Handler set deadline to its start plus Timeout.
		forwarded = a.callExternal(ctx, ep, en, "", id, deadline.Add(-a.cfg.Timeout))
	case en.task != "":
		forwarded = a.invokeLLM(ctx, ep, en, "", id, deadline)
	default:
		en = a.proxy(ctx, en, "", served != nil, key, id, deadline)
		forwarded = true
	}
	en.requests.inc(ctx.Response.StatusCode())
	return forwarded, sent
}

// stickyKey is what pins a request to one served entity: the
// X-Gantry-Sticky-Key header, else the body's client_request_id. Only an
// endpoint that splits its traffic looks into the body.
func stickyKey(ctx *fasthttp.RequestCtx, ep *endpoint) []byte {
	if k := ctx.Request.Header.Peek(headerStickyKey); len(k) > 0 {
		return k
	}
	if len(ep.split) < 2 {
		return nil
	}
	if id := loggers.ClientRequestID(ctx.PostBody()); id != "" {
		return []byte(id)
	}
	return nil
}

// proxy sends the invocation to the replica of en with the fewest requests
// in flight among those with a free slot, waiting in en's queue when none
// has one, and copies the answer back.
//
// A waiting request parks its goroutine here, so the frames below wait are
// kept small, and the big ones (forward, refuse) come after the wait: with
// 10,000 requests held, each kilobyte of parked stack is 10 MB.
//
// A request held by an entity whose deployment leaves the route table (a
// config update switched to a new one) moves to the entity that now takes
// its place: the same name when pinned (the served-models path), else a
// new pick with the same sticky key. proxy returns the entity that
// answered.
func (a *Activator) proxy(ctx *fasthttp.RequestCtx, en *entity, task string, pinned bool, key, id []byte, deadline time.Time) *entity {
	for moves := 0; ; moves++ {
		r, release, ok := en.pool.breaker.Reserve(ctx)
		if !ok {
			cold := en.ready == 0
			var since time.Time
			if cold {
				a.poke(en.pool)
				since = a.cfg.Clock()
			}
			var err error
			r, release, err = a.wait(en, int64(len(ctx.PostBody())), deadline)
			if cold && !errors.Is(err, queue.ErrQueueFull) {
				// A cold start lasts until the answer, served or not; a
				// request refused at once never waited.
				defer a.coldStart(en.pool, since)
			}
			if err != nil {
				if next := a.relocate(en, pinned, key, err); next != nil && moves < maxMoves {
					en = next
					ctx.Response.Header.Set(headerServedModel, en.name)
					continue
				}
				a.refuse(ctx, en, cold, deadline, err)
				return en
			}
		}
		a.forward(ctx, en, task, r, release, id, deadline)
		return en
	}
}

// relocate finds where a request goes whose wait at en ended with err
// because en's deployment left the route table; nil when err is any other
// end or nothing took en's place.
func (a *Activator) relocate(en *entity, pinned bool, key []byte, err error) *entity {
	var refused *refusal
	if !errors.As(err, &refused) || !refused.removed {
		return nil
	}
	ep := a.table.Load().endpoints[en.endpoint]
	if ep == nil {
		return nil
	}
	next := ep.entities[en.name]
	if !pinned {
		next = ep.pick(key, a.intN)
	}
	if next == nil || next.pool == en.pool {
		return nil
	}
	return next
}

// forward sends the invocation to r, on a slot that release gives back, and
// copies the answer back. task, when set, tells r's worker the task of a
// request that came by an OpenAI path (headerTask); a client's own header
// never passes. A request whose connection failed (nothing was
// sent) goes once more, to another replica with a free slot.
func (a *Activator) forward(ctx *fasthttp.RequestCtx, en *entity, task string, r *replica, release func(), id []byte, deadline time.Time) {
	breaker := en.pool.breaker
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	streamed := false // resp, the slot and inFlight then belong to the stream writer
	defer func() {
		if !streamed {
			fasthttp.ReleaseResponse(resp)
		}
	}()
	// An LLM request that asks for a stream gets its answer as it is
	// generated: the worker's body is read as it arrives (relay, llm.go),
	// not whole. Only such requests take the streaming path, so that every
	// other answer keeps its one buffer swap.
	resp.StreamBody = asksStream(ctx.PostBody())
	req.Header.SetMethod(fasthttp.MethodPost)
	req.SetRequestURI("/invocations")
	req.Header.SetContentTypeBytes(ctx.Request.Header.ContentType())
	if ce := ctx.Request.Header.ContentEncoding(); len(ce) > 0 {
		// The body passes untouched, so its encoding must pass too.
		req.Header.SetContentEncodingBytes(ce)
	}
	req.Header.SetBytesV(headerRequestID, id)
	if en.secret != nil {
		req.Header.SetBytesV(headerWorkerSecret, en.secret)
	}
	if task != "" {
		req.Header.Set(headerTask, task)
	}
	// By reference, not copied: the call ends before Handler returns, and
	// ReleaseRequest drops the reference.
	req.SetBodyRaw(ctx.PostBody())

	en.inFlight.Inc()
	err := a.send(r, req, resp, deadline)
	if err != nil && isDialError(err) {
		// r is penalized now, so the pick prefers any other replica; it
		// only retries if one has a free slot at once (and nobody waits),
		// since a second wait could outlast the client's patience. The
		// retry counts as one more request in Stats.
		release()
		release = nil
		if next, rel, ok := breaker.Reserve(ctx); ok {
			if next == r {
				rel()
			} else {
				r, release = next, rel
				err = a.send(r, req, resp, deadline)
			}
		}
	}
	if err == nil && resp.BodyStream() != nil && isEventStream(resp.Header.ContentType()) {
		streamed = true
		// The stream's writer holds the slot, the in-flight count and
		// resp until the stream ends (llm.go).
		a.relay(ctx, en, resp, func() {
			if release != nil {
				release()
			}
			en.inFlight.Dec()
		}, id, deadline.Add(-a.cfg.Timeout))
		return
	}
	if release != nil {
		release()
	}
	en.inFlight.Dec()

	switch {
	case err == nil && resp.BodyStream() != nil:
		// Asked for a stream, answered whole (an error, or a runtime that
		// does not stream): read it all, as any other answer.
		ctx.SetStatusCode(resp.StatusCode())
		ctx.Response.Header.SetContentTypeBytes(resp.Header.ContentType())
		if ce := resp.Header.ContentEncoding(); len(ce) > 0 {
			ctx.Response.Header.SetContentEncodingBytes(ce)
		}
		ctx.Response.SetBody(resp.Body())
	case err == nil:
		ctx.SetStatusCode(resp.StatusCode())
		ctx.Response.Header.SetContentTypeBytes(resp.Header.ContentType())
		if ce := resp.Header.ContentEncoding(); len(ce) > 0 {
			ctx.Response.Header.SetContentEncodingBytes(ce)
		}
		// Trade body buffers instead of copying: resp goes back to its pool
		// with ctx's old (empty) buffer.
		ctx.Response.SwapBody(resp.SwapBody(ctx.Response.SwapBody(nil)))
	case errors.Is(err, fasthttp.ErrTimeout):
		fail(ctx, api.ErrDeadlineExceeded,
			"served entity %s did not answer within %s", en.name, a.cfg.Timeout)
	default:
		a.log.Warn("replica failed", "endpoint", en.endpoint, "served_entity", en.name, "replica", r.addr, "err", err)
		fail(ctx, api.ErrTemporarilyUnavailable,
			"served entity %s of endpoint %s: no replica answered; retry later", en.name, en.endpoint)
	}
}

// asksStream reports whether an invocation body asks for a streamed
// answer ("stream": true, the OpenAI field). The substring test keeps the
// cost off every other body; the decode is for the few that mention it.
func asksStream(body []byte) bool {
	if !bytes.Contains(body, []byte(`"stream"`)) {
		return false
	}
	var b struct {
		Stream bool `json:"stream"`
	}
	return json.Unmarshal(body, &b) == nil && b.Stream
}

func isEventStream(ct []byte) bool {
	return bytes.HasPrefix(ct, []byte("text/event-stream"))
}

// wait holds a request that found no free slot in en's queue until a slot
// is its own, or until the queue timeout or deadline, whichever is first.
// cost is the request's body size. It returns the breaker's error.
//
// The wait runs on the request's own goroutine: a held request costs its
// connection, a parked goroutine and a queue entry, and its body stays in
// fasthttp's buffer (QueueBytes counts it). fasthttp does not report a
// client that hangs up, so such a request waits on like any other.
func (a *Activator) wait(en *entity, cost int64, deadline time.Time) (*replica, func(), error) {
	until := time.Now().Add(a.cfg.QueueTimeout)
	if deadline.Before(until) {
		until = deadline
	}
	// Not derived from the RequestCtx: it is a context that the context
	// package would watch with a goroutine per held request.
	ctx, cancel := context.WithDeadline(context.Background(), until)
	defer cancel()
	return en.pool.breaker.Acquire(ctx, cost)
}

// refuse answers a request whose wait for a slot failed with err. cold says
// that en had no ready replica when the request arrived.
func (a *Activator) refuse(ctx *fasthttp.RequestCtx, en *entity, cold bool, deadline time.Time, err error) {
	var refused *refusal
	switch {
	case errors.Is(err, queue.ErrQueueFull):
		en.queueFull.WriteFast(ctx)
	case errors.As(err, &refused):
		refused.answer.WriteFast(ctx)
	case errors.Is(err, context.DeadlineExceeded) && !time.Now().Before(deadline):
		fail(ctx, api.ErrDeadlineExceeded,
			"served entity %s of endpoint %s did not answer within %s", en.name, en.endpoint, a.cfg.Timeout)
	case errors.Is(err, context.DeadlineExceeded) && cold:
		fail(ctx, api.ErrDeadlineExceeded,
			"served entity %s of endpoint %s did not become ready within the queue timeout (%s, state %s); retry later",
			en.name, en.endpoint, a.cfg.QueueTimeout, stateOrUnknown(en.state))
	case errors.Is(err, context.DeadlineExceeded):
		fail(ctx, api.ErrDeadlineExceeded,
			"no replica of served entity %s of endpoint %s had a free slot within the queue timeout (%s); retry later",
			en.name, en.endpoint, a.cfg.QueueTimeout)
	default:
		a.log.Error("waiting for a replica slot", "endpoint", en.endpoint, "served_entity", en.name, "err", err)
		fail(ctx, api.ErrInternal,
			"served entity %s of endpoint %s: %v", en.name, en.endpoint, err)
	}
}

// coldStart observes the time since a cold start's request arrived.
func (a *Activator) coldStart(p *pool, since time.Time) {
	p.coldStart.Observe(a.cfg.Clock().Sub(since).Seconds())
}

// send makes one attempt on r. A failed connection penalizes r; a timeout
// does not, since a slow model is no sign of a broken replica.
func (a *Activator) send(r *replica, req *fasthttp.Request, resp *fasthttp.Response, deadline time.Time) error {
	err := r.DoDeadline(req, resp, deadline)
	if err != nil && !errors.Is(err, fasthttp.ErrTimeout) {
		r.penalize(a.penalty)
	}
	return err
}

func stateOrUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// fail answers with API.md's error of code, with the status of its code.
func fail(ctx *fasthttp.RequestCtx, code, format string, args ...any) {
	apierr.WriteFast(ctx, api.Errorf(code, format, args...))
}

// errorBody is API.md's error body, for answers that are not written to
// a client (a shadow's, which goes to the inference table).
func errorBody(code, format string, args ...any) []byte {
	return apierr.For(api.Errorf(code, format, args...)).Body
}

// parsePath splits /serving-endpoints/{name}/invocations and
// /serving-endpoints/{name}/served-models/{served}/invocations. p is the
// path as sent (fasthttp's URI.PathOriginal): it is split on its slashes
// first and each segment decoded after, so an encoded slash or dot stays
// inside its segment, where no endpoint name can match it. Dot segments are
// not removed: /serving-endpoints/x/../y/invocations matches nothing. served
// is nil on the first form. name and served point into p unless they held
// an escape; an invalid escape matches nothing.
func parsePath(p []byte) (name, served []byte, ok bool) {
	const prefix, models, tail = "/serving-endpoints/", "/served-models/", "/invocations"
	rest, ok := bytes.CutPrefix(p, []byte(prefix))
	if !ok {
		return nil, nil, false
	}
	i := bytes.IndexByte(rest, '/')
	if i <= 0 {
		return nil, nil, false
	}
	name, rest = rest[:i], rest[i:]
	if string(rest) != tail {
		if rest, ok = bytes.CutPrefix(rest, []byte(models)); !ok {
			return nil, nil, false
		}
		i = bytes.IndexByte(rest, '/')
		if i <= 0 || string(rest[i:]) != tail {
			return nil, nil, false
		}
		if served, ok = unescapeSegment(rest[:i]); !ok {
			return nil, nil, false
		}
	}
	if name, ok = unescapeSegment(name); !ok {
		return nil, nil, false
	}
	return name, served, true
}

// unescapeSegment decodes the %XX escapes of one path segment. Without
// escapes, the common case, it returns seg itself.
func unescapeSegment(seg []byte) ([]byte, bool) {
	if bytes.IndexByte(seg, '%') < 0 {
		return seg, true
	}
	s, err := url.PathUnescape(string(seg))
	if err != nil || s == "" {
		return nil, false
	}
	return []byte(s), true
}

// clip shortens what a client sent before an error message quotes it: a
// name or path is at most a few KiB (the header buffer), and an answer
// that repeats it in full only feeds whoever sent it.
func clip(b []byte) string {
	const max = 128
	if len(b) <= max {
		return string(b)
	}
	return string(b[:max]) + "…"
}

// newRequestID writes 128 random bits as hex. math/rand/v2's global source
// is per-thread ChaCha8 state in the runtime: no lock, a few nanoseconds.
func newRequestID(id *[32]byte) {
	const digits = "0123456789abcdef"
	hi, lo := rand.Uint64(), rand.Uint64()
	for i := 15; i >= 0; i-- {
		id[i] = digits[hi&15]
		hi >>= 4
		id[i+16] = digits[lo&15]
		lo >>= 4
	}
}
