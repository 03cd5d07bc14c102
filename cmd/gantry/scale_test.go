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
func waitEntity(t testing.TB, c *api.Client, name, what string, timeout time.Duration, cond func(api.ServedEntity) bool) api.ServedEntity {
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

// checkFirstPhase waits until the endpoint's first entity has a replica
// whose cold start reached its last phase, named phase, and checks that
// phase's times against the ones before it: the first request came once
// the model had loaded and the replica was ready.
func checkFirstPhase(t testing.TB, c *api.Client, endpoint, phase string) {
	t.Helper()
	var s api.ReplicaStart
	waitEntity(t, c, endpoint, "a replica in phase "+phase, 15*time.Second, func(e api.ServedEntity) bool {
		if e.Replicas == nil {
			return false
		}
		for _, r := range e.Replicas.Starts {
			if r.Phase == phase {
				s = r
				return true
			}
		}
		return false
	})
	if s.AnsweredMs == 0 || s.ReadyMs < s.AnsweredMs || s.FirstRequestMs < s.ReadyMs || s.FirstResponseMs < s.FirstRequestMs {
		t.Errorf("replica %s in phase %s: model_load at %d, ready at %d, first request at %d, %s at %d (Unix ms); want them in that order",
			s.ID, phase, s.AnsweredMs, s.ReadyMs, s.FirstRequestMs, phase, s.FirstResponseMs)
	}
	t.Logf("replica %s: model load %d ms, ready to first request %d ms, %s %d ms", s.ID,
		s.ReadyMs-s.AnsweredMs, s.FirstRequestMs-s.ReadyMs, phase, s.FirstResponseMs-s.FirstRequestMs)
}

func scaledToZero(e api.ServedEntity) bool {
	return e.ScaledToZero != nil && *e.ScaledToZero && e.Replicas.Ready == 0
}

// oneRow is the binary fixture's first row with its expected prediction.
func oneRow(t testing.TB) ([]byte, float64) {
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
func burst(t testing.TB, url string, body []byte, n int) []answer {
	t.Helper()
	out := make([]answer, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	client := &http.Client{Transport: tokenTransport{base: &http.Transport{MaxIdleConnsPerHost: n}}, Timeout: 60 * time.Second}
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
	// The cold start's last phase: the replica answered its first request
	// after its model loaded, which the driver learns at its next /ping.
	checkFirstPhase(t, c, "zero-ep", api.PhaseFirstResponse)
	metrics := getText(t, "http://"+addr+"/metrics")
	if n := metricValue(metrics, `gantry_cold_start_phase_seconds_count{endpoint="zero-ep",phase="first_response"`); n != 1 {
		t.Errorf("first_response observed %v times in gantry_cold_start_phase_seconds, want 1", n)
	}
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
	bin, loadgen := buildGantry(t), buildLoadgen(t)
	addr := freeAddr(t)
	startDev(t, bin, addr, t.TempDir(), shortWindows...)
	c, _ := api.NewClient(&api.Config{Address: "http://" + addr})
	mustCLI(t, bin, addr, "models", "upload", "binary", filepath.Join(fixtures, "binary"))
	mustCLI(t, bin, addr, "endpoints", "create", "-f", endpointFile(t, "load-ep", "binary", "1", "Medium"), "--wait")

	// A heavy load scales the entity up; a light one keeps going while the
	// autoscaler scales it down again.
	body, _ := oneRow(t)
	heavy := startLoad(t, loadgen, addr, "load-ep", body, "32", "8s")
	light := startLoad(t, loadgen, addr, "load-ep", body, "2", "25s")
	peak := waitEntity(t, c, "load-ep", "more than two replicas", 8*time.Second, func(e api.ServedEntity) bool { return e.Replicas.Ready > 2 })
	waitEntity(t, c, "load-ep", "a scale-down", 25*time.Second, func(e api.ServedEntity) bool { return e.Replicas.Desired < peak.Replicas.Ready })
	for name, r := range map[string]loadRun{"heavy": heavy, "light": light} {
		res := runLoad(t, r)
		if res.Errors != 0 || res.Requests < 100 {
			t.Errorf("%s load: %d errors in %d requests, want none in at least 100", name, res.Errors, res.Requests)
		}
	}
}

func TestQueueBoundsAnswer503(t *testing.T) {
	if testing.Short() {
		t.Skip("runs gantry dev with worker processes; run without -short")
	}
	bin, loadgen := buildGantry(t), buildLoadgen(t)
	addr := freeAddr(t)
	startDev(t, bin, addr, t.TempDir(), append(shortWindows, "--queue-depth", "20")...)
	c, _ := api.NewClient(&api.Config{Address: "http://" + addr})
	mustCLI(t, bin, addr, "models", "upload", "binary", filepath.Join(fixtures, "binary"))
	mustCLI(t, bin, addr, "endpoints", "create", "-f", endpointFile(t, "q-ep", "binary", "1", "Small"), "--wait")
	waitEntity(t, c, "q-ep", "scaled to zero", 30*time.Second, scaledToZero)

	// 300 connections at once against a queue of 20 during the cold start:
	// the overflow is refused (and retried by the closed loop), never held
	// without bound, and the queued requests are answered.
	body, _ := oneRow(t)
	r := runLoad(t, startLoad(t, loadgen, addr, "q-ep", body, "300", "2s"))
	if r.Errors == 0 || r.Requests < 20 {
		t.Errorf("%d answered, %d refused; want the queued ones answered and some refused", r.Requests, r.Errors)
	}
	// The burst's last requests may still hold the queue (a client that
	// hangs up leaves its request queued) until the cold start ends: a
	// 503 with Retry-After meanwhile is the bound at work, so the next
	// request retries as a client would, for a while.
	deadline := time.Now().Add(15 * time.Second)
	for {
		status, h, out := invoke(t, addr, "q-ep", "application/json", body)
		if status == 200 && h.Get("served-model-name") != "" {
			break
		}
		if status != 503 || h.Get("Retry-After") == "" || time.Now().After(deadline) {
			t.Errorf("after the burst: %d %s", status, out)
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func buildLoadgen(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "loadgen")
	if out, err := exec.Command("go", "build", "-o", bin, "../../deploy/bench/loadgen").CombinedOutput(); err != nil {
		t.Fatalf("build loadgen: %v\n%s", err, out)
	}
	return bin
}

type loadRun struct {
	cmd *exec.Cmd
	out *bytes.Buffer
}

// startLoad runs the load generator against an endpoint in its own
// process, so that the load does not depend on how fast this (possibly
// race-instrumented) test binary runs.
func startLoad(t testing.TB, loadgen, addr, endpoint string, body []byte, conns, dur string) loadRun {
	t.Helper()
	bodyFile := filepath.Join(t.TempDir(), "body.json")
	writeFile(t, bodyFile, string(body))
	r := loadRun{out: &bytes.Buffer{}}
	args := []string{"-url", "http://" + addr + "/serving-endpoints/" + endpoint + "/invocations",
		"-body", bodyFile, "-c", conns, "-d", dur, "-warmup", "0s", "-json"}
	if tok := tokenOf(addr); tok != "" {
		tokenFile := filepath.Join(t.TempDir(), "token")
		writeFile(t, tokenFile, tok)
		args = append(args, "-token-file", tokenFile)
	}
	r.cmd = exec.Command(loadgen, args...)
	r.cmd.Stdout, r.cmd.Stderr = r.out, r.out
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return r
}

type loadResult struct{ Requests, Errors int }

func runLoad(t testing.TB, r loadRun) loadResult {
	t.Helper()
	if err := r.cmd.Wait(); err != nil {
		t.Fatalf("load: %v\n%s", err, r.out)
	}
	var res loadResult
	if err := json.Unmarshal(r.out.Bytes(), &res); err != nil {
		t.Fatalf("load: %v: %s", err, r.out)
	}
	return res
}
