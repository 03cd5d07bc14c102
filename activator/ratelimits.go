package activator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/identity"
	"github.com/gantry/gantry/internal/apierr"
	"github.com/gantry/gantry/openai"
	"github.com/gantry/gantry/ratelimit"
	"github.com/valyala/fasthttp"
)

// RateLimiter reserves the budget of one call of an endpoint with
// ai_gateway.rate_limits (see package ratelimit for the semantics) and
// takes back what the call did not use. limits is the route table's copy;
// a coordinator may decide with its own.
type RateLimiter interface {
	Reserve(ctx context.Context, limits []api.RateLimit, r *api.RateLimitReserve) (*api.RateLimitGrant, *ratelimit.Exceeded, error)
	Refund(g *api.RateLimitGrant)
}

// DefaultMaxTokens is the answer's share of a token reservation when the
// request names no max_tokens.
const DefaultMaxTokens = 1024

// LocalRateLimiter decides in this process with the route table's limits:
// exact for one activator (or gantry dev, where the scheduler's own
// coordinator is used instead), not across several.
type LocalRateLimiter struct {
	L   ratelimit.Limiter
	Now func() time.Time // default time.Now
}

func (l *LocalRateLimiter) Reserve(_ context.Context, limits []api.RateLimit, r *api.RateLimitReserve) (*api.RateLimitGrant, *ratelimit.Exceeded, error) {
	now := time.Now
	if l.Now != nil {
		now = l.Now
	}
	res, ex := l.L.Reserve(now(), r.Endpoint, limits, ratelimit.Caller{Name: r.Requester, Groups: r.Groups}, r.Tokens)
	if ex != nil {
		return nil, ex, nil
	}
	return &api.RateLimitGrant{Endpoint: res.Endpoint, Window: res.Window, Tokens: res.Tokens, Buckets: res.Buckets}, nil, nil
}

func (l *LocalRateLimiter) Refund(g *api.RateLimitGrant) {
	l.L.Refund(ratelimit.Reservation{Endpoint: g.Endpoint, Window: g.Window, Tokens: g.Tokens, Buckets: g.Buckets}, g.Used)
}

// HTTPRateLimiter asks the scheduler's coordinator, POST
// {Base}/api/2.0/gantry/rate-limits/reserve, once per call of an endpoint
// with limits, with Token (an admin's). A coordinator that does not answer
// within Timeout (default 1 s) fails the call closed: 503 with
// Retry-After, never a call let through uncounted, since a limit that
// holds only while the scheduler is up is what the limits exist to avoid
// (an endpoint without limits is not affected).
//
// Client defaults to one that keeps up to 256 idle connections to the
// coordinator: Go's default keeps 2 per host, so with 16 calls in flight
// an invocation dialed 1.4 new connections (of its reserve and refund)
// and left them in TIME_WAIT, and the activator answered about 1.4 times
// slower (BenchmarkGatewayOverhead, coordinated-2conns: 345 against 240
// µs per call at 16 clients; 0 dials per call pooled).
//
// Refunds go in the background, one request at a time: those that come
// while one is in flight wait and go together in the next
// ({"grants": [...]}, at most maxRefundBatch), so that under load an
// invocation costs one round trip to the coordinator, not two. A refund
// only ever gives back, so one that waits or is lost keeps tokens
// reserved a little longer, never lets a call through.
type HTTPRateLimiter struct {
	Base    string
	Token   string
	Timeout time.Duration
	Client  *http.Client

	// mu guards pending and sending.
	mu      sync.Mutex
	pending []api.RateLimitGrant
	// sending is set while a goroutine sends refunds.
	sending bool
}

// maxRefundBatch bounds a refund request (a grant is about 150 bytes of
// the scheduler's 1 MiB); maxRefundsPending bounds what waits, beyond
// which the oldest are dropped (their tokens stay reserved until the
// window ends).
const (
	maxRefundBatch    = 256
	maxRefundsPending = 16384
)

// coordinatorClient is HTTPRateLimiter's default Client.
var coordinatorClient = PooledClient(nil)

// PooledClient is c (nil: Go's default) with a transport that keeps up to
// 256 idle connections per host, for a client that calls one server many
// times at once: the coordinator.
func PooledClient(c *http.Client) *http.Client {
	if c == nil {
		c = http.DefaultClient
	}
	t, ok := c.Transport.(*http.Transport)
	if c.Transport == nil {
		t, ok = http.DefaultTransport.(*http.Transport), true
	}
	if !ok {
		return c // a transport of the caller's own: theirs to size
	}
	out := *c
	t = t.Clone()
	t.MaxIdleConns, t.MaxIdleConnsPerHost = max(t.MaxIdleConns, 256), 256
	out.Transport = t
	return &out
}

func (h *HTTPRateLimiter) post(ctx context.Context, path string, v any) (*http.Response, error) {
	body, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.Base+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if h.Token != "" {
		req.Header.Set("Authorization", "Bearer "+h.Token)
	}
	c := h.Client
	if c == nil {
		c = coordinatorClient
	}
	return c.Do(req)
}

func (h *HTTPRateLimiter) Reserve(ctx context.Context, _ []api.RateLimit, r *api.RateLimitReserve) (*api.RateLimitGrant, *ratelimit.Exceeded, error) {
	d := h.Timeout
	if d <= 0 {
		d = time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	resp, err := h.post(ctx, "/api/2.0/gantry/rate-limits/reserve", r)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, nil, err
	}
	switch resp.StatusCode {
	case http.StatusOK:
		var g api.RateLimitGrant
		if err := json.Unmarshal(b, &g); err != nil {
			return nil, nil, err
		}
		return &g, nil, nil
	case http.StatusTooManyRequests:
		var e api.Error
		json.Unmarshal(b, &e)
		s, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
		if s < 1 {
			s = 1
		}
		return nil, &ratelimit.Exceeded{Msg: e.Message, RetryAfter: time.Duration(s) * time.Second}, nil
	}
	return nil, nil, fmt.Errorf("coordinator answered %d: %s", resp.StatusCode, clip(b))
}

// Refund queues g to be sent back (see HTTPRateLimiter).
func (h *HTTPRateLimiter) Refund(g *api.RateLimitGrant) {
	if len(g.Buckets) == 0 || g.Used >= g.Tokens {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.pending) == maxRefundsPending {
		h.pending = h.pending[1:]
	}
	h.pending = append(h.pending, *g)
	if !h.sending {
		h.sending = true
		go h.sendRefunds()
	}
}

// sendRefunds sends what is pending, batch by batch, until nothing is.
func (h *HTTPRateLimiter) sendRefunds() {
	for {
		h.mu.Lock()
		n := min(len(h.pending), maxRefundBatch)
		if n == 0 {
			h.sending = false
			h.mu.Unlock()
			return
		}
		batch := api.RateLimitRefunds{Grants: slices.Clone(h.pending[:n])}
		h.pending = slices.Delete(h.pending, 0, n)
		h.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if resp, err := h.post(ctx, "/api/2.0/gantry/rate-limits/refund", batch); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		cancel()
	}
}

// limiter is Config.RateLimits, or the in-process one.
func (a *Activator) limiter() RateLimiter {
	if a.cfg.RateLimits != nil {
		return a.cfg.RateLimits
	}
	return &a.localLimits
}

// tokenLimits reports whether any of limits counts tokens.
func tokenLimits(limits []api.RateLimit) bool {
	for _, l := range limits {
		if l.Tokens > 0 {
			return true
		}
	}
	return false
}

// promptTokens estimates a body's tokens as Databricks does where a
// provider reports none: (length + 1) / 4.
func promptTokens(b []byte) int64 { return int64(len(b)+1) / 4 }

// limit reserves the call in ctx on ep (which has rate limits): nil and
// true without anything to give back, the grant and true, or false with
// the refusal answered: 429 REQUEST_LIMIT_EXCEEDED naming the limit with
// Retry-After in whole seconds, or 503 when the coordinator cannot be
// reached.
func (a *Activator) limit(ctx *fasthttp.RequestCtx, ep *endpoint) (*api.RateLimitGrant, bool) {
	r := api.RateLimitReserve{Endpoint: ep.name}
	if c, _ := ctx.UserValue(requesterKey{}).(*identity.Caller); c != nil {
		r.Requester, r.Groups = c.Name(), c.Groups
	}
	if tokenLimits(ep.limits) {
		var m struct {
			MaxTokens *int64 `json:"max_tokens"`
		}
		json.Unmarshal(ctx.PostBody(), &m)
		r.Tokens = promptTokens(ctx.PostBody()) + DefaultMaxTokens
		if m.MaxTokens != nil && *m.MaxTokens >= 0 {
			r.Tokens = promptTokens(ctx.PostBody()) + *m.MaxTokens
		}
	}
	// Not ctx: net/http may still read a request's context from its
	// dialer's goroutine after the call returns, and fasthttp reuses a
	// RequestCtx once the handler has returned. The limiter bounds the
	// call with its own timeout.
	g, ex, err := a.limiter().Reserve(context.Background(), ep.limits, &r)
	switch {
	case ex != nil:
		ep.requests.WithLabelValues("429").Inc()
		ans := apierr.For(api.Errorf(api.ErrRequestLimitExceeded, "%s", ex.Message()))
		ans.RetryAfter = strconv.Itoa(int(ex.RetryAfter / time.Second))
		ans.WriteFast(ctx)
		return nil, false
	case err != nil:
		ep.requests.WithLabelValues("503").Inc()
		var ae *api.Error
		if errors.As(err, &ae) && ae.Code == api.ErrResourceDoesNotExist {
			apierr.WriteFast(ctx, ae)
			return nil, false
		}
		fail(ctx, api.ErrTemporarilyUnavailable,
			"endpoint %s has rate limits and their coordinator cannot be reached (%v); retry later", ep.name, err)
		return nil, false
	}
	if g != nil && len(g.Buckets) > 0 {
		ctx.SetUserValue(grantKey{}, g) // for a stream writer (takeGrant)
	}
	return g, true
}

// grantKey is the RequestCtx user value holding the call's token
// reservation until a stream writer takes it.
type grantKey struct{}

// takeGrant hands the reservation of the call in ctx to the writer of its
// stream, which refunds it when the stream ends (refundStream); refund
// then leaves it alone. nil when the call reserved nothing.
func takeGrant(ctx *fasthttp.RequestCtx) *api.RateLimitGrant {
	g, _ := ctx.UserValue(grantKey{}).(*api.RateLimitGrant)
	if g != nil {
		ctx.SetUserValue(grantKey{}, taken{})
	}
	return g
}

// taken marks a reservation a stream writer took.
type taken struct{}

// refundStream gives back what g reserved beyond a stream's use: its
// usage's total_tokens when the stream reported one, else the prompt's
// estimate and the assembled answer's ((length + 1) / 4).
func (a *Activator) refundStream(g *api.RateLimitGrant, prompt int64, answer []byte, u *openai.Usage) {
	if g == nil {
		return
	}
	g.Used = prompt + promptTokens(answer)
	if u != nil && u.TotalTokens > 0 {
		g.Used = int64(u.TotalTokens)
	}
	a.limiter().Refund(g)
}

// refund gives back what g reserved beyond what the answer in ctx used:
// the prompt's estimate and the answer's ((length + 1) / 4, or its usage's
// total_tokens when it has one). An answer relayed as a stream counts by
// its Content-Length; an event stream's writer took g (takeGrant) and
// refunds it when the stream ends; any other stream of unknown length
// keeps its whole reservation until the window ends.
func (a *Activator) refund(ctx *fasthttp.RequestCtx, g *api.RateLimitGrant) {
	if g == nil || len(g.Buckets) == 0 {
		return
	}
	if _, ok := ctx.UserValue(grantKey{}).(taken); ok {
		return
	}
	if ctx.Response.IsBodyStream() {
		n := ctx.Response.Header.ContentLength()
		if n < 0 {
			return
		}
		g.Used = promptTokens(ctx.PostBody()) + int64(n+1)/4
		a.limiter().Refund(g)
		return
	}
	body := ctx.Response.Body()
	used := promptTokens(ctx.PostBody()) + promptTokens(body)
	var u struct {
		Usage *struct {
			TotalTokens int64 `json:"total_tokens"`
		} `json:"usage"`
	}
	if bytes.Contains(body, []byte(`"usage"`)) && json.Unmarshal(body, &u) == nil && u.Usage != nil && u.Usage.TotalTokens > 0 {
		used = u.Usage.TotalTokens
	}
	g.Used = used
	a.limiter().Refund(g)
}
