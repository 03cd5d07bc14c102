package scheduler

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gantry/gantry/api"
)

type watchAnswer struct {
	status int
	index  string
	body   []byte
	took   time.Duration
}

// watch sends a blocking GET as who and answers on the channel.
func (a *authHarness) watch(t *testing.T, who, path string) <-chan watchAnswer {
	t.Helper()
	out := make(chan watchAnswer, 1)
	req, _ := http.NewRequest("GET", a.srv.URL+path, nil)
	req.Header.Set("Authorization", "Bearer "+a.tokens[who])
	go func() {
		t0 := time.Now()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			out <- watchAnswer{status: -1, body: []byte(err.Error())}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		out <- watchAnswer{resp.StatusCode, resp.Header.Get("X-Gantry-Index"), b, time.Since(t0)}
	}()
	return out
}

func (a *authHarness) tag(t *testing.T, ep, key string) {
	t.Helper()
	if st, b := a.do(t, "owner", "PATCH", "/api/2.0/serving-endpoints/"+ep+"/tags", `{"add_tags": [{"key": "`+key+`"}]}`); st != 200 {
		t.Fatalf("tag %s: %d %s", ep, st, b)
	}
}

func names(t *testing.T, b []byte) []string {
	t.Helper()
	var l api.ListEndpointsResponse
	if err := json.Unmarshal(b, &l); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	var out []string
	for _, e := range l.Endpoints {
		out = append(out, e.Name)
	}
	return out
}

// A blocked call on the endpoints list or one endpoint returns when what
// the caller sees changes, and not for a change it may not see; an
// endpoint it may not view, or no longer may, answers as a missing one.
func TestBlockingEndpointQueries(t *testing.T) {
	a := newAuthHarness(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go a.s.Run(ctx)
	body := `{"name": "secret", "config": {"served_entities": [{"name": "v1", "entity_name": "m", "entity_version": "1"}]}}`
	if st, b := a.do(t, "owner", "POST", "/api/2.0/serving-endpoints", body); st != 200 {
		t.Fatalf("create secret: %d %s", st, b)
	}

	first := <-a.watch(t, idView, "/api/2.0/serving-endpoints")
	if first.status != 200 || first.index == "" {
		t.Fatalf("list: %d index %q %s", first.status, first.index, first.body)
	}
	if got := names(t, first.body); len(got) != 1 || got[0] != "ep" {
		t.Fatalf("CAN_VIEW on ep lists %v", got)
	}
	// The same answer has the same index: an unchanged caller blocks.
	if again := <-a.watch(t, idView, "/api/2.0/serving-endpoints?index="+first.index+"&wait=1s"); again.index != first.index || again.took < time.Second {
		t.Fatalf("index %s after %s, want %s after the full wait", again.index, again.took, first.index)
	}

	blocked := a.watch(t, idView, "/api/2.0/serving-endpoints?index="+first.index+"&wait=20s")
	a.tag(t, "secret", "hidden")
	// Several reconcile passes (one a second) and the change's own wake
	// re-render the caller's answer; none may differ.
	select {
	case got := <-blocked:
		t.Fatalf("a change to an endpoint the caller may not view ended its wait: %d %s", got.status, got.body)
	case <-time.After(2500 * time.Millisecond):
	}
	a.tag(t, "ep", "seen")
	select {
	case got := <-blocked:
		if got.status != 200 || got.index == first.index || got.index == "" {
			t.Fatalf("after a change to ep: %d index %s (was %s)", got.status, got.index, first.index)
		}
		if n := names(t, got.body); len(n) != 1 || n[0] != "ep" || !strings.Contains(string(got.body), `"seen"`) || strings.Contains(string(got.body), "secret") {
			t.Fatalf("after a change to ep: %s", got.body)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("a change to ep did not end the wait on the list")
	}

	// One endpoint: the one the caller may not view is missing, blocking
	// or not, in the words of a missing one.
	hidden := <-a.watch(t, idView, "/api/2.0/serving-endpoints/secret?index=1&wait=10s")
	missing := <-a.watch(t, idView, "/api/2.0/serving-endpoints/nothing?index=1&wait=10s")
	if hidden.status != 404 || missing.status != 404 || strings.ReplaceAll(string(hidden.body), "secret", "nothing") != string(missing.body) {
		t.Fatalf("hidden: %d %s; missing: %d %s", hidden.status, hidden.body, missing.status, missing.body)
	}
	if hidden.took > time.Second {
		t.Fatalf("a hidden endpoint's blocking query waited %s", hidden.took)
	}

	one := <-a.watch(t, idView, "/api/2.0/serving-endpoints/ep")
	if one.status != 200 || one.index == "" {
		t.Fatalf("get ep: %d %s", one.status, one.body)
	}
	blocked = a.watch(t, idView, "/api/2.0/serving-endpoints/ep?index="+one.index+"&wait=20s")
	a.tag(t, "ep", "again")
	select {
	case got := <-blocked:
		if got.status != 200 || got.index == one.index || !strings.Contains(string(got.body), `"again"`) {
			t.Fatalf("after a change to ep: %d index %s: %s", got.status, got.index, got.body)
		}
		one = got
	case <-time.After(3 * time.Second):
		t.Fatal("a change to ep did not end the wait on ep")
	}

	// The grant goes while the caller waits: the wait ends with the 404
	// of a missing endpoint, not with ep's new state.
	blocked = a.watch(t, idView, "/api/2.0/serving-endpoints/ep?index="+one.index+"&wait=20s")
	time.Sleep(200 * time.Millisecond)
	grants := strings.Replace(a.endpointGrants(), `{"user_name": "can_view@corp.com", "permission_level": "CAN_VIEW"},`, "", 1)
	if st, b := a.do(t, "owner", "PUT", "/api/2.0/permissions/serving-endpoints/ep", grants); st != 200 {
		t.Fatalf("revoke: %d %s", st, b)
	}
	select {
	case got := <-blocked:
		if got.status != 404 || strings.Contains(string(got.body), `"again"`) {
			t.Fatalf("after the grant went: %d %s", got.status, got.body)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("a revoked grant did not end the wait within a reconcile pass")
	}

	// Bad parameters are the caller's 400.
	if got := <-a.watch(t, idAdmin, "/api/2.0/serving-endpoints?index=x"); got.status != 400 {
		t.Fatalf("index=x: %d %s", got.status, got.body)
	}
}
