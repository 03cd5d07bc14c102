// Package xgboost serves XGBoost models natively: it reads XGBoost's JSON
// and UBJSON model formats and predicts in pure Go, without Python or cgo. It repeats
// XGBoost's float32 arithmetic step by step, so its predictions match the
// Python library's: bit for bit on the test fixtures.
//
// It supports the gbtree, dart and gblinear boosters with numerical splits,
// and the regression, binary, multiclass, count, survival and ranking
// objectives listed in objectives. Models saved in XGBoost's legacy binary
// format (.xgb, .bin) must be re-saved as JSON or UBJSON.
package xgboost

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
)

// maxModelSize bounds the model file Load reads into memory.
const maxModelSize = 1 << 30

// nanMissing is the default missing value: only NaN is missing.
var nanMissing = float32(math.NaN())

// output is the shape of what Model.Predict returns.
type output int

const (
	outValues output = iota // Booster and regressors: the objective's output
	outLabels               // XGBClassifier: class labels
)

// Model is an MLflow xgboost-flavor model ready to predict. It is
// immutable and safe for concurrent use.
type Model struct {
	b       *Booster
	ntrees  int     // trees used by Predict: the sklearn wrappers stop at best_iteration
	missing float32 // besides NaN, the value that marks a missing feature
	out     output
	// For outLabels: the number of classes as the sklearn wrapper sees it,
	// and the labels to map class indices to (nil: the indices themselves).
	nClasses int
	classes  any // []int64, []float64 or []string
}

// Load reads an MLflow xgboost-flavor model directory; conf is the
// MLmodel's "xgboost" flavor settings (keys: data, model_class,
// model_format, ...).
func Load(dir string, conf map[string]any) (*Model, error) {
	data, _ := conf["data"].(string)
	if data == "" {
		return nil, errors.New(`xgboost flavor: no "data" file named`)
	}
	// The MLmodel file comes with the upload; keep it inside the directory.
	if !filepath.IsLocal(data) {
		return nil, fmt.Errorf("xgboost flavor: data %q is not a path inside the model directory", data)
	}
	class := "xgboost.core.Booster" // MLflow's default
	if c, ok := conf["model_class"].(string); ok && c != "" {
		class = c
	}
	b, err := readModel(filepath.Join(dir, data))
	if err != nil {
		if format, _ := conf["model_format"].(string); format != "" && format != "json" {
			err = fmt.Errorf("%w (MLmodel says model_format %q)", err, format)
		}
		return nil, fmt.Errorf("%s: %w", data, err)
	}
	m, err := newModel(b, class)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", data, err)
	}
	return m, nil
}

func readModel(path string) (*Booster, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxModelSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxModelSize {
		return nil, fmt.Errorf("model file is larger than %d bytes", maxModelSize)
	}
	return Parse(b)
}

// newModel sets up prediction the way MLflow's pyfunc does for the given
// model class: Booster.predict for a Booster, the wrapper's predict for
// the scikit-learn classes.
func newModel(b *Booster, class string) (*Model, error) {
	m := &Model{b: b, ntrees: b.NumTrees(), missing: nanMissing}
	name := class[strings.LastIndexByte(class, '.')+1:]
	var estimator string
	switch name {
	case "Booster":
		// Booster.predict uses every tree, whatever best_iteration says.
		return m, nil
	case "XGBClassifier", "XGBRFClassifier":
		estimator, m.out = "classifier", outLabels
	case "XGBRegressor", "XGBRFRegressor":
		estimator = "regressor"
	case "XGBRanker":
		estimator = "ranker"
	default:
		return nil, fmt.Errorf("unsupported model_class %q", class)
	}
	if err := m.setSklearn(estimator); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return m, nil
}

// NumFeatures is the number of input features the model expects.
func (m *Model) NumFeatures() int { return m.b.numFeature }

// Booster is the underlying XGBoost model.
func (m *Model) Booster() *Booster { return m.b }

// Predict returns what MLflow's pyfunc predict returns for these rows,
// ready to JSON-encode as "predictions": []float64 for one output per row
// (regression values, binary probabilities, multi:softmax classes),
// [][]float64 for several (multi:softprob probabilities, multi-target
// regression), and class labels for a scikit-learn XGBClassifier: []int64,
// or []string or []float64 for an old model whose label encoder had such
// classes. Missing values are NaN.
func (m *Model) Predict(rows [][]float64) (any, error) {
	nf := m.b.numFeature
	for i, r := range rows {
		if len(r) != nf {
			return nil, fmt.Errorf("row %d has %d values, the model expects %d features", i, len(r), nf)
		}
	}
	p, err := m.b.predict(rows, m.ntrees, m.missing)
	if err != nil {
		return nil, err
	}
	if m.out == outLabels {
		return m.labels(p, len(rows))
	}
	w := m.b.width()
	if w == 1 {
		out := make([]float64, len(p))
		for i, v := range p {
			out[i] = float64(v)
		}
		return out, nil
	}
	flat := make([]float64, len(p))
	out := make([][]float64, len(rows))
	for i := range out {
		row := flat[i*w : (i+1)*w : (i+1)*w]
		for j := range row {
			row[j] = float64(p[i*w+j])
		}
		out[i] = row
	}
	return out, nil
}
