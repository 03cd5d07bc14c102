package scheduler

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestArtifactToken: a deployment's workers fetch their model version
// with the artifact token their job carries and no user token; the token
// opens no other version, a forged one nothing, and the deployments API
// does not show it.
func TestArtifactToken(t *testing.T) {
	a := newAuthHarness(t)
	a.s.cfg.DeploymentKey = bytes.Repeat([]byte{7}, 32)
	a.uploadAs(t, "owner", "m", 200) // version 2
	a.reconcile()
	var tok string
	for _, d := range a.orch.ensured {
		if d.ModelName == "m" {
			tok = d.ArtifactToken
			if !strings.HasPrefix(tok, d.ID+".") {
				t.Fatalf("deployment %s carries artifact token %q", d.ID, tok)
			}
		}
	}
	fetch := func(path, token string) int {
		req, _ := http.NewRequest("GET", a.srv.URL+path, nil)
		if token != "" {
			req.Header.Set(ArtifactTokenHeader, token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	forged := tok[:len(tok)-1] + "0"
	if strings.HasSuffix(tok, "0") {
		forged = tok[:len(tok)-1] + "1"
	}
	v1, v2 := "/api/2.0/gantry/models/m/versions/1/artifact", "/api/2.0/gantry/models/m/versions/2/artifact"
	for _, c := range []struct {
		what, path, token string
		want              int
	}{
		{"its own version", v1, tok, 200},
		{"another version", v2, tok, 401},
		{"a forged MAC", v1, forged, 401},
		{"another deployment's name", v1, "x" + tok, 401},
		{"no token", v1, "", 401},
	} {
		if got := fetch(c.path, c.token); got != c.want {
			t.Errorf("%s: %d, want %d", c.what, got, c.want)
		}
	}
	st, b := a.do(t, idView, "GET", "/api/2.0/gantry/serving-endpoints/ep/deployments", "")
	if st != 200 || bytes.Contains(b, []byte(tok[strings.LastIndexByte(tok, '.')+1:])) {
		t.Errorf("deployments: %d, holds the artifact token: %s", st, b)
	}

	// Each deployment's worker secret is in what its driver gets and in
	// its route table entry (for the activators), and in no view.
	var secret string
	for _, d := range a.orch.ensured {
		secret = d.WorkerSecret
		if len(secret) != 32 || strings.Contains(tok, secret) {
			t.Fatalf("deployment %s has worker secret %q", d.ID, secret)
		}
	}
	st, b = a.do(t, idAdmin, "GET", "/api/2.0/gantry/routes", "")
	if st != 200 || !bytes.Contains(b, []byte(`"secret":"`+secret+`"`)) {
		t.Errorf("the route table lacks the worker secret: %d %s", st, b)
	}
	for _, p := range []string{"/api/2.0/gantry/serving-endpoints/ep/deployments", "/api/2.0/serving-endpoints/ep", "/api/2.0/gantry/deployments"} {
		if _, b := a.do(t, idAdmin, "GET", p, ""); bytes.Contains(b, []byte(secret)) {
			t.Errorf("%s holds the worker secret: %s", p, b)
		}
	}

	// Without a key (authentication off) there are no tokens.
	a.s.cfg.DeploymentKey = nil
	if got := fetch(v1, tok); got != 401 {
		t.Errorf("a token with no key: %d", got)
	}
}
