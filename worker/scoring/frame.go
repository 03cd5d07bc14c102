package scoring

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/gantry/gantry/api"
)

// Floats turns the frame into rows of nFeatures float64 features, NaN for a
// missing value.
//
// When inputs (the signature's input names) are given and the frame has
// column names, features are taken by name in the order of inputs; a missing
// input is an error that also lists the columns the model does not know, as
// those are often the misspelt ones. Columns beyond the inputs are otherwise
// ignored, as MLflow ignores them. Without names on either side, each row's
// values are the features in order. nFeatures of 0 means the model did not
// say; rows then need only agree with each other.
//
// Numbers, numeric strings and booleans convert; null, NaN and the empty
// string are missing values. Anything else is an error naming the row and
// column, and so is a number that is infinite (Infinity, or a literal such
// as 1e999 that overflows) or beyond float32's range: runtimes take float32
// features (XGBoost's DMatrix, and the native runtime, refuse such values),
// so it is the input's fault, a 400, not the runtime's.
func (f *Frame) Floats(inputs []string, nFeatures int) ([][]float64, error) {
	if len(inputs) > 0 && nFeatures > 0 && len(inputs) != nFeatures {
		// The model disagrees with itself; no request can fix that.
		return nil, fmt.Errorf("the signature has %d inputs but the model expects %d features", len(inputs), nFeatures)
	}
	if len(f.Rows) == 0 {
		return [][]float64{}, nil
	}
	if len(inputs) > 0 && f.Columns != nil {
		return f.byName(inputs)
	}
	width := nFeatures
	if width == 0 {
		width = len(inputs)
	}
	if width == 0 {
		width = len(f.Rows[0])
	}
	// Check every width before allocating rows × width, which a model's
	// feature count could otherwise make huge for a body of short rows.
	for i, row := range f.Rows {
		if len(row) != width {
			if nFeatures > 0 || len(inputs) > 0 {
				return nil, api.Errorf(api.ErrInvalidParameterValue,
					"row %d has %d values, the model expects %d features", i, len(row), width)
			}
			return nil, api.Errorf(api.ErrInvalidParameterValue,
				"row %d has %d values but row 0 has %d", i, len(row), width)
		}
	}
	out, cells := alloc(len(f.Rows), width)
	for i, row := range f.Rows {
		dst := cells[i*width : (i+1)*width : (i+1)*width]
		for j, v := range row {
			x, err := feature(v)
			if err != nil {
				return nil, f.cellError(i, j, err)
			}
			dst[j] = x
		}
		out[i] = dst
	}
	return out, nil
}

func (f *Frame) byName(inputs []string) ([][]float64, error) {
	at := make(map[string]int, len(f.Columns))
	for j, c := range f.Columns {
		at[c] = j
	}
	want := make(map[string]struct{}, len(inputs))
	idx := make([]int, len(inputs)) // feature k comes from column idx[k]
	var missing []string
	for k, name := range inputs {
		want[name] = struct{}{}
		j, ok := at[name]
		if !ok {
			missing = append(missing, name)
		}
		idx[k] = j
	}
	if missing != nil {
		msg := "missing columns: " + nameList(missing)
		var unexpected []string
		for _, c := range f.Columns {
			if _, ok := want[c]; !ok {
				unexpected = append(unexpected, c)
			}
		}
		if unexpected != nil {
			msg += "; unexpected columns: " + nameList(unexpected)
		}
		return nil, api.Errorf(api.ErrInvalidParameterValue, "%s", msg)
	}
	for i, row := range f.Rows {
		if len(row) != len(f.Columns) {
			return nil, api.Errorf(api.ErrInvalidParameterValue,
				"row %d has %d values for %d columns", i, len(row), len(f.Columns))
		}
	}
	width := len(inputs)
	out, cells := alloc(len(f.Rows), width)
	for i, row := range f.Rows {
		dst := cells[i*width : (i+1)*width : (i+1)*width]
		for k, j := range idx {
			x, err := feature(row[j])
			if err != nil {
				return nil, f.cellError(i, j, err)
			}
			dst[k] = x
		}
		out[i] = dst
	}
	return out, nil
}

// alloc makes rows that share one backing array, two allocations in all.
func alloc(rows, width int) ([][]float64, []float64) {
	return make([][]float64, rows), make([]float64, rows*width)
}

func (f *Frame) cellError(row, col int, err error) error {
	if col < len(f.Columns) {
		return api.Errorf(api.ErrInvalidParameterValue, "row %d, column %q: %v", row, clip(f.Columns[col]), err)
	}
	return api.Errorf(api.ErrInvalidParameterValue, "row %d, column %d: %v", row, col, err)
}

// feature converts one value with toFloat and refuses what no runtime
// takes: ±Inf, and finite values that are infinite as float32.
func feature(v any) (float64, error) {
	x, err := toFloat(v)
	if err != nil {
		return 0, err
	}
	if f := float64(float32(x)); math.IsInf(f, 0) {
		what := "infinite"
		if !math.IsInf(x, 0) {
			what = "beyond float32's range (±3.4e38)"
		}
		return 0, fmt.Errorf("%s is %s; send a finite number, or null for a missing value", clip(valueText(v)), what)
	}
	return x, nil
}

// valueText is how an error names a value: as the client wrote it.
func valueText(v any) string {
	switch v := v.(type) {
	case json.Number:
		return string(v)
	case string:
		return strconv.Quote(v)
	case float64: // Infinity or -Infinity
		if v > 0 {
			return "Infinity"
		}
		return "-Infinity"
	}
	return fmt.Sprint(v)
}

// toFloat converts one value the way pandas' astype(float) would.
func toFloat(v any) (float64, error) {
	switch v := v.(type) {
	case nil:
		return math.NaN(), nil
	case json.Number:
		return parseFloat(string(v))
	case float64:
		return v, nil
	case string:
		s := strings.TrimSpace(v)
		if s == "" {
			return math.NaN(), nil
		}
		x, err := parseFloat(s)
		if err != nil {
			return 0, fmt.Errorf("%s is not a number", clip(strconv.Quote(v)))
		}
		return x, nil
	case bool:
		if v {
			return 1, nil
		}
		return 0, nil
	case int:
		return float64(v), nil
	case int64:
		return float64(v), nil
	case float32:
		return float64(v), nil
	case []any:
		return 0, fmt.Errorf("a list is not a number")
	case map[string]any, *object:
		return 0, fmt.Errorf("an object is not a number")
	}
	return 0, fmt.Errorf("%T is not a number", v)
}

// parseFloat accepts what Python's float() does, including values too large
// for a float64, which become ±Inf as they do in Python.
func parseFloat(s string) (float64, error) {
	x, err := strconv.ParseFloat(s, 64)
	if err != nil {
		if ne, ok := err.(*strconv.NumError); ok && ne.Err == strconv.ErrRange {
			return x, nil
		}
		return 0, err
	}
	return x, nil
}

// Error messages name what a client sent, so they are bounded like it is
// not: a CSV header of a million columns once made an 8.9 MB answer.
const (
	maxNameInError  = 64 // bytes of one name or value
	maxNamesInError = 10 // names in a list
)

// clip cuts s to maxNameInError bytes (at a rune boundary), marking the cut.
func clip(s string) string {
	if len(s) <= maxNameInError {
		return s
	}
	cut := maxNameInError
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// nameList joins the first maxNamesInError names, each clipped, and says
// how many more there are.
func nameList(names []string) string {
	var b strings.Builder
	for i, n := range names {
		if i == maxNamesInError {
			fmt.Fprintf(&b, " and %d more", len(names)-i)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(clip(n))
	}
	return b.String()
}
