package activator

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/features/onlinestore"
	"github.com/gantry/gantry/features/onlinestore/redistest"
	"github.com/valyala/fasthttp"
)

// seedUsers publishes a small users table straight into the store: the
// publisher's own tests cover ClickHouse.
func seedUsers(t *testing.T, st *onlinestore.Store) {
	t.Helper()
	ctx := context.Background()
	w, err := st.NewGeneration(ctx, "features.users")
	if err != nil {
		t.Fatal(err)
	}
	w.Put(ctx, "42", []byte(`[7,310.25,"gold"]`))
	w.Put(ctx, "7", []byte(`[2,20,"new"]`))
	if err := w.Commit(ctx, []string{"txn_count_7d", "avg_amount_30d", "segment"}); err != nil {
		t.Fatal(err)
	}
}

var usersRoute = api.FeatureRoute{Lookups: []api.LookupRoute{{
	Table: "features.users", LookupKey: []string{"user_id"},
	Features: []string{"txn_count_7d", "avg_amount_30d"}, Outputs: []string{"txn_count_7d", "avg_amount"},
	Defaults: []api.RawJSON{nil, api.RawJSON("0")},
}}}

func TestFeatureLookup(t *testing.T) {
	srv := redistest.Start(t)
	st := redistest.Open(t, srv)
	seedUsers(t, st)
	h := newHarness(t, Config{Features: st})
	// The worker answers with the body it got, so the test sees what the
	// model would.
	w := startWorker(t, "m", func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("application/json")
		ctx.SetBody(append(append([]byte(`{"predictions":[`), ctx.PostBody()...), "]}"...))
	})
	model := readyEntity("m", w.addr)
	model.Features = &usersRoute
	serving := api.EntityRoute{Name: "f", Deployment: "f-d1", State: api.DeploymentReady,
		Features: &api.FeatureRoute{Serving: true, Lookups: usersRoute.Lookups}}
	h.push(&api.RouteTable{Index: 1, Endpoints: []api.EndpointRoute{
		{Name: "fraud", ConfigVersion: 1, Entities: []api.EntityRoute{model}},
		{Name: "user-features", ConfigVersion: 1, Entities: []api.EntityRoute{serving}},
	}})
	post := func(ep, body string) answer {
		return h.do(http.MethodPost, "/serving-endpoints/"+ep+"/invocations", "application/json", []byte(body))
	}

	// Keys only: the model gets the features, the request's own
	// avg_amount overrides the lookup, 43 has no row but defaults... for
	// avg_amount only, so it is refused below.
	r := post("fraud", `{"dataframe_records": [{"user_id": 42, "amount": 310.0}, {"user_id": 7, "avg_amount": 1.5}]}`)
	want := `{"predictions":[{"dataframe_split":{"columns":["user_id","amount","avg_amount","txn_count_7d"],"data":[[42,310.0,310.25,7],[7,null,1.5,2]]}}]}`
	if r.status != 200 || string(r.body) != want {
		t.Errorf("lookup: %d %s\nwant %s", r.status, r.body, want)
	}
	r = post("fraud", `{"dataframe_records": [{"user_id": 43}]}`)
	if e := r.apiError(t); r.status != 400 || !strings.Contains(e.Message, "user_id=43") || !strings.Contains(e.Message, "features.users") {
		t.Errorf("missing key: %d %s", r.status, r.body)
	}
	if w.hits.Load() != 1 {
		t.Errorf("worker got %d requests, want 1 (refused lookups never reach it)", w.hits.Load())
	}

	// Feature serving: the activator answers, no replica needed.
	r = post("user-features", `{"dataframe_records": [{"user_id": 7}, {"user_id": 42}]}`)
	if r.status != 200 || string(r.body) != `{"outputs":[{"txn_count_7d":2,"avg_amount":20},{"txn_count_7d":7,"avg_amount":310.25}]}` ||
		r.header.Get("served-model-name") != "f" {
		t.Errorf("feature serving: %d %s %v", r.status, r.body, r.header)
	}

	// Redis gone: 503 with the reason and Retry-After, never a
	// prediction made without features.
	srv.Kill()
	for _, ep := range []string{"fraud", "user-features"} {
		r = post(ep, `{"dataframe_records": [{"user_id": 42}]}`)
		if e := r.apiError(t); r.status != 503 || !strings.Contains(e.Message, "online store is unavailable") || r.header.Get("Retry-After") == "" {
			t.Errorf("%s with Redis down: %d %s", ep, r.status, r.body)
		}
	}
	if w.hits.Load() != 1 {
		t.Errorf("worker got %d requests with Redis down", w.hits.Load())
	}
	// A request that gives every feature needs no lookup, so it is
	// answered with Redis down.
	r = post("fraud", `{"dataframe_records": [{"user_id": 42, "avg_amount": 1.5, "txn_count_7d": 3}]}`)
	if want := `{"predictions":[{"dataframe_split":{"columns":["user_id","avg_amount","txn_count_7d"],"data":[[42,1.5,3]]}}]}`; r.status != 200 || string(r.body) != want {
		t.Errorf("every feature given, Redis down: %d %s\nwant %s", r.status, r.body, want)
	}
}

func TestFeatureLookupWithoutStore(t *testing.T) {
	h := newHarness(t, Config{})
	e := readyEntity("m", deadAddr(t))
	e.Features = &usersRoute
	h.push(oneEndpoint(1, "fraud", nil, e))
	r := h.do(http.MethodPost, "/serving-endpoints/fraud/invocations", "application/json", []byte(`{"dataframe_records": [{"user_id": 42}]}`))
	if r.status != 503 || !strings.Contains(r.apiError(t).Message, "--online-store") {
		t.Errorf("no online store: %d %s", r.status, r.body)
	}
}

// The inference table logs what the model saw (the augmented request) by
// default, and the request as the client sent it with log_request_as_sent;
// a shadow's row follows the same setting, while the shadow itself, like
// the model, gets the augmented request.
func TestFeatureLookupCapture(t *testing.T) {
	srv := redistest.Start(t)
	st := redistest.Open(t, srv)
	seedUsers(t, st)
	rec := &records{}
	h := newHarness(t, Config{Features: st, Capture: rec})
	echo := func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("application/json")
		ctx.SetBody(append(append([]byte(`{"predictions":[`), ctx.PostBody()...), "]}"...))
	}
	live, shadow := startWorker(t, "live", echo), startWorker(t, "shadow", echo)
	routes := []api.Route{{ServedModelName: "m", TrafficPercentage: 100}, {ServedModelName: "s", TrafficPercentage: 100, Shadow: true}}
	model, shadowed := readyEntity("m", live.addr), readyEntity("s", shadow.addr)
	model.Features = &usersRoute
	rt := &api.RouteTable{Index: 1}
	for _, asSent := range []bool{false, true} {
		name := fmt.Sprintf("as-sent-%v", asSent)
		rt.Endpoints = append(rt.Endpoints, api.EndpointRoute{Name: name, ConfigVersion: 1, Routes: routes,
			Entities: []api.EntityRoute{model, shadowed}, InferenceTable: "ml." + strings.ReplaceAll(name, "-", "_"), LogRequestAsSent: asSent})
	}
	h.push(rt)

	sent := `{"dataframe_records": [{"user_id": 42, "amount": 310.0}]}`
	augmented := `{"dataframe_split":{"columns":["user_id","amount","txn_count_7d","avg_amount"],"data":[[42,310.0,7,310.25]]}}`
	for _, ep := range []string{"as-sent-false", "as-sent-true"} {
		r := h.do(http.MethodPost, "/serving-endpoints/"+ep+"/invocations", "application/json", []byte(sent))
		if want := `{"predictions":[` + augmented + `]}`; r.status != 200 || string(r.body) != want {
			t.Fatalf("%s: %d %s\nwant %s", ep, r.status, r.body, want)
		}
	}
	if err := h.a.WaitShadows(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, r := range rec.all() {
		got[fmt.Sprintf("%s shadow=%v", r.Endpoint, r.Shadow)] = string(r.Request) + " → " + string(r.Response)
	}
	want := map[string]string{
		"as-sent-false shadow=false": augmented + ` → {"predictions":[` + augmented + `]}`,
		"as-sent-false shadow=true":  augmented + ` → {"predictions":[` + augmented + `]}`,
		"as-sent-true shadow=false":  sent + ` → {"predictions":[` + augmented + `]}`,
		"as-sent-true shadow=true":   sent + ` → {"predictions":[` + augmented + `]}`,
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s logged\n%s\nwant\n%s", k, got[k], w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("records: %v", got)
	}
}
