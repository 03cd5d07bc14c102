// Package mlmodel reads MLflow model directories: the MLmodel file, its
// flavors and its signature.
package mlmodel

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"

	"github.com/gantry/gantry/api"
	"gopkg.in/yaml.v3"
)

// FileName is the name of the file that makes a directory an MLflow model.
const FileName = "MLmodel"

// Model is a parsed MLmodel file.
type Model struct {
	// Flavors maps a flavor name (xgboost, python_function, ...) to its
	// settings as written in the file.
	Flavors map[string]map[string]any
	// Signature is nil when the model was saved without one.
	Signature *api.Schema
	// RunID and ModelUUID are copied through for metadata; either may be empty.
	RunID     string
	ModelUUID string
}

type fileModel struct {
	Flavors   map[string]map[string]any `yaml:"flavors"`
	Signature *struct {
		// MLflow writes the column specs as JSON strings inside the YAML.
		Inputs  string `yaml:"inputs"`
		Outputs string `yaml:"outputs"`
	} `yaml:"signature"`
	RunID     string `yaml:"run_id"`
	ModelUUID string `yaml:"model_uuid"`
}

// Parse reads the contents of an MLmodel file.
func Parse(b []byte) (*Model, error) {
	var f fileModel
	if err := yaml.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("MLmodel is not valid YAML: %w", err)
	}
	if len(f.Flavors) == 0 {
		return nil, errors.New("MLmodel names no flavors")
	}
	for name, conf := range f.Flavors {
		if conf == nil {
			return nil, fmt.Errorf("MLmodel flavor %q has no settings", name)
		}
	}
	m := &Model{Flavors: f.Flavors, RunID: f.RunID, ModelUUID: f.ModelUUID}
	if f.Signature != nil {
		s := &api.Schema{}
		if err := parseCols(f.Signature.Inputs, &s.Inputs); err != nil {
			return nil, fmt.Errorf("MLmodel signature inputs: %w", err)
		}
		if err := parseCols(f.Signature.Outputs, &s.Outputs); err != nil {
			return nil, fmt.Errorf("MLmodel signature outputs: %w", err)
		}
		m.Signature = s
	}
	return m, nil
}

func parseCols(s string, into *[]api.ColSpec) error {
	if s == "" {
		return nil
	}
	if err := json.Unmarshal([]byte(s), into); err != nil {
		return fmt.Errorf("not a JSON list of column specs: %w", err)
	}
	for i, c := range *into {
		if c.Type == "" {
			return fmt.Errorf("column %d has no type", i)
		}
	}
	return nil
}

// MaxFileSize bounds the MLmodel file. MLflow writes a few KiB (a large
// signature makes tens); a YAML parser holds several times its input in
// memory, so a 1 GiB MLmodel would take the reader down.
const MaxFileSize = 4 << 20

// ErrTooLarge is an MLmodel file over MaxFileSize.
var ErrTooLarge = fmt.Errorf("MLmodel is over %d bytes; MLflow writes a few KiB", MaxFileSize)

// pathless drops the path from a file error, keeping what went wrong.
func pathless(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// Load reads dir/MLmodel, refusing one over MaxFileSize before reading it.
// Errors name the file relative to dir: dir may be a server path that
// callers must not show.
func Load(dir string) (*Model, error) {
	f, err := os.Open(filepath.Join(dir, FileName))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, errors.New("read MLmodel: no such file")
		}
		return nil, fmt.Errorf("read MLmodel: %w", pathless(err))
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil {
		return nil, fmt.Errorf("read MLmodel: %w", pathless(err))
	} else if !st.Mode().IsRegular() {
		return nil, errors.New("read MLmodel: not a regular file")
	} else if st.Size() > MaxFileSize {
		return nil, ErrTooLarge
	}
	// The size may change after Stat: read at most one byte past the cap.
	b, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read MLmodel: %w", pathless(err))
	}
	if len(b) > MaxFileSize {
		return nil, ErrTooLarge
	}
	return Parse(b)
}

// FlavorNames lists the model's flavors in sorted order.
func (m *Model) FlavorNames() []string {
	names := make([]string, 0, len(m.Flavors))
	for n := range m.Flavors {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// InputNames lists the signature's input column names in order, or nil when
// the model has no signature or its inputs are unnamed.
func (m *Model) InputNames() []string {
	if m.Signature == nil {
		return nil
	}
	names := make([]string, 0, len(m.Signature.Inputs))
	for _, c := range m.Signature.Inputs {
		if c.Name == "" {
			return nil
		}
		names = append(names, c.Name)
	}
	return names
}

// PythonFlavor is the flavor the worker's Python runtime serves.
const PythonFlavor = "python_function"

// NativeFlavors are the flavors the worker serves in Go, without Python;
// one of them wins over PythonFlavor when a model has both. The worker's
// loaders (cmd/gantry) must be exactly these: a test checks it.
var NativeFlavors = []string{"xgboost", "openai_server", GGUFFlavor}

// GGUFFlavor is the flavor the worker's GGUF runtime (llama.cpp) serves.
const GGUFFlavor = "gguf"

// NeedsLlama reports whether the worker serves a model with these flavors
// through its GGUF runtime: gguf is the first of NativeFlavors it has,
// which is the flavor the worker picks. Drivers use it to run such a model
// where the llama.cpp libraries and libstdc++ are (the LLM worker image,
// or --llama-lib-dir on the clients).
func NeedsLlama(flavors []string) bool {
	for _, n := range NativeFlavors {
		for _, f := range flavors {
			if f == n {
				return n == GGUFFlavor
			}
		}
	}
	return false
}

// NeedsPython reports whether the worker serves a model with these flavors
// through the Python runtime: it has PythonFlavor and no native flavor.
// Drivers use it to run such a model where an interpreter is (the docker
// drivers' Python image); the worker makes the same choice when it loads.
func NeedsPython(flavors []string) bool {
	python := false
	for _, f := range flavors {
		for _, n := range NativeFlavors {
			if f == n {
				return false
			}
		}
		python = python || f == PythonFlavor
	}
	return python
}
