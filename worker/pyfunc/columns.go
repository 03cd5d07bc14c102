package pyfunc

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/worker/scoring"
)

// schema is what the model's signature says of its inputs: names in order
// and a wire type each. Without named inputs (no signature, or a tensor
// signature) names is nil and the request's own columns are sent, typed by
// their values.
type schema struct {
	names    []string
	types    []byte
	optional []bool // "required": false: the request may leave the column out
}

// newSchema reads the signature's column types the way MLflow's schema
// enforcement does: double, float, long, integer, boolean and string have
// a type of their own; binary, datetime and the rest travel as JSON values.
func newSchema(sig *api.Schema) *schema {
	if sig == nil || len(sig.Inputs) == 0 {
		return &schema{}
	}
	s := &schema{}
	for _, c := range sig.Inputs {
		if c.Name == "" {
			return &schema{}
		}
		s.names = append(s.names, c.Name)
		s.types = append(s.types, wireType(c.Type))
		s.optional = append(s.optional, c.Required != nil && !*c.Required)
	}
	return s
}

func wireType(t string) byte {
	switch t {
	case "double":
		return typeDouble
	case "float":
		return typeFloat
	case "long":
		return typeLong
	case "integer":
		return typeInt
	case "boolean":
		return typeBool
	case "string":
		return typeString
	}
	return typeJSON
}

// toBatch turns a parsed request into columns for the host. Columns are
// matched to the signature by name when both have names (extra columns are
// ignored, as MLflow ignores them), else by position. A value the column's
// type cannot take is a 400 naming the row and the column, so that the
// model never sees it.
func (s *schema) toBatch(f *scoring.Frame) (*batch, error) {
	rows := len(f.Rows)
	b := &batch{rows: rows}
	if s.names == nil {
		return b, s.inferred(f, b)
	}
	idx := make([]int, len(s.names)) // input k comes from column idx[k] of each row
	if f.Columns != nil {
		at := make(map[string]int, len(f.Columns))
		for j, c := range f.Columns {
			at[c] = j
		}
		var missing []string
		for k, name := range s.names {
			j, ok := at[name]
			switch {
			case ok:
			case s.optional[k]:
				j = -1 // all missing, as MLflow fills an optional column
			default:
				missing = append(missing, name)
			}
			idx[k] = j
		}
		if missing != nil {
			return nil, missingColumns(missing, f.Columns, s.names)
		}
		for i, row := range f.Rows {
			if len(row) != len(f.Columns) {
				return nil, api.Errorf(api.ErrInvalidParameterValue,
					"row %d has %d values for %d columns", i, len(row), len(f.Columns))
			}
		}
	} else {
		for k := range idx {
			idx[k] = k
		}
		for i, row := range f.Rows {
			if len(row) != len(s.names) {
				return nil, api.Errorf(api.ErrInvalidParameterValue,
					"row %d has %d values, the model takes %d: %s", i, len(row), len(s.names), nameList(s.names))
			}
		}
	}
	b.cols = make([]column, len(s.names))
	for k, name := range s.names {
		c := &b.cols[k]
		c.name, c.typ = name, s.types[k]
		j := idx[k]
		value := func(i int) any { return f.Rows[i][j] }
		if j < 0 {
			value = func(int) any { return nil }
		}
		if err := c.fill(rows, value); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// inferred fills b from a request to a model without named inputs: the
// request's columns ("0", "1", ... when it has no names, as pandas names
// them), each typed by its values.
func (s *schema) inferred(f *scoring.Frame, b *batch) error {
	width := len(f.Columns)
	if f.Columns == nil && len(f.Rows) > 0 {
		width = len(f.Rows[0])
	}
	for i, row := range f.Rows {
		if len(row) != width {
			return api.Errorf(api.ErrInvalidParameterValue, "row %d has %d values but row 0 has %d", i, len(row), width)
		}
	}
	b.cols = make([]column, width)
	for j := range b.cols {
		c := &b.cols[j]
		if f.Columns != nil {
			c.name = f.Columns[j]
		} else {
			c.name = strconv.Itoa(j)
		}
		c.typ = inferType(f.Rows, j)
		if err := c.fill(b.rows, func(i int) any { return f.Rows[i][j] }); err != nil {
			return err
		}
	}
	return nil
}

// inferType picks a column's type from its values, as pandas does for a
// column without a declared type: numbers (and CSV cells that all read as
// numbers) are doubles, strings strings, booleans booleans, anything else
// or a mix travels as JSON values.
func inferType(rows [][]any, j int) byte {
	var nums, strs, numStrs, bools, other int
	for _, row := range rows {
		switch v := row[j].(type) {
		case nil:
		case json.Number, float64:
			nums++
		case string:
			strs++
			if _, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
				numStrs++
			}
		case bool:
			bools++
		default:
			other++
		}
	}
	switch {
	case other > 0:
		return typeJSON
	case strs > 0 && nums == 0 && bools == 0:
		if numStrs == strs {
			return typeDouble
		}
		return typeString
	case bools > 0 && nums == 0 && strs == 0:
		return typeBool
	case bools > 0 || strs > 0:
		return typeJSON
	}
	return typeDouble
}

// fill converts the column's values, value(i) for row i.
func (c *column) fill(rows int, value func(i int) any) error {
	switch c.typ {
	case typeDouble, typeFloat:
		c.f = make([]float64, rows)
	case typeLong, typeInt:
		c.i = make([]int64, rows)
	case typeBool:
		c.b = make([]bool, rows)
	default:
		c.s = make([]string, rows)
	}
	for i := 0; i < rows; i++ {
		v := value(i)
		if v == nil {
			c.setMissing(i, rows)
			continue
		}
		if err := c.set(i, v, rows); err != nil {
			return api.Errorf(api.ErrInvalidParameterValue, "row %d, column %q: %v", i, clip(c.name), err)
		}
	}
	return nil
}

func (c *column) setMissing(i, rows int) {
	switch c.typ {
	case typeDouble, typeFloat:
		c.f[i] = math.NaN() // pandas' missing number; no mask needed
		return
	}
	if c.missing == nil {
		c.missing = make([]bool, rows)
	}
	c.missing[i] = true
}

func (c *column) set(i int, v any, rows int) error {
	switch c.typ {
	case typeDouble, typeFloat:
		x, missing, err := toNumber(v)
		if err != nil {
			return err
		}
		if missing {
			c.setMissing(i, rows)
			return nil
		}
		if math.IsInf(x, 0) || (c.typ == typeFloat && math.IsInf(float64(float32(x)), 0)) {
			return fmt.Errorf("%s is out of range; send a finite number, or null for a missing value", valueText(v))
		}
		c.f[i] = x
	case typeLong, typeInt:
		x, missing, err := toNumber(v)
		if err != nil {
			return err
		}
		if missing {
			c.setMissing(i, rows)
			return nil
		}
		limit := float64(math.MaxInt64)
		if c.typ == typeInt {
			limit = math.MaxInt32
		}
		if x != math.Trunc(x) || math.Abs(x) > limit {
			return fmt.Errorf("%s is not an integer; the signature says %s", valueText(v), typeName(c.typ))
		}
		if n, ok := v.(json.Number); ok {
			// Exact for integers beyond float64's 53 bits.
			if k, err := strconv.ParseInt(string(n), 10, 64); err == nil {
				c.i[i] = k
				return nil
			}
		}
		c.i[i] = int64(x)
	case typeBool:
		switch v := v.(type) {
		case bool:
			c.b[i] = v
		case string: // CSV cells
			switch strings.ToLower(strings.TrimSpace(v)) {
			case "true", "1":
				c.b[i] = true
			case "false", "0":
				c.b[i] = false
			default:
				return fmt.Errorf("%s is not a boolean", valueText(v))
			}
		default:
			return fmt.Errorf("%s is %s; the signature says boolean", valueText(v), kindOf(v))
		}
	case typeString:
		s, ok := v.(string)
		if !ok {
			return fmt.Errorf("%s is %s; the signature says string", valueText(v), kindOf(v))
		}
		c.s[i] = s
	default:
		t, err := json.Marshal(v)
		if err != nil {
			return fmt.Errorf("cannot send %s to the model: %v", kindOf(v), err)
		}
		c.s[i] = string(t)
	}
	return nil
}

// toNumber converts a number, or a string that reads as one (CSV cells,
// and what pandas' astype(float) takes), or a boolean.
func toNumber(v any) (x float64, missing bool, err error) {
	switch v := v.(type) {
	case json.Number:
		x, err := strconv.ParseFloat(string(v), 64)
		if err != nil && !isRange(err) {
			return 0, false, fmt.Errorf("%s is not a number", valueText(v))
		}
		return x, false, nil
	case float64:
		return v, math.IsNaN(v), nil
	case string:
		t := strings.TrimSpace(v)
		if t == "" {
			return 0, true, nil
		}
		x, err := strconv.ParseFloat(t, 64)
		if err != nil && !isRange(err) {
			return 0, false, fmt.Errorf("%s is not a number", valueText(v))
		}
		return x, math.IsNaN(x), nil
	case bool:
		if v {
			return 1, false, nil
		}
		return 0, false, nil
	}
	return 0, false, fmt.Errorf("%s is not a number", kindOf(v))
}

func isRange(err error) bool {
	ne, ok := err.(*strconv.NumError)
	return ok && ne.Err == strconv.ErrRange
}

func typeName(t byte) string {
	switch t {
	case typeDouble:
		return "double"
	case typeFloat:
		return "float"
	case typeLong:
		return "long"
	case typeInt:
		return "integer"
	case typeBool:
		return "boolean"
	case typeString:
		return "string"
	}
	return "any"
}

func kindOf(v any) string {
	switch v.(type) {
	case bool:
		return "a boolean"
	case json.Number, float64:
		return "a number"
	case string:
		return "a string"
	case []any:
		return "a list"
	case map[string]any:
		return "an object"
	}
	return "a value"
}

// valueText names a value in an error as the client wrote it, clipped.
func valueText(v any) string {
	switch v := v.(type) {
	case json.Number:
		return clip(string(v))
	case string:
		return clip(strconv.Quote(v))
	case float64:
		return strconv.FormatFloat(v, 'g', -1, 64)
	case []any:
		return "a list"
	case map[string]any:
		return "an object"
	}
	return clip(fmt.Sprint(v))
}

func missingColumns(missing, have, want []string) error {
	msg := "missing columns: " + nameList(missing)
	known := make(map[string]bool, len(want))
	for _, w := range want {
		known[w] = true
	}
	var unexpected []string
	for _, c := range have {
		if !known[c] {
			unexpected = append(unexpected, c)
		}
	}
	if unexpected != nil {
		msg += "; unexpected columns: " + nameList(unexpected)
	}
	return api.Errorf(api.ErrInvalidParameterValue, "%s", msg)
}

// Errors name what a client sent, so they are bounded as scoring's are.
const (
	maxNameInError  = 64
	maxNamesInError = 10
)

func clip(s string) string {
	if len(s) <= maxNameInError {
		return s
	}
	cut := maxNameInError
	for cut > 0 && s[cut]&0xC0 == 0x80 {
		cut--
	}
	return s[:cut] + "…"
}

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
