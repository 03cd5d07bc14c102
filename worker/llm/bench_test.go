package llm

import (
	"context"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gantry/gantry/internal/llamatest"
)

// BenchmarkGenerate reports the runtime's tokens per second with 1 and 8
// sequences at once, greedy, 128 tokens each. deploy/gpu/check.sh runs it
// with a CUDA build: GANTRY_LLM_MODEL picks the GGUF file (default
// stories260K), GANTRY_LLM_GPU_LAYERS the layers offloaded (-1: all),
// GANTRY_LLM_THREADS the CPU threads.
func BenchmarkGenerate(b *testing.B) {
	path := os.Getenv("GANTRY_LLM_MODEL")
	if path == "" {
		path = testModel
	}
	layers, _ := strconv.Atoi(os.Getenv("GANTRY_LLM_GPU_LAYERS"))
	threads, _ := strconv.Atoi(os.Getenv("GANTRY_LLM_THREADS"))
	m, err := Open(path, Config{LibDir: llamatest.LibDir(b), GPULayers: layers, Threads: threads, Context: 512})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	b.Logf("devices: %q; GPU offload: %v (layers %d)", Devices(), GPU(), layers)
	if layers != 0 && !GPU() {
		b.Fatalf("asked for %d GPU layers, but this build of llama.cpp found no GPU: %q", layers, Devices())
	}
	for _, n := range []int{1, 8} {
		b.Run("sequences="+strconv.Itoa(n), func(b *testing.B) {
			tokens := 0
			start := time.Now()
			for b.Loop() {
				var wg sync.WaitGroup
				var mu sync.Mutex
				for range n {
					wg.Go(func() {
						res, err := m.Generate(context.Background(), Request{Prompt: "Once upon a time", MaxTokens: 128}, func(string) error { return nil })
						if err != nil {
							b.Error(err)
						}
						mu.Lock()
						tokens += res.CompletionTokens
						mu.Unlock()
					})
				}
				wg.Wait()
			}
			b.ReportMetric(float64(tokens)/time.Since(start).Seconds(), "tokens/s")
		})
	}
}
