package activator

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/external/providertest"
	"github.com/gantry/gantry/internal/eventually"
	"github.com/valyala/fasthttp"
)

// keyScheduler is a scheduler's routes and external-keys answers: the
// route table as JSON (so without keys), and the keys for token only.
type keyScheduler struct {
	token string
	mu    sync.Mutex
	table api.RouteTable
	keys  map[string]string
	asked int
}

func (s *keyScheduler) set(index uint64, eps []api.EndpointRoute, keys map[string]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.table, s.keys = api.RouteTable{Index: index, Endpoints: eps}, keys
}

func (s *keyScheduler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+s.token {
		w.WriteHeader(http.StatusForbidden)
		json.NewEncoder(w).Encode(api.Errorf(api.ErrPermissionDenied, "admins only"))
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch r.URL.Path {
	case "/api/2.0/gantry/routes":
		if idx, _ := strconv.ParseUint(r.URL.Query().Get("index"), 10, 64); idx >= s.table.Index {
			s.mu.Unlock()
			time.Sleep(20 * time.Millisecond) // a short blocking query
			s.mu.Lock()
		}
		w.Header().Set("X-Gantry-Index", strconv.FormatUint(s.table.Index, 10))
		json.NewEncoder(w).Encode(s.table)
	case "/api/2.0/gantry/external-keys":
		s.asked++
		out := api.ExternalKeys{Keys: []api.ExternalKey{}}
		for d, k := range s.keys {
			out.Keys = append(out.Keys, api.ExternalKey{Deployment: d, Key: k})
		}
		json.NewEncoder(w).Encode(out)
	default:
		http.NotFound(w, r)
	}
}

// TestHTTPRoutesExternalKeys: an activator following a scheduler over
// HTTP gets external models' keys from external-keys with its token,
// again at each new route table (a rotated key), and answers a route's
// key_error without calling the provider.
func TestHTTPRoutesExternalKeys(t *testing.T) {
	base := providertest.Start(t, extKey)
	en := extEntity("gpt", api.ProviderOpenAI, api.TaskChat, "gpt-x", base)
	en.External.Key = "" // as the JSON table has it
	eps := []api.EndpointRoute{{Name: "chat", Entities: []api.EntityRoute{en}}}
	s := &keyScheduler{token: "admin-tok"}
	s.set(1, eps, map[string]string{"d-gpt": "sk-stale"})
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)

	// Without the admin token the table is refused, and the error holds
	// no key.
	if _, err := (&HTTPRoutes{Base: srv.URL, Token: "nope", WaitTime: time.Second}).Wait(context.Background(), 0); err == nil || strings.Contains(err.Error(), "sk-") {
		t.Fatalf("a wrong token: %v", err)
	}
	rt, err := (&HTTPRoutes{Base: srv.URL, Token: "admin-tok", WaitTime: time.Second}).Wait(context.Background(), 0)
	if err != nil || rt.Endpoints[0].Entities[0].External.Key != "sk-stale" {
		t.Fatalf("Wait: %+v %v", rt, err)
	}

	a := New(Config{Timeout: 3 * time.Second}, &HTTPRoutes{Base: srv.URL, Token: "admin-tok", WaitTime: time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	go a.Run(ctx)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fs := &fasthttp.Server{Handler: a.Handler, StreamRequestBody: true}
	go fs.Serve(ln)
	t.Cleanup(func() { fs.Shutdown(); cancel() })
	url := "http://" + ln.Addr().String() + "/serving-endpoints/chat/invocations"
	const body = `{"messages": [{"role": "user", "content": "hi"}]}`
	eventually.True(t, 5*time.Second, "the activator's first table", a.Ready)

	// The stale key: the provider's 401, its message without the key.
	resp, b := post(t, url, body)
	if resp.StatusCode != 401 || strings.Contains(b, "sk-stale") {
		t.Fatalf("stale key: %d %s", resp.StatusCode, b)
	}
	// The key rotates; the scheduler's table changes with it.
	s.set(2, eps, map[string]string{"d-gpt": extKey})
	eventually.True(t, 5*time.Second, "the rotated key in use", func() bool {
		resp, b := post(t, url, body)
		return resp.StatusCode == 200 && strings.Contains(b, "echo: hi")
	})
	// A reference the creator can no longer read: 503 with the reason.
	failing := en
	ext := *en.External
	ext.KeyError = "served entity gpt: external_model.openai_config.openai_api_key: {{secrets/llm/openai}} cannot be read as bob"
	failing.External = &ext
	s.set(3, []api.EndpointRoute{{Name: "chat", Entities: []api.EntityRoute{failing}}}, map[string]string{})
	eventually.True(t, 5*time.Second, "the key error answered", func() bool {
		resp, b := post(t, url, body)
		return resp.StatusCode == 503 && strings.Contains(b, "{{secrets/llm/openai}} cannot be read as bob")
	})
	s.mu.Lock()
	asked := s.asked
	s.mu.Unlock()
	if asked < 3 {
		t.Errorf("external-keys asked %d times, want one per table", asked)
	}
}
