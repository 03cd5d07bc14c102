package activator

import (
	"context"
	"net/http"
	"time"
	"unsafe"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/identity"
	"github.com/gantry/gantry/internal/apierr"
	"github.com/valyala/fasthttp"
)

// AccessSource yields access snapshots (tokens by hash, endpoint grants)
// the way a route source yields route tables: Wait blocks until a snapshot
// with Index > index exists (or its own wait passes, and then it returns
// the current one), or ctx ends. HTTPAccess follows a remote scheduler;
// gantry dev hands the scheduler's in-process one.
type AccessSource interface {
	Wait(ctx context.Context, index uint64) (*api.AccessSnapshot, error)
}

// HTTPAccess follows the scheduler's access snapshot over HTTP with a
// blocking query, GET {Base}/api/2.0/gantry/access?index=N&wait=30s, as
// HTTPRoutes follows the route table; the snapshot is for admins, so Token
// must be an admin's. It works at its zero value except for Base and
// Token, and must not change after first use.
type HTTPAccess struct {
	Base     string
	Token    string
	WaitTime time.Duration // default 30 s
	Client   *http.Client  // default http.DefaultClient
}

var _ AccessSource = (*HTTPAccess)(nil)

// Wait returns the first snapshot with an index above index, or the
// current one when the scheduler's wait passes first.
func (h *HTTPAccess) Wait(ctx context.Context, index uint64) (*api.AccessSnapshot, error) {
	var snap api.AccessSnapshot
	n, err := blockingGet(ctx, follower{h.Base, h.Token, h.WaitTime, h.Client}, "/api/2.0/gantry/access", "access snapshot", index, &snap)
	if err != nil {
		return nil, err
	}
	if snap.Index == 0 {
		snap.Index = n
	}
	return &snap, nil
}

// followAccess keeps a.access the checker of the newest snapshot until ctx
// ends, as Run keeps the route table: one blocking query at a time, at
// most one per minPoll, with backoff on errors. A revoked token leaves the
// checker one round trip after the revocation (the scheduler answers a
// waiting query at once), without a call per invocation. While the
// scheduler cannot be reached the last checker stays: tokens revoked
// meanwhile still pass, expired ones do not (expiry is checked against the
// clock at each request).
func (a *Activator) followAccess(ctx context.Context) {
	var index uint64
	var backoff time.Duration
	for {
		started := time.Now()
		snap, err := a.cfg.Access.Wait(ctx, index)
		if ctx.Err() != nil {
			return
		}
		switch {
		case err != nil:
			backoff = a.nextBackoff(backoff)
			a.log.Warn("access snapshot wait failed", "err", err, "retry_in", backoff)
		case snap == nil:
			backoff = a.nextBackoff(backoff)
			a.log.Warn("access source answered no snapshot", "retry_in", backoff)
		default:
			backoff = 0
			// An index below ours means the scheduler started afresh:
			// take its snapshot and its index, as Run does.
			if cur := a.access.Load(); cur == nil || cur.Index() != snap.Index {
				a.access.Store(identity.NewChecker(snap))
				a.log.Debug("access snapshot applied", "index", snap.Index, "tokens", len(snap.Tokens), "endpoints", len(snap.Endpoints))
			}
			index = snap.Index
		}
		pause := backoff
		if pause == 0 {
			pause = a.minPoll - time.Since(started)
		}
		if pause > 0 {
			t := time.NewTimer(pause)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
	}
}

// hidden is what Checker.Invoke returns for an endpoint the caller may not
// view; authorize answers it with the same 404 as a missing endpoint.
var hidden = &api.Error{Code: api.ErrResourceDoesNotExist}

// denial is a refused invocation: the status and error to answer.
type denial struct {
	status int
	err    *api.Error
}

// requesterKey is the request's user value that holds the caller (an
// *identity.Caller of the snapshot, so storing it allocates nothing) once
// authorize let it through, for the inference record.
type requesterKey struct{}

// requester is the name of the caller authorize recorded on ctx ("" with
// authentication off).
func requester(ctx *fasthttp.RequestCtx) string {
	if c, _ := ctx.UserValue(requesterKey{}).(*identity.Caller); c != nil {
		return c.Name()
	}
	return ""
}

// view is b as a string without a copy, for a call that keeps neither
// (Checker.Invoke); b must not change while the string is in use.
func view(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// authorized checks the request's token for endpoint name (authorize) and
// answers a refusal in API.md's shape; it reports whether to go on.
func (a *Activator) authorized(ctx *fasthttp.RequestCtx, name []byte) bool {
	d := a.authorize(ctx, name)
	if d != nil {
		apierr.WriteFast(ctx, d.err)
	}
	return d == nil
}

// authorize checks that the request's bearer token may invoke endpoint
// name (CAN_QUERY) against the current access snapshot: a hash and map
// lookups in memory, no call. It records the caller's name on ctx (the
// requester of inference tables) and returns nil, or the denial to
// answer: 503 before the first snapshot, 401 without a valid token, 403
// naming CAN_QUERY for a caller that may view the endpoint, and for one
// that may not the very 404 of an endpoint that does not exist. (An admin
// asking for a missing endpoint passes here and gets that 404 from the
// route table.) With Config.Access nil every request passes.
func (a *Activator) authorize(ctx *fasthttp.RequestCtx, name []byte) *denial {
	if a.cfg.Access == nil {
		return nil
	}
	chk := a.access.Load()
	if chk == nil {
		a.metrics.requests.WithLabelValues("", "", "503").Inc()
		return &denial{http.StatusServiceUnavailable, api.Errorf(api.ErrTemporarilyUnavailable,
			"the activator has not received its access snapshot yet; retry later")}
	}
	c, err := chk.Invoke(view(ctx.Request.Header.Peek(fasthttp.HeaderAuthorization)), view(name), a.cfg.Clock(), hidden)
	switch {
	case err == nil:
		ctx.SetUserValue(requesterKey{}, c)
		return nil
	case err == hidden:
		a.notFound.Inc()
		return &denial{http.StatusNotFound, api.Errorf(api.ErrResourceDoesNotExist, "endpoint %s does not exist", clip(name))}
	case err.Code == api.ErrUnauthenticated:
		a.unauthenticated.Inc()
		ctx.Response.Header.Set(fasthttp.HeaderWWWAuthenticate, `Bearer realm="gantry"`)
		return &denial{http.StatusUnauthorized, err}
	default:
		a.forbidden.Inc()
		return &denial{http.StatusForbidden, err}
	}
}
