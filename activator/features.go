package activator

import (
	"context"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/features"
	"github.com/valyala/fasthttp"
)

// Feature lookup (issue 17) runs here, in the activator, rather than in
// the worker: the route table already names each entity's spec, one Redis
// pool serves every replica behind this activator, a feature-serving
// entity needs no worker (the activator answers, as for external models),
// and a store outage is a 503 before the request takes a replica's slot.

// featurePlan compiles an entity's feature route; an invalid one leaves a
// plan that refuses every request with the reason.
func (a *Activator) featurePlan(endpoint, name string, r *api.FeatureRoute) (*features.Plan, error) {
	p, err := features.Compile(r)
	if err != nil {
		a.log.Error("feature route refused", "endpoint", endpoint, "served_entity", name, "err", err)
	}
	return p, err
}

// lookupFeatures answers a feature-serving entity, or replaces the
// request body with the model's augmented input; it reports whether the
// request goes on to a replica. With keep, a replaced body is returned as
// sent, a copy (fasthttp recycles the body's buffer once replaced), for
// the inference table's log_request_as_sent.
func (a *Activator) lookupFeatures(ctx *fasthttp.RequestCtx, en *entity, deadline time.Time, keep bool) (goOn bool, sent []byte) {
	if en.featureErr != nil {
		fail(ctx, api.ErrTemporarilyUnavailable,
			"served entity %s of endpoint %s: its feature spec cannot be served: %v", en.name, en.endpoint, en.featureErr)
		return false, nil
	}
	if a.cfg.Features == nil {
		fail(ctx, api.ErrTemporarilyUnavailable,
			"served entity %s of endpoint %s looks features up, and this activator has no online store (--online-store)", en.name, en.endpoint)
		return false, nil
	}
	// Not derived from the RequestCtx, which the context package would
	// watch with a goroutine; the store's own timeout is shorter anyway.
	lctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	if en.features.Serving() {
		out, e := en.features.Serve(lctx, ctx.PostBody(), a.cfg.Features)
		if e != nil {
			a.featureFailed(ctx, en, e)
			return false, nil
		}
		ctx.SetStatusCode(fasthttp.StatusOK)
		ctx.SetContentType("application/json")
		ctx.SetBody(out)
		return false, nil // the body was not replaced: it is logged as sent
	}
	out, e := en.features.Augment(lctx, ctx.PostBody(), a.cfg.Features)
	if e != nil {
		a.featureFailed(ctx, en, e)
		return false, nil
	}
	if keep {
		sent = append([]byte(nil), ctx.PostBody()...)
	}
	// The model and the shadows get the augmented request, and so does
	// the inference table unless it logs requests as sent: by default
	// what the model saw is what is logged.
	ctx.Request.SetBodyRaw(out)
	ctx.Request.Header.SetContentType("application/json")
	ctx.Request.Header.Del(fasthttp.HeaderContentEncoding)
	return true, sent
}

func (a *Activator) featureFailed(ctx *fasthttp.RequestCtx, en *entity, e *api.Error) {
	if e.Code == api.ErrTemporarilyUnavailable || e.Code == api.ErrInternal {
		a.log.Warn("feature lookup failed", "endpoint", en.endpoint, "served_entity", en.name, "err", e.Message)
	}
	if e.Code == api.ErrTemporarilyUnavailable {
		ctx.Response.Header.Set(fasthttp.HeaderRetryAfter, "1")
	}
	fail(ctx, e.Code, "%s", e.Message)
}
