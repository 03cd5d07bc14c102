package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/gantry/gantry/scheduler"
	"github.com/gantry/gantry/scheduler/orchestrator"
	"github.com/gantry/gantry/scheduler/orchestrator/local"
	"github.com/gantry/gantry/worker/pyfunc"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
)

// driver is an orchestrator that the control plane closes on exit.
type driver interface {
	scheduler.Orchestrator
	// Close stops what the driver runs for this process, giving in-flight
	// requests until ctx ends.
	Close(ctx context.Context) error
}

// driverNames are the values --driver takes.
var driverNames = []string{"local", "docker", "nomad"}

// newDriver opens the driver that o.driver names. notify is told the ID of a
// deployment whose status changed.
func newDriver(o *controlPlaneOptions, log *slog.Logger, metrics prometheus.Registerer, notify func(id string)) (driver, error) {
	switch o.driver {
	case "local":
		return local.New(local.Config{Logger: log, Metrics: orchestrator.NewMetrics(metrics), Env: o.workerEnv()}, notify)
	case "docker":
		return newDockerDriver(o, log, metrics, notify)
	case "nomad":
		// Python models on exec and raw_exec clients run with --python
		// (a path on the clients); docker tasks with the image's python3.
		if o.python != pyfunc.DefaultPython {
			o.nomad.python = o.python
		}
		// So are GGUF models' llama.cpp libraries: --llama-lib-dir is
		// then a folder on the exec and raw_exec clients.
		o.nomad.llamaLibDir = o.llamaLib
		return newNomadDriver(&o.nomad, log, notify)
	}
	return nil, fmt.Errorf("--driver %q: choose one of %v", o.driver, driverNames)
}

// pythonFlag adds --python to gantry dev and gantry scheduler: local
// workers get it as GANTRY_PYTHON, which sets their own --python (a served
// entity's environment_vars may name another); so do the Nomad jobs of
// Python models for exec and raw_exec clients. Docker workers run in
// --python-image, with its python3.
func (o *controlPlaneOptions) pythonFlag(c *cobra.Command) {
	c.Flags().StringVar(&o.python, "python", pyfunc.DefaultPython,
		"Python interpreter for models without a native runtime (sklearn, pytorch, custom pyfunc), passed to local workers; a name is looked up on PATH")
	addLLMFlags(c, &o.llamaLib)
}

// workerEnv is what local workers get on top of their clean environment.
// Workers do not inherit this process's variables, so GANTRY_PYTHON set
// for gantry dev reaches them only through here.
func (o *controlPlaneOptions) workerEnv() []string {
	var env []string
	if o.python != "" && o.python != pyfunc.DefaultPython {
		env = append(env, "GANTRY_PYTHON="+o.python)
	}
	return append(env, llamaWorkerEnv(o.llamaLib)...)
}
