// Package local is the embedded orchestrator driver: it runs each replica as
// a `gantry worker` process on a free loopback port, restarts a worker that
// dies (with backoff), and stops workers on Remove.
package local

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/gantry/gantry/scheduler/orchestrator"
)

// Config configures a Driver. It works at its zero value.
type Config struct {
	// Command is the worker command line; the driver appends
	// --model-dir DIR --listen ADDR. Default: this executable, "worker".
	Command []string
	// Host is the address workers bind. Default 127.0.0.1.
	Host string
	// ReadyTimeout bounds how long a worker may take to answer /ping with
	// 200 before it is killed and counted as a failed start. Default 5 min.
	ReadyTimeout time.Duration
	// StopTimeout is how long a stopping worker may take to finish its
	// in-flight requests after SIGTERM before it is killed. Default 30 s.
	StopTimeout time.Duration
	// DrainDelay is how long a ready worker that is being stopped keeps
	// serving after it is reported not ready, so that activators drop it
	// from their route tables before it stops accepting connections.
	// Default 1 s.
	DrainDelay time.Duration
	// MinBackoff and MaxBackoff bound the wait before restarting a worker
	// that exited. Defaults 200 ms and 30 s.
	MinBackoff, MaxBackoff time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Metrics receives the start phases of workers; nil: not exported.
	Metrics *orchestrator.Metrics
}

// Driver runs workers as local processes. It is safe for concurrent use.
type Driver struct {
	cfg    Config
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
	logs     *orchestrator.TailBuffer
}

type replica struct {
	id      string
	created time.Time // when Ensure asked for it; the schedule phase ends at its first exec
	addr    string
	ready   bool
	stop    chan struct{} // closed to ask the supervisor to stop the worker
}

// New returns a driver. notify is called, without locks held, with a
// deployment's ID each time its Status changes; it must not block.
func New(cfg Config, notify func(id string)) (*Driver, error) {
	if len(cfg.Command) == 0 {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("local driver: find the gantry binary: %w", err)
		}
		cfg.Command = []string{exe, "worker"}
	}
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
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if notify == nil {
		notify = func(string) {}
	}
	return &Driver{
		cfg:    cfg,
		notify: notify,
		probe:  &http.Client{Timeout: time.Second},
		deps:   make(map[string]*deployment),
	}, nil
}

// Ensure creates the deployment or sets its replica count.
func (d *Driver) Ensure(_ context.Context, spec orchestrator.Deployment) error {
	if spec.ModelDir == "" {
		return fmt.Errorf("deployment %s: the local driver needs a model directory", spec.ID)
	}
	d.mu.Lock()
	dep, ok := d.deps[spec.ID]
	if !ok {
		dep = &deployment{logs: orchestrator.NewTailBuffer(64 << 10)}
		d.deps[spec.ID] = dep
	}
	dep.spec = spec
	var stopping []*replica
	for len(dep.replicas) < spec.Replicas {
		r := &replica{
			id:      spec.ID + "-" + strconv.Itoa(dep.nextID),
			created: time.Now(),
			stop:    make(chan struct{}),
		}
		dep.nextID++
		dep.replicas = append(dep.replicas, r)
		d.running.Add(1)
		go d.supervise(dep, r)
	}
	if len(dep.replicas) > spec.Replicas {
		// Stop the newest first: the oldest are the most likely to be ready.
		stopping = dep.replicas[spec.Replicas:]
		dep.replicas = dep.replicas[:spec.Replicas]
	}
	d.mu.Unlock()
	for _, r := range stopping {
		close(r.stop)
	}
	d.notify(spec.ID)
	return nil
}

// Remove stops every worker of the deployment. It does not wait: each worker
// gets StopTimeout to finish its in-flight requests (Close waits for them).
func (d *Driver) Remove(_ context.Context, id string) error {
	d.mu.Lock()
	dep, ok := d.deps[id]
	delete(d.deps, id)
	d.mu.Unlock()
	if ok {
		for _, r := range dep.replicas {
			close(r.stop)
		}
		d.notify(id)
	}
	return nil
}

// Close stops every worker, including those being scaled down or removed,
// and waits until they are gone or ctx ends.
func (d *Driver) Close(ctx context.Context) error {
	d.mu.Lock()
	for id, dep := range d.deps {
		delete(d.deps, id)
		for _, r := range dep.replicas {
			close(r.stop)
		}
	}
	d.mu.Unlock()
	done := make(chan struct{})
	go func() { d.running.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stop workers: %w", ctx.Err())
	}
}

// Status reports what the driver has of a deployment; an unknown ID has no
// instances.
func (d *Driver) Status(id string) orchestrator.Status {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := orchestrator.Status{ID: id}
	dep, ok := d.deps[id]
	if !ok {
		return s
	}
	s.Desired = dep.spec.Replicas
	s.Failures = dep.failures
	for _, r := range dep.replicas {
		if r.addr != "" {
			s.Instances = append(s.Instances, orchestrator.Instance{ID: r.id, Addr: r.addr, Ready: r.ready})
		}
	}
	if s.Ready() == 0 {
		s.Failure = dep.failure
	}
	return s
}

// Logs returns the recent output of the deployment's workers.
func (d *Driver) Logs(id string) (string, bool) {
	d.mu.Lock()
	dep, ok := d.deps[id]
	d.mu.Unlock()
	if !ok {
		return "", false
	}
	return dep.logs.String(), true
}

// supervise runs one replica's worker until the replica is stopped,
// restarting it with exponential backoff when it exits.
func (d *Driver) supervise(dep *deployment, r *replica) {
	defer d.running.Done()
	backoff := d.cfg.MinBackoff
	for {
		started := time.Now()
		err := d.run(dep, r)
		if err == nil {
			return // stopped on request
		}
		d.cfg.Logger.Warn("worker failed", "replica", r.id, "err", err)
		d.mu.Lock()
		dep.failure = err.Error()
		dep.failures++
		d.mu.Unlock()
		d.notify(dep.spec.ID)
		if time.Since(started) > time.Minute {
			backoff = d.cfg.MinBackoff // it ran a good while: not a crash loop
		}
		select {
		case <-r.stop:
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, d.cfg.MaxBackoff)
	}
}

// run starts the worker once and returns nil when it was stopped on request,
// or an error saying why it failed or exited.
func (d *Driver) run(dep *deployment, r *replica) error {
	addr, err := freeAddr(d.cfg.Host)
	if err != nil {
		return err
	}
	d.mu.Lock()
	spec := dep.spec
	d.mu.Unlock()

	args := append(append([]string{}, d.cfg.Command[1:]...), "--model-dir", spec.ModelDir, "--listen", addr)
	cmd := exec.Command(d.cfg.Command[0], args...)
	cmd.Env = os.Environ()
	for k, v := range spec.Env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out := orchestrator.NewTailBuffer(4 << 10) // this run's output, for the failure message
	w := orchestrator.MultiWriter{dep.logs, out}
	cmd.Stdout, cmd.Stderr = w, w
	// The worker must not outlive gantry, even when gantry is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start worker: %w", err)
	}
	execAt := time.Now()
	if !r.created.IsZero() {
		d.cfg.Metrics.Observe(spec, orchestrator.PhaseSchedule, execAt.Sub(r.created))
		r.created = time.Time{} // restarts are not scheduling
	}
	// exited is closed once the process is gone; waitErr is then safe to read.
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()

	d.mu.Lock()
	r.addr = addr
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		r.addr, r.ready = "", false
		d.mu.Unlock()
		d.notify(spec.ID)
	}()

	ready, answeredAt, err := d.awaitReady(addr, r.stop, exited)
	if !answeredAt.IsZero() {
		d.cfg.Metrics.Observe(spec, orchestrator.PhaseProcessStart, answeredAt.Sub(execAt))
		if ready {
			d.cfg.Metrics.Observe(spec, orchestrator.PhaseModelLoad, time.Since(answeredAt))
		}
	}
	if err != nil {
		cmd.Process.Kill()
		<-exited
		return fmt.Errorf("%w (%v)%s", err, waitErr, out.LastLines(5))
	}
	if !ready { // stopped while starting
		return d.stopWorker(cmd, exited)
	}
	d.mu.Lock()
	r.ready = true
	dep.failure = ""
	d.mu.Unlock()
	d.notify(spec.ID)

	select {
	case <-r.stop:
		d.mu.Lock()
		r.ready = false
		d.mu.Unlock()
		d.notify(spec.ID)
		select {
		case <-time.After(d.cfg.DrainDelay):
		case <-exited:
		}
		return d.stopWorker(cmd, exited)
	case <-exited:
		return fmt.Errorf("worker exited (%v)%s", waitErr, out.LastLines(5))
	}
}

// awaitReady probes /ping until it answers 200 (true), the replica is
// stopped (false), or the worker exits or times out (error). It also says
// when the worker first answered at all (its process was up; the model was
// loading), zero if it never did. It probes every few milliseconds at first,
// because a native model loads in milliseconds and cold-start time is what
// the user waits for.
func (d *Driver) awaitReady(addr string, stop, exited <-chan struct{}) (ready bool, answeredAt time.Time, err error) {
	deadline := time.NewTimer(d.cfg.ReadyTimeout)
	defer deadline.Stop()
	interval := 2 * time.Millisecond
	for {
		resp, err := d.probe.Get("http://" + addr + "/ping")
		if err == nil {
			resp.Body.Close()
			if answeredAt.IsZero() {
				answeredAt = time.Now()
			}
			if resp.StatusCode == http.StatusOK {
				return true, answeredAt, nil
			}
		}
		select {
		case <-stop:
			return false, answeredAt, nil
		case <-exited:
			return false, answeredAt, errors.New("worker exited before it was ready")
		case <-deadline.C:
			return false, answeredAt, fmt.Errorf("worker did not answer /ping within %s", d.cfg.ReadyTimeout)
		case <-time.After(interval):
		}
		interval = min(2*interval, 200*time.Millisecond)
	}
}

// stopWorker asks the worker to finish its in-flight requests (SIGTERM) and
// kills it after StopTimeout.
func (d *Driver) stopWorker(cmd *exec.Cmd, exited <-chan struct{}) error {
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(d.cfg.StopTimeout):
		cmd.Process.Kill()
		<-exited
	}
	return nil
}

// freeAddr finds a free TCP port. Another process could take it before the
// worker binds it; the worker then exits and is restarted on a new port.
func freeAddr(host string) (string, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}
