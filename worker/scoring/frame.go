package scoring

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"

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
// column.
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
			x, err := toFloat(v)
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
		msg := "missing columns: " + strings.Join(missing, ", ")
		var unexpected []string
		for _, c := range f.Columns {
			if _, ok := want[c]; !ok {
				unexpected = append(unexpected, c)
			}
		}
		if unexpected != nil {
			msg += "; unexpected columns: " + strings.Join(unexpected, ", ")
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
			x, err := toFloat(row[j])
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
		return api.Errorf(api.ErrInvalidParameterValue, "row %d, column %q: %v", row, f.Columns[col], err)
	}
	return api.Errorf(api.ErrInvalidParameterValue, "row %d, column %d: %v", row, col, err)
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
			return 0, fmt.Errorf("%q is not a number", v)
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
