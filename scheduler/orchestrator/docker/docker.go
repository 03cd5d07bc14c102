// Package docker is the orchestrator driver that runs each replica as a
// Docker container from the worker image (`make image` builds it FROM
// scratch), or, for a model that needs the Python runtime, from the Python
// worker image (`make python-image` builds one from Debian packages), and
// for a GGUF model from the LLM worker image (`make llm-image`: the worker
// with llama.cpp's libraries and libstdc++), or its CUDA variant on GPU
// workload types (`make llm-gpu-image`). Package replicas supervises the workers (readiness, restarts
// with backoff, draining), as for the local driver; this package creates,
// stops and removes the containers.
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
	"os"
	"sort"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/gantry/gantry/jobs"
	"github.com/gantry/gantry/scheduler/orchestrator"
	"github.com/gantry/gantry/scheduler/orchestrator/replicas"
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
	// PythonImage replaces Image for a model that the worker serves
	// through the Python runtime (mlmodel.NeedsPython of its flavors):
	// Image is FROM scratch, with no interpreter. Its python3, or the
	// entity's GANTRY_PYTHON, must have the model's libraries. Default
	// jobs.DefaultPythonImage (what `make python-image` tags).
	PythonImage string
	// LLMImage replaces Image for a GGUF model (mlmodel.NeedsLlama) on a
	// CPU workload type, LLMGPUImage on a GPU type, whose worker also
	// gets --llm-gpu-layers -1: Image has neither libstdc++ nor
	// llama.cpp. Defaults jobs.DefaultLLMImage and
	// jobs.DefaultLLMGPUImage (what `make llm-image` and `make
	// llm-gpu-image` tag).
	LLMImage, LLMGPUImage string
	// Owner is the value of the io.gantry.owner label on this driver's
	// containers. Give each Gantry instance its own (gantry dev uses its
	// data dir): New removes every container with this owner. Default
	// "gantry".
	Owner string

	// The supervision settings are replicas.Config's, which gives each
	// one's meaning and default. Workers bind Host on the host network.
	// StopTimeout is the time the engine gives a worker between SIGTERM
	// and SIGKILL, rounded up to whole seconds, the engine's unit.
	Host                                  string
	ReadyTimeout, StopTimeout, DrainDelay time.Duration
	MinBackoff, MaxBackoff, ProbeInterval time.Duration
	Logger                                *slog.Logger
	Metrics                               *orchestrator.Metrics
}

// Driver runs workers as Docker containers. It is safe for concurrent use.
// Its Ensure, Remove, Status and Logs are those of replicas.Set.
type Driver struct {
	*replicas.Set
	cfg    Config
	docker *client.Client
	// cpus and memory are the engine's, the most a container may be given.
	cpus   int
	memory int64
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
	if cfg.PythonImage == "" {
		cfg.PythonImage = jobs.DefaultPythonImage
	}
	if cfg.LLMImage == "" {
		cfg.LLMImage = jobs.DefaultLLMImage
	}
	if cfg.LLMGPUImage == "" {
		cfg.LLMGPUImage = jobs.DefaultLLMGPUImage
	}
	if cfg.Owner == "" {
		cfg.Owner = "gantry"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
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
	d := &Driver{cfg: cfg, docker: cli, cpus: info.NCPU, memory: info.MemTotal}
	d.Set = replicas.New(replicas.Config{
		Host: cfg.Host, ReadyTimeout: cfg.ReadyTimeout, StopTimeout: cfg.StopTimeout, DrainDelay: cfg.DrainDelay,
		MinBackoff: cfg.MinBackoff, MaxBackoff: cfg.MaxBackoff, ProbeInterval: cfg.ProbeInterval,
		Logger: cfg.Logger, Metrics: cfg.Metrics,
	}, d.start, notify)
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
	if _, err := cli.ImageInspect(ctx, cfg.PythonImage); cerrdefs.IsNotFound(err) {
		// Only models without a native runtime need it.
		cfg.Logger.Info("Python worker image not found; models that need Python fail until it is built with `make python-image`", "image", cfg.PythonImage)
	}
	if _, err := cli.ImageInspect(ctx, cfg.LLMImage); cerrdefs.IsNotFound(err) {
		cfg.Logger.Info("LLM worker image not found; GGUF models fail until it is built with `make llm-image`", "image", cfg.LLMImage)
	}
	return d, nil
}

// Close stops every worker, including those being scaled down or removed,
// and waits until they are gone or ctx ends. Then it removes whatever
// containers of its owner are still there.
func (d *Driver) Close(ctx context.Context) error {
	err := d.Set.Close(ctx)
	// ctx may be over: the sweep gets its own short deadline.
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, rerr := d.removeOwned(sctx); rerr != nil {
		err = errors.Join(err, fmt.Errorf("remove containers: %w", rerr))
	}
	return errors.Join(err, d.docker.Close())
}

// create makes the container of one replica's run. The name carries a
// random suffix: a replica's previous container may still be on its way
// out, and another owner may run the same deployment on this engine.
func (d *Driver) create(spec orchestrator.Deployment, replicaID, addr string) (string, error) {
	res, err := jobs.ResourcesFor(spec.WorkloadSize, spec.WorkloadType)
	if err != nil {
		return "", fmt.Errorf("deployment %s: %w", spec.ID, err)
	}
	// Configs stored before validation refused loader variables
	// (LD_PRELOAD...) must not start a container with them either. The
	// container gets these variables and the image's, never gantry's.
	if err := jobs.CheckEnvs(spec.Env); err != nil {
		return "", fmt.Errorf("deployment %s: %w", spec.ID, err)
	}
	env := make([]string, 0, len(spec.Env))
	for k, v := range spec.Env {
		env = append(env, k+"="+v)
	}
	if spec.WorkerSecret != "" {
		env = append(env, jobs.WorkerSecretEnv+"="+spec.WorkerSecret)
	}
	sort.Strings(env)
	image := d.image(spec)
	cfg := &container.Config{
		Image: image,
		Cmd:   append([]string{"worker", "--model-dir", modelMount, "--listen", addr}, d.settings().LlamaArgs(spec)...),
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
		return "", fmt.Errorf("create container: image %s not found; %s: %w", image, buildHint(spec), err)
	}
	if err != nil {
		return "", fmt.Errorf("create container %s: %w", name, err)
	}
	return c.ID, nil
}

// settings are the job settings that choose a worker's image and flags,
// as Nomad's docker task driver does.
func (d *Driver) settings() jobs.Settings {
	return jobs.Settings{
		TaskDriver: jobs.DriverDocker,
		Image:      d.cfg.Image, PythonImage: d.cfg.PythonImage,
		LLMImage: d.cfg.LLMImage, LLMGPUImage: d.cfg.LLMGPUImage,
		MaxCores: d.cpus, // as resources caps the quota
	}
}

// image is the image that runs spec's worker.
func (d *Driver) image(spec orchestrator.Deployment) string {
	return d.settings().ImageFor(spec)
}

// buildHint says how to build the image that spec's worker needs.
func buildHint(spec orchestrator.Deployment) string {
	switch jobs.RuntimeOf(spec) {
	case jobs.RuntimePython:
		return fmt.Sprintf("the model (flavors %s) needs the Python runtime: build an image with python3 and its libraries with `make python-image`, or name one with --python-image", strings.Join(spec.Flavors, ", "))
	case jobs.RuntimeGGUF:
		return "the GGUF model needs llama.cpp's libraries: build the LLM worker image with `make llm-image`, or name one with --llm-image"
	case jobs.RuntimeGGUFCUDA:
		return fmt.Sprintf("the GGUF model on %s needs llama.cpp's CUDA build and the CUDA 13 runtime: build the image with `make llm-gpu-image`, or name one with --llm-gpu-image", spec.WorkloadType)
	}
	return "build it with `make image`"
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
	// MemorySwap equal to Memory allows no swap: without it the engine
	// lets a container swap as much again, and the limit is not one.
	r := container.Resources{NanoCPUs: int64(cpus * 1e9), Memory: mem, MemorySwap: mem}
	if res.GPUs > 0 {
		// Docker cannot ask for a GPU's memory size (Nomad can); the card
		// is whichever the NVIDIA runtime hands out.
		r.DeviceRequests = []container.DeviceRequest{{Driver: "nvidia", Count: res.GPUs, Capabilities: [][]string{{"gpu"}}}}
	}
	return r
}

// start creates and starts the container of one replica's run.
func (d *Driver) start(spec orchestrator.Deployment, replicaID, addr string, out io.Writer) (replicas.Worker, error) {
	id, err := d.create(spec, replicaID, addr)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := d.docker.ContainerStart(ctx, id, container.StartOptions{}); err != nil {
		d.removeContainer(id)
		return nil, fmt.Errorf("start container: %w", err)
	}
	return &runningContainer{d: d, id: id, logsDone: d.followLogs(id, out)}, nil
}

// runningContainer is a started worker container.
type runningContainer struct {
	d        *Driver
	id       string
	logsDone <-chan struct{}
}

var _ replicas.Worker = (*runningContainer)(nil)

// Wait waits until the container stops, then removes it. What the worker
// said last explains why it failed, so the log stream gets a moment to end
// first.
func (c *runningContainer) Wait() error {
	err := c.d.wait(c.id)
	select {
	case <-c.logsDone:
	case <-time.After(2 * time.Second):
	}
	c.d.removeContainer(c.id)
	return err
}

// Stop has the engine send SIGTERM, then SIGKILL after grace rounded up
// to whole seconds, the engine's unit.
func (c *runningContainer) Stop(grace time.Duration) {
	secs := int((grace + time.Second - 1) / time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), grace+30*time.Second)
	defer cancel()
	if err := c.d.docker.ContainerStop(ctx, c.id, container.StopOptions{Timeout: &secs}); err != nil {
		c.d.cfg.Logger.Warn("stop container", "container", c.id, "err", err)
		c.Kill()
	}
}

func (c *runningContainer) Kill() { c.d.kill(c.id) }

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
