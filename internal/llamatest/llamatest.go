// Package llamatest finds the llama.cpp libraries that the GGUF tests
// load.
package llamatest

import (
	"os"
	"path/filepath"
	"testing"
)

// libEnv is worker/llm's LibEnv, spelled out here because worker/llm's
// own tests use this package and so it cannot import worker/llm.
const libEnv = "GANTRY_LLAMA_LIB_DIR"

// LibDir is the folder the tests load llama.cpp from: $GANTRY_LLAMA_LIB_DIR
// when set (a CUDA build, say), else BuildDir. t fails when the folder has
// no libllama.so.
func LibDir(t testing.TB) string {
	t.Helper()
	if d := os.Getenv(libEnv); d != "" {
		requireLib(t, d)
		return d
	}
	return BuildDir(t)
}

// BuildDir is bin/llama at the module root: the CPU build `make
// llama-libs` fetches, which the LLM worker image is built from. It
// ignores $GANTRY_LLAMA_LIB_DIR, for tests that compare with that image.
// t fails when the folder has no libllama.so.
func BuildDir(t testing.TB) string {
	t.Helper()
	d := filepath.Join(moduleRoot(t), "bin", "llama")
	requireLib(t, d)
	return d
}

func requireLib(t testing.TB, dir string) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(dir, "libllama.so")); err != nil {
		t.Fatalf("no llama.cpp libraries in %s: run `make llama-libs`", dir)
	}
}

// moduleRoot is the nearest folder above the test's working directory
// (its package's folder) that holds go.mod.
func moduleRoot(t testing.TB) string {
	t.Helper()
	dir, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = parent
	}
}
