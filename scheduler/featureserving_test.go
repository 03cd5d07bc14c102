package scheduler

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/features/onlinestore"
	"github.com/gantry/gantry/features/onlinestore/redistest"
	"github.com/gantry/gantry/internal/eventually"
)

// seedUsersTable publishes features.users straight into the store (the
// publisher's own tests cover ClickHouse).
func seedUsersTable(t *testing.T, st *onlinestore.Store) {
	t.Helper()
	ctx := context.Background()
	w, err := st.NewGeneration(ctx, "features.users")
	if err != nil {
		t.Fatal(err)
	}
	w.Put(ctx, "42", []byte(`[7,310.25]`))
	cols := []string{"txn_count_7d", "avg_amount_30d"}
	if err := w.Commit(ctx, cols); err != nil {
		t.Fatal(err)
	}
	if err := st.SaveTable(ctx, api.OnlineTable{
		Source: "features.users", Name: "users", PrimaryKeyColumns: []string{"user_id"}, PublishMode: api.PublishSnapshot,
		State: "ONLINE", Rows: 1, Generation: w.Generation(),
		Columns: []api.FeatureColumn{{Name: "user_id", Type: "UInt64"}, {Name: "txn_count_7d", Type: "UInt32"}, {Name: "avg_amount_30d", Type: "Float64"}},
	}); err != nil {
		t.Fatal(err)
	}
}

// A served entity whose entity_name is a feature spec (no entity_version)
// is a feature-serving entity: READY once its spec resolves, nothing
// handed to the driver or the autoscaler, and its route carries the
// resolved spec with Serving set. Models and specs share one namespace.
func TestFeatureServingEntity(t *testing.T) {
	srv := redistest.Start(t)
	st := redistest.Open(t, srv)
	seedUsersTable(t, st)
	h := newHarness(t, t.TempDir())
	h.s.cfg.Features = &FeatureStore{Store: st}

	const spec = `{"name": "user_features", "features": [{"table_name": "features.users", "lookup_key": ["user_id"],
		"rename_outputs": {"avg_amount_30d": "avg_amount"}}]}`
	if code, e := h.call(t, "POST", "/api/2.0/gantry/feature-specs", spec, nil); code != 200 {
		t.Fatalf("create spec: %d %v", code, e)
	}
	// The namespace: a model may not take the spec's name, nor a spec a model's.
	h.upload(t, "fraud")
	if code, e := h.call(t, "POST", "/api/2.0/gantry/feature-specs", `{"name": "fraud", "features": []}`, nil); code != http.StatusConflict {
		t.Errorf("spec named like a model: %d %v", code, e)
	}
	if code, e := uploadFiles(t, h, "user_features", map[string]string{"MLmodel": "flavors:\n  xgboost:\n    data: model.json\n", "model.json": "{}"}); code != http.StatusConflict || !strings.Contains(e.Message, "share one namespace") {
		t.Errorf("model named like a spec: %d %v", code, e)
	}

	body := `{"name": "user-features", "config": {"served_entities": [{"entity_name": "user_features", "scale_to_zero_enabled": true}]}}`
	if code, e := h.call(t, "POST", "/api/2.0/serving-endpoints", body, nil); code != 200 {
		t.Fatalf("create: %d %v", code, e)
	}
	settleFeatures(t, h)
	if ids := h.orch.ids(); len(ids) != 0 {
		t.Errorf("the driver got deployments %v for a feature spec", ids)
	}
	if ts := h.s.Targets(); len(ts) != 0 {
		t.Errorf("autoscaler targets = %+v, want none", ts)
	}
	ep := h.get(t, "user-features")
	e := ep.Config.ServedEntities[0]
	if ep.State.Ready != api.EndpointReady || e.State.Deployment != api.DeploymentReady || e.Name != "user_features" || e.Replicas != nil {
		t.Errorf("endpoint = %+v, entity %+v", ep.State, e)
	}
	er := h.routes.Current().Endpoints[0].Entities[0]
	if er.Features == nil || !er.Features.Serving || er.Features.Error != "" || len(er.Features.Lookups) != 1 ||
		strings.Join(er.Features.Lookups[0].Outputs, ",") != "txn_count_7d,avg_amount" {
		t.Errorf("route = %+v features %+v", er, er.Features)
	}

	// Neither a spec nor a model: 404; a model without a version: 400.
	bad := `{"name": "nope", "config": {"served_entities": [{"entity_name": "missing"}]}}`
	if code, e := h.call(t, "POST", "/api/2.0/serving-endpoints", bad, nil); code != 404 || !strings.Contains(e.Message, "neither a feature spec nor a model") {
		t.Errorf("unknown entity: %d %v", code, e)
	}
	bad = `{"name": "nope", "config": {"served_entities": [{"entity_name": "fraud"}]}}`
	if code, e := h.call(t, "POST", "/api/2.0/serving-endpoints", bad, nil); code != 400 || !strings.Contains(e.Message, "entity_version") {
		t.Errorf("model without version: %d %v", code, e)
	}

	// Without an online store, a missing entity_version is what it always
	// was: a 400 that names it.
	off := newHarness(t, t.TempDir())
	if code, e := off.call(t, "POST", "/api/2.0/serving-endpoints", bad, nil); code != 400 || !strings.Contains(e.Message, "entity_version: required") {
		t.Errorf("no online store: %d %v", code, e)
	}

	// A spec deleted under the endpoint fails the entity with the reason.
	if code, e := h.call(t, "DELETE", "/api/2.0/gantry/feature-specs/user_features", "", nil); code != 200 {
		t.Fatalf("delete spec: %d %v", code, e)
	}
	settleFeatures(t, h)
	er = h.routes.Current().Endpoints[0].Entities[0]
	if er.State != api.DeploymentFailed || !strings.Contains(er.Message, "does not exist") || er.Features == nil || er.Features.Error == "" {
		t.Errorf("route after delete = %+v", er)
	}
}

// settleFeatures runs passes until the feature routes are resolved: a
// pass resolves them in the background, and the pass after sees them (a
// stale route is served meanwhile, so no resolve may be in flight).
func settleFeatures(t *testing.T, h *harness) {
	t.Helper()
	eventually.True(t, 10*time.Second, "the feature routes to resolve", func() bool {
		if fs := h.s.cfg.Features; fs != nil && fs.inFlight() {
			return false
		}
		h.reconcile()
		if fs := h.s.cfg.Features; fs != nil && fs.inFlight() {
			return false
		}
		for _, ep := range h.routes.Current().Endpoints {
			for _, e := range ep.Entities {
				if e.State == api.DeploymentCreating && strings.HasPrefix(e.Message, "feature spec:") {
					return false
				}
			}
		}
		return true
	})
}

// inFlight reports whether a resolve is running.
func (fs *FeatureStore) inFlight() bool {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return len(fs.resolving) > 0
}

// A model without a spec never waits for a resolve, and a publish does not
// pause a model with one: its last route is served until the new one lands.
// (Before, every model's first pass and every pass after a publish refused
// calls with "being resolved": 503s under traffic.)
func TestFeatureRoutesNeverPause(t *testing.T) {
	fs := &FeatureStore{attached: func(name, version string) (string, error) { return "", nil }}
	if r, ok := fs.modelRoute(t.TempDir(), "fraud", "1", nil); r != nil || !ok || fs.inFlight() {
		t.Fatalf("model without a spec: %+v, %v, resolving %v; want nil, resolved, no resolve", r, ok, fs.inFlight())
	}

	old := &api.FeatureRoute{Spec: "old"}
	fs.routes = map[string]*api.FeatureRoute{"k": old}
	fs.forget()
	release := make(chan struct{})
	fresh := &api.FeatureRoute{Spec: "fresh"}
	resolve := func() (*api.FeatureRoute, bool) { <-release; return fresh, true }
	if r, ok := fs.cached("k", api.FeatureRoute{}, resolve); r != old || !ok {
		t.Fatalf("after forget: %+v, %v; want the old route, resolved", r, ok)
	}
	close(release)
	eventually.True(t, 5*time.Second, "the new route", func() bool {
		r, ok := fs.cached("k", api.FeatureRoute{}, resolve)
		return r == fresh && ok
	})

	// A resolve that a forget overtakes may have read what the forget
	// replaced: its answer is dropped and the next miss resolves again.
	fs.forget()
	release = make(chan struct{})
	outdated := &api.FeatureRoute{Spec: "outdated"}
	fs.cached("k", api.FeatureRoute{}, func() (*api.FeatureRoute, bool) { <-release; return outdated, true })
	fs.forget()
	close(release)
	eventually.True(t, 5*time.Second, "the overtaken resolve to end", func() bool { return !fs.inFlight() })
	again := &api.FeatureRoute{Spec: "again"}
	if r, _ := fs.cached("k", api.FeatureRoute{}, func() (*api.FeatureRoute, bool) { return again, true }); r == outdated {
		t.Fatal("the overtaken resolve's answer was cached")
	}
	eventually.True(t, 5*time.Second, "a resolve after the forget", func() bool {
		r, ok := fs.cached("k", api.FeatureRoute{}, resolve)
		return r == again && ok
	})
}
