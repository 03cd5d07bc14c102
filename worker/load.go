package worker

import (
	"fmt"
	"slices"
	"strings"

	"github.com/gantry/gantry/worker/mlmodel"
)

// preferred flavors come before the rest (which go in name order): a native
// runtime starts in milliseconds, while python_function, which nearly every
// model also has, needs a Python process. An openai_server flavor is the
// model's author naming the server that serves it; gguf is llama.cpp's.
// They are mlmodel.NativeFlavors, which drivers read to tell whether a
// model needs an interpreter.
var preferred = mlmodel.NativeFlavors

// model is a loaded model with what the request path needs from its MLmodel.
type model struct {
	rt        Runtime
	flavor    string
	inputs    []string // signature input names in order; nil when unnamed
	nFeatures int      // 0 when the runtime cannot tell
}

func loadModel(dir string, loaders map[string]Loader) (*model, error) {
	mm, err := mlmodel.Load(dir)
	if err != nil {
		return nil, err
	}
	flavor, err := pickFlavor(mm.FlavorNames(), loaders)
	if err != nil {
		return nil, err
	}
	rt, n, err := loaders[flavor](dir, mm.Flavors[flavor])
	if err != nil {
		return nil, fmt.Errorf("%s runtime: %w", flavor, err)
	}
	if rt == nil {
		return nil, fmt.Errorf("%s runtime: loader returned no runtime", flavor)
	}
	m := &model{rt: rt, flavor: flavor, inputs: mm.InputNames(), nFeatures: n}
	// Features are matched to signature names by position, so a count that
	// disagrees would feed every request to the wrong features.
	if len(m.inputs) > 0 && n > 0 && len(m.inputs) != n {
		return nil, fmt.Errorf("the signature names %d inputs but the %s model takes %d features",
			len(m.inputs), flavor, n)
	}
	return m, nil
}

// pickFlavor chooses the flavor to serve: the first with a loader, preferred
// flavors first.
func pickFlavor(flavors []string, loaders map[string]Loader) (string, error) {
	order := make([]string, 0, len(flavors)+len(preferred))
	for _, f := range preferred {
		if slices.Contains(flavors, f) {
			order = append(order, f)
		}
	}
	order = append(order, flavors...)
	for _, f := range order {
		if loaders[f] != nil {
			return f, nil
		}
	}
	var have []string
	for name, l := range loaders {
		if l != nil {
			have = append(have, name)
		}
	}
	slices.Sort(have)
	native := "none"
	if len(have) > 0 {
		native = strings.Join(have, ", ")
	}
	return "", fmt.Errorf("no runtime for flavors %v: native runtimes: %s", flavors, native)
}
