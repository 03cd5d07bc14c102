package activator

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"testing"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/internal/eventually"
	"github.com/valyala/fasthttp"
)

// splitEndpoint is an endpoint snapshot with entities a and b at pa/pb
// percent, for pick's unit tests.
func splitEndpoint(pa, pb int) *endpoint {
	ep := &endpoint{entities: map[string]*entity{"a": {name: "a"}, "b": {name: "b"}}}
	a := &Activator{}
	ep.split, ep.total = a.splitOf(&api.EndpointRoute{Routes: []api.Route{
		{ServedModelName: "a", TrafficPercentage: pa}, {ServedModelName: "b", TrafficPercentage: pb},
	}}, ep)
	return ep
}

func TestPickProportions(t *testing.T) {
	ep := splitEndpoint(80, 20)
	intN := rand.New(rand.NewPCG(1, 2)).IntN
	const n = 10000
	count := map[string]int{}
	for range n {
		count[ep.pick(nil, intN).name]++
	}
	// The issue asks for each share within ±2 points over 10,000 requests.
	if count["a"] < 7800 || count["a"] > 8200 {
		t.Errorf("random draws: %v; want 8000±200 to a", count)
	}

	count = map[string]int{}
	for i := range n {
		count[ep.pick([]byte(fmt.Sprintf("user-%d", i)), intN).name]++
	}
	if count["a"] < 7800 || count["a"] > 8200 {
		t.Errorf("sticky keys: %v; want 8000±200 to a", count)
	}
}

func TestPickSticky(t *testing.T) {
	ep := splitEndpoint(50, 50)
	intN := rand.New(rand.NewPCG(3, 4)).IntN
	moved := 0
	for i := range 1000 {
		key := []byte(fmt.Sprintf("client-%d", i))
		first := ep.pick(key, intN)
		for range 5 {
			if got := ep.pick(key, intN); got != first {
				t.Fatalf("key %s went to %s, then to %s", key, first.name, got.name)
			}
		}
		// Another activator (a fresh snapshot of the same split) agrees.
		if other := splitEndpoint(50, 50).pick(key, intN); other.name != first.name {
			moved++
		}
	}
	if moved != 0 {
		t.Errorf("%d of 1000 keys picked differently by another snapshot", moved)
	}
}

func TestStickyKeyEndToEnd(t *testing.T) {
	h := newHarness(t, Config{})
	a, b := startWorker(t, "a", nil), startWorker(t, "b", nil)
	h.push(oneEndpoint(1, "ep",
		[]api.Route{{ServedModelName: "a", TrafficPercentage: 50}, {ServedModelName: "b", TrafficPercentage: 50}},
		readyEntity("a", a.addr), readyEntity("b", b.addr)))

	seen := map[string]int{}
	for i := range 40 {
		// The client_request_id in the body and the header both stick.
		body := fmt.Appendf(nil, `{"inputs": [1], "client_request_id": "user-%d"}`, i%4)
		first := h.do(http.MethodPost, "/serving-endpoints/ep/invocations", "application/json", body).header.Get("served-model-name")
		again := h.do(http.MethodPost, "/serving-endpoints/ep/invocations", "application/json", body).header.Get("served-model-name")
		if first != again {
			t.Fatalf("client_request_id user-%d went to %s, then %s", i%4, first, again)
		}
		req, _ := http.NewRequest(http.MethodPost, h.base+"/serving-endpoints/ep/invocations", nil)
		req.Header.Set("X-Gantry-Sticky-Key", fmt.Sprint("k", i%4))
		var names []string
		for range 3 {
			resp, err := h.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			names = append(names, resp.Header.Get("served-model-name"))
		}
		if names[0] != names[1] || names[1] != names[2] {
			t.Fatalf("sticky key k%d went to %v", i%4, names)
		}
		seen[first]++
	}
	if len(seen) != 2 {
		t.Logf("four keys all went to one entity: %v (possible, but unlikely)", seen)
	}
}

// TestHeldRequestsFollowAConfigUpdate holds requests for an entity with no
// replica, then switches the route table to a new deployment of it (what a
// config update does): the held requests are answered by the new one.
func TestHeldRequestsFollowAConfigUpdate(t *testing.T) {
	h := newHarness(t, Config{})
	w := startWorker(t, "new", nil)
	old := coldEntity("m")
	h.push(oneEndpoint(1, "ep", nil, old))
	var answers []<-chan answer
	for range 5 {
		answers = append(answers, h.invokeAsync("ep", []byte(`{"inputs":[1]}`)))
	}
	h.waitQueued("ep", "m", 5)

	next := readyEntity("m", w.addr)
	next.Deployment = "m-d2"
	h.push(oneEndpoint(2, "ep", nil, next))
	for _, ch := range answers {
		got := receive(t, ch)
		if got.status != http.StatusOK || string(got.body) != `{"predictions":["new"]}` {
			t.Fatalf("held request: %d %s; want the new deployment's answer", got.status, got.body)
		}
	}

	// A pinned request (served-models path) moves too; one whose entity is
	// gone for good is refused with the reason.
	gone := coldEntity("x")
	h.push(&api.RouteTable{Index: 3, Endpoints: []api.EndpointRoute{{Name: "ep", ConfigVersion: 1, Entities: []api.EntityRoute{next, gone}}}})
	held := h.invokeAsyncPath("/serving-endpoints/ep/served-models/x/invocations")
	h.waitQueued("ep", "x", 1)
	h.push(oneEndpoint(4, "ep", nil, next))
	got := receive(t, held)
	if got.status != http.StatusServiceUnavailable || got.apiError(t).Code != api.ErrTemporarilyUnavailable {
		t.Fatalf("request held for a removed entity: %d %s; want 503", got.status, got.body)
	}
}

func TestShadowRoute(t *testing.T) {
	rec := &records{}
	h := newHarness(t, Config{Capture: rec})
	live := startWorker(t, "live", nil)
	release := make(chan struct{})
	shadowed := startWorker(t, "shadow", func(ctx *fasthttp.RequestCtx) {
		<-release // a slow shadow must not slow the live answers
		ctx.SetBody([]byte(`{"predictions":["shadow"]}`))
	})
	rt := oneEndpoint(1, "ep",
		[]api.Route{{ServedModelName: "live", TrafficPercentage: 100}, {ServedModelName: "shadow", TrafficPercentage: 100, Shadow: true}},
		readyEntity("live", live.addr), readyEntity("shadow", shadowed.addr))
	rt.Endpoints[0].InferenceTable = "ml.ep_payload"
	h.push(rt)

	start := time.Now()
	for range 10 {
		got := h.invoke("ep")
		if got.status != http.StatusOK || string(got.body) != `{"predictions":["live"]}` || got.header.Get("served-model-name") != "live" {
			t.Fatalf("answer %d %s from %s; want live's", got.status, got.body, got.header.Get("served-model-name"))
		}
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("10 answers took %s behind a stuck shadow", d)
	}
	// Refused requests are not mirrored: a GET (405) and a body over the
	// 1 MiB that mirrors copy.
	if got := h.do(http.MethodGet, "/serving-endpoints/ep/invocations", "", nil); got.status != http.StatusMethodNotAllowed {
		t.Fatalf("GET: %d", got.status)
	}
	h.do(http.MethodPost, "/serving-endpoints/ep/invocations", "application/json", make([]byte, 1<<20+1))
	close(release)
	eventually.True(t, 5*time.Second, "10 shadow requests", func() bool { return shadowed.hits.Load() == 10 })
	eventually.True(t, 5*time.Second, "22 records", func() bool { return len(rec.all()) == 22 })
	if err := h.a.WaitShadows(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := shadowed.hits.Load(); n != 10 {
		t.Fatalf("shadow got %d requests; want the 10 valid ones only", n)
	}
	shadows := 0
	for _, r := range rec.all() {
		if r.Shadow {
			shadows++
			if r.ServedEntity != "shadow" || string(r.Response) != `{"predictions":["shadow"]}` || len(r.RequestID) != 32+len("-shadow") {
				t.Errorf("shadow record %+v", r)
			}
		}
	}
	if shadows != 10 {
		t.Fatalf("%d shadow records; want 10", shadows)
	}
}
