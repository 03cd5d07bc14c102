package local

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gantry/gantry/internal/eventually"
	"github.com/gantry/gantry/scheduler/orchestrator"
	"github.com/prometheus/client_golang/prometheus"
)

// TestMain doubles as the worker: when the driver starts this test binary
// with GANTRY_TEST_WORKER set, it behaves as a tiny worker process instead of
// running the tests.
func TestMain(m *testing.M) {
	if mode := os.Getenv("GANTRY_TEST_WORKER"); mode != "" {
		fakeWorker(mode)
		return
	}
	os.Exit(m.Run())
}

func fakeWorker(mode string) {
	fs := flag.NewFlagSet("worker", flag.ExitOnError)
	dir := fs.String("model-dir", "", "")
	listen := fs.String("listen", "", "")
	fs.Parse(os.Args[len(os.Args)-4:])
	if mode == "fail" {
		fmt.Fprintf(os.Stderr, "error: load model %s: corrupt model.json\n", *dir)
		os.Exit(1)
	}
	http.HandleFunc("/ping", func(w http.ResponseWriter, r *http.Request) {})
	http.HandleFunc("/pid", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, os.Getpid()) })
	http.HandleFunc("/exit", func(w http.ResponseWriter, r *http.Request) { os.Exit(3) })
	http.HandleFunc("/env", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, strings.Join(os.Environ(), "\n")) })
	http.ListenAndServe(*listen, nil)
}

type notifier struct {
	mu  sync.Mutex
	ids []string
}

func (n *notifier) notify(id string) {
	n.mu.Lock()
	n.ids = append(n.ids, id)
	n.mu.Unlock()
}

func newDriver(t *testing.T, mode string, cfg Config) *Driver {
	t.Helper()
	// Workers inherit nothing: the mode goes in the driver's Env.
	cfg.Env = append(cfg.Env, "GANTRY_TEST_WORKER="+mode)
	n := &notifier{}
	cfg.Command, cfg.MinBackoff, cfg.StopTimeout, cfg.DrainDelay = []string{os.Args[0], "worker"}, 20*time.Millisecond, 2*time.Second, 50*time.Millisecond
	d, err := New(cfg, n.notify)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close(context.Background()) })
	return d
}

func TestEnsureScaleRestartRemove(t *testing.T) {
	reg := prometheus.NewRegistry()
	d := newDriver(t, "ok", Config{Metrics: orchestrator.NewMetrics(reg)})
	spec := orchestrator.Deployment{ID: "ep-m-1", Endpoint: "ep", Entity: "m", ModelDir: t.TempDir(), Replicas: 2}
	if err := d.Ensure(context.Background(), spec); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 10*time.Second, "two ready replicas", func() bool { return d.Status(spec.ID).Ready() == 2 })
	counts := map[string]uint64{}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "phase" {
					counts[l.GetValue()] = m.GetHistogram().GetSampleCount()
				}
			}
		}
	}
	for _, phase := range []string{orchestrator.PhaseSchedule, orchestrator.PhaseProcessStart, orchestrator.PhaseModelLoad} {
		if n := counts[phase]; n != 2 {
			t.Errorf("%s phase observed %d times, want 2 (one per replica)", phase, n)
		}
	}

	// A worker that dies is restarted.
	st := d.Status(spec.ID)
	addr := st.Instances[0].Addr
	http.Get("http://" + addr + "/exit")
	eventually.True(t, 10*time.Second, "a restart", func() bool {
		s := d.Status(spec.ID)
		return s.Ready() == 2 && s.Instances[0].Addr != addr
	})

	// Scale down to one.
	spec.Replicas = 1
	d.Ensure(context.Background(), spec)
	eventually.True(t, 10*time.Second, "one replica", func() bool { return len(d.Status(spec.ID).Instances) == 1 })

	last := d.Status(spec.ID).Instances[0].Addr
	if err := d.Remove(context.Background(), spec.ID); err != nil {
		t.Fatal(err)
	}
	if s := d.Status(spec.ID); len(s.Instances) != 0 {
		t.Errorf("after Remove: %+v", s)
	}
	eventually.True(t, 10*time.Second, "the removed worker to stop", func() bool {
		_, err := http.Get("http://" + last + "/ping")
		return err != nil
	})
}

func TestFailingWorkerReportsReason(t *testing.T) {
	d := newDriver(t, "fail", Config{})
	spec := orchestrator.Deployment{ID: "ep-bad-1", ModelDir: "/models/bad", Replicas: 1}
	d.Ensure(context.Background(), spec)
	eventually.True(t, 10*time.Second, "a failure", func() bool { return d.Status(spec.ID).Failure != "" })
	s := d.Status(spec.ID)
	if !strings.Contains(s.Failure, "corrupt model.json") {
		t.Errorf("Failure = %q, want the worker's message", s.Failure)
	}
	logs, ok := d.Logs(spec.ID)
	if !ok || !strings.Contains(logs, "corrupt model.json") {
		t.Errorf("Logs = %q, %v", logs, ok)
	}
}

// TestWorkerEnvironmentIsClean: a worker sees the entity's variables and
// what the driver passes, never gantry's own environment, which holds
// secrets (issue 19: workers inherited the ClickHouse password and the
// Nomad token).
func TestWorkerEnvironmentIsClean(t *testing.T) {
	t.Setenv("GANTRY_CLICKHOUSE_PASSWORD", "hunter2")
	t.Setenv("NOMAD_TOKEN", "s3cret-token")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "aws-secret")
	t.Setenv("TZ", "UTC")
	d := newDriver(t, "ok", Config{})
	spec := orchestrator.Deployment{ID: "ep-env-1", ModelDir: t.TempDir(), Replicas: 1, Env: map[string]string{"MODEL_FLAG": "on"}}
	if err := d.Ensure(context.Background(), spec); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 10*time.Second, "a ready replica", func() bool { return d.Status(spec.ID).Ready() == 1 })
	resp, err := http.Get("http://" + d.Status(spec.ID).Instances[0].Addr + "/env")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	env := string(b)
	for _, secret := range []string{"hunter2", "s3cret-token", "aws-secret", "GANTRY_CLICKHOUSE_PASSWORD", "NOMAD_TOKEN"} {
		if strings.Contains(env, secret) {
			t.Errorf("the worker's environment holds %q:\n%s", secret, env)
		}
	}
	for _, want := range []string{"MODEL_FLAG=on", "TZ=UTC"} {
		if !strings.Contains(env, want) {
			t.Errorf("the worker's environment lacks %q:\n%s", want, env)
		}
	}
}

// TestReservedEnvRefused: a stored config from before validation refused
// LD_PRELOAD still cannot start a worker with it.
func TestReservedEnvRefused(t *testing.T) {
	d := newDriver(t, "ok", Config{})
	spec := orchestrator.Deployment{ID: "ep-preload-1", ModelDir: t.TempDir(), Replicas: 1,
		Env: map[string]string{"LD_PRELOAD": "/models/m/1/model/x.so"}}
	d.Ensure(context.Background(), spec)
	eventually.True(t, 10*time.Second, "a failure", func() bool { return d.Status(spec.ID).Failure != "" })
	if s := d.Status(spec.ID); !strings.Contains(s.Failure, "LD_PRELOAD") || s.Ready() != 0 {
		t.Errorf("status %+v; want a failure naming LD_PRELOAD and no ready replica", s)
	}
}
