package activator

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/identity"
	"github.com/gantry/gantry/internal/eventually"
	"github.com/valyala/fasthttp"
)

// fakeAccess is an AccessSource that answers the snapshot set last, and
// blocks a Wait for an index it has until set is called again.
type fakeAccess struct {
	mu      sync.Mutex // guards snap and changed
	snap    *api.AccessSnapshot
	changed chan struct{}
}

var _ AccessSource = (*fakeAccess)(nil)

func newFakeAccess(snap *api.AccessSnapshot) *fakeAccess {
	return &fakeAccess{snap: snap, changed: make(chan struct{})}
}

func (f *fakeAccess) set(snap *api.AccessSnapshot) {
	f.mu.Lock()
	f.snap = snap
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
}

func (f *fakeAccess) Wait(ctx context.Context, index uint64) (*api.AccessSnapshot, error) {
	for {
		f.mu.Lock()
		snap, ch := f.snap, f.changed
		f.mu.Unlock()
		if snap != nil && snap.Index != index {
			return snap, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Tokens of the access fixture, by who holds them.
const (
	tokQuery   = "dapiquery0000000000000000000000000"
	tokView    = "dapiview00000000000000000000000000"
	tokGroup   = "dapigroup000000000000000000000000"
	tokAdmin   = "dapiadmin000000000000000000000000"
	tokOwner   = "dapiowner000000000000000000000000"
	tokNoGrant = "dapinogrant0000000000000000000000"
	tokExpired = "dapiexpired0000000000000000000000"
	tokUnknown = "dapiunknown0000000000000000000000"
)

// accessFixture is a snapshot in which endpoint "ep" is owned by
// owner@corp.com and granted CAN_QUERY to query@corp.com and to group ds,
// CAN_VIEW to view@corp.com; "open" (another endpoint) has no grants.
func accessFixture(index uint64, now time.Time) *api.AccessSnapshot {
	tok := func(value, principal string, groups []string, admin bool, expiry int64) api.AccessToken {
		return api.AccessToken{Hash: identity.HashToken(value), Principal: principal, Kind: "user", Groups: groups, Admin: admin, ExpiryTime: expiry}
	}
	return &api.AccessSnapshot{Index: index, Tokens: []api.AccessToken{
		tok(tokQuery, "query@corp.com", nil, false, -1),
		tok(tokView, "view@corp.com", nil, false, -1),
		tok(tokGroup, "member@corp.com", []string{"ds"}, false, -1),
		tok(tokAdmin, "gantry-admin", []string{"admins"}, true, -1),
		tok(tokOwner, "owner@corp.com", nil, false, -1),
		tok(tokNoGrant, "nobody@corp.com", nil, false, -1),
		tok(tokExpired, "query@corp.com", nil, false, now.Add(-time.Second).UnixMilli()),
	}, Endpoints: []api.EndpointAccess{{
		Name:  "ep",
		Owner: &api.AccessGrant{Kind: "user", Name: "owner@corp.com"},
		Grants: []api.AccessGrant{
			{Kind: "user", Name: "query@corp.com", Level: "CAN_QUERY"},
			{Kind: "user", Name: "view@corp.com", Level: "CAN_VIEW"},
			{Kind: "group", Name: "ds", Level: "CAN_QUERY"},
		},
	}}}
}

// doAs sends a request with the Authorization header value auth (none
// when empty).
func (h *harness) doAs(auth, method, path, body string) answer {
	h.t.Helper()
	req, err := http.NewRequest(method, h.base+path, strings.NewReader(body))
	if err != nil {
		h.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := h.client.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	return answer{status: resp.StatusCode, header: resp.Header, body: b}
}

// TestInvocationAuthorization: every invocation path, as every kind of
// caller, answers what the scheduler would: 401 without a valid token
// (with WWW-Authenticate), 403 naming CAN_QUERY for a caller that may
// only view, for one that may not view the very answer of an endpoint
// that does not exist, and the worker's answer for CAN_QUERY, group
// members, the owner and admins. Refused requests never reach a worker.
func TestInvocationAuthorization(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	acc := newFakeAccess(nil)
	rec := &records{}
	h := newHarness(t, Config{Access: acc, Capture: rec, Clock: func() time.Time { return now }})
	w := startWorker(t, "w1", nil)
	rt := oneEndpoint(1, "ep", nil, readyEntity("v1", w.addr))
	rt.Endpoints[0].InferenceTable = "db.ep_payload"
	rt.Endpoints = append(rt.Endpoints, api.EndpointRoute{Name: "open", ConfigVersion: 1, Entities: []api.EntityRoute{readyEntity("v1", w.addr)}})
	h.push(rt)

	// Before the first snapshot nothing is decided: 503, not ready.
	if got := h.doAs("Bearer "+tokQuery, "POST", "/serving-endpoints/ep/invocations", `{"inputs":[1]}`); got.status != 503 || h.a.Ready() {
		t.Fatalf("before the access snapshot: %d %s, ready %v", got.status, got.body, h.a.Ready())
	}
	acc.set(accessFixture(1, now))
	eventually.True(t, 5*time.Second, "the activator has the access snapshot", h.a.Ready)

	type path struct {
		method, path, body string
		oip                bool
	}
	infer := `{"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1]}]}`
	paths := []path{
		{"POST", "/serving-endpoints/{}/invocations", `{"inputs":[1]}`, false},
		{"POST", "/serving-endpoints/{}/served-models/v1/invocations", `{"inputs":[1]}`, false},
		{"POST", "/v2/models/{}/infer", infer, true},
		{"POST", "/v2/models/{}/versions/v1/infer", infer, true},
		{"GET", "/v2/models/{}", "", true},
		{"GET", "/v2/models/{}/ready", "", true},
	}
	callers := []struct {
		who, auth string
		want      int
	}{
		{"no token", "", 401},
		{"not bearer", "Basic dXNlcjpwYXNz", 401},
		{"malformed", "Bearer a b", 401},
		{"unknown token", "Bearer " + tokUnknown, 401},
		{"expired", "Bearer " + tokExpired, 401},
		{"no grant", "Bearer " + tokNoGrant, 404},
		{"CAN_VIEW", "Bearer " + tokView, 403},
		{"CAN_QUERY", "Bearer " + tokQuery, 200},
		{"group member", "bearer " + tokGroup, 200}, // the scheme in any case
		{"owner", "Bearer " + tokOwner, 200},
		{"admin", "Bearer " + tokAdmin, 200},
	}
	for _, p := range paths {
		for _, c := range callers {
			hits := w.hits.Load()
			got := h.doAs(c.auth, p.method, strings.ReplaceAll(p.path, "{}", "ep"), p.body)
			if got.status != c.want {
				t.Errorf("%s %s as %s: %d %s, want %d", p.method, p.path, c.who, got.status, got.body, c.want)
				continue
			}
			if c.want != 200 && w.hits.Load() != hits {
				t.Errorf("%s %s as %s: refused, yet the worker was called", p.method, p.path, c.who)
			}
			switch c.want {
			case 401:
				if got.header.Get("WWW-Authenticate") != `Bearer realm="gantry"` {
					t.Errorf("%s %s as %s: WWW-Authenticate %q", p.method, p.path, c.who, got.header.Get("WWW-Authenticate"))
				}
			case 403:
				if !strings.Contains(string(got.body), "lacks CAN_QUERY") {
					t.Errorf("%s %s as %s: the 403 does not name CAN_QUERY: %s", p.method, p.path, c.who, got.body)
				}
			case 404:
				// No oracle: the answer is the one for a missing endpoint.
				missing := h.doAs(c.auth, p.method, strings.ReplaceAll(p.path, "{}", "nope"), p.body)
				if missing.status != 404 || strings.ReplaceAll(string(missing.body), "nope", "ep") != string(got.body) {
					t.Errorf("%s %s as %s: hidden %s, missing %d %s", p.method, p.path, c.who, got.body, missing.status, missing.body)
				}
			}
			if !p.oip && c.want != 200 {
				var e api.Error
				if err := json.Unmarshal(got.body, &e); err != nil || e.Code == "" || api.HTTPStatus(e.Code) != got.status {
					t.Errorf("%s %s as %s: %d not in API.md's error shape: %s", p.method, p.path, c.who, got.status, got.body)
				}
			}
			if strings.Contains(string(got.body), "dapi") {
				t.Errorf("%s %s as %s: the answer quotes a token: %s", p.method, p.path, c.who, got.body)
			}
		}
	}
	// Admins may invoke an endpoint with no grants; nobody else sees it.
	if got := h.doAs("Bearer "+tokAdmin, "POST", "/serving-endpoints/open/invocations", `{"inputs":[1]}`); got.status != 200 {
		t.Errorf("admin invokes open: %d %s", got.status, got.body)
	}
	if got := h.doAs("Bearer "+tokQuery, "POST", "/serving-endpoints/open/invocations", `{"inputs":[1]}`); got.status != 404 {
		t.Errorf("CAN_QUERY on ep invokes open: %d %s", got.status, got.body)
	}

	// The requester of each record is the caller's principal; refused
	// requests leave no record (their payloads are not the caller's to
	// store).
	for _, r := range rec.all() {
		switch r.Requester {
		case "query@corp.com", "member@corp.com", "owner@corp.com", "gantry-admin":
		default:
			t.Errorf("record %s (status %d) has requester %q", r.RequestID, r.StatusCode, r.Requester)
		}
		if r.StatusCode != 200 {
			t.Errorf("a refused request was captured: %+v", r)
		}
	}
	if len(rec.all()) == 0 {
		t.Error("no record captured")
	}

	// Revocation: a new snapshot without the token refuses it at once.
	snap := accessFixture(2, now)
	snap.Tokens = snap.Tokens[1:] // tokQuery's
	acc.set(snap)
	eventually.True(t, 2*time.Second, "the revoked token is refused", func() bool {
		return h.doAs("Bearer "+tokQuery, "POST", "/serving-endpoints/ep/invocations", `{"inputs":[1]}`).status == 401
	})
}

// TestInvocationAuthOff: without Config.Access every caller passes and
// records carry no requester, as before authentication.
func TestInvocationAuthOff(t *testing.T) {
	rec := &records{}
	h := newHarness(t, Config{Capture: rec})
	w := startWorker(t, "w1", nil)
	rt := oneEndpoint(1, "ep", nil, readyEntity("v1", w.addr))
	rt.Endpoints[0].InferenceTable = "db.ep_payload"
	h.push(rt)
	if got := h.invoke("ep"); got.status != 200 {
		t.Fatalf("%d %s", got.status, got.body)
	}
	if r := rec.all(); len(r) != 1 || r[0].Requester != "" {
		t.Errorf("records %+v", r)
	}
}

// TestWorkerSecretForwarded: the activator sends each deployment's worker
// secret from the route table to its replicas, and only its own.
func TestWorkerSecretForwarded(t *testing.T) {
	h := newHarness(t, Config{})
	guarded := func(secret string) *worker {
		return startWorker(t, secret, func(ctx *fasthttp.RequestCtx) {
			if string(ctx.Request.Header.Peek(headerWorkerSecret)) != secret {
				ctx.SetStatusCode(401)
				return
			}
			ctx.SetBodyString(`{"predictions":["` + secret + `"]}`)
		})
	}
	w1, w2 := guarded("s1"), guarded("s2")
	e1, e2 := readyEntity("a", w1.addr), readyEntity("b", w2.addr)
	e1.Secret, e2.Secret = "s1", "s2"
	h.push(oneEndpoint(1, "ep", []api.Route{{ServedModelName: "a", TrafficPercentage: 50}, {ServedModelName: "b", TrafficPercentage: 50}}, e1, e2))
	for _, path := range []string{"/serving-endpoints/ep/served-models/a/invocations", "/serving-endpoints/ep/served-models/b/invocations", "/serving-endpoints/ep/invocations"} {
		for range 4 {
			if got := h.do("POST", path, "application/json", []byte(`{"inputs":[1]}`)); got.status != 200 {
				t.Errorf("%s: %d %s", path, got.status, got.body)
			}
		}
	}
}
