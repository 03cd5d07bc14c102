package nomadtest_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gantry/gantry/internal/eventually"
	"github.com/gantry/gantry/internal/nomadtest"
	"github.com/hashicorp/nomad/api"
)

// TestMain lets the test binary be a task: with NOMADTEST_TASK=1 it serves
// GET /ping and GET /file (the model dir's MLmodel) on --listen.
func TestMain(m *testing.M) {
	if os.Getenv("NOMADTEST_TASK") == "1" {
		task()
		return
	}
	os.Exit(m.Run())
}

func task() {
	fs := flag.NewFlagSet("task", flag.ExitOnError)
	listen := fs.String("listen", "", "")
	dir := fs.String("model-dir", "", "")
	fs.Parse(os.Args[1:])
	http.HandleFunc("/ping", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })
	http.HandleFunc("/file", func(w http.ResponseWriter, _ *http.Request) {
		b, err := os.ReadFile(filepath.Join(*dir, "MLmodel"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		w.Write(b)
	})
	http.HandleFunc("/env", func(w http.ResponseWriter, r *http.Request) {
		v, ok := os.LookupEnv(r.URL.Query().Get("name"))
		if !ok {
			http.Error(w, "unset", http.StatusNotFound)
			return
		}
		io.WriteString(w, v)
	})
	fmt.Fprintln(os.Stderr, "task listening on", *listen)
	if err := http.ListenAndServe(*listen, nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
}

func start(t *testing.T, cfg nomadtest.Config) (*nomadtest.Server, *api.Client) {
	t.Helper()
	srv, err := nomadtest.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	conf := &api.Config{Address: srv.URL, SecretID: cfg.Token}
	c, err := api.NewClient(conf)
	if err != nil {
		t.Fatal(err)
	}
	return srv, c
}

// artifactServer serves a tar.gz holding MLmodel at /artifact.
func artifactServer(t *testing.T, content string) string {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	tw.WriteHeader(&tar.Header{Name: "MLmodel", Mode: 0o644, Size: int64(len(content)), Typeflag: tar.TypeReg})
	tw.Write([]byte(content))
	tw.Close()
	zw.Close()
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/artifact" {
			http.NotFound(w, r)
			return
		}
		w.Write(buf.Bytes())
	}))
	t.Cleanup(hs.Close)
	return hs.URL + "/artifact"
}

// taskJob is a raw_exec job that runs this test binary as its task.
func taskJob(t *testing.T, id string, count int, artifact string) *api.Job {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	job := api.NewServiceJob(id, id, "", 50)
	job.Region = nil
	job.Update = &api.UpdateStrategy{MaxParallel: new(0)}
	tg := api.NewTaskGroup("worker", count)
	tg.Networks = []*api.NetworkResource{{DynamicPorts: []api.Port{{Label: "http"}}}}
	tg.Services = []*api.Service{{Name: id, PortLabel: "http", Provider: "nomad",
		Checks: []api.ServiceCheck{{Name: "ping", Type: "http", Path: "/ping", Interval: time.Second, Timeout: time.Second}}}}
	tg.ShutdownDelay = new(time.Duration(0))
	task := api.NewTask("worker", "raw_exec")
	task.Config = map[string]any{
		"command": exe,
		"args":    []string{"--model-dir", "${NOMAD_TASK_DIR}/model", "--listen", "${NOMAD_ADDR_http}"},
	}
	task.Env = map[string]string{"NOMADTEST_TASK": "1"}
	task.Resources = &api.Resources{CPU: new(500), MemoryMB: new(256)}
	if artifact != "" {
		task.Artifacts = []*api.TaskArtifact{{GetterSource: new(artifact), GetterOptions: map[string]string{"archive": "tar.gz"}, RelativeDest: new("local/model")}}
	}
	tg.Tasks = []*api.Task{task}
	job.TaskGroups = []*api.TaskGroup{tg}
	return job
}

// status is an API error's HTTP status and body.
func status(err error) (int, string) {
	var ue api.UnexpectedResponseError
	if errors.As(err, &ue) {
		return ue.StatusCode(), ue.Body()
	}
	return 0, fmt.Sprint(err)
}

func TestRegisterRefusesInvalidJobs(t *testing.T) {
	_, c := start(t, nomadtest.Config{})
	for _, tc := range []struct {
		name   string
		mutate func(*api.Job)
		code   int
		text   string
	}{
		{"missing task driver", func(j *api.Job) { j.TaskGroups[0].Tasks[0].Driver = "" }, 500, "Missing task driver"},
		{"negative count", func(j *api.Job) { j.TaskGroups[0].Count = new(-1) }, 500, "Task group count can't be negative"},
		{"memory under the minimum", func(j *api.Job) { j.TaskGroups[0].Tasks[0].Resources.MemoryMB = new(5) }, 500, "minimum MemoryMB value is 10; got 5"},
		{"cpu and cores", func(j *api.Job) { j.TaskGroups[0].Tasks[0].Resources.Cores = new(2) }, 500, "not both"},
		{"no tasks", func(j *api.Job) { j.TaskGroups[0].Tasks = nil }, 500, "Missing tasks for task group"},
		{"bad service name", func(j *api.Job) { j.TaskGroups[0].Services[0].Name = "under_score" }, 500, "RFC 1123"},
		{"unknown port", func(j *api.Job) { j.TaskGroups[0].Services[0].PortLabel = "grpc" }, 500, `Port label "grpc"`},
		{"artifact escapes", func(j *api.Job) {
			j.TaskGroups[0].Tasks[0].Artifacts = []*api.TaskArtifact{{GetterSource: new("http://x/y"), RelativeDest: new("../../../etc")}}
		}, 500, "destination escapes allocation directory"},
		{"unknown node pool", func(j *api.Job) { j.NodePool = new("gpu") }, 500, `nonexistent node pool "gpu"`},
		{"no job ID", func(j *api.Job) { j.ID = nil }, 400, "Job ID hasn't been provided"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			job := taskJob(t, "bad", 1, "")
			tc.mutate(job)
			_, _, err := c.Jobs().Register(job, nil)
			code, body := status(err)
			if code != tc.code || !strings.Contains(body, tc.text) {
				t.Errorf("register: %d %q, want %d with %q", code, body, tc.code, tc.text)
			}
		})
	}
	if _, _, err := c.Jobs().Info("bad", nil); func() int { n, _ := status(err); return n }() != 404 {
		t.Errorf("a refused job was stored: %v", err)
	}
}

func TestValidateMatchesRegister(t *testing.T) {
	job := taskJob(t, "ok", 1, "")
	if err := nomadtest.Validate(job); err != nil {
		t.Fatalf("valid job: %v", err)
	}
	job.TaskGroups[0].Tasks[0].Driver = ""
	job.TaskGroups[0].Tasks[0].Resources.CPU = new(0)
	err := nomadtest.Validate(job)
	if err == nil || !strings.Contains(err.Error(), "Missing task driver") || !strings.Contains(err.Error(), "minimum CPU value is 1; got 0") {
		t.Errorf("Validate = %v, want both problems", err)
	}
}

func TestScale(t *testing.T) {
	srv, c := start(t, nomadtest.Config{})
	n := 0
	if _, _, err := c.Jobs().Scale("nope", "worker", &n, "", false, nil, nil); func() int { s, _ := status(err); return s }() != 404 {
		t.Errorf("scale an unknown job: %v, want 404", err)
	}

	// Without max_parallel = 0 a job that wants allocations gets a
	// deployment, and Nomad refuses to scale it while the deployment runs.
	// With count 0 there is nothing to deploy (DesiredTotal 0): Nomad makes
	// no deployment, and the first scale up from zero makes one.
	rolling := taskJob(t, "rolling", 0, "")
	rolling.Update = nil
	if _, _, err := c.Jobs().Register(rolling, nil); err != nil {
		t.Fatal(err)
	}
	if d, _, err := c.Jobs().LatestDeployment("rolling", nil); err != nil || d != nil {
		t.Errorf("a count-0 rolling job has deployment %+v (%v), want none", d, err)
	}
	n = 1
	if _, _, err := c.Jobs().Scale("rolling", "worker", &n, "", false, nil, nil); err != nil {
		t.Fatalf("scale a count-0 rolling job up: %v, want it accepted (no deployment runs)", err)
	}
	if d, _, err := c.Jobs().LatestDeployment("rolling", nil); err != nil || d == nil || d.Status != api.DeploymentStatusRunning {
		t.Errorf("after scaling up from zero: deployment %+v (%v), want a running one", d, err)
	}
	n = 2
	_, _, err := c.Jobs().Scale("rolling", "worker", &n, "", false, nil, nil)
	if code, body := status(err); code != 400 || !strings.Contains(body, "job scaling blocked due to active deployment") {
		t.Errorf("scale during a deployment: %d %q, want 400 blocked", code, body)
	}
	busy := taskJob(t, "busy", 1, "")
	busy.Update = nil
	if _, _, err := c.Jobs().Register(busy, nil); err != nil {
		t.Fatal(err)
	}
	_, _, err = c.Jobs().Scale("busy", "worker", &n, "", false, nil, nil)
	if code, body := status(err); code != 400 || !strings.Contains(body, "job scaling blocked due to active deployment") {
		t.Errorf("scale a new rolling job during its deployment: %d %q, want 400 blocked", code, body)
	}
	for _, id := range []string{"rolling", "busy"} {
		if _, _, err := c.Jobs().Deregister(id, true, nil); err != nil {
			t.Fatal(err)
		}
	}

	if _, _, err := c.Jobs().Register(taskJob(t, "steady", 0, ""), nil); err != nil {
		t.Fatal(err)
	}
	_, _, err = c.Jobs().Scale("steady", "nope", &n, "", false, nil, nil)
	if code, body := status(err); code != 400 || !strings.Contains(body, `task group "nope"`) {
		t.Errorf("scale an unknown group: %d %q", code, body)
	}
	n = -1
	if code, _ := status(func() error { _, _, err := c.Jobs().Scale("steady", "worker", &n, "", false, nil, nil); return err }()); code != 400 {
		t.Errorf("scale to -1: %d, want 400", code)
	}
	n = 2
	if _, _, err := c.Jobs().Scale("steady", "worker", &n, "", false, nil, nil); err != nil {
		t.Fatalf("scale a job with max_parallel = 0: %v", err)
	}
	job, _, err := c.Jobs().Info("steady", nil)
	if err != nil || *job.TaskGroups[0].Count != 2 {
		t.Fatalf("after scale: %v %v", job, err)
	}
	eventually.True(t, 15*time.Second, "two running processes", func() bool { return len(srv.Processes()) == 2 })
}

// TestBlockingQuery checks that a read with an index waits for a change,
// and returns at the wait time when none comes.
func TestBlockingQuery(t *testing.T) {
	_, c := start(t, nomadtest.Config{})
	if _, _, err := c.Jobs().Register(taskJob(t, "job", 0, ""), nil); err != nil {
		t.Fatal(err)
	}
	_, meta, err := c.Jobs().Evaluations("job", nil)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, meta2, err := c.Jobs().Evaluations("job", &api.QueryOptions{WaitIndex: meta.LastIndex, WaitTime: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < 200*time.Millisecond || meta2.LastIndex != meta.LastIndex {
		t.Errorf("query with no change returned after %v with index %d (was %d), want the wait and the same index", took, meta2.LastIndex, meta.LastIndex)
	}

	done := make(chan uint64)
	go func() {
		_, m, err := c.Jobs().Evaluations("job", &api.QueryOptions{WaitIndex: meta.LastIndex, WaitTime: time.Minute})
		if err != nil {
			t.Error(err)
		}
		done <- m.LastIndex
	}()
	select {
	case <-done:
		t.Fatal("blocking query returned before anything changed")
	case <-time.After(100 * time.Millisecond):
	}
	n := 1
	if _, _, err := c.Jobs().Scale("job", "worker", &n, "", false, nil, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case idx := <-done:
		if idx <= meta.LastIndex {
			t.Errorf("index after a change = %d, want above %d", idx, meta.LastIndex)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("blocking query did not return after a change")
	}
}

// TestRunsAllocations registers a job whose task is this test binary:
// the artifact is unpacked into the task dir, the task serves on its
// dynamic port, its service is registered, and purging the job stops it.
func TestRunsAllocations(t *testing.T) {
	srv, c := start(t, nomadtest.Config{})
	art := artifactServer(t, "flavors: {}\n")
	if _, _, err := c.Jobs().Register(taskJob(t, "svc", 2, art), nil); err != nil {
		t.Fatal(err)
	}
	var regs []*api.ServiceRegistration
	eventually.True(t, 15*time.Second, "two registrations", func() bool {
		var err error
		regs, _, err = c.Services().Get("svc", nil)
		return err == nil && len(regs) == 2
	})
	for _, r := range regs {
		addr := fmt.Sprintf("http://%s:%d", r.Address, r.Port)
		var body []byte
		eventually.True(t, 15*time.Second, "the task to answer", func() bool {
			resp, err := http.Get(addr + "/file")
			if err != nil {
				return false
			}
			defer resp.Body.Close()
			body, _ = io.ReadAll(resp.Body)
			return resp.StatusCode == 200
		})
		if string(body) != "flavors: {}\n" {
			t.Errorf("task at %s read %q from its model dir, want the artifact's MLmodel", addr, body)
		}
	}
	allocs, _, err := c.Jobs().Allocations("svc", false, nil)
	if err != nil || len(allocs) != 2 || allocs[0].ClientStatus != "running" {
		t.Fatalf("allocations = %v, %v; want two running", allocs, err)
	}

	if _, _, err := c.Jobs().Deregister("svc", true, nil); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 15*time.Second, "no process", func() bool { return len(srv.Processes()) == 0 })
	regs, _, err = c.Services().Get("svc", nil)
	if err != nil || len(regs) != 0 {
		t.Errorf("registrations after purge = %v, %v", regs, err)
	}
	if _, _, err := c.Jobs().Info("svc", nil); func() int { n, _ := status(err); return n }() != 404 {
		t.Errorf("purged job still there: %v", err)
	}
}

// TestPlacementFailure asks for a GPU that no node has: the evaluation
// says why and leaves a blocked evaluation behind.
func TestPlacementFailure(t *testing.T) {
	_, c := start(t, nomadtest.Config{})
	job := taskJob(t, "gpu", 1, "")
	job.TaskGroups[0].Tasks[0].Resources.Devices = []*api.RequestedDevice{{Name: "nvidia/gpu", Count: new(uint64(1))}}
	resp, _, err := c.Jobs().Register(job, nil)
	if err != nil {
		t.Fatal(err)
	}
	evals, _, err := c.Jobs().Evaluations("gpu", nil)
	if err != nil {
		t.Fatal(err)
	}
	var placed *api.Evaluation
	blocked := 0
	for _, e := range evals {
		if e.ID == resp.EvalID {
			placed = e
		}
		if e.Status == api.EvalStatusBlocked {
			blocked++
		}
	}
	if placed == nil || placed.FailedTGAllocs["worker"] == nil || placed.FailedTGAllocs["worker"].ConstraintFiltered["missing devices"] != 1 || blocked != 1 {
		t.Fatalf("evaluations = %+v, want the register's to fail on missing devices, and one blocked", evals)
	}

	// Scaled to zero, nothing is left to place: Nomad untracks the blocked
	// evaluation but leaves its status "blocked", and the newest
	// evaluation is complete with no failed placements.
	n := 0
	if _, _, err := c.Jobs().Scale("gpu", "worker", &n, "", false, nil, nil); err != nil {
		t.Fatal(err)
	}
	evals, _, err = c.Jobs().Evaluations("gpu", nil)
	if err != nil {
		t.Fatal(err)
	}
	blocked = 0
	for _, e := range evals {
		if e.Status == api.EvalStatusBlocked {
			blocked++
		}
	}
	if newest := evals[0]; newest.TriggeredBy != "job-scaling" || newest.Status != api.EvalStatusComplete || len(newest.FailedTGAllocs) != 0 || blocked != 1 {
		t.Errorf("after scale to zero: newest %+v, %d blocked; want a complete scaling evaluation and the stale blocked one left as it is", newest, blocked)
	}
}

func TestTaskFailureIsRestartedThenFails(t *testing.T) {
	_, c := start(t, nomadtest.Config{})
	job := taskJob(t, "crash", 1, "")
	job.TaskGroups[0].Tasks[0].Config = map[string]any{"command": "/bin/sh", "args": []string{"-c", "echo cannot load >&2; exit 3"}}
	job.TaskGroups[0].RestartPolicy = &api.RestartPolicy{Attempts: new(1), Interval: new(time.Minute), Delay: new(50 * time.Millisecond), Mode: new("fail")}
	job.TaskGroups[0].ReschedulePolicy = &api.ReschedulePolicy{Attempts: new(0), Unlimited: new(false)}
	if _, _, err := c.Jobs().Register(job, nil); err != nil {
		t.Fatal(err)
	}
	var a *api.AllocationListStub
	eventually.True(t, 15*time.Second, "a failed allocation", func() bool {
		allocs, _, err := c.Jobs().Allocations("crash", false, nil)
		if err == nil && len(allocs) == 1 && allocs[0].ClientStatus == "failed" {
			a = allocs[0]
			return true
		}
		return false
	})
	ts := a.TaskStates["worker"]
	var types []string
	for _, e := range ts.Events {
		types = append(types, e.Type)
	}
	got := strings.Join(types, ",")
	if !ts.Failed || ts.Restarts != 1 || strings.Count(got, "Terminated") != 2 || !strings.HasSuffix(got, "Not Restarting") {
		t.Errorf("task state failed=%v restarts=%d events %s; want two exits, one restart, then Not Restarting", ts.Failed, ts.Restarts, got)
	}
	logs, err := c.Raw().Response("/v1/client/fs/logs/"+a.ID+"?task=worker&type=stderr&origin=end&offset=100&plain=true", nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(logs)
	logs.Close()
	if !strings.Contains(string(b), "cannot load") {
		t.Errorf("stderr = %q, want the task's output", b)
	}
}

func TestToken(t *testing.T) {
	srv, _ := start(t, nomadtest.Config{Token: "s3cret"})
	anon, _ := api.NewClient(&api.Config{Address: srv.URL})
	_, _, err := anon.Jobs().List(nil)
	if code, _ := status(err); code != 403 {
		t.Errorf("no token: %v, want 403", err)
	}
	wrong, _ := api.NewClient(&api.Config{Address: srv.URL, SecretID: "guess"})
	_, _, err = wrong.Jobs().List(nil)
	if code, body := status(err); code != 403 || body != "ACL token not found" {
		t.Errorf("wrong token: %d %q", code, body)
	}
}

// Reserved cores are a task's alone: a node of two cores places two
// one-core allocations, not a third, and then has no MHz left for a
// task that shares.
func TestReservedCores(t *testing.T) {
	_, c := start(t, nomadtest.Config{Nodes: []nomadtest.Node{{CPU: 2000, Cores: 2}}})
	failedOn := func(id string) map[string]int {
		t.Helper()
		evals, _, err := c.Jobs().Evaluations(id, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evals {
			if m := e.FailedTGAllocs["worker"]; m != nil {
				return m.DimensionExhausted
			}
		}
		return nil
	}
	cores := taskJob(t, "cores", 3, "")
	cores.TaskGroups[0].Tasks[0].Resources = &api.Resources{Cores: new(1), MemoryMB: new(256)}
	if _, _, err := c.Jobs().Register(cores, nil); err != nil {
		t.Fatal(err)
	}
	if got := failedOn("cores"); got["cores"] != 1 {
		t.Errorf("exhausted %v, want the third allocation refused on cores", got)
	}
	shared := taskJob(t, "shared", 1, "")
	if _, _, err := c.Jobs().Register(shared, nil); err != nil {
		t.Fatal(err)
	}
	if got := failedOn("shared"); got["cpu"] != 1 {
		t.Errorf("exhausted %v, want a 500 MHz task refused on cpu beside two reserved cores", got)
	}
}
