package xgboost

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
)

// sklearnMeta is what XGBoost's scikit-learn wrappers save in the model's
// "scikit_learn" attribute: their constructor parameters and fitted state,
// as Python's json.dumps writes them.
type sklearnMeta struct {
	EstimatorType string `json:"_estimator_type"`
	NClasses      any    `json:"n_classes_"`
	Classes       []any  `json:"classes_"`
	LabelEncoder  *struct {
		Classes []any `json:"classes_"`
	} `json:"_le"` // XGBoost before 1.6
	Missing any `json:"missing"`
}

// setSklearn configures m like the scikit-learn wrapper's predict: it stops
// at best_iteration, treats its "missing" value as missing, and for a
// classifier turns probabilities into class labels.
func (m *Model) setSklearn(estimator string) error {
	b := m.b
	var meta sklearnMeta
	if s, ok := b.attributes["scikit_learn"]; ok {
		d := json.NewDecoder(strings.NewReader(pythonJSON(s)))
		d.UseNumber()
		if err := d.Decode(&meta); err != nil {
			return fmt.Errorf("attribute scikit_learn: %v", err)
		}
	}
	if meta.EstimatorType != "" && meta.EstimatorType != estimator {
		return fmt.Errorf("the model was saved from a %s, not a %s", meta.EstimatorType, estimator)
	}
	if b.bestIteration >= 0 && !b.isLinear {
		n, err := b.treesForRounds(b.bestIteration + 1)
		if err != nil {
			return fmt.Errorf("best_iteration %d: %w", b.bestIteration, err)
		}
		m.ntrees = n
	}
	switch v := meta.Missing.(type) {
	case nil: // NaN, the default
	case json.Number:
		f, err := v.Float64()
		if err != nil {
			return fmt.Errorf("missing is %v: %v", v, err)
		}
		m.missing = float32(f)
	case string:
		switch v {
		case "Infinity":
			m.missing = float32(math.Inf(1))
		case "-Infinity":
			m.missing = float32(math.Inf(-1))
		default:
			return fmt.Errorf("missing is %q, want a number", v)
		}
	default:
		return fmt.Errorf("missing is %v, want a number", v)
	}
	if m.out != outLabels {
		return nil
	}

	m.nClasses = 2
	if b.numGroup > 1 {
		m.nClasses = b.numGroup
	}
	if meta.NClasses != nil {
		n, err := intValue(meta.NClasses)
		if err != nil {
			return fmt.Errorf("n_classes_: %v", err)
		}
		m.nClasses = int(n)
	}
	if b.width() > 1 && m.nClasses == 2 {
		return errors.New("multi-label classifiers are not supported")
	}
	classes := meta.Classes
	if meta.LabelEncoder != nil {
		classes = meta.LabelEncoder.Classes
	}
	if classes != nil {
		c, err := labelSlice(classes)
		if err != nil {
			return fmt.Errorf("classes_: %v", err)
		}
		m.classes = c
	}
	return nil
}

// labels turns the classifier's output p for n rows into class labels, as
// XGBClassifier.predict does.
func (m *Model) labels(p []float32, n int) (any, error) {
	idx := make([]int64, n)
	switch w := m.b.width(); {
	case w > 1:
		for i := range idx {
			idx[i] = int64(argmax(p[i*w : (i+1)*w]))
		}
	case m.b.obj.link == linkSoftmax:
		// The wrapper returns multi:softmax's class indices as they are.
		for i, v := range p {
			idx[i] = int64(v)
		}
		return idx, nil
	default:
		for i, v := range p {
			if v > 0.5 {
				idx[i] = 1
			}
		}
	}
	return mapLabels(idx, m.classes)
}

// mapLabels maps class indices to the classifier's labels.
func mapLabels(idx []int64, classes any) (any, error) {
	var n int
	switch c := classes.(type) {
	case nil:
		return idx, nil
	case []int64:
		n = len(c)
	case []float64:
		n = len(c)
	case []string:
		n = len(c)
	}
	for _, i := range idx {
		if i >= int64(n) {
			return nil, fmt.Errorf("class index %d, but the model has %d classes", i, n)
		}
	}
	switch c := classes.(type) {
	case []int64:
		out := make([]int64, len(idx))
		for k, i := range idx {
			out[k] = c[i]
		}
		return out, nil
	case []float64:
		out := make([]float64, len(idx))
		for k, i := range idx {
			out[k] = c[i]
		}
		return out, nil
	default:
		cs := c.([]string)
		out := make([]string, len(idx))
		for k, i := range idx {
			out[k] = cs[i]
		}
		return out, nil
	}
}

// labelSlice turns decoded JSON class labels into a typed slice: []int64
// when all are integers, []float64 when all are numbers, []string when all
// are strings.
func labelSlice(v []any) (any, error) {
	ints := make([]int64, 0, len(v))
	for _, x := range v {
		n, err := intValue(x)
		if err != nil {
			break
		}
		ints = append(ints, n)
	}
	if len(ints) == len(v) {
		return ints, nil
	}
	floats := make([]float64, 0, len(v))
	for _, x := range v {
		n, ok := x.(json.Number)
		if !ok {
			break
		}
		f, err := n.Float64()
		if err != nil {
			return nil, err
		}
		floats = append(floats, f)
	}
	if len(floats) == len(v) {
		return floats, nil
	}
	strs := make([]string, 0, len(v))
	for _, x := range v {
		s, ok := x.(string)
		if !ok {
			return nil, fmt.Errorf("labels mix types or are not numbers or strings: %v", v)
		}
		strs = append(strs, s)
	}
	return strs, nil
}

// intValue reads a JSON integer, including one Python wrote as 2.0.
func intValue(x any) (int64, error) {
	n, ok := x.(json.Number)
	if !ok {
		return 0, fmt.Errorf("%v is not a number", x)
	}
	if i, err := n.Int64(); err == nil {
		return i, nil
	}
	f, err := n.Float64()
	if err != nil || f != math.Trunc(f) || math.Abs(f) > 1<<53 {
		return 0, fmt.Errorf("%v is not an integer", x)
	}
	return int64(f), nil
}

// pythonJSON turns the non-standard tokens Python's json.dumps writes
// into standard JSON: NaN into null, Infinity and -Infinity into strings.
func pythonJSON(s string) string {
	var sb strings.Builder
	sb.Grow(len(s))
	inString, escaped := false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		if inString {
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
			sb.WriteByte(c)
			continue
		}
		switch rest := s[i:]; {
		case c == '"':
			inString = true
			sb.WriteByte(c)
		case strings.HasPrefix(rest, "NaN"):
			sb.WriteString("null")
			i += len("NaN") - 1
		case strings.HasPrefix(rest, "-Infinity"):
			sb.WriteString(`"-Infinity"`)
			i += len("-Infinity") - 1
		case strings.HasPrefix(rest, "Infinity"):
			sb.WriteString(`"Infinity"`)
			i += len("Infinity") - 1
		default:
			sb.WriteByte(c)
		}
	}
	return sb.String()
}
