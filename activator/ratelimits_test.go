package activator

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/external/providertest"
	"github.com/gantry/gantry/internal/apierr"
	"github.com/gantry/gantry/ratelimit"
)

// coordinator serves the scheduler's two rate-limit routes over one
// ratelimit.Limiter with limits, as scheduler/ratelimits.go does.
func coordinator(t *testing.T, limits []api.RateLimit, down *atomic.Bool) *httptest.Server {
	var l ratelimit.Limiter
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down != nil && down.Load() {
			http.Error(w, "down", http.StatusBadGateway)
			return
		}
		switch r.URL.Path {
		case "/api/2.0/gantry/rate-limits/reserve":
			var req api.RateLimitReserve
			json.NewDecoder(r.Body).Decode(&req)
			res, ex := l.Reserve(time.Now(), req.Endpoint, limits, ratelimit.Caller{Name: req.Requester, Groups: req.Groups}, req.Tokens)
			if ex != nil {
				a := apierr.For(api.Errorf(api.ErrRequestLimitExceeded, "%s", ex.Message()))
				a.RetryAfter = fmt.Sprint(ex.Seconds())
				a.Write(w)
				return
			}
			json.NewEncoder(w).Encode(api.RateLimitGrant{Endpoint: res.Endpoint, Window: res.Window, Tokens: res.Tokens, Buckets: res.Buckets})
		case "/api/2.0/gantry/rate-limits/refund":
			var b api.RateLimitRefunds
			json.NewDecoder(r.Body).Decode(&b)
			for _, g := range b.Grants {
				l.Refund(ratelimit.Reservation{Endpoint: g.Endpoint, Window: g.Window, Tokens: g.Tokens, Buckets: g.Buckets}, g.Used)
			}
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestRateLimitsAcrossActivators: three activators share one coordinator;
// a burst of calls from 12 clients spread over them is let through exactly
// the endpoint's limit of calls (no overshoot, all of it usable), and the
// rest get 429 REQUEST_LIMIT_EXCEEDED with Retry-After in whole seconds
// and a message naming the limit.
func TestRateLimitsAcrossActivators(t *testing.T) {
	const limit = 200
	limits := []api.RateLimit{{Calls: limit, RenewalPeriod: "minute"}}
	// Stay inside one window: start right after a minute boundary if
	// the current one has under 20 s left.
	if left := time.Until(time.Now().Truncate(time.Minute).Add(time.Minute)); left < 20*time.Second {
		time.Sleep(left + 100*time.Millisecond)
	}
	coord := coordinator(t, limits, nil)
	w := startWorker(t, "w", nil)
	var hs []*harness
	for i := 0; i < 3; i++ {
		h := newHarness(t, Config{RateLimits: &HTTPRateLimiter{Base: coord.URL}})
		rt := oneEndpoint(1, "ep", nil, readyEntity("m", w.addr))
		rt.Endpoints[0].RateLimits = limits
		h.push(rt)
		hs = append(hs, h)
	}
	var ok, limited, other atomic.Int64
	var wg sync.WaitGroup
	var bad atomic.Value
	for c := 0; c < 12; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 30; i++ {
				h := hs[(c+i)%3]
				ans := h.do("POST", "/serving-endpoints/ep/invocations", "application/json", []byte(`{"inputs": [1]}`))
				switch ans.status {
				case 200:
					ok.Add(1)
				case 429:
					limited.Add(1)
					ra := ans.header.Get("Retry-After")
					if e := ans.apiError(t); e.Code != api.ErrRequestLimitExceeded || !strings.Contains(e.Message, "the endpoint's rate limit of 200 calls per minute") || ra == "" || ra == "0" {
						bad.Store(fmt.Sprintf("429: %+v, Retry-After %q", e, ra))
					}
				default:
					other.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if b := bad.Load(); b != nil {
		t.Fatal(b)
	}
	over := ok.Load() - limit
	t.Logf("3 activators, 360 calls, limit %d: %d let through (overshoot %d, usable %.1f%%), %d refused with 429, %d other",
		limit, ok.Load(), max(over, 0), 100*float64(min(ok.Load(), limit))/limit, limited.Load(), other.Load())
	if ok.Load() != limit || other.Load() != 0 {
		t.Fatalf("%d calls let through, %d other answers; want exactly %d and none", ok.Load(), other.Load(), limit)
	}
}

// TestRateLimitCoordinatorDownFailsClosed: an endpoint with limits gets
// 503 with Retry-After while the coordinator does not answer; one without
// limits is served.
func TestRateLimitCoordinatorDownFailsClosed(t *testing.T) {
	var down atomic.Bool
	down.Store(true)
	coord := coordinator(t, []api.RateLimit{{Calls: 10, RenewalPeriod: "minute"}}, &down)
	w := startWorker(t, "w", nil)
	h := newHarness(t, Config{RateLimits: &HTTPRateLimiter{Base: coord.URL, Timeout: 200 * time.Millisecond}})
	rt := oneEndpoint(1, "ep", nil, readyEntity("m", w.addr))
	rt.Endpoints = append(rt.Endpoints, api.EndpointRoute{Name: "free", ConfigVersion: 1, Entities: []api.EntityRoute{readyEntity("m", w.addr)}})
	rt.Endpoints[0].RateLimits = []api.RateLimit{{Calls: 10, RenewalPeriod: "minute"}}
	h.push(rt)
	ans := h.do("POST", "/serving-endpoints/ep/invocations", "application/json", []byte(`{}`))
	if ans.status != 503 || ans.header.Get("Retry-After") == "" || !strings.Contains(ans.apiError(t).Message, "coordinator cannot be reached") {
		t.Fatalf("coordinator down: %d %s; want 503 with Retry-After", ans.status, ans.body)
	}
	if ans := h.do("POST", "/serving-endpoints/free/invocations", "application/json", []byte(`{}`)); ans.status != 200 {
		t.Fatalf("endpoint without limits: %d; want 200", ans.status)
	}
	down.Store(false)
	if ans := h.do("POST", "/serving-endpoints/ep/invocations", "application/json", []byte(`{}`)); ans.status != 200 {
		t.Fatalf("coordinator back: %d %s; want 200", ans.status, ans.body)
	}
}

// TestRateLimitTokensLocal: the default limiter (this activator alone)
// reserves prompt + max_tokens and refunds what the answer did not use.
func TestRateLimitTokensLocal(t *testing.T) {
	w := startWorker(t, "w", nil) // answers ~7 tokens
	h := newHarness(t, Config{})
	rt := oneEndpoint(1, "ep", nil, readyEntity("m", w.addr))
	rt.Endpoints[0].RateLimits = []api.RateLimit{{Tokens: 100, Calls: 1000, RenewalPeriod: "minute"}}
	h.push(rt)
	body := []byte(`{"messages": [], "max_tokens": 70}`) // reserves 8 + 70
	if ans := h.do("POST", "/serving-endpoints/ep/invocations", "application/json", body); ans.status != 200 {
		t.Fatalf("%d %s", ans.status, ans.body)
	}
	// Refunded down to 13 used: another reservation of 78 fits only
	// because of the refund.
	if ans := h.do("POST", "/serving-endpoints/ep/invocations", "application/json", body); ans.status != 200 {
		t.Fatalf("after the refund: %d %s; want 200", ans.status, ans.body)
	}
	ans := h.do("POST", "/serving-endpoints/ep/invocations", "application/json", body)
	if ans.status != 429 || !strings.Contains(ans.apiError(t).Message, "100 tokens per minute") {
		t.Fatalf("third: %d %s; want 429 naming the tokens limit", ans.status, ans.body)
	}
}

// TestRefundsBatched: refunds that come while one is in flight go
// together in the next request, every one of them once.
func TestRefundsBatched(t *testing.T) {
	var requests, grants atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b api.RateLimitRefunds
		if r.URL.Path != "/api/2.0/gantry/rate-limits/refund" || json.NewDecoder(r.Body).Decode(&b) != nil {
			http.Error(w, "bad", 400)
			return
		}
		time.Sleep(20 * time.Millisecond) // a slow coordinator: refunds pile up
		requests.Add(1)
		grants.Add(int64(len(b.Grants)))
	}))
	t.Cleanup(srv.Close)
	h := &HTTPRateLimiter{Base: srv.URL}
	var wg sync.WaitGroup
	for i := range 300 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h.Refund(&api.RateLimitGrant{Endpoint: "ep", Window: 1, Tokens: 100, Used: int64(i % 50), Buckets: []string{"e"}})
		}()
	}
	h.Refund(&api.RateLimitGrant{Endpoint: "ep", Tokens: 5, Used: 5, Buckets: []string{"e"}}) // all used: nothing to send
	wg.Wait()
	for deadline := time.Now().Add(10 * time.Second); grants.Load() < 300 && time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
	}
	time.Sleep(50 * time.Millisecond)
	if g, r := grants.Load(), requests.Load(); g != 300 || r > 30 {
		t.Errorf("%d grants in %d requests; want 300 in a few batches", g, r)
	}
}

// TestRateLimitStreamRefund: a stream's reservation comes back when the
// stream ends, before the client reads [DONE], for an external entity and
// a served LLM entity alike: a second stream fits only because of it.
func TestRateLimitStreamRefund(t *testing.T) {
	base, llm := providertest.Start(t, extKey), startWorker(t, "llm", echoLLM)
	served := readyEntity("llm", llm.addr)
	served.Task = api.TaskChat
	body := chat("once upon a time", true)
	body = strings.TrimSuffix(body, "}") + `, "max_tokens": 200}`
	reserve := int64(len(body)+1)/4 + 200
	// Room for one reservation and about half of another: the second
	// stream fits only if the first gave back what it did not use (its
	// answer is a few tokens).
	limits := []api.RateLimit{{Tokens: reserve + reserve/2, RenewalPeriod: "minute"}}
	url := judgeActivator(t, Config{Timeout: 5 * time.Second},
		api.EndpointRoute{Name: "ext", RateLimits: limits, Routes: []api.Route{{ServedModelName: "gpt", TrafficPercentage: 100}},
			Entities: []api.EntityRoute{extEntity("gpt", api.ProviderOpenAI, api.TaskChat, "m", base)}},
		api.EndpointRoute{Name: "served", RateLimits: limits, Routes: []api.Route{{ServedModelName: "llm", TrafficPercentage: 100}},
			Entities: []api.EntityRoute{served}})
	for _, ep := range []string{"ext", "served"} {
		for i := range 2 {
			text, _, errMsg := readStream(t, url+"/serving-endpoints/"+ep+"/invocations", body)
			if !strings.Contains(text, "once upon a time") || errMsg != "" {
				t.Fatalf("%s: stream %d: %q %q", ep, i, text, errMsg)
			}
		}
		resp, b := post(t, url+"/serving-endpoints/"+ep+"/invocations", strings.Replace(body, `"max_tokens": 200`, `"max_tokens": 10000`, 1))
		if resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" {
			t.Errorf("%s: over the limit: %d %s", ep, resp.StatusCode, b)
		}
	}
}
