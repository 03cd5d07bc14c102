package autoscaler

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/identity"
	"github.com/gantry/gantry/internal/fakeclock"
)

// accessServer serves a real identity service's access snapshot as the
// scheduler does (GET /api/2.0/gantry/access, components and admins
// only), answering at once rather than blocking: ReportAuth must cope
// with either.
func accessServer(t *testing.T, s *identity.Service) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := s.Authenticate(r.Header.Get("Authorization"))
		if err != nil || r.URL.Path != "/api/2.0/gantry/access" || !c.Admin && !c.Component {
			http.Error(w, `{"error_code": "PERMISSION_DENIED", "message": "no"}`, http.StatusForbidden)
			return
		}
		snap := s.Export(nil)
		w.Header().Set("X-Gantry-Index", strconv.FormatUint(snap.Index, 10))
		json.NewEncoder(w).Encode(snap)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestCollectorRefusesUnauthenticatedReports: with ReportAuth, a report
// or poke without a component's or admin's token is 401 or 403 and
// counts for nothing; the components' token counts; revoking it stops it.
func TestCollectorRefusesUnauthenticatedReports(t *testing.T) {
	dir := t.TempDir()
	s, err := identity.Open(filepath.Join(dir, "identity.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.BootstrapComponents(filepath.Join(dir, "components-token")); err != nil {
		t.Fatal(err)
	}
	follow, _ := identity.ReadTokenFile(filepath.Join(dir, "components-token"))
	// The activator's token: the components' principal's second one, so
	// that revoking it leaves the autoscaler's own.
	sp := s.Principals(identity.ServicePrincipal, nil)[0]
	comp, compTok, _ := s.CreateToken(sp.ID, sp.ID, 0, "activator")
	u, _ := s.CreatePrincipal(identity.User, "ada@corp.com", "")
	user, _, _ := s.CreateToken(u.ID, u.ID, 0, "")

	cl, _ := api.NewClient(&api.Config{Address: accessServer(t, s).URL, Token: follow})
	ra := &ReportAuth{Client: cl, Logger: slog.New(slog.NewTextHandler(t.Output(), nil))}
	clock := &fakeclock.Clock{}
	var pokes []string
	c := NewCollector(CollectorConfig{Now: clock.Now, Auth: ra}, func(d string) { pokes = append(pokes, d) })
	send := func(path, token, body string) (int, string, http.Header) {
		w := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
		if token != "" {
			r.Header.Set("Authorization", "Bearer "+token)
		}
		c.ServeHTTP(w, r)
		var e api.Error
		json.Unmarshal(w.Body.Bytes(), &e)
		return w.Code, e.Code, w.Header()
	}
	const rep = `{"activator": "a1", "period_ms": 1000, "samples": [{"deployment": "d1", "concurrency": 4}]}`

	// Before the first snapshot: 503, so that the activator retries.
	if code, e, _ := send("/v1/stats", comp, rep); code != http.StatusServiceUnavailable {
		t.Errorf("before the first snapshot: %d %s", code, e)
	}
	ctx := t.Context()
	go ra.Run(ctx)
	deadline := time.Now().Add(5 * time.Second)
	for !ra.Ready() && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}

	for _, tc := range []struct {
		name, token string
		status      int
	}{
		{"no token", "", 401}, {"unknown token", "dapi0000000000000000000000000000000f", 401}, {"a user's token", user, 403},
	} {
		for _, path := range []string{"/v1/stats", "/v1/poke"} {
			body := rep
			if path == "/v1/poke" {
				body = `{"deployment": "d1"}`
			}
			code, e, h := send(path, tc.token, body)
			if code != tc.status {
				t.Errorf("%s %s: %d %s, want %d", tc.name, path, code, e, tc.status)
			}
			if code == 401 && h.Get("WWW-Authenticate") == "" {
				t.Errorf("%s %s: 401 without WWW-Authenticate", tc.name, path)
			}
		}
	}
	clock.Add(time.Second)
	if got := c.Samples(); len(got) != 0 || len(pokes) != 0 {
		t.Fatalf("refused reports counted: samples %v, pokes %v", samplesString(got), pokes)
	}

	if code, e, _ := send("/v1/stats", comp, rep); code != 200 {
		t.Fatalf("the components' report: %d %s", code, e)
	}
	send("/v1/poke", comp, `{"deployment": "d1"}`)
	clock.Add(time.Second)
	if got := samplesString(c.Samples()); got != "d1=4" || len(pokes) != 1 {
		t.Errorf("the components' report: samples %q, pokes %v; want d1=4 and one poke", got, pokes)
	}

	// Revoked: refused once the next snapshot arrives.
	if err := s.DeleteToken(compTok.ID, ""); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(5 * time.Second)
	for {
		code, _, _ := send("/v1/stats", comp, rep)
		if code == 401 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a revoked components' token still reports (%d)", code)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
