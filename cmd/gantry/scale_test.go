package main

// End-to-end tests of scale to zero: `gantry dev` with short autoscaler
// windows, real worker processes, and concurrent clients.

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/gantry/gantry/api"
)

// shortWindows makes the autoscaler act within seconds.
var shortWindows = []string{"--stable-window", "2s", "--panic-window", "1s", "--scale-to-zero-grace", "1s"}

// waitEntity polls an endpoint's first entity until cond holds.
func waitEntity(t *testing.T, c *api.Client, name, what string, timeout time.Duration, cond func(api.ServedEntity) bool) api.ServedEntity {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ep, _, err := c.Endpoints().Get(name, nil)
		if err != nil {
			t.Fatal(err)
		}
		e := ep.Config.ServedEntities[0]
		if cond(e) {
			return e
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s not reached after %s; entity %+v state %+v replicas %+v", name, what, timeout, e.Name, e.State, e.Replicas)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func scaledToZero(e api.ServedEntity) bool {
	return e.ScaledToZero != nil && *e.ScaledToZero && e.Replicas.Ready == 0
}

// oneRow is the binary fixture's first row with its expected prediction.
func oneRow(t *testing.T) ([]byte, float64) {
	e := readExpected(t, "binary")
	body, _ := json.Marshal(map[string]any{"dataframe_split": map[string]any{"columns": e.Columns, "data": e.Data[:1]}})
	return body, e.Predictions[0].(float64)
}

type answer struct {
	status int
	body   []byte
	took   time.Duration
	header http.Header
}

// burst sends n requests at once and returns the answers.
func burst(t *testing.T, url string, body []byte, n int) []answer {
	t.Helper()
	out := make([]answer, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: n}, Timeout: 60 * time.Second}
	for i := range out {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			t0 := time.Now()
			resp, err := client.Post(url, "application/json", bytes.NewReader(body))
			if err != nil {
				out[i] = answer{status: -1, body: []byte(err.Error())}
				return
			}
			var b bytes.Buffer
			b.ReadFrom(resp.Body)
			resp.Body.Close()
			out[i] = answer{status: resp.StatusCode, body: b.Bytes(), took: time.Since(t0), header: resp.Header}
		}()
	}
	close(start)
	wg.Wait()
	return out
}

func TestScaleToZeroAndBack(t *testing.T) {
	if testing.Short() {
		t.Skip("runs gantry dev with worker processes; run without -short")
	}
	bin := buildGantry(t)
	addr := freeAddr(t)
	startDev(t, bin, addr, t.TempDir(), shortWindows...)
	c, _ := api.NewClient(&api.Config{Address: "http://" + addr})
	mustCLI(t, bin, addr, "models", "upload", "binary", filepath.Join(fixtures, "binary"))
	mustCLI(t, bin, addr, "endpoints", "create", "-f", endpointFile(t, "zero-ep", "binary", "1", "Small"), "--wait")

	waitEntity(t, c, "zero-ep", "scaled to zero", 30*time.Second, scaledToZero)

	// 200 concurrent requests at zero: all are held, then answered.
	body, want := oneRow(t)
	answers := burst(t, "http://"+addr+"/serving-endpoints/zero-ep/invocations", body, 200)
	for i, a := range answers {
		if a.status != 200 {
			t.Fatalf("request %d: %d %s", i, a.status, a.body)
		}
		comparePredictions(t, "cold burst", []any{want}, a.body)
	}
	waitEntity(t, c, "zero-ep", "one ready replica", 10*time.Second, func(e api.ServedEntity) bool { return e.Replicas.Ready == 1 })
	// ...and it goes back to zero when idle.
	waitEntity(t, c, "zero-ep", "scaled to zero again", 30*time.Second, scaledToZero)
}

func TestFailingModelFailsHeldRequestsFast(t *testing.T) {
	if testing.Short() {
		t.Skip("runs gantry dev with worker processes; run without -short")
	}
	bin := buildGantry(t)
	addr := freeAddr(t)
	startDev(t, bin, addr, t.TempDir(), shortWindows...)
	c, _ := api.NewClient(&api.Config{Address: "http://" + addr})
	mustCLI(t, bin, addr, "models", "upload", "corrupt", corruptModel(t))
	out, err := cli(t, bin, addr, "endpoints", "create", "-f", endpointFile(t, "bad-ep", "corrupt", "1", "Small"), "--wait", "--timeout", "30s")
	if err == nil {
		t.Fatalf("create --wait of a corrupt model succeeded:\n%s", out)
	}
	// Idle, a failing entity scales to zero (its failing replica is no
	// capacity on the way), and a request then retries the start.
	waitEntity(t, c, "bad-ep", "zero replicas", 30*time.Second, func(e api.ServedEntity) bool { return e.Replicas.Desired == 0 })

	body, _ := oneRow(t)
	start := time.Now()
	answers := burst(t, "http://"+addr+"/serving-endpoints/bad-ep/invocations", body, 20)
	for i, a := range answers {
		if a.status != 503 || !bytes.Contains(a.body, []byte("model.json")) {
			t.Errorf("request %d: %d %s, want 503 naming model.json", i, a.status, a.body)
		}
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("held requests failed after %s, want under 5 s", took)
	}
}

func TestScaleDownUnderLoadLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("runs gantry dev with worker processes; run without -short")
	}
	bin := buildGantry(t)
	loadgen := filepath.Join(t.TempDir(), "loadgen")
	if out, err := exec.Command("go", "build", "-o", loadgen, "../../deploy/bench/loadgen").CombinedOutput(); err != nil {
		t.Fatalf("build loadgen: %v\n%s", err, out)
	}
	addr := freeAddr(t)
	startDev(t, bin, addr, t.TempDir(), shortWindows...)
	c, _ := api.NewClient(&api.Config{Address: "http://" + addr})
	mustCLI(t, bin, addr, "models", "upload", "binary", filepath.Join(fixtures, "binary"))
	mustCLI(t, bin, addr, "endpoints", "create", "-f", endpointFile(t, "load-ep", "binary", "1", "Medium"), "--wait")

	body, _ := oneRow(t)
	bodyFile := filepath.Join(t.TempDir(), "body.json")
	writeFile(t, bodyFile, string(body))
	// The load comes from separate processes, so that it does not depend
	// on how fast this (possibly race-instrumented) test binary runs: a
	// heavy load that scales the entity up, and a light one that keeps
	// going while the autoscaler scales it down again.
	run := func(conns, secs string) (*exec.Cmd, *bytes.Buffer) {
		var out bytes.Buffer
		cmd := exec.Command(loadgen, "-url", "http://"+addr+"/serving-endpoints/load-ep/invocations",
			"-body", bodyFile, "-c", conns, "-d", secs, "-warmup", "0s", "-json")
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd, &out
	}
	heavy, heavyOut := run("32", "8s")
	light, lightOut := run("2", "25s")
	peak := waitEntity(t, c, "load-ep", "more than two replicas", 8*time.Second, func(e api.ServedEntity) bool { return e.Replicas.Ready > 2 })
	waitEntity(t, c, "load-ep", "a scale-down", 25*time.Second, func(e api.ServedEntity) bool { return e.Replicas.Desired < peak.Replicas.Ready })
	for name, p := range map[string]struct {
		cmd *exec.Cmd
		out *bytes.Buffer
	}{"heavy": {heavy, heavyOut}, "light": {light, lightOut}} {
		if err := p.cmd.Wait(); err != nil {
			t.Fatalf("%s load: %v\n%s", name, err, p.out)
		}
		var r struct{ Requests, Errors int }
		if err := json.Unmarshal(p.out.Bytes(), &r); err != nil {
			t.Fatalf("%s load: %v: %s", name, err, p.out)
		}
		if r.Errors != 0 || r.Requests < 100 {
			t.Errorf("%s load: %d errors in %d requests, want none in at least 100", name, r.Errors, r.Requests)
		}
	}
}

func TestQueueBoundsAnswer503(t *testing.T) {
	if testing.Short() {
		t.Skip("runs gantry dev with worker processes; run without -short")
	}
	bin := buildGantry(t)
	addr := freeAddr(t)
	startDev(t, bin, addr, t.TempDir(), append(shortWindows, "--queue-depth", "20")...)
	c, _ := api.NewClient(&api.Config{Address: "http://" + addr})
	mustCLI(t, bin, addr, "models", "upload", "binary", filepath.Join(fixtures, "binary"))
	mustCLI(t, bin, addr, "endpoints", "create", "-f", endpointFile(t, "q-ep", "binary", "1", "Small"), "--wait")
	waitEntity(t, c, "q-ep", "scaled to zero", 30*time.Second, scaledToZero)

	body, want := oneRow(t)
	answers := burst(t, "http://"+addr+"/serving-endpoints/q-ep/invocations", body, 300)
	ok, full := 0, 0
	for _, a := range answers {
		switch a.status {
		case 200:
			ok++
			comparePredictions(t, "queued", []any{want}, a.body)
		case 503:
			full++
			if a.header.Get("Retry-After") == "" || !bytes.Contains(a.body, []byte(api.ErrTemporarilyUnavailable)) {
				t.Errorf("503 without Retry-After or error code: %v %s", a.header, a.body)
			}
		default:
			t.Errorf("status %d: %s", a.status, a.body)
		}
	}
	if full == 0 || ok < 20 {
		t.Errorf("%d answered, %d refused; want at least the 20 queued answered and some refused", ok, full)
	}
}
