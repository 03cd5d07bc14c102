package main

import (
	"errors"
	"time"

	"github.com/gantry/gantry/worker"
	"github.com/gantry/gantry/worker/mlmodel"
	"github.com/gantry/gantry/worker/openaiserver"
	"github.com/gantry/gantry/worker/pyfunc"
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
	openaiserver.Flavor: func(dir string, conf map[string]any) (worker.Runtime, int, error) {
		rt, err := openaiserver.Load(dir, conf, openaiserver.Options{})
		if err != nil {
			return nil, 0, err
		}
		return rt, 0, nil
	},
}

// withPython adds the process runtime for python_function, which serves
// every flavor that no native runtime takes (the worker prefers native
// ones).
func withPython(native map[string]worker.Loader, cfg pyfunc.Config) map[string]worker.Loader {
	all := make(map[string]worker.Loader, len(native)+1)
	for k, v := range native {
		all[k] = v
	}
	all["python_function"] = func(dir string, _ map[string]any) (worker.Runtime, int, error) {
		mm, err := mlmodel.Load(dir)
		if err != nil {
			return nil, 0, err
		}
		rt, err := pyfunc.Load(dir, mm, cfg)
		if err != nil {
			return nil, 0, err
		}
		return rt, 0, nil
	}
	return all
}

func workerCmd() *cobra.Command {
	var (
		cfg worker.Config
		py  pyfunc.Config
		lc  llmConfig
	)
	c := &cobra.Command{
		Use:   "worker",
		Short: "Serve one MLflow model directory over the MLflow scoring protocol",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfg.ModelDir == "" {
				return errors.New("--model-dir is required")
			}
			if py.MaxBatchRows < 1 {
				return errors.New("--max-batch-size must be at least 1 (1 turns batching off)")
			}
			if py.MaxBatchWait < 0 || py.MaxBatchWait > time.Second {
				return errors.New("--max-batch-wait must be between 0 and 1s")
			}
			return worker.Run(cmd.Context(), cfg, withPython(withLLM(loaders, lc), py))
		},
	}
	c.Flags().StringVar(&cfg.ModelDir, "model-dir", "", "MLflow model directory to serve")
	c.Flags().StringVar(&cfg.Listen, "listen", worker.DefaultListen, "address to listen on")
	// Set through GANTRY_WORKER_SECRET by the drivers (a flag's value
	// would be in ps); its value is never printed.
	c.Flags().StringVar(&cfg.Secret, "worker-secret", "", "answer invocations only when they carry this secret in "+worker.SecretHeader+" (the drivers set it per deployment, for the activators)")
	addPythonFlags(c, &py)
	addLLMWorkerFlags(c, &lc)
	c.Flags().IntVar(&py.MaxBatchRows, "max-batch-size", pyfunc.DefaultMaxBatchRows,
		"Python models: most rows merged into one predict call from concurrent requests (1: no batching)")
	c.Flags().DurationVar(&py.MaxBatchWait, "max-batch-wait", pyfunc.DefaultMaxBatchWait,
		"Python models: how long a batch waits for more requests once the model is free (0: not at all)")
	c.Flags().DurationVar(&py.Timeout, "execution-timeout", pyfunc.DefaultTimeout,
		"Python models: longest predict call; past it the request gets a 504 and the model host is replaced")
	return c
}

// addPythonFlags adds --python, which gantry dev and gantry scheduler pass
// on to their workers.
func addPythonFlags(c *cobra.Command, py *pyfunc.Config) {
	c.Flags().StringVar(&py.Python, "python", pyfunc.DefaultPython,
		"Python interpreter that runs models without a native runtime (sklearn, pytorch, custom pyfunc); a name is looked up on PATH")
}
