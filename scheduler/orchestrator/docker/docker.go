// Package docker is the orchestrator driver that runs each replica as a
// Docker container from the worker image (`make image` builds it FROM
// scratch). It follows the local driver: one supervisor per replica creates
// the container, probes its /ping, restarts it with backoff when it fails
// or exits, and drains it before stopping it.
//
// Containers use the host network, each on a port the driver picks, so a
// worker's address is the same for the driver, the activator and the
// worker itself (CI engines run with --bridge=none). The model directory is
// bind-mounted read-only, which assumes the engine runs on this host.
//
// Every container carries labels naming its owner, deployment, endpoint,
// served entity and replica. New removes the containers of its owner that a
// previous run left behind (after a crash or SIGKILL nothing else would),
// and leaves other owners' alone, so several Gantry instances can share an
// engine.
package docker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/gantry/gantry/jobs"
	"github.com/gantry/gantry/scheduler/orchestrator"
)

// Labels on every container the driver creates.
const (
	LabelOwner      = "io.gantry.owner"
	LabelDeployment = "io.gantry.deployment"
	LabelEndpoint   = "io.gantry.endpoint"
	LabelEntity     = "io.gantry.served-entity"
	LabelReplica    = "io.gantry.replica"
)

// modelMount is where the model directory appears in a container.
const modelMount = "/model"

// Config configures a Driver. It works at its zero value.
type Config struct {
	// Image is the worker image; its entrypoint is the gantry binary.
	// Default jobs.DefaultImage (gantry-worker:dev, what `make image` tags).
	Image string
	// Owner is the value of the io.gantry.owner label on this driver's
	// containers. Give each Gantry instance its own (gantry dev uses its
	// data dir): New removes every container with this owner. Default
	// "gantry".
	Owner string
	// Host is the address workers bind on the host network and the driver
	// probes. Default 127.0.0.1.
	Host string
	// ReadyTimeout bounds how long a worker may take to answer /ping with
	// 200 before its container is removed and counted as a failed start.
	// Default 5 min.
	ReadyTimeout time.Duration
	// StopTimeout is how long a stopping worker may take to finish its
	// in-flight requests after SIGTERM before the engine kills it. It is
	// rounded up to whole seconds, the engine's unit. Default 30 s.
	StopTimeout time.Duration
	// DrainDelay is how long a ready worker that is being stopped keeps
	// serving after it is reported not ready, so that activators drop it
	// from their route tables first. Default 1 s.
	DrainDelay time.Duration
	// MinBackoff and MaxBackoff bound the wait before restarting a worker
	// that failed or exited. Defaults 200 ms and 30 s.
	MinBackoff, MaxBackoff time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Metrics receives the start phases of workers; nil: not exported.
	Metrics *orchestrator.Metrics
}

// Driver runs workers as Docker containers. It is safe for concurrent use.
type Driver struct {
	cfg    Config
	notify func(id string)
	probe  *http.Client
	docker *client.Client
	// cpus and memory are the engine's, the most a container may be given.
	cpus   int
	memory int64

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
	created time.Time // when Ensure asked for it; the schedule phase ends when its container runs
	addr    string
	ready   bool
	stop    chan struct{} // closed to ask the supervisor to stop the worker
}

// New connects to the engine that DOCKER_HOST and friends name (the
// default socket without them), removes the containers that a previous
// run of the same owner left, and returns a driver. notify is called,
// without locks held, with a deployment's ID each time its Status changes;
// it must not block.
func New(cfg Config, notify func(id string)) (*Driver, error) {
	if cfg.Image == "" {
		cfg.Image = jobs.DefaultImage
	}
	if cfg.Owner == "" {
		cfg.Owner = "gantry"
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
	// Debian's engine speaks API 1.41, older than this client's default.
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, fmt.Errorf("docker driver: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	info, err := cli.Info(ctx)
	if err != nil {
		cli.Close()
		return nil, fmt.Errorf("docker driver: no engine answers at %s (deploy/docker/start-dockerd.sh starts one): %w", cli.DaemonHost(), err)
	}
	d := &Driver{
		cfg:    cfg,
		notify: notify,
		probe:  &http.Client{Timeout: time.Second},
		docker: cli,
		cpus:   info.NCPU,
		memory: info.MemTotal,
		deps:   make(map[string]*deployment),
	}
	if n, err := d.removeOwned(ctx); err != nil {
		cli.Close()
		return nil, fmt.Errorf("docker driver: remove leftover containers: %w", err)
	} else if n > 0 {
		cfg.Logger.Info("removed containers a previous run left", "owner", cfg.Owner, "count", n)
	}
	if _, err := cli.ImageInspect(ctx, cfg.Image); cerrdefs.IsNotFound(err) {
		// Not fatal: the image may be built later; each start says why it failed.
		cfg.Logger.Warn("worker image not found; build it with `make image`", "image", cfg.Image)
	}
	return d, nil
}

// Ensure creates the deployment or sets its replica count.
func (d *Driver) Ensure(_ context.Context, spec orchestrator.Deployment) error {
	if spec.ModelDir == "" {
		return fmt.Errorf("deployment %s: the docker driver needs a model directory", spec.ID)
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

// Remove stops and removes every container of the deployment. It does not
// wait: each worker gets DrainDelay and then StopTimeout (Close waits).
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
// and waits until they are gone or ctx ends. Then it removes whatever
// containers of its owner are still there.
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
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = fmt.Errorf("stop workers: %w", ctx.Err())
	}
	// ctx may be over: the sweep gets its own short deadline.
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, rerr := d.removeOwned(sctx); rerr != nil {
		err = errors.Join(err, fmt.Errorf("remove containers: %w", rerr))
	}
	return errors.Join(err, d.docker.Close())
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

// Logs returns the recent output of the deployment's containers, across
// restarts (the containers themselves are removed when they stop).
func (d *Driver) Logs(id string) (string, bool) {
	d.mu.Lock()
	dep, ok := d.deps[id]
	d.mu.Unlock()
	if !ok {
		return "", false
	}
	return dep.logs.String(), true
}

// supervise runs one replica's container until the replica is stopped,
// starting a new one with exponential backoff when it fails or exits.
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
		id := dep.spec.ID
		d.mu.Unlock()
		d.notify(id)
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

// run starts one container for the replica and returns nil when it was
// stopped on request, or an error saying why it failed or exited. The
// container is removed before run returns.
func (d *Driver) run(dep *deployment, r *replica) error {
	addr, err := freeAddr(d.cfg.Host)
	if err != nil {
		return err
	}
	d.mu.Lock()
	spec := dep.spec
	d.mu.Unlock()

	id, err := d.create(spec, r.id, addr)
	if err != nil {
		return err
	}
	defer d.removeContainer(id)
	if err := d.start(id); err != nil {
		return err
	}
	runningAt := time.Now()
	if !r.created.IsZero() {
		d.cfg.Metrics.Observe(spec, orchestrator.PhaseSchedule, runningAt.Sub(r.created))
		r.created = time.Time{} // restarts are not scheduling
	}
	out := orchestrator.NewTailBuffer(4 << 10) // this container's output, for the failure message
	logsDone := d.followLogs(id, orchestrator.MultiWriter{dep.logs, out})
	// exited is closed once the container stopped; exitErr is then safe to read.
	exited := make(chan struct{})
	var exitErr error
	go func() { exitErr = d.wait(id); close(exited) }()
	// why reads what the worker said last, once the log stream has ended.
	why := func() string {
		select {
		case <-logsDone:
		case <-time.After(2 * time.Second):
		}
		return out.LastLines(5)
	}

	d.mu.Lock()
	r.addr = addr
	d.mu.Unlock()
	d.notify(spec.ID)
	defer func() {
		d.mu.Lock()
		r.addr, r.ready = "", false
		d.mu.Unlock()
		d.notify(spec.ID)
	}()

	ready, answeredAt, err := d.awaitReady(addr, r.stop, exited)
	if !answeredAt.IsZero() {
		d.cfg.Metrics.Observe(spec, orchestrator.PhaseProcessStart, answeredAt.Sub(runningAt))
		if ready {
			d.cfg.Metrics.Observe(spec, orchestrator.PhaseModelLoad, time.Since(answeredAt))
		}
	}
	if err != nil {
		d.kill(id)
		<-exited
		return fmt.Errorf("%w (%v)%s", err, exitErr, why())
	}
	if !ready { // stopped while starting
		return d.stopContainer(id, exited)
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
		return d.stopContainer(id, exited)
	case <-exited:
		return fmt.Errorf("worker exited (%v)%s", exitErr, why())
	}
}

// create makes the container of one replica's run. The name carries a
// random suffix: a replica's previous container may still be on its way
// out, and another owner may run the same deployment on this engine.
func (d *Driver) create(spec orchestrator.Deployment, replicaID, addr string) (string, error) {
	res, err := jobs.ResourcesFor(spec.WorkloadSize, spec.WorkloadType)
	if err != nil {
		return "", fmt.Errorf("deployment %s: %w", spec.ID, err)
	}
	env := make([]string, 0, len(spec.Env))
	for k, v := range spec.Env {
		env = append(env, k+"="+v)
	}
	sort.Strings(env)
	cfg := &container.Config{
		Image: d.cfg.Image,
		Cmd:   []string{"worker", "--model-dir", modelMount, "--listen", addr},
		Env:   env,
		// The worker gets the privileges the local driver would give it:
		// this process's, which can read the model directory.
		User: fmt.Sprintf("%d:%d", os.Getuid(), os.Getgid()),
		Labels: map[string]string{
			LabelOwner:      d.cfg.Owner,
			LabelDeployment: spec.ID,
			LabelEndpoint:   spec.Endpoint,
			LabelEntity:     spec.Entity,
			LabelReplica:    replicaID,
		},
	}
	host := &container.HostConfig{
		NetworkMode:    network.NetworkHost,
		Binds:          []string{spec.ModelDir + ":" + modelMount + ":ro"},
		ReadonlyRootfs: true,
		Resources:      d.resources(res),
	}
	var suffix [4]byte
	rand.Read(suffix[:])
	name := "gantry-" + replicaID + "-" + hex.EncodeToString(suffix[:])
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := d.docker.ContainerCreate(ctx, cfg, host, nil, nil, name)
	if cerrdefs.IsNotFound(err) {
		return "", fmt.Errorf("create container: image %s not found; build it with `make image`: %w", d.cfg.Image, err)
	}
	if err != nil {
		return "", fmt.Errorf("create container %s: %w", name, err)
	}
	return c.ID, nil
}

// resources turns a replica's resources into container limits, capped at
// what the engine has: the engine refuses a CPU limit above its core count,
// and a dev machine is often smaller than a Large replica.
func (d *Driver) resources(res jobs.Resources) container.Resources {
	cpus := float64(res.CPU) / 1000 // Nomad MHz; 1000 is one core
	if d.cpus > 0 {
		cpus = min(cpus, float64(d.cpus))
	}
	mem := int64(res.MemoryMB) << 20
	if d.memory > 0 {
		mem = min(mem, d.memory)
	}
	r := container.Resources{NanoCPUs: int64(cpus * 1e9), Memory: mem}
	if res.GPUs > 0 {
		// Docker cannot ask for a GPU's memory size (Nomad can); the card
		// is whichever the NVIDIA runtime hands out.
		r.DeviceRequests = []container.DeviceRequest{{Driver: "nvidia", Count: res.GPUs, Capabilities: [][]string{{"gpu"}}}}
	}
	return r
}

func (d *Driver) start(id string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := d.docker.ContainerStart(ctx, id, container.StartOptions{}); err != nil {
		return fmt.Errorf("start container: %w", err)
	}
	return nil
}

// wait blocks until the container stops and says how it ended.
func (d *Driver) wait(id string) error {
	waitc, errc := d.docker.ContainerWait(context.Background(), id, container.WaitConditionNotRunning)
	select {
	case w := <-waitc:
		if w.Error != nil {
			return fmt.Errorf("container exited: %s", w.Error.Message)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if c, err := d.docker.ContainerInspect(ctx, id); err == nil && c.State != nil && c.State.OOMKilled {
			return fmt.Errorf("killed for using more than its memory limit of %d MiB", c.HostConfig.Memory>>20)
		}
		return fmt.Errorf("exit status %d", w.StatusCode)
	case err := <-errc:
		return fmt.Errorf("wait for container: %w", err)
	}
}

// followLogs copies the container's output to w until it stops; the
// returned channel is closed then.
func (d *Driver) followLogs(id string, w io.Writer) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		rc, err := d.docker.ContainerLogs(context.Background(), id, container.LogsOptions{ShowStdout: true, ShowStderr: true, Follow: true})
		if err != nil {
			d.cfg.Logger.Warn("follow container logs", "container", id, "err", err)
			return
		}
		defer rc.Close()
		stdcopy.StdCopy(w, w, rc) // without a TTY the stream is multiplexed
	}()
	return done
}

// awaitReady probes /ping until it answers 200 (true), the replica is
// stopped (false), or the container exits or times out (error). It also
// says when the worker first answered at all, zero if it never did. It
// probes every few milliseconds at first: cold-start time is what the user
// waits for.
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

// stopContainer asks the worker to finish its in-flight requests (the
// engine sends SIGTERM, then SIGKILL after StopTimeout) and waits until it
// has stopped.
func (d *Driver) stopContainer(id string, exited <-chan struct{}) error {
	secs := int((d.cfg.StopTimeout + time.Second - 1) / time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), d.cfg.StopTimeout+30*time.Second)
	defer cancel()
	if err := d.docker.ContainerStop(ctx, id, container.StopOptions{Timeout: &secs}); err != nil {
		d.cfg.Logger.Warn("stop container", "container", id, "err", err)
		d.kill(id)
	}
	<-exited
	return nil
}

func (d *Driver) kill(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := d.docker.ContainerKill(ctx, id, "KILL"); err != nil && !cerrdefs.IsNotFound(err) && !cerrdefs.IsConflict(err) {
		d.cfg.Logger.Warn("kill container", "container", id, "err", err)
	}
}

func (d *Driver) removeContainer(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := d.docker.ContainerRemove(ctx, id, container.RemoveOptions{Force: true}); err != nil && !cerrdefs.IsNotFound(err) {
		d.cfg.Logger.Warn("remove container", "container", id, "err", err)
	}
}

// removeOwned force-removes every container of this driver's owner and
// returns how many there were.
func (d *Driver) removeOwned(ctx context.Context) (int, error) {
	cs, err := d.docker.ContainerList(ctx, container.ListOptions{
		All:     true,
		Filters: filters.NewArgs(filters.Arg("label", LabelOwner+"="+d.cfg.Owner)),
	})
	if err != nil {
		return 0, err
	}
	var errs []error
	for _, c := range cs {
		err := d.docker.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true})
		if err != nil && !cerrdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("container %s: %w", c.ID[:12], err))
		}
	}
	return len(cs), errors.Join(errs...)
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
