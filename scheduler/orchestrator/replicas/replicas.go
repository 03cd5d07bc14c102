// Package replicas supervises the replicas of deployments for the drivers
// that run workers themselves (local processes, Docker containers): one
// goroutine per replica picks a free port, starts the worker there, probes
// its /ping until it is ready and then every ProbeInterval, restarts it with
// backoff when it fails or exits, and drains it before stopping it.
//
// A driver says only how to start a worker, through a Starter, and what the
// started worker can do, through a Worker.
package replicas

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/gantry/gantry/scheduler/orchestrator"
)

// Starter starts one run of a replica's worker for spec, serving on addr
// (host:port) and writing its output to out. A Starter is called from the
// replicas' goroutines, several at once.
type Starter func(spec orchestrator.Deployment, replicaID, addr string, out io.Writer) (Worker, error)

// Worker is a started worker: a process, a container.
type Worker interface {
	// Wait blocks until the worker is gone and all its output written, and
	// says how it ended. A Set calls it once, at once.
	Wait() error
	// Stop asks the worker to finish its in-flight requests and exit, and
	// has it killed if it is still there after grace. It need not wait for
	// the worker to be gone.
	Stop(grace time.Duration)
	// Kill ends the worker at once.
	Kill()
}

// Config configures a Set. It works at its zero value; the drivers' own
// Configs repeat these fields.
type Config struct {
	// Host is the address workers bind. Default 127.0.0.1.
	Host string
	// ReadyTimeout bounds how long a worker may take to answer /ping with
	// 200 before it is killed and counted as a failed start. Default 5 min.
	ReadyTimeout time.Duration
	// StopTimeout is the grace a stopping worker gets to finish its
	// in-flight requests before it is killed. Default 30 s.
	StopTimeout time.Duration
	// DrainDelay is how long a ready worker that is being stopped keeps
	// serving after it is reported not ready, so that activators drop it
	// from their route tables before it stops accepting connections.
	// Default 1 s.
	DrainDelay time.Duration
	// MinBackoff and MaxBackoff bound the wait before restarting a worker
	// that failed or exited. Defaults 200 ms and 30 s.
	MinBackoff, MaxBackoff time.Duration
	// ProbeInterval is how often a ready worker's /ping is checked again;
	// probe.Misses failures in a row report it not ready until it answers
	// again. Default 5 s.
	ProbeInterval time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Metrics receives the start phases of workers; nil: not exported.
	Metrics *orchestrator.Metrics
}

// Set runs the replicas of deployments. It is safe for concurrent use.
type Set struct {
	cfg    Config
	start  Starter
	notify func(id string)
	probe  *http.Client

	// running counts replica supervisors, so Close can wait for them all.
	running sync.WaitGroup

	// mu guards deps and every deployment's and replica's mutable fields.
	mu   sync.Mutex
	deps map[string]*deployment
}

type deployment struct {
	spec     orchestrator.Deployment
	replicas []*replica
	nextID   int
	failure  string
	failures uint64
	logs     *orchestrator.TailBuffer // every run's output, for Logs
}

type replica struct {
	id string
	// created is when Ensure asked for the replica; the schedule phase
	// ends when its first worker starts. Only its supervisor uses it.
	created time.Time
	// start is the current run's phases, for Status; guarded by mu.
	start orchestrator.Start
	addr  string
	ready bool
	// notice is the worker's, from the /ping that made it ready.
	notice string
	// ctx ends when the replica is to stop; stop ends it.
	ctx  context.Context
	stop context.CancelFunc
}

// New returns a set that starts workers with start. notify is called,
// without locks held, with a deployment's ID each time its Status changes;
// it must not block.
func New(cfg Config, start Starter, notify func(id string)) *Set {
	if cfg.Host == "" {
		cfg.Host = "127.0.0.1"
	}
	if cfg.ReadyTimeout <= 0 {
		cfg.ReadyTimeout = 5 * time.Minute
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = 30 * time.Second
	}
	if cfg.DrainDelay <= 0 {
		cfg.DrainDelay = time.Second
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 200 * time.Millisecond
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 30 * time.Second
	}
	if cfg.ProbeInterval <= 0 {
		cfg.ProbeInterval = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if notify == nil {
		notify = func(string) {}
	}
	return &Set{
		cfg:    cfg,
		start:  start,
		notify: notify,
		probe:  &http.Client{Timeout: time.Second},
		deps:   make(map[string]*deployment),
	}
}

// Ensure creates the deployment or sets its replica count. Workers read
// their model from spec.ModelDir, so it must be set.
func (s *Set) Ensure(_ context.Context, spec orchestrator.Deployment) error {
	if spec.ModelDir == "" {
		return fmt.Errorf("deployment %s: this driver needs a model directory", spec.ID)
	}
	s.mu.Lock()
	dep, ok := s.deps[spec.ID]
	if !ok {
		dep = &deployment{logs: orchestrator.NewTailBuffer(64 << 10)}
		s.deps[spec.ID] = dep
	}
	dep.spec = spec
	var stopping []*replica
	for len(dep.replicas) < spec.Replicas {
		now := time.Now()
		r := &replica{id: spec.ID + "-" + strconv.Itoa(dep.nextID), created: now}
		r.start = orchestrator.Start{ID: r.id, Requested: now}
		r.ctx, r.stop = context.WithCancel(context.Background())
		dep.nextID++
		dep.replicas = append(dep.replicas, r)
		s.running.Add(1)
		go s.supervise(dep, r)
	}
	if len(dep.replicas) > spec.Replicas {
		// Stop the newest first: the oldest are the most likely to be ready.
		stopping = dep.replicas[spec.Replicas:]
		dep.replicas = dep.replicas[:spec.Replicas]
	}
	s.mu.Unlock()
	for _, r := range stopping {
		r.stop()
	}
	s.notify(spec.ID)
	return nil
}

// Remove stops every worker of the deployment. It does not wait: each
// worker gets DrainDelay and then StopTimeout (Close waits for them).
func (s *Set) Remove(_ context.Context, id string) error {
	s.mu.Lock()
	dep, ok := s.deps[id]
	delete(s.deps, id)
	s.mu.Unlock()
	if ok {
		for _, r := range dep.replicas {
			r.stop()
		}
		s.notify(id)
	}
	return nil
}

// Close stops every worker, including those being scaled down or removed,
// and waits until they are gone or ctx ends.
func (s *Set) Close(ctx context.Context) error {
	s.mu.Lock()
	for id, dep := range s.deps {
		delete(s.deps, id)
		for _, r := range dep.replicas {
			r.stop()
		}
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.running.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stop workers: %w", ctx.Err())
	}
}

// Status reports what the set has of a deployment; an unknown ID has no
// instances.
func (s *Set) Status(id string) orchestrator.Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := orchestrator.Status{ID: id}
	dep, ok := s.deps[id]
	if !ok {
		return st
	}
	st.Desired = dep.spec.Replicas
	st.Failures = dep.failures
	for _, r := range dep.replicas {
		if r.addr != "" {
			st.Instances = append(st.Instances, orchestrator.Instance{ID: r.id, Addr: r.addr, Ready: r.ready})
			if r.ready && st.Notice == "" {
				st.Notice = r.notice
			}
		}
		st.Starts = append(st.Starts, r.start)
	}
	if st.Ready() == 0 {
		st.Failure = dep.failure
	}
	return st
}

// Logs returns the recent output of the deployment's workers, across
// restarts.
func (s *Set) Logs(id string) (string, bool) {
	s.mu.Lock()
	dep, ok := s.deps[id]
	s.mu.Unlock()
	if !ok {
		return "", false
	}
	return dep.logs.String(), true
}
