package replicas

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gantry/gantry/scheduler/orchestrator"
)

// fakeWorker serves /ping on its address in this process; hung makes its
// /ping hang, as a worker stuck in a deadlock or a GC storm would.
type fakeWorker struct {
	srv    *http.Server
	hung   atomic.Bool
	exited chan struct{}
	once   sync.Once
}

var _ Worker = (*fakeWorker)(nil)

func startFake(addr string) (*fakeWorker, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	w := &fakeWorker{exited: make(chan struct{})}
	w.srv = &http.Server{Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if w.hung.Load() {
			select {
			case <-r.Context().Done():
			case <-w.exited:
			}
		}
	})}
	go w.srv.Serve(l)
	return w, nil
}

func (w *fakeWorker) Wait() error        { <-w.exited; return nil }
func (w *fakeWorker) Stop(time.Duration) { w.Kill() }
func (w *fakeWorker) Kill() {
	w.once.Do(func() { close(w.exited); w.srv.Close() })
}

// fakeStarter starts fakeWorkers and keeps the last one.
type fakeStarter struct {
	mu   sync.Mutex
	last *fakeWorker
}

func (f *fakeStarter) start(_ orchestrator.Deployment, _, addr string, _ io.Writer) (Worker, error) {
	w, err := startFake(addr)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	f.last = w
	f.mu.Unlock()
	return w, nil
}

func TestHungWorkerIsNotReady(t *testing.T) {
	f := &fakeStarter{}
	// notified gets the ready count at each notification: the test waits
	// for notifications, as the scheduler does.
	notified := make(chan int, 1000)
	var s *Set
	s = New(Config{ProbeInterval: 10 * time.Millisecond, DrainDelay: time.Millisecond}, f.start, func(id string) {
		select {
		case notified <- s.Status(id).Ready():
		default: // never block the set; the buffer outlasts this test
		}
	})
	t.Cleanup(func() { s.Close(context.Background()) })
	awaitReady := func(want int, what string) {
		t.Helper()
		timeout := time.After(10 * time.Second)
		for {
			select {
			case n := <-notified:
				if n == want {
					return
				}
			case <-timeout:
				t.Fatalf("timed out waiting for %s", what)
			}
		}
	}
	spec := orchestrator.Deployment{ID: "dep", ModelDir: t.TempDir(), Replicas: 1}
	if err := s.Ensure(context.Background(), spec); err != nil {
		t.Fatal(err)
	}
	awaitReady(1, "a ready replica")
	addr := s.Status("dep").Instances[0].Addr
	// The cold start's phases, in order, for the API's view.
	if st := s.Status("dep").Starts; len(st) != 1 || st[0].ID != s.Status("dep").Instances[0].ID || st[0].Requested.IsZero() ||
		st[0].Started.Before(st[0].Requested) || st[0].Answered.Before(st[0].Started) || st[0].Ready.Before(st[0].Answered) {
		t.Errorf("starts %+v, want requested <= started <= answered <= ready, none zero", st)
	}

	f.mu.Lock()
	w := f.last
	f.mu.Unlock()
	w.hung.Store(true)
	awaitReady(0, "the hung replica to be reported not ready")
	st := s.Status("dep")
	if len(st.Instances) != 1 || st.Instances[0].Addr != addr || st.Instances[0].Ready || st.Failures != 0 {
		t.Errorf("status %+v, want the same instance, not ready, and no failure: it did not exit", st)
	}

	ready := s.Status("dep").Starts[0].Ready
	w.hung.Store(false)
	awaitReady(1, "the replica to be ready again")
	if got := s.Status("dep").Starts[0].Ready; !got.Equal(ready) {
		t.Errorf("ready at %v after recovering, want %v: a recovery is not a cold start", got, ready)
	}
	if got := s.Status("dep").Instances; len(got) != 1 || got[0].Addr != addr {
		t.Errorf("instances %+v after recovery, want the same worker at %s", got, addr)
	}
}

// TestFailureHidesModelDir: a failure message shows no server path of
// the model (issue 19: the path told an attacker where their upload's
// files lay, for LD_PRELOAD to load).
func TestFailureHidesModelDir(t *testing.T) {
	dir := t.TempDir()
	failing := func(spec orchestrator.Deployment, _, _ string, _ io.Writer) (Worker, error) {
		return nil, fmt.Errorf("load model %s: corrupt model.json", spec.ModelDir)
	}
	s := New(Config{MinBackoff: time.Millisecond}, failing, func(string) {})
	t.Cleanup(func() { s.Close(context.Background()) })
	if err := s.Ensure(context.Background(), orchestrator.Deployment{ID: "dep", ModelDir: dir, Replicas: 1}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for s.Status("dep").Failure == "" {
		if time.Now().After(deadline) {
			t.Fatal("timed out waiting for a failure")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if f := s.Status("dep").Failure; strings.Contains(f, dir) || !strings.Contains(f, "corrupt model.json") {
		t.Errorf("Failure = %q; want the reason without %s", f, dir)
	}
}
