package scheduler

import (
	"net/http"
	"strconv"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/internal/apierr"
	"github.com/gantry/gantry/ratelimit"
)

// The scheduler coordinates the AI gateway's rate limits: every activator
// asks it, per call of an endpoint with limits, to reserve one call and
// the call's tokens (ReserveRate, or POST /api/2.0/gantry/rate-limits/
// reserve from another process), and hands back unused tokens when the
// call ends (RefundRate). One set of counters decides for every activator,
// so together they never let through more than a limit in a window, and
// every unit of a limit is usable; a limit changed by PUT .../ai-gateway
// applies to the next reservation. The price is a round trip to the
// scheduler per limited call (none for endpoints without limits); an
// activator that cannot reach it in time refuses the call (fail closed,
// see activator.HTTPRateLimiter).

// ReserveRate reserves one call of r.Requester on r.Endpoint and
// r.Tokens tokens against the endpoint's current limits. It returns the
// grant, or a refusal naming the limit, or a 404 for a missing endpoint.
func (s *Scheduler) ReserveRate(r *api.RateLimitReserve) (*api.RateLimitGrant, *ratelimit.Exceeded, error) {
	s.mu.Lock()
	ep, err := s.lookup(r.Endpoint)
	var limits []api.RateLimit
	if err == nil && ep.AIGateway != nil {
		limits = ep.AIGateway.RateLimits // replaced, never changed in place
	}
	s.mu.Unlock()
	if err != nil {
		return nil, nil, err
	}
	res, ex := s.limiter.Reserve(s.cfg.Now(), r.Endpoint, limits, ratelimit.Caller{Name: r.Requester, Groups: r.Groups}, r.Tokens)
	if ex != nil {
		return nil, ex, nil
	}
	return &api.RateLimitGrant{Endpoint: res.Endpoint, Window: res.Window, Tokens: res.Tokens, Buckets: res.Buckets}, nil, nil
}

// RefundRate gives back what g reserved beyond g.Used tokens.
func (s *Scheduler) RefundRate(g *api.RateLimitGrant) {
	s.limiter.Refund(ratelimit.Reservation{Endpoint: g.Endpoint, Window: g.Window, Tokens: g.Tokens, Buckets: g.Buckets}, g.Used)
}

// ExceededAnswer is the 429 of a refusal: REQUEST_LIMIT_EXCEEDED, the
// message naming the limit, Retry-After in whole seconds until it renews.
func ExceededAnswer(ex *ratelimit.Exceeded) apierr.Answer {
	a := apierr.For(api.Errorf(api.ErrRequestLimitExceeded, "%s", ex.Message()))
	a.RetryAfter = strconv.Itoa(ex.Seconds())
	return a
}

func (s *Scheduler) reserveRate(w http.ResponseWriter, r *http.Request) {
	var req api.RateLimitReserve
	if err := decode(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	g, ex, err := s.ReserveRate(&req)
	switch {
	case err != nil:
		writeError(w, err)
	case ex != nil:
		ExceededAnswer(ex).Write(w)
	default:
		writeJSON(w, http.StatusOK, g)
	}
}

// refundRate takes one grant, or a batch of them ({"grants": [...]},
// what activators send).
func (s *Scheduler) refundRate(w http.ResponseWriter, r *http.Request) {
	var body struct {
		api.RateLimitGrant
		api.RateLimitRefunds
	}
	if err := decode(w, r, &body); err != nil {
		writeError(w, err)
		return
	}
	if body.Endpoint != "" {
		s.RefundRate(&body.RateLimitGrant)
	}
	for i := range body.Grants {
		s.RefundRate(&body.Grants[i])
	}
	writeJSON(w, http.StatusOK, struct{}{})
}
