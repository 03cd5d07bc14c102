package scheduler

import (
	"context"
	"errors"
	"net/http"
	"reflect"
	"testing"
	"time"

	"github.com/gantry/gantry/api"
)

// zeroBody creates endpoint z with one Medium scale-to-zero entity: 0..4
// replicas.
const zeroBody = `{"name": "z", "config": {"served_entities": [{"name": "v1", "entity_name": "m", "entity_version": "1", "workload_size": "Medium", "scale_to_zero_enabled": true}]}}`

func newDeploymentsHarness(t *testing.T) (*harness, *api.Client, string) {
	t.Helper()
	h := newHarness(t, t.TempDir())
	h.upload(t, "m")
	if code, e := h.call(t, "POST", "/api/2.0/serving-endpoints", zeroBody, nil); code != 200 {
		t.Fatalf("create: %d %v", code, e)
	}
	h.reconcile()
	c, err := api.NewClient(&api.Config{Address: h.srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	ts := h.s.Targets()
	if len(ts) != 1 {
		t.Fatalf("targets = %+v", ts)
	}
	return h, c, ts[0].Deployment
}

func TestDeploymentsListAndScale(t *testing.T) {
	h, c, dep := newDeploymentsHarness(t)

	list, meta, err := c.Deployments().List(nil)
	if err != nil {
		t.Fatal(err)
	}
	want := api.DeploymentTarget{Deployment: dep, MinReplicas: 0, MaxReplicas: 4, Current: 1, Ready: 0, Starting: 1, TargetPerReplica: 4}
	if len(list) != 1 || !reflect.DeepEqual(list[0], want) {
		t.Fatalf("List = %+v, want [%+v]", list, want)
	}
	if meta.LastIndex == 0 {
		t.Error("LastIndex = 0, want the list's index")
	}

	if _, err := c.Deployments().Scale(dep, 3, nil); err != nil {
		t.Fatal(err)
	}
	h.reconcile()
	if got := h.orch.ids(); len(got) != 1 || h.orch.ensured[dep].Replicas != 3 {
		t.Errorf("driver has %v with %d replicas, want %s with 3", got, h.orch.ensured[dep].Replicas, dep)
	}
	h.orch.set("v1", ready("127.0.0.1:9001"))
	list, _, _ = c.Deployments().List(nil)
	if got := list[0]; got.Current != 3 || got.Ready != 1 || got.Starting != 2 {
		t.Errorf("after Scale(3) with one replica ready: %+v, want current 3, ready 1, starting 2", got)
	}

	// Zero is a count, and counts beyond the bounds are clamped.
	for _, tc := range []struct{ ask, want int }{{0, 0}, {99, 4}} {
		if _, err := c.Deployments().Scale(dep, tc.ask, nil); err != nil {
			t.Fatal(err)
		}
		if got := h.s.Targets()[0].Current; got != tc.want {
			t.Errorf("Scale(%d): Current = %d, want %d", tc.ask, got, tc.want)
		}
	}
}

func TestDeploymentsScaleErrors(t *testing.T) {
	h, c, dep := newDeploymentsHarness(t)

	_, err := c.Deployments().Scale("nope", 1, nil)
	var ue *api.UnexpectedResponseError
	var ae *api.Error
	if !errors.As(err, &ue) || ue.StatusCode() != http.StatusNotFound || !errors.As(err, &ae) || ae.Code != api.ErrResourceDoesNotExist {
		t.Errorf("Scale of an unknown deployment: %v, want 404 RESOURCE_DOES_NOT_EXIST", err)
	}

	path := "/api/2.0/gantry/deployments/" + dep + "/scale"
	for _, tc := range []struct {
		name, body, code string
	}{
		{"empty", ``, api.ErrMalformedRequest},
		{"not JSON", `{"replicas": `, api.ErrMalformedRequest},
		{"missing replicas", `{}`, api.ErrInvalidParameterValue},
		{"null replicas", `{"replicas": null}`, api.ErrInvalidParameterValue},
		{"negative", `{"replicas": -1}`, api.ErrInvalidParameterValue},
		{"string", `{"replicas": "2"}`, api.ErrMalformedRequest},
		{"fraction", `{"replicas": 1.5}`, api.ErrMalformedRequest},
		{"unknown field", `{"replicas": 1, "force": true}`, api.ErrInvalidParameterValue},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, e := h.call(t, "POST", path, tc.body, nil)
			if status != http.StatusBadRequest || e.Code != tc.code {
				t.Errorf("POST %s: %d %+v, want 400 %s", tc.body, status, e, tc.code)
			}
		})
	}
	if got := h.s.Targets()[0].Current; got != 1 {
		t.Errorf("Current = %d after refused requests, want 1", got)
	}
	if status, _ := h.call(t, "GET", path, "", nil); status != http.StatusMethodNotAllowed {
		t.Errorf("GET on the scale path: %d, want 405", status)
	}
}

func TestDeploymentsBlockingQuery(t *testing.T) {
	h, c, dep := newDeploymentsHarness(t)
	_, meta, err := c.Deployments().List(nil)
	if err != nil {
		t.Fatal(err)
	}

	// Nothing changes: the query waits out its wait and answers the same
	// index.
	start := time.Now()
	_, m2, err := c.Deployments().List(&api.QueryOptions{WaitIndex: meta.LastIndex, WaitTime: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < 300*time.Millisecond || m2.LastIndex != meta.LastIndex {
		t.Errorf("unchanged list: answered after %s with index %d, want after the 300ms wait with %d", took, m2.LastIndex, meta.LastIndex)
	}

	// A change wakes the query, which answers a higher index.
	type result struct {
		list []api.DeploymentTarget
		meta *api.QueryMeta
		err  error
	}
	done := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		l, m, err := c.Deployments().List((&api.QueryOptions{WaitIndex: meta.LastIndex, WaitTime: 5 * time.Second}).WithContext(ctx))
		done <- result{l, m, err}
	}()
	time.Sleep(2 * deploymentsPoll) // let the query start waiting
	select {
	case r := <-done:
		t.Fatalf("blocking query answered before any change: %+v", r)
	default:
	}
	if err := h.s.Scale(dep, 2); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-done:
		if r.err != nil {
			t.Fatal(r.err)
		}
		if r.meta.LastIndex <= meta.LastIndex || r.list[0].Current != 2 {
			t.Errorf("after Scale(2): index %d (was %d), list %+v; want a higher index and current 2", r.meta.LastIndex, meta.LastIndex, r.list)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("blocking query did not wake on a change")
	}

	if status, e := h.call(t, "GET", "/api/2.0/gantry/deployments?index=x", "", nil); status != http.StatusBadRequest {
		t.Errorf("?index=x: %d %+v, want 400", status, e)
	}
	if status, e := h.call(t, "GET", "/api/2.0/gantry/deployments?index=1&wait=soon", "", nil); status != http.StatusBadRequest {
		t.Errorf("?wait=soon: %d %+v, want 400", status, e)
	}
}
