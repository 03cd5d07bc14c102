//go:build nollama

package main

// A static binary (-tags nollama) has no GGUF runtime: see llm.go. A gguf
// model fails its deployment saying so.

import (
	"errors"

	"github.com/gantry/gantry/worker"
	"github.com/spf13/cobra"
)

type llmConfig struct{ LibDir string }

func withLLM(native map[string]worker.Loader, _ llmConfig) map[string]worker.Loader {
	all := make(map[string]worker.Loader, len(native)+1)
	for k, v := range native {
		all[k] = v
	}
	all["gguf"] = func(string, map[string]any) (worker.Runtime, int, error) {
		return nil, 0, errors.New("this gantry binary was built without the GGUF runtime (-tags nollama, a static build): serve GGUF models with the default build, which loads llama.cpp and needs the C library and libffi")
	}
	return all
}

func addLLMFlags(c *cobra.Command, dir *string) {
	c.Flags().StringVar(dir, "llama-lib-dir", "", "GGUF models: not in this build (-tags nollama) for local workers; with --driver nomad, the folder of llama.cpp's libraries on the exec and raw_exec clients")
}

func addLLMWorkerFlags(c *cobra.Command, lc *llmConfig) { addLLMFlags(c, &lc.LibDir) }

func llamaWorkerEnv(string) []string { return nil }
