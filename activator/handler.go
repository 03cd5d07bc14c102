package activator

import (
	"bytes"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/valyala/fasthttp"
)

// Headers the activator adds to every answer (and forwards the request id).
const (
	headerServedModel = "served-model-name"
	headerRequestID   = "x-request-id"
)

// Handler serves POST /serving-endpoints/{name}/invocations and
// POST /serving-endpoints/{name}/served-models/{served}/invocations; any other
// path gets 404 in API.md's error shape. Every answer carries a fresh
// x-request-id, and served-model-name once a served entity is chosen.
//
// Handler keeps nothing of ctx after it returns: the request body travels to
// the worker by reference and the call ends before Handler does.
func (a *Activator) Handler(ctx *fasthttp.RequestCtx) {
	start := time.Now()
	var id [32]byte
	newRequestID(&id)
	ctx.Response.Header.SetBytesV(headerRequestID, id[:])

	name, served, ok := parsePath(ctx.Path())
	if !ok {
		a.notFound.Inc()
		writeError(ctx, fasthttp.StatusNotFound, errorBody(api.ErrResourceDoesNotExist,
			"no such path %q; invocations go to /serving-endpoints/{name}/invocations", ctx.Path()))
		return
	}
	t := a.table.Load()
	if t == nil {
		a.metrics.requests.WithLabelValues("", "", "503").Inc()
		ctx.Response.Header.Set(fasthttp.HeaderRetryAfter, "1")
		writeError(ctx, fasthttp.StatusServiceUnavailable, errorBody(api.ErrTemporarilyUnavailable,
			"the activator has not received its route table yet; retry later"))
		return
	}
	ep := t.endpoints[string(name)] // the compiler does not copy name for the lookup
	if ep == nil {
		a.notFound.Inc()
		writeError(ctx, fasthttp.StatusNotFound, errorBody(api.ErrResourceDoesNotExist,
			"endpoint %s does not exist", name))
		return
	}
	a.invoke(ctx, ep, served, id[:], start.Add(a.cfg.Timeout))
	ep.duration.Observe(time.Since(start).Seconds())
}

// invoke answers one invocation of ep; served names the entity on the
// served-models path and is nil otherwise.
func (a *Activator) invoke(ctx *fasthttp.RequestCtx, ep *endpoint, served, id []byte, deadline time.Time) {
	var en *entity
	if served != nil {
		if en = ep.entities[string(served)]; en == nil {
			ep.requests.WithLabelValues("404").Inc()
			writeError(ctx, fasthttp.StatusNotFound, errorBody(api.ErrResourceDoesNotExist,
				"served entity %s does not exist in endpoint %s", served, ep.name))
			return
		}
	} else if en = ep.pick(); en == nil {
		ep.requests.WithLabelValues("503").Inc()
		ctx.Response.Header.Set(fasthttp.HeaderRetryAfter, "1")
		writeError(ctx, fasthttp.StatusServiceUnavailable, errorBody(api.ErrTemporarilyUnavailable,
			"endpoint %s routes no traffic to any served entity", ep.name))
		return
	}
	ctx.Response.Header.Set(headerServedModel, en.name)

	switch {
	case !ctx.IsPost():
		// API.md has no code for this; MALFORMED_REQUEST is the nearest.
		ctx.Response.Header.Set(fasthttp.HeaderAllow, fasthttp.MethodPost)
		writeError(ctx, fasthttp.StatusMethodNotAllowed, errorBody(api.ErrMalformedRequest,
			"method %s is not allowed; invocations are POST", ctx.Method()))
	case len(ctx.PostBody()) > a.cfg.MaxRequestBodySize:
		writeError(ctx, fasthttp.StatusRequestEntityTooLarge, errorBody(api.ErrPayloadTooLarge,
			"request body is %d bytes; the limit is %d", len(ctx.PostBody()), a.cfg.MaxRequestBodySize))
	default:
		a.proxy(ctx, en, id, deadline)
	}
	en.requests.inc(ctx.Response.StatusCode())
}

// proxy sends the invocation to the least loaded replica of en and copies
// the answer back. A request whose connection failed (nothing was sent)
// goes once more, to another replica.
func (a *Activator) proxy(ctx *fasthttp.RequestCtx, en *entity, id []byte, deadline time.Time) {
	r := en.pick(nil)
	if r == nil {
		// The cold-start queue slots in here: instead of refusing, wait in
		// en's bounded queue for a replica, poking the autoscaler.
		a.unavailable(ctx, en)
		return
	}

	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.Header.SetMethod(fasthttp.MethodPost)
	req.SetRequestURI("/invocations")
	req.Header.SetContentTypeBytes(ctx.Request.Header.ContentType())
	if ce := ctx.Request.Header.ContentEncoding(); len(ce) > 0 {
		// The body passes untouched, so its encoding must pass too.
		req.Header.SetContentEncodingBytes(ce)
	}
	req.Header.SetBytesV(headerRequestID, id)
	// By reference, not copied: the call ends before Handler returns, and
	// ReleaseRequest drops the reference.
	req.SetBodyRaw(ctx.PostBody())

	en.inFlight.Inc()
	err := a.send(r, req, resp, deadline)
	if err != nil && isDialError(err) {
		if next := en.pick(r); next != nil {
			r = next
			err = a.send(r, req, resp, deadline)
		}
	}
	en.inFlight.Dec()

	switch {
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
		writeError(ctx, fasthttp.StatusGatewayTimeout, errorBody(api.ErrDeadlineExceeded,
			"served entity %s did not answer within %s", en.name, a.cfg.Timeout))
	default:
		a.log.Warn("replica failed", "endpoint", en.endpoint, "served_entity", en.name, "replica", r.addr, "err", err)
		ctx.Response.Header.Set(fasthttp.HeaderRetryAfter, "1")
		writeError(ctx, fasthttp.StatusServiceUnavailable, errorBody(api.ErrTemporarilyUnavailable,
			"served entity %s of endpoint %s: no replica answered; retry later", en.name, en.endpoint))
	}
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

// unavailable refuses a request that no replica of en can take.
func (a *Activator) unavailable(ctx *fasthttp.RequestCtx, en *entity) {
	if en.state != api.DeploymentFailed {
		ctx.Response.Header.Set(fasthttp.HeaderRetryAfter, "1")
	}
	writeError(ctx, fasthttp.StatusServiceUnavailable, en.unavailable)
}

func writeError(ctx *fasthttp.RequestCtx, status int, body []byte) {
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	ctx.SetBody(body)
}

// errorBody is API.md's error shape: {"error_code": ..., "message": ...}.
func errorBody(code, format string, args ...any) []byte {
	b, err := json.Marshal(api.Errorf(code, format, args...))
	if err != nil { // two strings always marshal
		panic(err)
	}
	return b
}

// parsePath splits /serving-endpoints/{name}/invocations and
// /serving-endpoints/{name}/served-models/{served}/invocations. served is nil
// on the first form. The slices point into p.
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
	if string(rest) == tail {
		return name, nil, true
	}
	if rest, ok = bytes.CutPrefix(rest, []byte(models)); !ok {
		return nil, nil, false
	}
	i = bytes.IndexByte(rest, '/')
	if i <= 0 || string(rest[i:]) != tail {
		return nil, nil, false
	}
	return name, rest[:i], true
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
