//go:build !nollama

package main

// The GGUF runtime (worker/llm) calls llama.cpp through purego and libffi
// (jupiterrider/ffi, under yzma), which link the binary to the C library
// even with CGO_ENABLED=0 and make every gantry process load libffi.so.8
// at start (the ffi package panics without it). -tags nollama builds
// gantry without the runtime (llm_off.go): static, needing neither, for
// components and workers on hosts that have no GGUF models to serve.

import (
	"path/filepath"

	"github.com/gantry/gantry/worker"
	"github.com/gantry/gantry/worker/llm"
	"github.com/spf13/cobra"
)

type llmConfig = llm.Config

// withLLM adds the GGUF runtime (llama.cpp) for the gguf flavor.
func withLLM(native map[string]worker.Loader, cfg llmConfig) map[string]worker.Loader {
	all := make(map[string]worker.Loader, len(native)+1)
	for k, v := range native {
		all[k] = v
	}
	all[llm.Flavor] = func(dir string, conf map[string]any) (worker.Runtime, int, error) {
		rt, err := llm.OpenRuntime(dir, conf, cfg)
		if err != nil {
			return nil, 0, err
		}
		return rt, 0, nil
	}
	return all
}

// addLLMFlags adds --llama-lib-dir, which gantry dev and gantry scheduler
// pass on to their workers.
func addLLMFlags(c *cobra.Command, dir *string) {
	c.Flags().StringVar(dir, "llama-lib-dir", "",
		"GGUF models: the folder of llama.cpp's libraries (libllama.so, libggml*.so; make llama-libs fetches them); default: llama/ beside the gantry binary, else ./bin/llama. With --driver nomad, the folder on the exec and raw_exec clients")
}

func addLLMWorkerFlags(c *cobra.Command, lc *llmConfig) {
	addLLMFlags(c, &lc.LibDir)
	c.Flags().IntVar(&lc.Threads, "llm-threads", 0, "GGUF models: llama.cpp's threads (0: half the CPUs, at least 1; more threads than free cores make it crawl)")
	c.Flags().IntVar(&lc.Context, "llm-context", llm.DefaultContext, "GGUF models: tokens of one request, prompt and answer (at most the model's training context)")
	c.Flags().IntVar(&lc.Sequences, "llm-sequences", llm.DefaultSequences, "GGUF models: requests generated at once, in one batch")
	c.Flags().IntVar(&lc.GPULayers, "llm-gpu-layers", 0, "GGUF models: layers offloaded to the GPU with a CUDA build of the libraries (-1: all)")
}

// llamaWorkerEnv passes the libraries' folder to local workers as an
// absolute path: a worker's default (beside its binary, or ./bin/llama)
// resolves against its own directory, not this process's.
func llamaWorkerEnv(dir string) []string {
	abs, err := filepath.Abs(llm.LibDir(dir))
	if err != nil {
		return nil
	}
	return []string{llm.LibEnv + "=" + abs}
}
