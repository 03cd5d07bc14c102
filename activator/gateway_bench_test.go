package activator

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/external/providertest"
	"github.com/gantry/gantry/scheduler"
	"github.com/gantry/gantry/scheduler/orchestrator"
	"github.com/gantry/gantry/scheduler/registry"
	"github.com/gantry/gantry/scheduler/routes"
	"github.com/gantry/gantry/scheduler/store"
	"github.com/valyala/fasthttp"
)

// benchLimits are the 5 rate limits, high enough never to refuse:
// the endpoint's calls and tokens, every user's tokens, one user's calls
// and a group's tokens. Each call is checked against all that apply.
var benchLimits = []api.RateLimit{
	{Calls: 1e9, Key: "endpoint", RenewalPeriod: "minute"},
	{Tokens: 1e12, Key: "endpoint", RenewalPeriod: "minute"},
	{Tokens: 1e12, Key: "user", RenewalPeriod: "minute"},
	{Calls: 1e9, Key: "user", Principal: "alice@corp.com", RenewalPeriod: "minute"},
	{Tokens: 1e12, Key: "user_group", Principal: "data-science", RenewalPeriod: "minute"},
}

// benchGuardrails are PII on both sides (BLOCK in, MASK out) and 10
// invalid keywords: every guardrail Gantry has.
var benchGuardrails = &api.Guardrails{
	Input: &api.GuardrailParameters{PII: &api.GuardrailPIIBehavior{Behavior: "BLOCK"},
		InvalidKeywords: strings.Fields("password secret token credential apikey ssn passport salary internal confidential")},
	Output: &api.GuardrailParameters{PII: &api.GuardrailPIIBehavior{Behavior: "MASK"}},
}

// BenchmarkGatewayOverhead measures what an AI gateway config costs an
// invocation: the same chat call to the provider double through an
// endpoint without one ("none") and through one with 5 rate limits and
// every guardrail, decided in this process ("local", one activator) or
// by the scheduler's coordinator over loopback HTTP, as every activator
// of gantry activator does ("coordinated"), all in one run. serial
// reports p50/p99 (one client); parallel's ns/op is the inverse of the
// throughput with 16 clients. "reserve" is the coordinator round trip
// alone: one HTTPRateLimiter.Reserve against the real scheduler handler.
// `make bench-gateway` runs it.
func BenchmarkGatewayOverhead(b *testing.B) {
	base := providertest.Start(b, extKey)
	ent := extEntity("gpt", api.ProviderOpenAI, api.TaskChat, "m", base)
	none := api.EndpointRoute{Name: "none", Entities: []api.EntityRoute{ent}}
	gw := api.EndpointRoute{Name: "gw", Entities: []api.EntityRoute{ent}, RateLimits: benchLimits, Guardrails: benchGuardrails}
	local := gatewayActivator(b, Config{}, none, gw)

	coord, dials, refunds := benchCoordinator(b, base)
	limiter := &HTTPRateLimiter{Base: coord}
	coordinated := gatewayActivator(b, Config{RateLimits: limiter}, none, gw)
	// As HTTPRateLimiter was before it pooled connections: Go's default
	// client, 2 idle connections per host.
	twoConns := gatewayActivator(b, Config{RateLimits: &HTTPRateLimiter{Base: coord, Client: &http.Client{}}}, none, gw)

	body := []byte(`{"messages": [{"role": "system", "content": "You answer billing questions in one sentence."}, {"role": "user", "content": "How do I read the invoice of last month, and where is the total?"}], "max_tokens": 64}`)
	for _, c := range []struct{ name, addr, ep string }{
		{"none", local, "none"}, {"local", local, "gw"}, {"coordinated", coordinated, "gw"}, {"coordinated-2conns", twoConns, "gw"},
	} {
		client := &fasthttp.HostClient{Addr: c.addr, MaxConns: 64}
		newRequest := func() *fasthttp.Request {
			req := fasthttp.AcquireRequest()
			req.SetRequestURI("http://" + c.addr + "/serving-endpoints/" + c.ep + "/invocations")
			req.Header.SetMethod(fasthttp.MethodPost)
			req.Header.SetContentType("application/json")
			req.SetBodyRaw(body)
			return req
		}
		do := func(b *testing.B, req *fasthttp.Request, resp *fasthttp.Response) bool {
			if err := client.Do(req, resp); err != nil || resp.StatusCode() != fasthttp.StatusOK {
				b.Errorf("%s: %v, status %d: %s", c.name, err, resp.StatusCode(), resp.Body())
				return false
			}
			return true
		}
		b.Run(c.name+"/serial", func(b *testing.B) {
			req, resp := newRequest(), fasthttp.AcquireResponse()
			var lat []time.Duration
			for b.Loop() {
				t0 := time.Now()
				if !do(b, req, resp) {
					return
				}
				lat = append(lat, time.Since(t0))
			}
			report(b, lat, "")
		})
		b.Run(c.name+"/parallel", func(b *testing.B) {
			b.SetParallelism(8) // × GOMAXPROCS (2 here): 16 clients
			before, refunded := dials.Load(), refunds.Load()
			b.RunParallel(func(pb *testing.PB) {
				req, resp := newRequest(), fasthttp.AcquireResponse()
				for pb.Next() {
					if !do(b, req, resp) {
						return
					}
				}
			})
			// Connections the activator opened to the coordinator.
			b.ReportMetric(float64(dials.Load()-before)/float64(b.N), "dials/op")
			// Refund requests it sent (they go in batches).
			b.ReportMetric(float64(refunds.Load()-refunded)/float64(b.N), "refunds/op")
		})
	}
	b.Run("reserve/serial", func(b *testing.B) {
		r := &api.RateLimitReserve{Endpoint: "gw", Requester: "alice@corp.com", Groups: []string{"data-science"}, Tokens: 100}
		var lat []time.Duration
		for b.Loop() {
			t0 := time.Now()
			if _, ex, err := limiter.Reserve(context.Background(), nil, r); err != nil || ex != nil {
				b.Fatal(err, ex)
			}
			lat = append(lat, time.Since(t0))
		}
		report(b, lat, "")
	})
}

// gatewayActivator serves an activator of cfg over the route table eps on
// a loopback port until the benchmark ends.
func gatewayActivator(b *testing.B, cfg Config, eps ...api.EndpointRoute) string {
	cfg.Timeout = 5 * time.Second
	a := New(cfg, oneTable{&api.RouteTable{Index: 1, Endpoints: eps}})
	ctx, cancel := context.WithCancel(context.Background())
	go a.Run(ctx)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: a.Handler}
	go srv.Serve(ln)
	b.Cleanup(func() { srv.Shutdown(); cancel() })
	for !a.Ready() {
		time.Sleep(time.Millisecond)
	}
	return ln.Addr().String()
}

// noDeployments is an orchestrator for a scheduler whose endpoints serve
// external models only: it is never asked to run anything.
type noDeployments struct{}

func (noDeployments) Ensure(context.Context, orchestrator.Deployment) error { return nil }
func (noDeployments) Remove(context.Context, string) error                  { return nil }
func (noDeployments) Status(string) orchestrator.Status                     { return orchestrator.Status{} }

// benchCoordinator runs a real scheduler (authentication off) with the
// endpoint gw and the 5 limits, and returns its URL and counts of the
// connections it accepted and the refund requests it answered.
func benchCoordinator(b *testing.B, base string) (string, *atomic.Int64, *atomic.Int64) {
	dir := b.TempDir()
	st, err := store.Open(filepath.Join(dir, "state.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	reg, err := registry.Open(filepath.Join(dir, "models"))
	if err != nil {
		b.Fatal(err)
	}
	s, err := scheduler.New(scheduler.Config{Store: st, Registry: reg, Orchestrator: noDeployments{}, Routes: routes.NewTable(), BaseURL: "http://gantry.test"})
	if err != nil {
		b.Fatal(err)
	}
	var dials, refunds atomic.Int64
	handler := s.Handler()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/2.0/gantry/rate-limits/refund" {
			refunds.Add(1)
		}
		handler.ServeHTTP(w, r)
	}))
	srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			dials.Add(1)
		}
	}
	srv.Start()
	b.Cleanup(srv.Close)
	call := func(method, path string, v any) {
		body, _ := json.Marshal(v)
		req, _ := http.NewRequest(method, srv.URL+path, bytes.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		out, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, out)
		}
	}
	call("POST", "/api/2.0/serving-endpoints", map[string]any{"name": "gw", "config": map[string]any{"served_entities": []any{map[string]any{
		"external_model": map[string]any{"name": "m", "provider": "openai", "task": "llm/v1/chat",
			"openai_config": map[string]string{"openai_api_key_plaintext": extKey, "openai_api_base": base + "/v1"}}}}}})
	call("PUT", "/api/2.0/serving-endpoints/gw/ai-gateway", api.AIGateway{RateLimits: benchLimits, Guardrails: benchGuardrails})
	return srv.URL, &dials, &refunds
}
