package main

import (
	"errors"

	"github.com/gantry/gantry/worker"
	"github.com/gantry/gantry/worker/xgboost"
	"github.com/spf13/cobra"
)

// loaders are the native runtimes, by MLflow flavor.
var loaders = map[string]worker.Loader{
	"xgboost": func(dir string, conf map[string]any) (worker.Runtime, int, error) {
		m, err := xgboost.Load(dir, conf)
		if err != nil {
			return nil, 0, err
		}
		return m, m.NumFeatures(), nil
	},
}

func workerCmd() *cobra.Command {
	var cfg worker.Config
	c := &cobra.Command{
		Use:   "worker",
		Short: "Serve one MLflow model directory over the MLflow scoring protocol",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfg.ModelDir == "" {
				return errors.New("--model-dir is required")
			}
			return worker.Run(cmd.Context(), cfg, loaders)
		},
	}
	c.Flags().StringVar(&cfg.ModelDir, "model-dir", "", "MLflow model directory to serve")
	c.Flags().StringVar(&cfg.Listen, "listen", worker.DefaultListen, "address to listen on")
	return c
}
