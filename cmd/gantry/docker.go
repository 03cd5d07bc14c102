package main

import (
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/gantry/gantry/scheduler/orchestrator"
	"github.com/gantry/gantry/scheduler/orchestrator/docker"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
)

// dockerOptions are the flags of the docker driver. The engine itself comes
// from Docker's own variables (DOCKER_HOST and friends); the image is
// --worker-image, shared with the nomad driver.
type dockerOptions struct {
	// image is the deprecated --docker-image; set, it wins over
	// --worker-image.
	image string
}

func (o *dockerOptions) flags(c *cobra.Command) {
	c.Flags().StringVar(&o.image, "docker-image", "", "worker image that --driver docker runs")
	c.Flags().MarkDeprecated("docker-image", "use --worker-image, which names the worker image for every driver")
}

// workerImage is --worker-image, or the deprecated --docker-image when set.
func (o *controlPlaneOptions) workerImage() string {
	if o.docker.image != "" {
		return o.docker.image
	}
	return o.nomad.image
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
		Image:       o.workerImage(),
		PythonImage: o.nomad.pythonImage,
		LLMImage:    o.nomad.llmImage,
		LLMGPUImage: o.nomad.llmGPUImage,
		Owner:       dir,
		Logger:      log,
		Metrics:     orchestrator.NewMetrics(metrics),
	}, notify)
}
