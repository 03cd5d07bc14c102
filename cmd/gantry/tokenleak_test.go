package main

import (
	"bytes"
	"encoding/json"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gantry/gantry/api"
)

// TestTokensNeverLogged runs gantry dev through a token's life (created,
// used for API calls and invocations, sent malformed, revoked, used
// again) and then greps everything the run left: the process's whole log
// (its workers' output included) and every file of the data dir but
// admin-token, for the token values and the worker's secret. Only the
// one-time creation answer and the admin-token file may hold a token.
func TestTokensNeverLogged(t *testing.T) {
	if testing.Short() {
		t.Skip("runs gantry dev with a worker; run without -short")
	}
	bin := buildGantry(t)
	addr, dataDir := freeAddr(t), t.TempDir()
	dev := startDev(t, bin, addr, dataDir)
	admin := tokenOf(addr)
	if admin == "" {
		t.Fatal("gantry dev wrote no admin token")
	}
	if info, err := os.Stat(filepath.Join(dataDir, api.AdminTokenFile)); err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("admin-token: %v %v, want mode 0600", info, err)
	}
	if !strings.Contains(dev.log.String(), filepath.Join(dataDir, api.AdminTokenFile)) {
		t.Errorf("the log does not say where the admin token is:\n%s", dev.log)
	}
	mustCLI(t, bin, addr, "models", "upload", "binary", filepath.Join(fixtures, "binary"))
	mustCLI(t, bin, addr, "endpoints", "create", "-f", endpointFile(t, "leak-ep", "binary", "1", "Small"), "--wait")

	call := func(method, path, auth, body string) (int, []byte) {
		t.Helper()
		req, _ := http.NewRequest(method, "http://"+addr+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header["Authorization"] = []string{auth} // "" is none (see noToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	st, b := call("POST", "/api/2.0/token/create", "Bearer "+admin, `{"comment": "leak test", "lifetime_seconds": 3600}`)
	var created struct {
		TokenValue string `json:"token_value"`
		TokenInfo  struct {
			TokenID string `json:"token_id"`
		} `json:"token_info"`
	}
	if st != 200 || json.Unmarshal(b, &created) != nil || created.TokenValue == "" {
		t.Fatalf("token/create: %d %s", st, b)
	}
	tok := created.TokenValue
	body, _ := oneRow(t)
	inv := "/serving-endpoints/leak-ep/invocations"
	for _, c := range []struct {
		method, path, auth, body string
		want                     int
	}{
		{"POST", inv, "Bearer " + tok, string(body), 200},
		{"GET", "/api/2.0/serving-endpoints/leak-ep", "Bearer " + tok, "", 200},
		{"POST", inv, "Bearer " + tok + "x", string(body), 401},
		{"GET", "/api/2.0/serving-endpoints", "Bearer " + tok + "x", "", 401},
		{"POST", inv, "Basic " + tok, string(body), 401},
		{"POST", inv, "Bearer " + tok + " " + admin, string(body), 401},
		{"GET", "/api/2.0/token/list", "Bearer " + tok, "", 200},
	} {
		if st, b := call(c.method, c.path, c.auth, c.body); st != c.want {
			t.Errorf("%s %s: %d %s, want %d", c.method, c.path, st, b, c.want)
		} else if bytes.Contains(b, []byte(tok)) || bytes.Contains(b, []byte(admin)) {
			t.Errorf("%s %s: the answer holds a token: %s", c.method, c.path, b)
		}
	}
	if st, b := call("POST", "/api/2.0/token/delete", "Bearer "+admin, `{"token_id": "`+created.TokenInfo.TokenID+`"}`); st != 200 {
		t.Fatalf("token/delete: %d %s", st, b)
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		st, _ := call("POST", inv, "Bearer "+tok, string(body))
		if st == 401 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the revoked token still invokes: %d", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The worker answers only the activator: reached directly, 401
	// unless the request carries the secret of the route table (admins'
	// only).
	var rt api.RouteTable
	if st, b := call("GET", "/api/2.0/gantry/routes", "Bearer "+admin, ""); st != 200 || json.Unmarshal(b, &rt) != nil {
		t.Fatalf("routes: %d %s", st, b)
	}
	en := rt.Endpoints[0].Entities[0]
	if en.Secret == "" || len(en.Replicas) == 0 {
		t.Fatalf("route table entry %+v: no secret or no replica", en)
	}
	direct := func(secret string) int {
		req, _ := http.NewRequest("POST", "http://"+en.Replicas[0].Addr+"/invocations", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if secret != "" {
			req.Header.Set("X-Gantry-Worker-Secret", secret)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if st := direct(""); st != 401 {
		t.Errorf("the worker reached directly answers %d, want 401", st)
	}
	if st := direct(en.Secret); st != 200 {
		t.Errorf("the worker with its secret answers %d, want 200", st)
	}
	dev.stop(t) // its last words are in the log too

	secrets := map[string]string{"the admin token": admin, "a created token": tok, "the worker secret": en.Secret}
	for what, v := range secrets {
		if strings.Contains(dev.log.String(), v) {
			t.Errorf("gantry dev's log holds %s", what)
		}
	}
	filepath.WalkDir(dataDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() == api.AdminTokenFile {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for what, v := range secrets {
			if bytes.Contains(b, []byte(v)) {
				t.Errorf("%s holds %s", p, what)
			}
		}
		return nil
	})
}
