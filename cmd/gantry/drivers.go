package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/gantry/gantry/scheduler"
	"github.com/gantry/gantry/scheduler/orchestrator"
	"github.com/gantry/gantry/scheduler/orchestrator/local"
	"github.com/prometheus/client_golang/prometheus"
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
		return local.New(local.Config{Logger: log, Metrics: orchestrator.NewMetrics(metrics)}, notify)
	case "docker":
		return newDockerDriver(o, log, metrics, notify)
	case "nomad":
		return newNomadDriver(&o.nomad, log, notify)
	}
	return nil, fmt.Errorf("--driver %q: choose one of %v", o.driver, driverNames)
}
