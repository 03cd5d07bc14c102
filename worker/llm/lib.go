package llm

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/hybridgroup/yzma/pkg/llama"
)

// The llama.cpp libraries are loaded at run time (yzma calls them through
// libffi, with no cgo), once per process: libllama.so and libggml.so, and
// the ggml CPU (or CUDA) backends beside them, which llama.cpp picks by
// what the machine offers. The pair is pinned: yzma v1.26.1 with the
// libraries of npm's @node-llama-cpp/linux-x64@3.21.1 (CPU) or
// @node-llama-cpp/linux-x64-cuda@3.21.1 (CUDA 13); newer yzma versions
// look up symbols these libraries lack.

// LibEnv names the library directory when Load is given none.
const LibEnv = "GANTRY_LLAMA_LIB_DIR"

var (
	loadOnce sync.Once
	loadErr  error
	loadedAt string
)

// LibDir is where Load looks when dir is empty: $GANTRY_LLAMA_LIB_DIR,
// else a folder "llama" beside the running binary (make build puts
// bin/gantry next to bin/llama), else ./bin/llama.
func LibDir(dir string) string {
	if dir != "" {
		return dir
	}
	if d := os.Getenv(LibEnv); d != "" {
		return d
	}
	if exe, err := os.Executable(); err == nil {
		d := filepath.Join(filepath.Dir(exe), "llama")
		if hasLib(d) {
			return d
		}
	}
	return filepath.Join("bin", "llama")
}

func hasLib(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, "libllama.so"))
	return err == nil
}

// Load loads the llama.cpp libraries from dir (LibDir's choice when
// empty). Only the first call loads; later ones report its outcome, and
// a later dir that differs is an error rather than a silent mix.
func Load(dir string) error {
	dir = LibDir(dir)
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	loadOnce.Do(func() {
		loadedAt = abs
		if !hasLib(abs) {
			loadErr = fmt.Errorf("no libllama.so in %s: run `make llama-libs`, or point --llama-lib-dir (%s) at the llama.cpp libraries", abs, LibEnv)
			return
		}
		if err := llama.Load(abs); err != nil {
			loadErr = fmt.Errorf("load llama.cpp from %s: %w (yzma v1.26.1 needs the libraries of @node-llama-cpp 3.21.1 and Debian's libffi8)", abs, err)
			return
		}
		// llama.cpp logs every tensor it loads to stderr; the worker's
		// own log says what matters.
		llama.LogSet(llama.LogSilent())
		llama.Init()
	})
	if loadErr == nil && abs != loadedAt {
		return errors.New("llama.cpp is loaded from " + loadedAt + " already; one process loads one build")
	}
	return loadErr
}

// Devices lists the devices the loaded llama.cpp build can run on ("CPU
// CPU", "GPU CUDA0 (NVIDIA H200)"), after Load; a CUDA build on a machine
// without a GPU or the CUDA runtime lists none of type GPU.
func Devices() []string {
	var out []string
	for i := range llama.GGMLBackendDeviceCount() {
		d := llama.GGMLBackendDeviceGet(i)
		out = append(out, fmt.Sprintf("%s %s (%s)", llama.GGMLBackendDevType(d), llama.GGMLBackendDeviceName(d), llama.GGMLBackendDeviceDescription(d)))
	}
	return out
}

// GPU reports whether the loaded build found a GPU to offload layers to.
func GPU() bool {
	for i := range llama.GGMLBackendDeviceCount() {
		if llama.GGMLBackendDevType(llama.GGMLBackendDeviceGet(i)) == llama.GGMLBackendDeviceTypeGPU {
			return true
		}
	}
	return false
}
