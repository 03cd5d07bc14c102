package activator

import (
	"context"
	"log/slog"
	"net"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/identity"
	"github.com/gantry/gantry/loggers/capture"
	"github.com/gantry/gantry/loggers/local"
	"github.com/valyala/fasthttp"
)

// BenchmarkActivator measures the activator in front of a trivial worker,
// everything in this process over loopback TCP. The direct cases call the
// worker itself, so the difference is what the activator adds:
//   - serial: one client, one request at a time; ns/op is the latency.
//   - parallel: 8 clients per CPU; ns/op is the inverse of the throughput.
//
// The "activator" entity has more replica slots than there are clients, so
// every request takes the breaker's fast path (Reserve). "queued" has 2
// slots: in the parallel case most requests wait in the breaker's queue
// and are handed a slot as one frees up, the path of an entity whose
// replicas are all busy.
//
// "captured" is "activator" with inference tables on: every answer becomes
// a record that a capture.Capturer produces to a Kafka-protocol broker
// (kfake) in this process, as in gantry dev, or to GANTRY_BENCH_KAFKA. Serial cases report the p50
// and p99 latency too.
//
// "authenticated" is "activator" with authentication on (Config.Access):
// every request carries a bearer token that the activator hashes and
// looks up in its access snapshot, in memory; compare it with "activator"
// in the same run for the cost of the check.
//
// Client, activator and worker share the CPUs, so compare the cases with
// each other on one machine, not with numbers from another.
func BenchmarkActivator(b *testing.B) {
	answer := []byte(`{"predictions":[0.5]}`)
	worker := serve(b, func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("application/json")
		ctx.SetBody(answer)
	})

	// GANTRY_BENCH_KAFKA names a broker elsewhere (say `gantry broker` in
	// another process), to tell the activator's share from the broker's.
	brokerAddr := os.Getenv("GANTRY_BENCH_KAFKA")
	if brokerAddr == "" {
		broker, err := local.StartBroker(b.TempDir(), 0)
		if err != nil {
			b.Fatal(err)
		}
		defer broker.Close()
		brokerAddr = broker.Addr()
	}
	w := capture.NewKafkaWriter([]string{brokerAddr}, "bench")
	defer w.Close()
	c := capture.New(w, capture.Config{Logger: slog.New(slog.DiscardHandler)})
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	go c.Run(ctx)

	a := New(Config{Logger: slog.New(slog.DiscardHandler), Capture: c}, newFakeRoutes())
	wide, narrow := readyEntity("m", worker), readyEntity("q", worker)
	wide.Concurrency, narrow.Concurrency = 1024, 2
	a.apply(&api.RouteTable{Index: 1, Endpoints: []api.EndpointRoute{
		{Name: "ep", Entities: []api.EntityRoute{wide}},
		{Name: "captured", Entities: []api.EntityRoute{wide}, InferenceTable: "bench.ep_payload"},
		{Name: "queued", Entities: []api.EntityRoute{narrow}},
	}})
	activator := serve(b, a.Handler)

	// The same table behind an activator that checks tokens. Its
	// snapshot is set directly: Run (and so followAccess) does not run.
	authed := New(Config{Logger: slog.New(slog.DiscardHandler), Access: newFakeAccess(nil)}, newFakeRoutes())
	authed.apply(&api.RouteTable{Index: 1, Endpoints: []api.EndpointRoute{{Name: "ep", Entities: []api.EntityRoute{wide}}}})
	authed.access.Store(identity.NewChecker(accessFixture(1, time.Now())))
	authenticated := serve(b, authed.Handler)

	body := []byte(`{"dataframe_split":{"columns":["a","b","c"],"data":[[1.5,2,"x"]]}}`)
	for _, c := range []struct{ name, addr, path, token string }{
		{"direct", worker, "/invocations", ""},
		{"activator", activator, "/serving-endpoints/ep/invocations", ""},
		{"authenticated", authenticated, "/serving-endpoints/ep/invocations", tokQuery},
		{"captured", activator, "/serving-endpoints/captured/invocations", ""},
		{"queued", activator, "/serving-endpoints/queued/invocations", ""},
	} {
		client := &fasthttp.HostClient{Addr: c.addr, MaxConns: 1024}
		do := func(b *testing.B, req *fasthttp.Request, resp *fasthttp.Response) bool {
			if err := client.Do(req, resp); err != nil || resp.StatusCode() != fasthttp.StatusOK {
				b.Errorf("%s: %v, status %d: %s", c.name, err, resp.StatusCode(), resp.Body())
				return false
			}
			return true
		}
		newRequest := func() *fasthttp.Request {
			req := fasthttp.AcquireRequest()
			req.SetRequestURI("http://" + c.addr + c.path)
			req.Header.SetMethod(fasthttp.MethodPost)
			req.Header.SetContentType("application/json")
			if c.token != "" {
				req.Header.Set("Authorization", "Bearer "+c.token)
			}
			req.SetBodyRaw(body)
			return req
		}
		b.Run(c.name+"/serial", func(b *testing.B) {
			b.ReportAllocs()
			req, resp := newRequest(), fasthttp.AcquireResponse()
			took := make([]time.Duration, 0, 1<<16)
			for b.Loop() {
				start := time.Now()
				if !do(b, req, resp) {
					return
				}
				took = append(took, time.Since(start))
			}
			slices.Sort(took)
			b.ReportMetric(float64(took[len(took)/2].Nanoseconds()), "p50-ns")
			b.ReportMetric(float64(took[len(took)*99/100].Nanoseconds()), "p99-ns")
		})
		b.Run(c.name+"/parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.SetParallelism(8)
			b.RunParallel(func(pb *testing.PB) {
				req, resp := newRequest(), fasthttp.AcquireResponse()
				for pb.Next() {
					if !do(b, req, resp) {
						return
					}
				}
			})
		})
	}
}

// serve runs handle on a loopback port until the benchmark ends.
func serve(b *testing.B, handle fasthttp.RequestHandler) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: handle}
	go func() { _ = srv.Serve(ln) }()
	b.Cleanup(func() { _ = srv.Shutdown() })
	return ln.Addr().String()
}
