package scheduler

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gantry/gantry/activator"
	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/identity"
	"github.com/gantry/gantry/internal/eventually"
	"github.com/valyala/fasthttp"
)

// invokeHarness is the authorization matrix's scheduler with an
// activator in front of "ep", following the route table and the access
// snapshot over HTTP with the admin's token as gantry activator does, and
// a worker that answers every invocation.
type invokeHarness struct {
	*authHarness
	base   string // the activator's URL
	worker *httptest.Server
}

func newInvokeHarness(t *testing.T) *invokeHarness {
	t.Helper()
	a := newAuthHarness(t)
	worker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"predictions": [1]}`)
	}))
	t.Cleanup(worker.Close)
	a.reconcile() // ensures ep's deployment, which the worker then serves
	a.orch.set("v1", ready(strings.TrimPrefix(worker.URL, "http://")))
	a.reconcile()

	admin := a.tokens[idAdmin]
	act := activator.New(activator.Config{
		Logger: slog.New(slog.DiscardHandler),
		Access: &activator.HTTPAccess{Base: a.srv.URL, Token: admin},
		// Tokens expire by the identity store's clock.
		Clock: func() time.Time { return time.Unix(a.now.Load(), 0) },
	}, &activator.HTTPRoutes{Base: a.srv.URL, Token: admin})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); act.Run(ctx) }()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: act.Handler}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown(); cancel(); <-done })
	eventually.True(t, 5*time.Second, "the activator has the route table and the access snapshot", act.Ready)
	if st, b := (&invokeHarness{authHarness: a, base: "http://" + ln.Addr().String()}).invoke(t, idAdmin, "POST", "/serving-endpoints/ep/invocations", `{"inputs": [1]}`); st != 200 {
		t.Fatalf("the admin invokes ep: %d %s", st, b)
	}
	return &invokeHarness{authHarness: a, base: "http://" + ln.Addr().String(), worker: worker}
}

// invoke sends method path to the activator as caller who.
func (h *invokeHarness) invoke(t *testing.T, who, method, path, body string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, h.base+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if tok, ok := h.tokens[who]; ok {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// invocationRows are the invocation paths of the authorization matrix:
// each needs CAN_QUERY on the endpoint, as POST /serving-endpoints/{name}/
// invocations does in Databricks. oip marks the Open Inference Protocol's,
// whose errors are {"error"}.
var invocationRows = []struct {
	method, path, body string
	oip                bool
}{
	{"POST", "/serving-endpoints/{}/invocations", `{"inputs": [1]}`, false},
	{"POST", "/serving-endpoints/{}/served-models/v1/invocations", `{"inputs": [1]}`, false},
	{"POST", "/v2/models/{}/infer", `{"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1]}]}`, true},
	{"POST", "/v2/models/{}/versions/v1/infer", `{"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1]}]}`, true},
	{"GET", "/v2/models/{}", "", true},
	{"GET", "/v2/models/{}/ready", "", true},
}

// TestInvocationMatrix extends the authorization matrix to the
// invocation paths, through a real activator that knows of tokens and
// grants only what it follows from the scheduler: every caller of the
// matrix gets the status its level on ep gives (401, the 404 of a missing
// endpoint, 403 naming CAN_QUERY, or the worker's answer).
func TestInvocationMatrix(t *testing.T) {
	h := newInvokeHarness(t)
	h.now.Add(3600) // the expiring token is an hour old

	for _, r := range invocationRows {
		t.Run(r.method+" "+r.path, func(t *testing.T) {
			for _, who := range matrixIDs {
				want := 200
				switch who {
				case idNone, idBad, idExpired, idRevoked:
					want = 401
				default:
					switch have := levels[who][0]; {
					case !have.AtLeast(identity.CanView):
						want = 404
					case !have.AtLeast(identity.CanQuery):
						want = 403
					}
				}
				got, b := h.invoke(t, who, r.method, strings.ReplaceAll(r.path, "{}", "ep"), r.body)
				if got != want {
					t.Errorf("%s: %d %s, want %d", who, got, b, want)
					continue
				}
				if want == 403 && !strings.Contains(string(b), "lacks CAN_QUERY") {
					t.Errorf("%s: the 403 does not name CAN_QUERY: %s", who, b)
				}
				if want == 404 {
					_, missing := h.invoke(t, who, r.method, strings.ReplaceAll(r.path, "{}", "nope"), r.body)
					if strings.ReplaceAll(string(missing), "nope", "ep") != string(b) {
						t.Errorf("%s: an endpoint it may not view answers %s; a missing one %s", who, b, missing)
					}
				}
				if want >= 300 && !r.oip {
					var e api.Error
					if err := json.Unmarshal(b, &e); err != nil || api.HTTPStatus(e.Code) != got {
						t.Errorf("%s: %d not in API.md's error shape: %s", who, got, b)
					}
				}
			}
		})
	}
}

// TestRevocationReachesActivator measures what the issue promises: a
// token revoked at the scheduler is refused by an activator in another
// process's place (it follows over HTTP) within 2 seconds, with no call
// to the scheduler per invocation.
func TestRevocationReachesActivator(t *testing.T) {
	h := newInvokeHarness(t)
	if st, b := h.invoke(t, idQuery, "POST", "/serving-endpoints/ep/invocations", `{"inputs": [1]}`); st != 200 {
		t.Fatalf("before the revocation: %d %s", st, b)
	}
	p := h.users["can_query@corp.com"]
	revoked := time.Now()
	if err := h.id.DeleteToken(h.id.Tokens(p.ID)[0].ID, ""); err != nil {
		t.Fatal(err)
	}
	for {
		st, _ := h.invoke(t, idQuery, "POST", "/serving-endpoints/ep/invocations", `{"inputs": [1]}`)
		took := time.Since(revoked)
		if st == 401 {
			t.Logf("the activator refused the revoked token %s after the revocation", took)
			break
		}
		if took > 2*time.Second {
			t.Fatalf("the revoked token still passes %s after the revocation (status %d)", took, st)
		}
		time.Sleep(time.Millisecond)
	}
	// Grants move the same way: CAN_VIEW's caller gains CAN_QUERY.
	granted := time.Now()
	if st, b := h.do(t, idAdmin, "PATCH", "/api/2.0/permissions/serving-endpoints/ep",
		`{"access_control_list": [{"user_name": "can_view@corp.com", "permission_level": "CAN_QUERY"}]}`); st != 200 {
		t.Fatalf("grant: %d %s", st, b)
	}
	eventually.True(t, 2*time.Second, "the new grant lets CAN_VIEW's caller invoke", func() bool {
		st, _ := h.invoke(t, idView, "POST", "/serving-endpoints/ep/invocations", `{"inputs": [1]}`)
		return st == 200
	})
	t.Logf("a new grant reached the activator %s after the PATCH", time.Since(granted))
}
