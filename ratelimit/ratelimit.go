// Package ratelimit decides the AI gateway's rate limits
// (ai_gateway.rate_limits, PEERS.md §2.2) as a pure function of its
// counters, the limits and a time handed in: no clock, no goroutine, no I/O.
//
// Windows are fixed and one minute long (renewal_period "minute", the only
// one), aligned on the minute of the Unix epoch: a key lets through at most
// its limit in each window, and a refused call is told to come back when
// the window ends (Retry-After). Which limits apply to a call:
//
//   - every "endpoint" limit, one budget for all callers together;
//   - the caller's own limits ("user" or "service_principal" with
//     principal = the caller's name), if any; else
//   - the limits of the caller's groups ("user_group"), if any: a member of
//     several groups is refused only once every one of its groups with a
//     calls limit (or every one with a tokens limit) is spent, and a call
//     is charged to the group with the most room left; else
//   - the default user limit ("user" without principal), one budget per
//     caller.
//
// Calls and tokens both apply (the more restrictive wins). Tokens are
// reserved before the call (Reserve's tokens: the prompt's estimate plus
// max_tokens or a default) and what the answer did not use is given back
// by Refund, so that concurrent long answers cannot overshoot together.
// Calls are never given back. Two limits for the same key and dimension
// count one budget, the smaller cap.
package ratelimit

import (
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/gantry/gantry/api"
)

// Window is the one renewal period.
const Window = time.Minute

// Key values of api.RateLimit.Key.
const (
	KeyEndpoint         = "endpoint"
	KeyUser             = "user"
	KeyUserGroup        = "user_group"
	KeyServicePrincipal = "service_principal"
)

// Caller is who makes a call: a user's userName or a service principal's
// application id, and the display names of its groups. The zero Caller is
// anonymous (authentication off): only endpoint limits apply to it.
type Caller struct {
	Name   string
	Groups []string
}

// Exceeded is a refusal: Limit names the limit that was spent, RetryAfter
// is how long until its window renews (whole seconds, at least 1).
type Exceeded struct {
	Limit      string
	RetryAfter time.Duration
	// Msg, when set, is the whole message (a coordinator's, relayed).
	Msg string
}

// Message is the refusal's message for the 429's body.
func (e *Exceeded) Message() string {
	if e.Msg != "" {
		return e.Msg
	}
	return "Exceeded " + e.Limit + "; retry after " + strconv.Itoa(int(e.RetryAfter/time.Second)) + " s"
}

// Seconds is RetryAfter in whole seconds, for the Retry-After header.
func (e *Exceeded) Seconds() int { return int(e.RetryAfter / time.Second) }

// Reservation is what Reserve charged, for Refund.
type Reservation struct {
	Endpoint string
	Window   int64
	Tokens   int64
	// buckets whose tokens were charged
	Buckets []string
}

type counter struct {
	window        int64
	calls, tokens int64
}

// Limiter holds the counters of every endpoint's keys. It is safe for
// concurrent use; its zero value is ready.
type Limiter struct {
	mu       sync.Mutex
	counters map[string]*counter // endpoint + "\x00" + bucket
	swept    int64
}

type dim int

const (
	dimCalls dim = iota
	dimTokens
)

func (d dim) String() string {
	if d == dimCalls {
		return "calls"
	}
	return "tokens"
}

// alt is one budget a requirement may be charged to.
type alt struct {
	bucket string
	cap    int64
	desc   string
}

// req is one dimension that must have room in one of its alternatives.
type req struct {
	dim  dim
	alts []alt
	// group requirements are satisfied by any alternative; others by
	// their single one.
}

// describe names limit l for messages.
func describe(l api.RateLimit, d dim, n int64) string {
	what := strconv.FormatInt(n, 10) + " " + d.String() + " per minute"
	switch key(l) {
	case KeyEndpoint:
		return "the endpoint's rate limit of " + what
	case KeyUserGroup:
		return "the rate limit of " + what + " for group " + l.Principal
	case KeyServicePrincipal:
		return "the rate limit of " + what + " for service principal " + l.Principal
	}
	if l.Principal == "" {
		return "the per-user rate limit of " + what
	}
	return "the rate limit of " + what + " for user " + l.Principal
}

func key(l api.RateLimit) string {
	if l.Key == "" {
		return KeyEndpoint
	}
	return l.Key
}

// Requirements lists what a call of c must find room in, from limits.
func requirements(limits []api.RateLimit, c Caller) []req {
	var out []req
	add := func(bucket string, l api.RateLimit) {
		for _, d := range []dim{dimCalls, dimTokens} {
			n := l.Calls
			if d == dimTokens {
				n = l.Tokens
			}
			if n <= 0 {
				continue
			}
			merged := false
			for i := range out {
				if out[i].dim == d && len(out[i].alts) == 1 && out[i].alts[0].bucket == bucket {
					if n < out[i].alts[0].cap {
						out[i].alts[0] = alt{bucket, n, describe(l, d, n)}
					}
					merged = true
				}
			}
			if !merged {
				out = append(out, req{d, []alt{{bucket, n, describe(l, d, n)}}})
			}
		}
	}
	own := false
	for _, l := range limits {
		switch k := key(l); {
		case k == KeyEndpoint:
			add("e", l)
		case c.Name != "" && (k == KeyUser || k == KeyServicePrincipal) && l.Principal == c.Name:
			add("p:"+c.Name, l)
			own = true
		}
	}
	if own || c.Name == "" {
		return out
	}
	groups := false
	var calls, tokens []alt
	for _, l := range limits {
		if key(l) != KeyUserGroup || !member(c, l.Principal) {
			continue
		}
		groups = true
		b := "g:" + l.Principal
		if l.Calls > 0 {
			calls = addAlt(calls, alt{b, l.Calls, describe(l, dimCalls, l.Calls)})
		}
		if l.Tokens > 0 {
			tokens = addAlt(tokens, alt{b, l.Tokens, describe(l, dimTokens, l.Tokens)})
		}
	}
	if groups {
		if calls != nil {
			out = append(out, req{dimCalls, calls})
		}
		if tokens != nil {
			out = append(out, req{dimTokens, tokens})
		}
		return out
	}
	for _, l := range limits {
		if key(l) == KeyUser && l.Principal == "" {
			add("u:"+c.Name, l)
		}
	}
	return out
}

// addAlt adds a to as, or lowers the cap of the same bucket's alternative.
func addAlt(as []alt, a alt) []alt {
	for i := range as {
		if as[i].bucket == a.bucket {
			if a.cap < as[i].cap {
				as[i] = a
			}
			return as
		}
	}
	return append(as, a)
}

func member(c Caller, g string) bool {
	for _, m := range c.Groups {
		if m == g {
			return true
		}
	}
	return false
}

// WindowOf is the index of the window that holds now.
func WindowOf(now time.Time) int64 { return now.UnixNano() / int64(Window) }

// retryAfter is the time from now to the end of window w, rounded up to a
// whole second, at least 1 s.
func retryAfter(now time.Time, w int64) time.Duration {
	end := time.Unix(0, (w+1)*int64(Window))
	s := (end.Sub(now) + time.Second - 1) / time.Second
	if s < 1 {
		s = 1
	}
	return s * time.Second
}

func (l *Limiter) get(k string, w int64) *counter {
	c := l.counters[k]
	if c == nil {
		if l.counters == nil {
			l.counters = make(map[string]*counter)
		}
		c = &counter{window: w}
		l.counters[k] = c
	}
	if c.window != w {
		*c = counter{window: w}
	}
	return c
}

func (c *counter) used(d dim) int64 {
	if d == dimCalls {
		return c.calls
	}
	return c.tokens
}

// Reserve charges one call and tokens to every limit of endpoint that
// applies to c at now, or charges nothing and says which limit is spent.
// With no limit that applies it charges nothing and returns a zero
// Reservation.
func (l *Limiter) Reserve(now time.Time, endpoint string, limits []api.RateLimit, c Caller, tokens int64) (Reservation, *Exceeded) {
	if len(limits) == 0 {
		return Reservation{}, nil
	}
	reqs := requirements(limits, c)
	if len(reqs) == 0 {
		return Reservation{}, nil
	}
	w := WindowOf(now)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.swept != w {
		for k, ctr := range l.counters {
			if ctr.window < w {
				delete(l.counters, k)
			}
		}
		l.swept = w
	}
	prefix := endpoint + "\x00"
	chosen := make([]*counter, len(reqs))
	buckets := make([]string, len(reqs))
	for i, r := range reqs {
		n := int64(1)
		if r.dim == dimTokens {
			n = tokens
		}
		var best *counter
		var bestRoom int64
		for _, a := range r.alts {
			ctr := l.get(prefix+a.bucket, w)
			room := a.cap - ctr.used(r.dim)
			if room >= n && (best == nil || room > bestRoom) {
				best, bestRoom, buckets[i] = ctr, room, a.bucket
			}
		}
		if best == nil {
			desc := r.alts[0].desc
			if len(r.alts) > 1 {
				desc = "the rate limits of " + r.dim.String() + " per minute of every group of the caller"
			}
			if r.dim == dimTokens && tokens > r.alts[0].cap && len(r.alts) == 1 {
				desc += fmt.Sprintf(" (the call reserves %d tokens)", tokens)
			}
			return Reservation{}, &Exceeded{Limit: desc, RetryAfter: retryAfter(now, w)}
		}
		chosen[i] = best
	}
	res := Reservation{Endpoint: endpoint, Window: w, Tokens: tokens}
	for i, r := range reqs {
		if r.dim == dimCalls {
			chosen[i].calls++
		} else {
			chosen[i].tokens += tokens
			res.Buckets = append(res.Buckets, buckets[i])
		}
	}
	return res, nil
}

// Refund gives back the tokens r reserved that the call did not use
// (used below r.Tokens), if r's window is still the counters' window.
func (l *Limiter) Refund(r Reservation, used int64) {
	if used < 0 {
		used = 0
	}
	back := r.Tokens - used
	if back <= 0 || len(r.Buckets) == 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, b := range r.Buckets {
		if c := l.counters[r.Endpoint+"\x00"+b]; c != nil && c.window == r.Window {
			c.tokens -= back
			if c.tokens < 0 {
				c.tokens = 0
			}
		}
	}
}

// Validate checks limits as PUT .../ai-gateway takes them: at most 20, at
// most 5 for groups, renewal_period "minute", a known key, calls or tokens
// positive, a principal for user_group and service_principal and none
// for endpoint, and no two for the same key, principal and dimension.
// It returns the first problem's description, or "".
func Validate(limits []api.RateLimit) string {
	if len(limits) > 20 {
		return fmt.Sprintf("rate_limits: %d limits; an endpoint takes at most 20", len(limits))
	}
	groups := 0
	seen := map[string]bool{}
	for i, l := range limits {
		f := fmt.Sprintf("rate_limits[%d]", i)
		if l.RenewalPeriod != "minute" {
			return f + ".renewal_period: must be \"minute\" (the only renewal period)"
		}
		if l.Calls < 0 || l.Tokens < 0 || l.Calls == 0 && l.Tokens == 0 {
			return f + ": set calls or tokens (or both) to a positive number"
		}
		switch key(l) {
		case KeyEndpoint:
			if l.Principal != "" {
				return f + ".principal: an endpoint limit names no principal"
			}
		case KeyUser:
		case KeyUserGroup, KeyServicePrincipal:
			if l.Principal == "" {
				return f + ".principal: a " + key(l) + " limit must name its principal"
			}
			if key(l) == KeyUserGroup {
				groups++
			}
		default:
			return f + ".key: " + strconv.Quote(l.Key) + " is not one of endpoint, user, user_group, service_principal"
		}
		for _, d := range []dim{dimCalls, dimTokens} {
			if d == dimCalls && l.Calls == 0 || d == dimTokens && l.Tokens == 0 {
				continue
			}
			k := key(l) + "\x00" + l.Principal + "\x00" + d.String()
			if seen[k] {
				return f + ": a second " + d.String() + " limit for the same key and principal"
			}
			seen[k] = true
		}
	}
	if groups > 5 {
		return fmt.Sprintf("rate_limits: %d group limits; an endpoint takes at most 5", groups)
	}
	return ""
}
