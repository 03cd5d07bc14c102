package mlmodel

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const sample = `artifact_path: model
flavors:
  python_function:
    data: model.json
    loader_module: mlflow.xgboost
    python_version: 3.11.2
  xgboost:
    code: null
    data: model.json
    model_class: xgboost.core.Booster
    model_format: json
    xgb_version: 1.7.4
model_uuid: 0123
run_id: abc
signature:
  inputs: '[{"type": "double", "name": "age", "required": true}, {"type": "double", "name": "amount", "required": true}]'
  outputs: '[{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1]}}]'
`

func TestParse(t *testing.T) {
	m, err := Parse([]byte(sample))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(m.FlavorNames(), ","); got != "python_function,xgboost" {
		t.Errorf("flavors = %s", got)
	}
	if got := strings.Join(m.InputNames(), ","); got != "age,amount" {
		t.Errorf("inputs = %s", got)
	}
	if m.Flavors["xgboost"]["data"] != "model.json" {
		t.Errorf("xgboost data = %v", m.Flavors["xgboost"]["data"])
	}
	if m.RunID != "abc" || m.ModelUUID != "0123" {
		t.Errorf("run_id/model_uuid = %q/%q", m.RunID, m.ModelUUID)
	}
}

func TestParseErrors(t *testing.T) {
	for name, in := range map[string]string{
		"not yaml":      "flavors: [",
		"no flavors":    "run_id: x\n",
		"empty flavor":  "flavors:\n  xgboost:\n",
		"bad signature": "flavors:\n  xgboost: {data: m}\nsignature:\n  inputs: 'nope'\n",
		"untyped col":   "flavors:\n  xgboost: {data: m}\nsignature:\n  inputs: '[{\"name\": \"a\"}]'\n",
	} {
		if _, err := Parse([]byte(in)); err == nil {
			t.Errorf("%s: Parse succeeded, want an error", name)
		}
	}
}

// TestLoadRefusesHugeFile: an MLmodel over MaxFileSize is refused before
// it is read (issue 19: a 1 GiB MLmodel took the reader to 6 GiB). The
// file is sparse: 1 GiB that costs no disk.
func TestLoadRefusesHugeFile(t *testing.T) {
	dir := t.TempDir()
	f, err := os.Create(filepath.Join(dir, FileName))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(1 << 30); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := Load(dir); !errors.Is(err, ErrTooLarge) {
		t.Errorf("Load of a 1 GiB MLmodel = %v; want ErrTooLarge", err)
	}
	if _, err := Load(t.TempDir()); err == nil || strings.Contains(err.Error(), "/") {
		t.Errorf("Load of a missing MLmodel = %v; want an error without the path", err)
	}
}

func TestNeedsPython(t *testing.T) {
	for _, c := range []struct {
		flavors []string
		want    bool
	}{
		{[]string{"python_function", "sklearn"}, true},
		{[]string{"python_function", "pytorch"}, true},
		{[]string{"python_function"}, true},
		// A native runtime wins: xgboost models carry python_function too.
		{[]string{"python_function", "xgboost"}, false},
		{[]string{"xgboost"}, false},
		{[]string{"gguf", "python_function"}, false},
		{[]string{"openai_server", "python_function"}, false},
		// No runtime at all: the worker fails it, with or without Python.
		{[]string{"sklearn"}, false},
		{nil, false},
	} {
		if got := NeedsPython(c.flavors); got != c.want {
			t.Errorf("NeedsPython(%v) = %v, want %v", c.flavors, got, c.want)
		}
	}
}

func TestNeedsLlama(t *testing.T) {
	for _, c := range []struct {
		flavors []string
		want    bool
	}{
		{[]string{"gguf"}, true},
		{[]string{"python_function", "gguf"}, true},
		// The worker prefers xgboost and openai_server to gguf (the order
		// of NativeFlavors), so such a model needs no llama.cpp.
		{[]string{"gguf", "xgboost"}, false},
		{[]string{"openai_server", "gguf"}, false},
		{[]string{"python_function", "sklearn"}, false},
		{nil, false},
	} {
		if got := NeedsLlama(c.flavors); got != c.want {
			t.Errorf("NeedsLlama(%v) = %v, want %v", c.flavors, got, c.want)
		}
	}
}
