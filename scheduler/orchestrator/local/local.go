// Package local is the embedded orchestrator driver: it runs each replica as
// a `gantry worker` process on a free loopback port. Package replicas
// supervises the workers (readiness, restarts with backoff, draining); this
// package starts and signals the processes.
package local

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"sort"
	"syscall"
	"time"

	"github.com/gantry/gantry/jobs"
	"github.com/gantry/gantry/scheduler/orchestrator"
	"github.com/gantry/gantry/scheduler/orchestrator/replicas"
)

// Config configures a Driver. It works at its zero value.
type Config struct {
	// Command is the worker command line; the driver appends
	// --model-dir DIR --listen ADDR. Default: this executable, "worker".
	Command []string
	// Env is added to every worker's environment ("KEY=VALUE"), before
	// the entity's own variables. Workers do not inherit this process's
	// environment (see workerEnv).
	Env []string

	// The supervision settings are replicas.Config's, which gives each
	// one's meaning and default. Here StopTimeout is the time between
	// SIGTERM, on which a worker finishes its in-flight requests, and
	// SIGKILL.
	Host                                  string
	ReadyTimeout, StopTimeout, DrainDelay time.Duration
	MinBackoff, MaxBackoff, ProbeInterval time.Duration
	Logger                                *slog.Logger
	Metrics                               *orchestrator.Metrics
}

// Driver runs workers as local processes. It is safe for concurrent use.
// Its Ensure, Remove, Status, Logs and Close are those of replicas.Set.
type Driver struct {
	*replicas.Set
	command []string
	env     []string
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
	d := &Driver{command: cfg.Command, env: cfg.Env}
	d.Set = replicas.New(replicas.Config{
		Host: cfg.Host, ReadyTimeout: cfg.ReadyTimeout, StopTimeout: cfg.StopTimeout, DrainDelay: cfg.DrainDelay,
		MinBackoff: cfg.MinBackoff, MaxBackoff: cfg.MaxBackoff, ProbeInterval: cfg.ProbeInterval,
		Logger: cfg.Logger, Metrics: cfg.Metrics,
	}, d.start, notify)
	return d, nil
}

// passEnv are the variables of this process that workers get: locale and
// time zone, which change how a model's output is formatted, and where
// temporary files go. Nothing else: gantry's environment holds secrets
// (GANTRY_CLICKHOUSE_PASSWORD, NOMAD_TOKEN, cloud credentials) that a
// model's code must not read.
var passEnv = []string{"PATH", "TZ", "LANG", "LC_ALL", "TMPDIR"}

// workerEnv is a worker's whole environment: passEnv from this process,
// the driver's Env, then the entity's variables. The entity's were
// checked at validation; they are checked again here for configs stored
// before the check existed.
func (d *Driver) workerEnv(spec orchestrator.Deployment) ([]string, error) {
	if err := jobs.CheckEnvs(spec.Env); err != nil {
		return nil, fmt.Errorf("deployment %s: %w", spec.ID, err)
	}
	var env []string
	for _, k := range passEnv {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	env = append(env, d.env...)
	keys := make([]string, 0, len(spec.Env))
	for k := range spec.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		env = append(env, k+"="+spec.Env[k])
	}
	if spec.WorkerSecret != "" {
		env = append(env, jobs.WorkerSecretEnv+"="+spec.WorkerSecret)
	}
	return env, nil
}

// start runs `COMMAND --model-dir DIR --listen ADDR` with workerEnv.
func (d *Driver) start(spec orchestrator.Deployment, _, addr string, out io.Writer) (replicas.Worker, error) {
	env, err := d.workerEnv(spec)
	if err != nil {
		return nil, err
	}
	args := append(append([]string{}, d.command[1:]...), "--model-dir", spec.ModelDir, "--listen", addr)
	cmd := exec.Command(d.command[0], args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = out, out
	// The worker must not outlive gantry, even when gantry is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start worker: %w", err)
	}
	return process{cmd}, nil
}

// process is a started worker process.
type process struct{ cmd *exec.Cmd }

var _ replicas.Worker = process{}

// Wait also waits until the output is copied to out.
func (p process) Wait() error { return p.cmd.Wait() }

// Stop sends SIGTERM, on which the worker finishes its in-flight requests.
// A late Kill is harmless: os.Process knows when its process has exited.
func (p process) Stop(grace time.Duration) {
	p.cmd.Process.Signal(syscall.SIGTERM)
	time.AfterFunc(grace, p.Kill)
}

func (p process) Kill() { p.cmd.Process.Kill() }
