package monitors

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gantry/gantry/api"
)

// fakeResolver answers each lookup with the next of its answers (the last
// one repeats), as a DNS name an attacker controls would.
type fakeResolver struct {
	answers [][]netip.Addr
	n       atomic.Int32
}

func (f *fakeResolver) LookupNetIP(_ context.Context, _, _ string) ([]netip.Addr, error) {
	i := int(f.n.Add(1)) - 1
	return f.answers[min(i, len(f.answers)-1)], nil
}

func useResolver(t *testing.T, r *fakeResolver) {
	old := resolver
	resolver = r
	t.Cleanup(func() { resolver = old })
}

func addrs(s ...string) []netip.Addr {
	var out []netip.Addr
	for _, a := range s {
		out = append(out, netip.MustParseAddr(a))
	}
	return out
}

// TestCheckWebhookRefusesPrivate: issue 19 created monitors whose webhooks
// were loopback, cloud metadata and private addresses.
func TestCheckWebhookRefusesPrivate(t *testing.T) {
	var none *WebhookAllow
	for _, u := range []string{
		"http://127.0.0.1:8080/api/2.0/serving-endpoints", "http://169.254.169.254/latest/meta-data/",
		"http://10.1.2.3/hook", "http://192.168.0.1/", "http://172.16.0.1/", "http://[::1]:9000/",
		"http://[::ffff:127.0.0.1]/", "http://0.0.0.0:8080/", "http://100.64.0.1/", "http://[fd00::1]/",
		"http://[fe80::1]/", "http://2130706433/", "http://[64:ff9b::7f00:1]/",
	} {
		if err := none.CheckWebhook(context.Background(), u); err == nil {
			t.Errorf("CheckWebhook(%s) = nil; want it refused", u)
		}
	}
	// A name is refused when any of its addresses is private.
	useResolver(t, &fakeResolver{answers: [][]netip.Addr{addrs("93.184.216.34", "127.0.0.1")}})
	if err := none.CheckWebhook(context.Background(), "https://hooks.example.com/x"); err == nil || !strings.Contains(err.Error(), "127.0.0.1") {
		t.Errorf("a name resolving to loopback: %v; want it refused naming the address", err)
	}
	for _, u := range []string{"ftp://hooks.example.com/", "https:///x", "https://user:pw@93.184.216.34/"} {
		if err := none.CheckWebhook(context.Background(), u); err == nil {
			t.Errorf("CheckWebhook(%s) = nil; want it refused", u)
		}
	}
	if err := none.CheckWebhook(context.Background(), "https://93.184.216.34/hook"); err != nil {
		t.Errorf("a public address: %v", err)
	}
}

func TestWebhookAllowList(t *testing.T) {
	a, err := ParseWebhookAllow([]string{"127.0.0.1", "10.0.0.0/8", "hooks.internal"})
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"http://127.0.0.1:9/x", "http://10.9.8.7/x", "http://hooks.internal/x", "http://[::ffff:10.0.0.1]/"} {
		if err := a.CheckWebhook(context.Background(), u); err != nil {
			t.Errorf("allowed %s: %v", u, err)
		}
	}
	for _, u := range []string{"http://127.0.0.2/x", "http://169.254.169.254/", "http://192.168.1.1/"} {
		if err := a.CheckWebhook(context.Background(), u); err == nil {
			t.Errorf("CheckWebhook(%s) = nil; the allow list does not name it", u)
		}
	}
	if _, err := ParseWebhookAllow([]string{"10.0.0.0/33"}); err == nil {
		t.Error("a bad CIDR range was accepted")
	}
	if a, err := ParseWebhookAllow(nil); a != nil || err != nil {
		t.Errorf("no entries: %v, %v; want nil", a, err)
	}
}

// TestWebhookSendChecksAgain: a name that resolved to a public address at
// create time and to loopback later (DNS rebinding) gets no POST, and the
// failure is final rather than retried.
func TestWebhookSendChecksAgain(t *testing.T) {
	var posts atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { posts.Add(1) }))
	defer srv.Close()
	port := srv.URL[strings.LastIndex(srv.URL, ":"):]
	useResolver(t, &fakeResolver{answers: [][]netip.Addr{addrs("93.184.216.34"), addrs("127.0.0.1")}})
	url := "http://rebind.example.com" + port + "/hook"
	if err := (*WebhookAllow)(nil).CheckWebhook(context.Background(), url); err != nil {
		t.Fatalf("create-time check: %v", err)
	}
	a := &Alerter{Attempts: 3, Backoff: time.Millisecond}
	err := a.post(context.Background(), url, &api.MonitorAlert{ID: "x"})
	if err == nil || !strings.Contains(err.Error(), "not a public address") {
		t.Errorf("post = %v; want it refused as not public", err)
	}
	if n := posts.Load(); n != 0 {
		t.Errorf("the loopback server got %d posts", n)
	}
	// Refused on the first attempt: the other two would be refused too.
	if n := resolverCalls(t); n != 2 {
		t.Errorf("%d lookups; want 2 (create, one send attempt)", n)
	}
}

func resolverCalls(t *testing.T) int32 { return resolver.(*fakeResolver).n.Load() }

// TestWebhookLoopbackRefusedAtSend: without an allow list the default
// client does not connect to loopback at all.
func TestWebhookLoopbackRefusedAtSend(t *testing.T) {
	var posts atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { posts.Add(1) }))
	defer srv.Close()
	err := (&Alerter{Attempts: 1}).post(context.Background(), srv.URL, &api.MonitorAlert{ID: "x"})
	if err == nil || posts.Load() != 0 {
		t.Errorf("post to %s = %v with %d posts; want refused, none", srv.URL, err, posts.Load())
	}
}

// TestWebhookRedirectNotFollowed: an allowed webhook that redirects (to
// the metadata service, say) is not followed, and the failure is final.
func TestWebhookRedirectNotFollowed(t *testing.T) {
	var followed atomic.Int32
	target := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { followed.Add(1) }))
	defer target.Close()
	var posts atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		posts.Add(1)
		http.Redirect(w, r, target.URL, http.StatusTemporaryRedirect)
	}))
	defer srv.Close()
	allow, _ := ParseWebhookAllow([]string{"127.0.0.1", "::1"})
	err := (&Alerter{Allow: allow, Attempts: 3, Backoff: time.Millisecond}).post(context.Background(), srv.URL, &api.MonitorAlert{ID: "x"})
	if err == nil || !strings.Contains(err.Error(), "redirect") {
		t.Errorf("post = %v; want an error about the redirect", err)
	}
	if followed.Load() != 0 || posts.Load() != 1 {
		t.Errorf("redirect target got %d posts, webhook %d; want 0 and 1", followed.Load(), posts.Load())
	}
}
