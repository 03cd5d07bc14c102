package main

// End-to-end test of a split deployment: `gantry scheduler`, `gantry
// activator` and `gantry autoscaler` as three processes that meet only over
// HTTP, the way they run in a cluster.

import (
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gantry/gantry/api"
)

func TestSplitComponentsScaleFromZero(t *testing.T) {
	if testing.Short() {
		t.Skip("runs scheduler, activator and autoscaler processes with workers; run without -short")
	}
	bin := buildGantry(t)
	schedAddr, actAddr, ascAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	dataDir := t.TempDir()
	sched := startProc(t, bin, schedAddr, "scheduler", "--listen", schedAddr, "--data-dir", dataDir)
	// The components call the scheduler with the components' token, not
	// an admin's; the tests' transport sends the admin token to the
	// activator, as a user's client would send theirs.
	token := componentsToken(t, dataDir)
	adminTokens.Store(actAddr, tokenOf(schedAddr))
	asc := startProc(t, bin, ascAddr, append([]string{"autoscaler", "--listen", ascAddr,
		"--scheduler", "http://" + schedAddr, "--token", token}, shortWindows...)...)
	act := startProc(t, bin, actAddr, "activator", "--listen", actAddr,
		"--scheduler", "http://"+schedAddr, "--autoscaler", "http://"+ascAddr, "--token", token)
	logs := func() string {
		return "scheduler:\n" + sched.log.String() + "\nautoscaler:\n" + asc.log.String() + "\nactivator:\n" + act.log.String()
	}

	// The components' token manages nothing: it cannot list endpoints,
	// let alone create one.
	for _, path := range []string{"/api/2.0/serving-endpoints", "/api/2.0/preview/scim/v2/Me"} {
		req, _ := http.NewRequest("GET", "http://"+schedAddr+path, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusForbidden {
			t.Errorf("GET %s with the components' token: %v %v, want 403", path, resp.Status, err)
		} else {
			resp.Body.Close()
		}
	}

	// The autoscaler takes load only from components (and admins): a
	// report without a token or with an unknown one is refused, once it
	// has the access snapshot (it is ready then) and before (503).
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		resp, err := http.Get("http://" + ascAddr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the autoscaler is not ready: %v\n%s", err, logs())
		}
	}
	for _, tc := range []struct {
		auth   string
		status int
	}{{"", 401}, {"Bearer dapi0123456789abcdef0123456789abcdef", 401}} {
		req, _ := http.NewRequest("POST", "http://"+ascAddr+"/v1/stats",
			strings.NewReader(`{"activator": "intruder", "samples": [{"deployment": "x", "concurrency": 1000}]}`))
		req.Header["Authorization"] = []string{tc.auth}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("a load report with Authorization %.10q: %d, want %d", tc.auth, resp.StatusCode, tc.status)
		}
	}

	// The control plane is the scheduler: the CLI talks to it.
	c, _ := api.NewClient(&api.Config{Address: "http://" + schedAddr})
	mustCLI(t, bin, schedAddr, "models", "upload", "binary", filepath.Join(fixtures, "binary"))
	mustCLI(t, bin, schedAddr, "endpoints", "create", "-f", endpointFile(t, "split-ep", "binary", "1", "Small"), "--wait")

	// Idle load reports from the activator let the autoscaler, in its own
	// process, scale the entity to zero through the scheduler's API.
	waitEntity(t, c, "split-ep", "scaled to zero", 30*time.Second, scaledToZero)

	// The standalone autoscaler exports its metrics, as it does in gantry dev.
	resp, err := http.Get("http://" + ascAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	scrape, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, m := range []string{"gantry_autoscaler_desired_replicas{", "gantry_autoscaler_ready_replicas{", "gantry_autoscaler_panic{"} {
		if !strings.Contains(string(scrape), m) {
			t.Errorf("gantry autoscaler's /metrics lacks %s:\n%s", m, scrape)
		}
	}

	// A burst at zero: the activator holds the requests and pokes the
	// autoscaler, which asks the scheduler for a replica; the new route
	// table reaches the activator, which answers everyone.
	body, want := oneRow(t)
	start := time.Now()
	answers := burst(t, "http://"+actAddr+"/serving-endpoints/split-ep/invocations", body, 50)
	for i, a := range answers {
		if a.status != 200 {
			t.Fatalf("request %d: %d %s\n%s", i, a.status, a.body, logs())
		}
		comparePredictions(t, "cold burst through the activator", []any{want}, a.body)
	}
	t.Logf("50 requests at zero answered in %s", time.Since(start))
	if strings.Contains(asc.log.String(), "intruder") {
		t.Errorf("a refused report reached the collector:\n%s", asc.log)
	}
	if !strings.Contains(asc.log.String(), "activator reports load") {
		t.Errorf("the autoscaler never heard from the activator:\n%s", logs())
	}
	waitEntity(t, c, "split-ep", "one ready replica", 10*time.Second, func(e api.ServedEntity) bool { return e.Replicas.Ready >= 1 })
	// ...and back to zero when idle: the reports keep flowing.
	waitEntity(t, c, "split-ep", "scaled to zero again", 30*time.Second, scaledToZero)

	// The token the components were given never reaches their logs.
	if strings.Contains(logs(), token) {
		t.Errorf("a component's log holds its token")
	}
}
