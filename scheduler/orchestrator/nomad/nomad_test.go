package nomad_test

// These tests run the driver against the Nomad API double, whose
// allocations are real `gantry worker` processes serving the committed
// XGBoost fixture, fetched as a tar.gz artifact the way a Nomad client
// fetches it from the registry.

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gantry/gantry/internal/nomadtest"
	"github.com/gantry/gantry/jobs"
	"github.com/gantry/gantry/scheduler/orchestrator"
	"github.com/gantry/gantry/scheduler/orchestrator/nomad"
	"github.com/gantry/gantry/scheduler/registry"
	nomadapi "github.com/hashicorp/nomad/api"
)

const fixture = "../../../worker/testdata/models/binary"

// gantryBin is the gantry binary that the double runs as the worker.
var gantryBin string

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run()) // the tests skip themselves
	}
	dir, err := os.MkdirTemp("", "gantry-nomad-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	gantryBin = filepath.Join(dir, "gantry")
	if out, err := exec.Command("go", "build", "-o", gantryBin, "github.com/gantry/gantry/cmd/gantry").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build gantry: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// env is a double, a driver on it and the deployments the driver notified.
type env struct {
	srv    *nomadtest.Server
	driver *nomad.Driver
	nomad  *nomadapi.Client

	mu       sync.Mutex
	notified map[string]int
}

func newEnv(t *testing.T, cfg nomadtest.Config, settings jobs.Settings) *env {
	t.Helper()
	if testing.Short() {
		t.Skip("runs worker processes; run without -short")
	}
	cfg.DockerEntrypoint = gantryBin
	srv, err := nomadtest.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	e := &env{srv: srv, notified: map[string]int{}}
	e.driver, err = nomad.New(nomad.Config{
		Client: &nomadapi.Config{Address: srv.URL, SecretID: cfg.Token},
		Jobs:   settings,
	}, func(id string) {
		e.mu.Lock()
		e.notified[id]++
		e.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := e.driver.Close(ctx); err != nil {
			t.Error(err)
		}
	})
	e.nomad, _ = nomadapi.NewClient(&nomadapi.Config{Address: srv.URL, SecretID: cfg.Token})
	return e
}

// artifact serves a model directory as the registry does: a tar.gz.
func artifact(t *testing.T, dir string) string {
	t.Helper()
	var buf bytes.Buffer
	if err := registry.TarGz(&buf, dir); err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/gzip")
		w.Write(buf.Bytes())
	}))
	t.Cleanup(hs.Close)
	return hs.URL + "/api/2.0/gantry/models/binary/versions/1/artifact"
}

func spec(id, url string, replicas int) orchestrator.Deployment {
	return orchestrator.Deployment{
		ID: id, Endpoint: "ep", Entity: "binary-1", ModelName: "binary", ModelVersion: "1",
		ArtifactURL: url, Replicas: replicas, WorkloadSize: "Small", WorkloadType: "CPU",
	}
}

// waitStatus waits until the deployment's status satisfies ok.
func (e *env) waitStatus(t *testing.T, id, what string, ok func(orchestrator.Status) bool) orchestrator.Status {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st := e.driver.Status(id)
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; status %+v", what, st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// invoke posts the fixture's rows to a worker and checks the predictions
// against the Python library's.
func invoke(t *testing.T, addr string) {
	t.Helper()
	var want struct {
		Columns     []string `json:"columns"`
		Data        [][]any  `json:"data"`
		Predictions []float64
	}
	b, err := os.ReadFile(filepath.Join(fixture, "expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(map[string]any{"dataframe_split": map[string]any{"columns": want.Columns, "data": want.Data}})
	resp, err := http.Post("http://"+addr+"/invocations", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got struct{ Predictions []float64 }
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil || resp.StatusCode != 200 {
		t.Fatalf("invoke %s: %d %v", addr, resp.StatusCode, err)
	}
	if len(got.Predictions) != len(want.Predictions) {
		t.Fatalf("%d predictions, want %d", len(got.Predictions), len(want.Predictions))
	}
	for i := range want.Predictions {
		if math.Abs(got.Predictions[i]-want.Predictions[i]) > 1e-6 {
			t.Fatalf("prediction %d = %v, want %v", i, got.Predictions[i], want.Predictions[i])
		}
	}
}

func TestDeploymentLifecycle(t *testing.T) {
	e := newEnv(t, nomadtest.Config{}, jobs.Settings{})
	ctx := context.Background()
	d := spec("ep-binary-1-0000aaaa", artifact(t, fixture), 1)

	if err := e.driver.Ensure(ctx, d); err != nil {
		t.Fatal(err)
	}
	st := e.waitStatus(t, d.ID, "one ready replica", func(s orchestrator.Status) bool { return s.Ready() == 1 })
	if st.Desired != 1 || st.Failure != "" || len(st.Instances) != 1 {
		t.Errorf("status = %+v, want one instance, no failure", st)
	}
	// The allocation's cold start, in order, for the API's view: the
	// client downloads the artifact before the task starts.
	if s := st.Starts; len(s) != 1 || s[0].ID != st.Instances[0].ID || s[0].Requested.IsZero() || s[0].Downloading.Before(s[0].Requested) ||
		s[0].Started.Before(s[0].Downloading) || s[0].Answered.Before(s[0].Started) || s[0].Ready.Before(s[0].Answered) {
		t.Errorf("starts = %+v, want requested <= downloading <= started <= answered <= ready, none zero", s)
	}
	invoke(t, st.Instances[0].Addr)
	// The worker's first answer, from its /ping: the last phase.
	st = e.waitStatus(t, d.ID, "the first response", func(s orchestrator.Status) bool {
		return len(s.Starts) == 1 && s.Starts[0].FirstPhase != ""
	})
	if s := st.Starts[0]; s.FirstPhase != orchestrator.PhaseFirstResponse || s.FirstRequest.Before(s.Ready) || s.FirstResponse.Before(s.FirstRequest) {
		t.Errorf("start %+v: want first_response, ready <= first request <= first response", s)
	}
	e.mu.Lock()
	notified := e.notified[d.ID]
	e.mu.Unlock()
	if notified == 0 {
		t.Error("the driver never notified a status change")
	}

	// Idle, the driver waits on blocking queries: it asks Nomad nothing
	// (once the queries that follow the last change, each after the
	// watcher's 100 ms pause, are sent).
	time.Sleep(250 * time.Millisecond)
	before := e.srv.Requests()
	time.Sleep(500 * time.Millisecond)
	if n := e.srv.Requests() - before; n > 0 {
		t.Errorf("%d requests to Nomad in 500 ms of nothing happening, want none (blocking queries)", n)
	}

	t.Run("scale up", func(t *testing.T) {
		d.Replicas = 2
		if err := e.driver.Ensure(ctx, d); err != nil {
			t.Fatal(err)
		}
		st := e.waitStatus(t, d.ID, "two ready replicas", func(s orchestrator.Status) bool { return s.Ready() == 2 })
		for _, in := range st.Instances {
			invoke(t, in.Addr)
		}
		evals, _, err := e.nomad.Jobs().Evaluations(d.ID, nil)
		if err != nil {
			t.Fatal(err)
		}
		if evals[0].TriggeredBy != "job-scaling" {
			t.Errorf("the newest evaluation was triggered by %q, want job-scaling (the scale API, not a new register)", evals[0].TriggeredBy)
		}
	})

	t.Run("scale to zero", func(t *testing.T) {
		failures := e.driver.Status(d.ID).Failures
		d.Replicas = 0
		if err := e.driver.Ensure(ctx, d); err != nil {
			t.Fatal(err)
		}
		e.waitStatus(t, d.ID, "no instances", func(s orchestrator.Status) bool { return len(s.Instances) == 0 && s.Desired == 0 })
		waitNoProcess(t, e.srv)
		// Nomad reports every killed task as Terminated; a stop the
		// driver asked for is no failure.
		e.waitAllocs(t, d.ID, "every allocation killed", func(as []*nomadapi.AllocationListStub) bool {
			for _, a := range as {
				if a.ClientStatus != nomadapi.AllocClientStatusComplete || !hasEvent(a, nomadapi.TaskTerminated) {
					return false
				}
			}
			return len(as) > 0
		})
		time.Sleep(300 * time.Millisecond) // the driver's allocation watcher catches up
		if st := e.driver.Status(d.ID); st.Failure != "" || st.Failures != failures {
			t.Errorf("after scale to zero: Failure %q, Failures %d, want none and %d (a stop is no failure)", st.Failure, st.Failures, failures)
		}
	})

	t.Run("scale back and remove", func(t *testing.T) {
		d.Replicas = 1
		if err := e.driver.Ensure(ctx, d); err != nil {
			t.Fatal(err)
		}
		st := e.waitStatus(t, d.ID, "a ready replica", func(s orchestrator.Status) bool { return s.Ready() == 1 })
		if err := e.driver.Remove(ctx, d.ID); err != nil {
			t.Fatal(err)
		}
		if st := e.driver.Status(d.ID); len(st.Instances) != 0 {
			t.Errorf("status after Remove = %+v, want nothing", st)
		}
		waitNoProcess(t, e.srv)
		if _, err := http.Get("http://" + st.Instances[0].Addr + "/ping"); err == nil {
			t.Errorf("worker %s still answers after Remove", st.Instances[0].Addr)
		}
		if _, _, err := e.nomad.Jobs().Info(d.ID, nil); err == nil {
			t.Error("the job is still in Nomad after Remove; want it purged")
		}
		if err := e.driver.Remove(ctx, d.ID); err != nil {
			t.Errorf("a second Remove: %v, want nil", err)
		}
	})
}

func waitNoProcess(t *testing.T, srv *nomadtest.Server) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for len(srv.Processes()) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("processes still running: %v", srv.Processes())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestPlacementFailure(t *testing.T) {
	e := newEnv(t, nomadtest.Config{}, jobs.Settings{})
	d := spec("ep-gpu-0000bbbb", artifact(t, fixture), 1)
	d.WorkloadType = "GPU_MEDIUM"
	if err := e.driver.Ensure(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	st := e.waitStatus(t, d.ID, "a failure", func(s orchestrator.Status) bool { return s.Failure != "" })
	if !strings.Contains(st.Failure, `Nomad cannot place 1 allocation of group "worker"`) || !strings.Contains(st.Failure, "missing devices") || st.Failures == 0 {
		t.Errorf("status = %+v, want a counted placement failure naming the missing devices", st)
	}

	// Scaled to zero, nothing waits for a placement. Nomad leaves the
	// blocked evaluation, untracked, with status "blocked": it is no
	// failure any more.
	d.Replicas = 0
	if err := e.driver.Ensure(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	e.waitStatus(t, d.ID, "no failure once scaled to zero", func(s orchestrator.Status) bool { return s.Failure == "" })
	d.Replicas = 1

	// A node with the GPU comes... in the form of a cluster that has one.
	e2 := newEnv(t, nomadtest.Config{Nodes: []nomadtest.Node{{GPUs: 1, GPUMemoryMiB: 24 << 10, MemoryMB: 64 << 10}}}, jobs.Settings{})
	if err := e2.driver.Ensure(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	e2.waitStatus(t, d.ID, "a ready GPU replica", func(s orchestrator.Status) bool { return s.Ready() == 1 && s.Failure == "" })
}

func TestWorkerFailure(t *testing.T) {
	exe := gantryBin
	e := newEnv(t, nomadtest.Config{}, jobs.Settings{TaskDriver: jobs.DriverRawExec, Binary: exe})
	// The fixture with its weights cut in half: the worker cannot load it.
	dir := t.TempDir()
	for _, f := range []string{"MLmodel", "model.json"} {
		b, err := os.ReadFile(filepath.Join(fixture, f))
		if err != nil {
			t.Fatal(err)
		}
		if f == "model.json" {
			b = b[:len(b)/2]
		}
		os.WriteFile(filepath.Join(dir, f), b, 0o644)
	}
	d := spec("ep-corrupt-0000cccc", artifact(t, dir), 1)
	if err := e.driver.Ensure(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	st := e.waitStatus(t, d.ID, "a failure", func(s orchestrator.Status) bool { return s.Failure != "" })
	if !strings.Contains(st.Failure, "Terminated") || !strings.Contains(st.Failure, "model.json") || st.Failures == 0 || st.Ready() != 0 {
		t.Errorf("status = %+v, want a counted failure with the worker's reason (model.json)", st)
	}
	logs, ok := e.driver.Logs(d.ID)
	if !ok || !strings.Contains(logs, "model.json") {
		t.Errorf("Logs = %q, %v; want the worker's stderr", logs, ok)
	}
}

func TestRefusedJob(t *testing.T) {
	e := newEnv(t, nomadtest.Config{}, jobs.Settings{Namespace: "ml"})
	d := spec("ep-refused-0000dddd", "http://127.0.0.1:1/artifact", 1)
	err := e.driver.Ensure(context.Background(), d)
	if err == nil || !strings.Contains(err.Error(), `nonexistent namespace "ml"`) {
		t.Fatalf("Ensure = %v, want Nomad's refusal", err)
	}
	st := e.driver.Status(d.ID)
	if !strings.Contains(st.Failure, `nonexistent namespace "ml"`) || st.Failures != 1 {
		t.Errorf("status = %+v, want the refusal as the failure, counted once", st)
	}
	// Asked again at once, the driver answers from its backoff instead of
	// asking Nomad every reconcile.
	before := e.srv.Requests()
	if err := e.driver.Ensure(context.Background(), d); err == nil {
		t.Error("a second Ensure succeeded")
	}
	if n := e.srv.Requests() - before; n != 0 {
		t.Errorf("a retry within the backoff sent %d requests", n)
	}
}

// TestEnvironment builds the driver the way cmd/gantry does, from Nomad's
// own variables, against a double that wants a token.
func TestEnvironment(t *testing.T) {
	if testing.Short() {
		t.Skip("runs worker processes; run without -short")
	}
	srv, err := nomadtest.New(nomadtest.Config{Token: "s3cret", Namespaces: []string{"ml"}, DockerEntrypoint: gantryBin})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	t.Setenv("NOMAD_ADDR", srv.URL)
	t.Setenv("NOMAD_TOKEN", "s3cret")
	t.Setenv("NOMAD_NAMESPACE", "ml")
	drv, err := nomad.New(nomad.Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer drv.Close(context.Background())
	d := spec("ep-env-0000eeee", artifact(t, fixture), 1)
	if err := drv.Ensure(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for drv.Status(d.ID).Ready() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("no ready replica: %+v", drv.Status(d.ID))
		}
		time.Sleep(10 * time.Millisecond)
	}
	c, _ := nomadapi.NewClient(&nomadapi.Config{Address: srv.URL, SecretID: "s3cret", Namespace: "ml"})
	job, _, err := c.Jobs().Info(d.ID, nil)
	if err != nil || *job.Namespace != "ml" {
		t.Errorf("job in namespace %v (%v), want ml from NOMAD_NAMESPACE", job, err)
	}
	if err := drv.Remove(context.Background(), d.ID); err != nil {
		t.Fatal(err)
	}
	waitNoProcess(t, srv)
}

// waitAllocs waits until the job's allocations in Nomad satisfy ok.
func (e *env) waitAllocs(t *testing.T, job, what string, ok func([]*nomadapi.AllocationListStub) bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		as, _, err := e.nomad.Jobs().Allocations(job, false, nil)
		if err == nil && ok(as) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: %v %v", what, as, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func hasEvent(a *nomadapi.AllocationListStub, typ string) bool {
	for _, ts := range a.TaskStates {
		for _, ev := range ts.Events {
			if ev.Type == typ {
				return true
			}
		}
	}
	return false
}

// TestPrune restarts the driver with one of its two deployments gone from
// the scheduler's store: Prune purges that job and leaves the kept one and
// a job that is not Gantry's.
func TestPrune(t *testing.T) {
	e := newEnv(t, nomadtest.Config{}, jobs.Settings{})
	ctx := context.Background()
	keep, orphan := spec("ep-keep-0000aaaa", "http://127.0.0.1:1/artifact", 0), spec("ep-gone-0000bbbb", "http://127.0.0.1:1/artifact", 0)
	for _, d := range []orchestrator.Deployment{keep, orphan} {
		if err := e.driver.Ensure(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	other, err := jobs.Render(spec("someone-else", "http://127.0.0.1:1/artifact", 0), jobs.Settings{})
	if err != nil {
		t.Fatal(err)
	}
	other.Meta = nil
	if _, _, err := e.nomad.Jobs().Register(other, nil); err != nil {
		t.Fatal(err)
	}

	// The scheduler restarts: a new driver that knows none of them.
	restarted, err := nomad.New(nomad.Config{Client: &nomadapi.Config{Address: e.srv.URL}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer restarted.Close(ctx)
	if err := restarted.Prune(ctx, []string{keep.ID}); err != nil {
		t.Fatal(err)
	}
	list, _, err := e.nomad.Jobs().List(nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, j := range list {
		got = append(got, j.ID)
	}
	if want := []string{keep.ID, "someone-else"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("jobs after Prune = %v, want %v (the orphan purged, the rest kept)", got, want)
	}
}

// TestWatchersPauseBetweenQueries churns another job's evaluations, which
// wake the driver's evaluation watcher (Nomad's indexes are table-wide):
// the watcher queries at most once per MinQueryInterval, not once per
// change.
func TestWatchersPauseBetweenQueries(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the Nomad double")
	}
	srv, err := nomadtest.New(nomadtest.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	driver, err := nomad.New(nomad.Config{Client: &nomadapi.Config{Address: srv.URL}, MinQueryInterval: 500 * time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer driver.Close(context.Background())
	ctx := context.Background()
	if err := driver.Ensure(ctx, spec("ep-quiet-0000aaaa", "http://127.0.0.1:1/artifact", 0)); err != nil {
		t.Fatal(err)
	}
	c, _ := nomadapi.NewClient(&nomadapi.Config{Address: srv.URL})
	busy, err := jobs.Render(spec("busy", "http://127.0.0.1:1/artifact", 0), jobs.Settings{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Jobs().Register(busy, nil); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // the watchers settle

	before := srv.Requests()
	const changes = 100
	for i := range changes {
		n := i % 2
		if _, _, err := c.Jobs().Scale("busy", jobs.Group, &n, "", false, nil, nil); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := srv.Requests() - before - changes; n > 15 {
		t.Errorf("the driver sent %d queries during %d evaluation changes in about 1 s, want a few (one per 500 ms per watcher)", n, changes)
	}
}
