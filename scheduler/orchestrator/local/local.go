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
	"syscall"
	"time"

	"github.com/gantry/gantry/scheduler/orchestrator"
	"github.com/gantry/gantry/scheduler/orchestrator/replicas"
)

// Config configures a Driver. It works at its zero value.
type Config struct {
	// Command is the worker command line; the driver appends
	// --model-dir DIR --listen ADDR. Default: this executable, "worker".
	Command []string

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
	d := &Driver{command: cfg.Command}
	d.Set = replicas.New(replicas.Config{
		Host: cfg.Host, ReadyTimeout: cfg.ReadyTimeout, StopTimeout: cfg.StopTimeout, DrainDelay: cfg.DrainDelay,
		MinBackoff: cfg.MinBackoff, MaxBackoff: cfg.MaxBackoff, ProbeInterval: cfg.ProbeInterval,
		Logger: cfg.Logger, Metrics: cfg.Metrics,
	}, d.start, notify)
	return d, nil
}

// start runs `COMMAND --model-dir DIR --listen ADDR` with the deployment's
// environment added to this process's.
func (d *Driver) start(spec orchestrator.Deployment, _, addr string, out io.Writer) (replicas.Worker, error) {
	args := append(append([]string{}, d.command[1:]...), "--model-dir", spec.ModelDir, "--listen", addr)
	cmd := exec.Command(d.command[0], args...)
	cmd.Env = os.Environ()
	for k, v := range spec.Env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
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
