package docker

// These tests run real containers from the worker image on a real Docker
// engine (deploy/docker/start-dockerd.sh starts one); each test owns its
// containers through a label of its own.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/internal/dockertest"
	"github.com/gantry/gantry/internal/eventually"
	"github.com/gantry/gantry/scheduler/orchestrator"
)

const fixtures = "../../../worker/testdata/models"

type notifier struct {
	mu  sync.Mutex
	ids []string
}

func (n *notifier) notify(id string) {
	n.mu.Lock()
	n.ids = append(n.ids, id)
	n.mu.Unlock()
}

func (n *notifier) count() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.ids)
}

// owner is a label value no other test or Gantry instance uses.
func owner(t *testing.T) string {
	var b [4]byte
	rand.Read(b[:])
	return "test-" + strings.ReplaceAll(t.Name(), "/", "-") + "-" + hex.EncodeToString(b[:])
}

// newDriver starts a driver with short delays whose containers the test
// checks with the returned client.
func newDriver(t *testing.T, cfg Config) (*Driver, *notifier, *client.Client) {
	t.Helper()
	cli := dockertest.Client(t)
	if cfg.Image == "" {
		cfg.Image = dockertest.BuildImage(t)
	}
	if cfg.Owner == "" {
		cfg.Owner = owner(t)
	}
	if cfg.DrainDelay == 0 {
		cfg.DrainDelay = 50 * time.Millisecond
	}
	cfg.MinBackoff, cfg.StopTimeout = 20*time.Millisecond, 2*time.Second
	n := &notifier{}
	d, err := New(cfg, n.notify)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Close(context.Background()); err != nil {
			t.Errorf("close: %v", err)
		}
		if cs := dockertest.Containers(t, cli, LabelOwner, cfg.Owner); len(cs) != 0 {
			t.Errorf("%d containers left after Close", len(cs))
		}
	})
	return d, n, cli
}

func modelDir(t *testing.T, name string) string {
	dir, err := filepath.Abs(filepath.Join(fixtures, name))
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// corruptModel is the binary fixture with half its model.json.
func corruptModel(t *testing.T) string {
	dir := t.TempDir()
	for _, f := range []string{"MLmodel", "model.json"} {
		b, err := os.ReadFile(filepath.Join(fixtures, "binary", f))
		if err != nil {
			t.Fatal(err)
		}
		if f == "model.json" {
			b = b[:len(b)/2]
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func spec(id, dir string, replicas int) orchestrator.Deployment {
	return orchestrator.Deployment{
		ID: id, Endpoint: "ep", Entity: "binary-1", ModelDir: dir, Replicas: replicas,
		WorkloadSize: api.WorkloadSmall, WorkloadType: api.WorkloadCPU,
	}
}

func running(t *testing.T, cli *client.Client, deployment string) []container.Summary {
	t.Helper()
	return dockertest.Containers(t, cli, LabelDeployment, deployment)
}

func TestEnsureScaleRemove(t *testing.T) {
	d, n, cli := newDriver(t, Config{})
	ctx := context.Background()
	if err := d.Ensure(ctx, spec("dep-a", modelDir(t, "binary"), 2)); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 30*time.Second, "two ready replicas", func() bool { return d.Status("dep-a").Ready() == 2 })
	if n.count() == 0 {
		t.Error("no status change was notified")
	}

	// The replicas are real workers serving the model.
	st := d.Status("dep-a")
	for _, in := range st.Instances {
		resp, err := http.Post("http://"+in.Addr+"/invocations", "application/json", strings.NewReader(`{"instances": [[1, 2, 3, 4, 5, 6]]}`))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), "predictions") {
			t.Errorf("replica %s: %d %s", in.ID, resp.StatusCode, body)
		}
	}

	cs := running(t, cli, "dep-a")
	if len(cs) != 2 {
		t.Fatalf("%d containers with the deployment's label, want 2", len(cs))
	}
	for _, c := range cs {
		if c.Labels[LabelEndpoint] != "ep" || c.Labels[LabelEntity] != "binary-1" || c.Labels[LabelReplica] == "" {
			t.Errorf("container %s labels = %v", c.Names, c.Labels)
		}
		info, err := cli.ContainerInspect(ctx, c.ID)
		if err != nil {
			t.Fatal(err)
		}
		// Small is one core and 1 GiB, unless the engine has less.
		if got, want := info.HostConfig.NanoCPUs, min(int64(1e9), int64(d.cpus)*1e9); got != want {
			t.Errorf("NanoCPUs = %d, want %d", got, want)
		}
		if got, want := info.HostConfig.Memory, min(int64(1<<30), d.memory); got != want {
			t.Errorf("Memory = %d, want %d", got, want)
		}
		// Without MemorySwap = Memory the container could swap past its limit.
		if got, want := info.HostConfig.MemorySwap, info.HostConfig.Memory; got != want {
			t.Errorf("MemorySwap = %d, want %d (Memory: no swap)", got, want)
		}
		if info.HostConfig.NetworkMode != "host" || len(info.Mounts) != 1 || info.Mounts[0].RW {
			t.Errorf("network %s, mounts %+v: want host and one read-only mount", info.HostConfig.NetworkMode, info.Mounts)
		}
	}
	if logs, ok := d.Logs("dep-a"); !ok || !strings.Contains(logs, "model loaded") {
		t.Errorf("Logs = %q, %v; want the workers' output", logs, ok)
	}

	if err := d.Ensure(ctx, spec("dep-a", modelDir(t, "binary"), 1)); err != nil {
		t.Fatal(err)
	}
	if st := d.Status("dep-a"); st.Desired != 1 || len(st.Instances) != 1 {
		t.Errorf("after scaling to 1: %+v", st)
	}
	eventually.True(t, 30*time.Second, "one container", func() bool { return len(running(t, cli, "dep-a")) == 1 })

	if err := d.Remove(ctx, "dep-a"); err != nil {
		t.Fatal(err)
	}
	if st := d.Status("dep-a"); len(st.Instances) != 0 {
		t.Errorf("after Remove: %+v", st)
	}
	eventually.True(t, 30*time.Second, "no container", func() bool { return len(running(t, cli, "dep-a")) == 0 })
}

func TestDrainBeforeStop(t *testing.T) {
	d, _, _ := newDriver(t, Config{DrainDelay: time.Second})
	ctx := context.Background()
	d.Ensure(ctx, spec("dep-drain", modelDir(t, "binary"), 1))
	eventually.True(t, 30*time.Second, "a ready replica", func() bool { return d.Status("dep-drain").Ready() == 1 })
	addr := d.Status("dep-drain").Instances[0].Addr

	d.Ensure(ctx, spec("dep-drain", modelDir(t, "binary"), 0))
	// Reported gone at once, the worker still serves for the drain delay
	// so that requests already routed to it are answered.
	if st := d.Status("dep-drain"); st.Ready() != 0 {
		t.Errorf("after scaling to zero: %+v", st)
	}
	time.Sleep(300 * time.Millisecond)
	resp, err := http.Get("http://" + addr + "/ping")
	if err != nil {
		t.Fatalf("worker stopped before the drain delay: %v", err)
	}
	resp.Body.Close()
	eventually.True(t, 30*time.Second, "the worker to stop", func() bool {
		resp, err := http.Get("http://" + addr + "/ping")
		if err == nil {
			resp.Body.Close()
		}
		return err != nil
	})
}

func TestFailedStartReportsReasonAndRetries(t *testing.T) {
	d, _, cli := newDriver(t, Config{})
	d.Ensure(context.Background(), spec("dep-bad", corruptModel(t), 1))
	eventually.True(t, 30*time.Second, "two failed starts", func() bool { return d.Status("dep-bad").Failures >= 2 })
	st := d.Status("dep-bad")
	if !strings.Contains(st.Failure, "model.json") || st.Ready() != 0 {
		t.Errorf("status %+v, want a failure naming model.json", st)
	}
	// Failed containers do not pile up: at most the one being retried.
	if cs := running(t, cli, "dep-bad"); len(cs) > 1 {
		t.Errorf("%d containers of a failing deployment, want at most 1", len(cs))
	}
}

func TestMissingImage(t *testing.T) {
	d, _, _ := newDriver(t, Config{Image: "gantry-worker:no-such-tag"})
	d.Ensure(context.Background(), spec("dep-noimage", modelDir(t, "binary"), 1))
	eventually.True(t, 30*time.Second, "a failed start", func() bool { return d.Status("dep-noimage").Failures >= 1 })
	if f := d.Status("dep-noimage").Failure; !strings.Contains(f, "gantry-worker:no-such-tag") || !strings.Contains(f, "make image") {
		t.Errorf("Failure = %q, want it to name the image and `make image`", f)
	}
}

func TestExitedContainerIsReplaced(t *testing.T) {
	d, _, cli := newDriver(t, Config{})
	ctx := context.Background()
	d.Ensure(ctx, spec("dep-exit", modelDir(t, "binary"), 1))
	eventually.True(t, 30*time.Second, "a ready replica", func() bool { return d.Status("dep-exit").Ready() == 1 })
	first := running(t, cli, "dep-exit")[0].ID

	if err := cli.ContainerKill(ctx, first, "KILL"); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 30*time.Second, "the exit to count as a failure", func() bool { return d.Status("dep-exit").Failures == 1 })
	eventually.True(t, 30*time.Second, "a new ready replica", func() bool { return d.Status("dep-exit").Ready() == 1 })
	cs := running(t, cli, "dep-exit")
	if len(cs) != 1 || cs[0].ID == first {
		t.Errorf("containers after the exit: %v, want one new one", cs)
	}
}

func TestNewRemovesLeftovers(t *testing.T) {
	cli := dockertest.Client(t)
	image := dockertest.BuildImage(t)
	ctx := context.Background()
	mine, theirs := owner(t), owner(t)
	// Containers as a crashed run leaves them: created, some running.
	for _, o := range []string{mine, mine, theirs} {
		c, err := cli.ContainerCreate(ctx, &container.Config{Image: image, Labels: map[string]string{LabelOwner: o}}, nil, nil, nil, "")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cli.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true}) })
	}
	newDriver(t, Config{Owner: mine})
	if cs := dockertest.Containers(t, cli, LabelOwner, mine); len(cs) != 0 {
		t.Errorf("%d leftover containers of the driver's owner, want 0", len(cs))
	}
	if cs := dockertest.Containers(t, cli, LabelOwner, theirs); len(cs) != 1 {
		t.Errorf("%d containers of another owner, want 1 left alone", len(cs))
	}
}

func TestCloseStopsEverything(t *testing.T) {
	cli := dockertest.Client(t)
	o := owner(t)
	d, err := New(Config{Image: dockertest.BuildImage(t), Owner: o, StopTimeout: 2 * time.Second, DrainDelay: 10 * time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	d.Ensure(context.Background(), spec("dep-close", modelDir(t, "binary"), 2))
	eventually.True(t, 30*time.Second, "two ready replicas", func() bool { return d.Status("dep-close").Ready() == 2 })
	if err := d.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if cs := dockertest.Containers(t, cli, LabelOwner, o); len(cs) != 0 {
		t.Errorf("%d containers after Close, want 0", len(cs))
	}
}

// TestReservedEnvRefused: a stored config from before validation refused
// LD_PRELOAD gets no container (issue 19); the check comes before any call
// to the engine, so this test needs none.
func TestReservedEnvRefused(t *testing.T) {
	d := &Driver{}
	s := orchestrator.Deployment{ID: "dep-preload", WorkloadSize: api.WorkloadSmall, ModelDir: t.TempDir(), Replicas: 1,
		Env: map[string]string{"LD_PRELOAD": "/model/x.so"}}
	if _, err := d.create(s, "r1", "127.0.0.1:1"); err == nil || !strings.Contains(err.Error(), "LD_PRELOAD") {
		t.Errorf("create = %v; want an error naming LD_PRELOAD", err)
	}
}

// A model without a native runtime runs in the Python image, built from
// Debian packages, and its python3 serves it: the scratch worker image
// could not. The answers equal what scikit-learn predicted in Python when
// the fixture was made.
func TestPythonModelRunsInPythonImage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the Python image: a Debian root filesystem the first time")
	}
	py := dockertest.BuildPythonImage(t)
	d, _, cli := newDriver(t, Config{PythonImage: py})
	s := spec("dep-py", modelDir(t, "py_sklearn_pipeline"), 1)
	s.Flavors = []string{"python_function", "sklearn"}
	if err := d.Ensure(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 2*time.Minute, "a ready replica", func() bool {
		if f := d.Status("dep-py").Failure; f != "" {
			logs, _ := d.Logs("dep-py")
			t.Fatalf("start failed: %s\n%s", f, logs)
		}
		return d.Status("dep-py").Ready() == 1
	})
	cs := running(t, cli, "dep-py")
	if len(cs) != 1 || cs[0].Image != py {
		t.Fatalf("containers %+v, want one from %s", cs, py)
	}

	var want struct {
		Columns     []string `json:"columns"`
		Data        [][]any  `json:"data"`
		Predictions []any    `json:"predictions"`
	}
	b, err := os.ReadFile(filepath.Join(fixtures, "py_sklearn_pipeline", "expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatal(err)
	}
	req, _ := json.Marshal(map[string]any{"dataframe_split": map[string]any{"columns": want.Columns, "data": want.Data}})
	resp, err := http.Post("http://"+d.Status("dep-py").Instances[0].Addr+"/invocations", "application/json", bytes.NewReader(req))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var got struct {
		Predictions []any `json:"predictions"`
	}
	if resp.StatusCode != 200 || json.Unmarshal(body, &got) != nil || len(got.Predictions) != len(want.Predictions) {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	for i := range got.Predictions {
		g, w := fmt.Sprint(got.Predictions[i]), fmt.Sprint(want.Predictions[i])
		if gf, ok := got.Predictions[i].(float64); ok {
			if wf, ok := want.Predictions[i].(float64); !ok || math.Abs(gf-wf) > 1e-6 {
				t.Errorf("row %d: %v, Python predicted %v", i, gf, want.Predictions[i])
			}
		} else if g != w {
			t.Errorf("row %d: %s, Python predicted %s", i, g, w)
		}
	}
	if logs, _ := d.Logs("dep-py"); !strings.Contains(logs, "model host ready") {
		t.Errorf("worker log %q, want the model host's start", logs)
	}
}

// Without the Python image, a model that needs it fails naming the image
// and how to build it; a native model in the same driver still runs from
// the worker image.
func TestPythonModelMissingImage(t *testing.T) {
	d, _, _ := newDriver(t, Config{PythonImage: "gantry-worker-python:no-such-tag"})
	s := spec("dep-nopy", modelDir(t, "py_sklearn_pipeline"), 1)
	s.Flavors = []string{"python_function", "sklearn"}
	d.Ensure(context.Background(), s)
	native := spec("dep-native", modelDir(t, "binary"), 1)
	native.Flavors = []string{"python_function", "xgboost"}
	d.Ensure(context.Background(), native)
	eventually.True(t, 30*time.Second, "a failed start", func() bool { return d.Status("dep-nopy").Failures >= 1 })
	if f := d.Status("dep-nopy").Failure; !strings.Contains(f, "gantry-worker-python:no-such-tag") || !strings.Contains(f, "make python-image") {
		t.Errorf("Failure = %q, want it to name the image and `make python-image`", f)
	}
	eventually.True(t, 30*time.Second, "the native model ready", func() bool { return d.Status("dep-native").Ready() == 1 })
}
