package main

import (
	"slices"
	"testing"

	"github.com/gantry/gantry/worker/mlmodel"
	"github.com/gantry/gantry/worker/pyfunc"
)

// Drivers choose the Python image with mlmodel.NeedsPython, which reads
// mlmodel.NativeFlavors; a native runtime added here and not there would
// send its models to the Python image for nothing.
func TestNativeLoadersAreNativeFlavors(t *testing.T) {
	var have []string
	for f := range withPython(withLLM(loaders, llmConfig{}), pyfunc.Config{}) {
		if f != mlmodel.PythonFlavor {
			have = append(have, f)
		}
	}
	slices.Sort(have)
	want := slices.Sorted(slices.Values(mlmodel.NativeFlavors))
	if !slices.Equal(have, want) {
		t.Fatalf("native loaders %v, mlmodel.NativeFlavors %v", have, want)
	}
}
