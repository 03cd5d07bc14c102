package main

import (
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/gantry/gantry/jobs"
	"github.com/gantry/gantry/scheduler/orchestrator"
	"github.com/gantry/gantry/scheduler/orchestrator/docker"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
)

// dockerOptions are the flags of the docker driver. The engine itself comes
// from Docker's own variables (DOCKER_HOST and friends).
type dockerOptions struct {
	image string
}

func (o *dockerOptions) flags(c *cobra.Command) {
	c.Flags().StringVar(&o.image, "docker-image", jobs.DefaultImage, "worker image that --driver docker runs; make image builds it")
}

// newDockerDriver opens the docker driver. Its containers are labelled with
// the data dir, so that a restart with the same data dir removes what the
// previous run left and other instances on the engine keep theirs.
func newDockerDriver(o *controlPlaneOptions, log *slog.Logger, metrics prometheus.Registerer, notify func(id string)) (driver, error) {
	dir, err := filepath.Abs(o.dataDir)
	if err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	return docker.New(docker.Config{
		Image:   o.docker.image,
		Owner:   dir,
		Logger:  log,
		Metrics: orchestrator.NewMetrics(metrics),
	}, notify)
}
