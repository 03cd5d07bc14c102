// Package scoring parses request bodies of the MLflow scoring protocol
// (https://mlflow.org/docs/latest/deployment/deploy-model-locally) into a
// frame of rows, and turns a frame into the float features a native runtime
// takes.
//
// Every error is an *api.Error: MALFORMED_REQUEST when the body cannot be
// read as JSON or CSV or has the wrong top-level shape, and
// INVALID_PARAMETER_VALUE when the data inside has the wrong shape.
package scoring

import (
	"encoding/json"

	"github.com/gantry/gantry/api"
)

// Frame is tabular input: named columns (nil when the input had no names)
// and rows of values. A value is nil (missing), bool, json.Number (a number
// as sent), float64 (NaN and ±Inf only), string, []any or map[string]any.
type Frame struct {
	Columns []string
	Rows    [][]any
}

// Request is a parsed scoring request.
type Request struct {
	Frame           Frame
	Params          map[string]any // nil when the body had none
	ClientRequestID string
}

// The four input formats; a body carries exactly one.
const (
	keySplit     = "dataframe_split"
	keyRecords   = "dataframe_records"
	keyInstances = "instances"
	keyInputs    = "inputs"
)

const formatList = "dataframe_split, dataframe_records, instances, inputs"

// ParseJSON parses a JSON scoring body: an object with exactly one of
// dataframe_split, dataframe_records, instances or inputs, and optionally
// params and client_request_id. The request does not refer to body, which
// the caller may reuse.
func ParseJSON(body []byte) (*Request, error) {
	v, err := decodeJSON(body)
	if err != nil {
		return nil, err
	}
	top, ok := v.(*object)
	if !ok {
		return nil, api.Errorf(api.ErrMalformedRequest,
			"body is %s; send a JSON object with one of %s", kindOf(v), formatList)
	}
	var (
		req     Request
		format  string
		payload any
	)
	for i, k := range top.keys {
		val := top.vals[i]
		switch k {
		case keySplit, keyRecords, keyInstances, keyInputs:
			if format != "" && format != k {
				return nil, api.Errorf(api.ErrMalformedRequest,
					"body has both %s and %s; send exactly one", format, k)
			}
			format, payload = k, val
		case "params":
			switch p := val.(type) {
			case nil:
				req.Params = nil
			case *object:
				req.Params = p.toMap()
			default:
				return nil, api.Errorf(api.ErrInvalidParameterValue, "params is %s; want an object", kindOf(val))
			}
		case "client_request_id":
			switch id := val.(type) {
			case nil:
				req.ClientRequestID = ""
			case string:
				req.ClientRequestID = id
			default:
				return nil, api.Errorf(api.ErrInvalidParameterValue, "client_request_id is %s; want a string", kindOf(val))
			}
		case "usage_context":
			// Databricks' map of strings for the usage table, which the
			// activator reads off the body; the model never sees it.
			if err := checkUsageContext(val); err != nil {
				return nil, err
			}
		default:
			// API.md: a field Gantry does not take is a 400 naming it,
			// never silently ignored.
			return nil, api.Errorf(api.ErrInvalidParameterValue,
				"body has unknown key %q; send one of %s, plus optional params, client_request_id and usage_context", clip(k), formatList)
		}
	}
	switch format {
	case "":
		return nil, api.Errorf(api.ErrMalformedRequest, "body has none of %s", formatList)
	case keySplit:
		err = splitFrame(payload, &req.Frame)
	case keyRecords:
		list, ok := payload.([]any)
		if !ok {
			return nil, api.Errorf(api.ErrInvalidParameterValue,
				"dataframe_records is %s; want a list of objects", kindOf(payload))
		}
		err = recordsFrame(list, keyRecords, &req.Frame)
	case keyInstances:
		list, ok := payload.([]any)
		if !ok {
			return nil, api.Errorf(api.ErrInvalidParameterValue,
				"instances is %s; want a list of rows (send named columns as inputs)", kindOf(payload))
		}
		err = listFrame(list, keyInstances, &req.Frame)
	case keyInputs:
		switch p := payload.(type) {
		case *object:
			err = columnsFrame(p, &req.Frame)
		case []any:
			err = listFrame(p, keyInputs, &req.Frame)
		default:
			return nil, api.Errorf(api.ErrInvalidParameterValue,
				"inputs is %s; want an object of columns or a list of rows", kindOf(payload))
		}
	}
	if err != nil {
		return nil, err
	}
	return &req, nil
}

// splitFrame reads pandas' split orient: {"columns": [...], "data": [[...]],
// "index": [...]}. The index names rows and plays no part in scoring.
func splitFrame(v any, f *Frame) error {
	o, ok := v.(*object)
	if !ok {
		return api.Errorf(api.ErrInvalidParameterValue,
			"dataframe_split is %s; want an object with columns and data", kindOf(v))
	}
	var columns, data, index any
	var hasData bool
	for i, k := range o.keys {
		switch k {
		case "columns":
			columns = o.vals[i]
		case "data":
			data, hasData = o.vals[i], true
		case "index":
			index = o.vals[i]
		default:
			return api.Errorf(api.ErrInvalidParameterValue,
				"dataframe_split has unknown key %q; it takes columns, data and index", clip(k))
		}
	}
	if !hasData {
		return api.Errorf(api.ErrInvalidParameterValue, "dataframe_split has no data")
	}
	list, ok := data.([]any)
	if !ok {
		return api.Errorf(api.ErrInvalidParameterValue,
			"dataframe_split.data is %s; want a list of rows", kindOf(data))
	}
	if columns != nil {
		names, ok := columns.([]any)
		if !ok {
			return api.Errorf(api.ErrInvalidParameterValue,
				"dataframe_split.columns is %s; want a list of names", kindOf(columns))
		}
		f.Columns = make([]string, len(names))
		for i, n := range names {
			switch n := n.(type) {
			case string:
				f.Columns[i] = n
			case json.Number: // pandas allows numbered columns
				f.Columns[i] = string(n)
			default:
				return api.Errorf(api.ErrInvalidParameterValue,
					"dataframe_split.columns[%d] is %s; want a string", i, kindOf(n))
			}
		}
		if err := checkUnique(f.Columns, "dataframe_split.columns"); err != nil {
			return err
		}
	}
	if index != nil {
		idx, ok := index.([]any)
		if !ok {
			return api.Errorf(api.ErrInvalidParameterValue,
				"dataframe_split.index is %s; want a list", kindOf(index))
		}
		if len(idx) != len(list) {
			return api.Errorf(api.ErrInvalidParameterValue,
				"dataframe_split.index has %d entries for %d rows of data", len(idx), len(list))
		}
	}
	if err := rowsFrame(list, "dataframe_split.data", f); err != nil {
		return err
	}
	if f.Columns != nil {
		for i, row := range f.Rows {
			if len(row) != len(f.Columns) {
				return api.Errorf(api.ErrInvalidParameterValue,
					"dataframe_split.data[%d] has %d values for %d columns", i, len(row), len(f.Columns))
			}
		}
	}
	return nil
}

// listFrame reads instances, or inputs given as a list: rows as lists,
// records as objects, or scalars, each of which is a one-feature row.
func listFrame(list []any, where string, f *Frame) error {
	if len(list) > 0 {
		if _, ok := list[0].(*object); ok {
			return recordsFrame(list, where, f)
		}
	}
	return rowsFrame(list, where, f)
}

// rowsFrame takes a list of rows (lists) or of scalars (one value a row).
// Columns stay as the caller set them.
func rowsFrame(list []any, where string, f *Frame) error {
	f.Rows = make([][]any, len(list))
	if len(list) == 0 {
		return nil
	}
	_, lists := list[0].([]any)
	var scalars []any // one backing array for one-value rows
	if !lists {
		scalars = make([]any, len(list))
	}
	for i, v := range list {
		row, isList := v.([]any)
		switch {
		case isObject(v):
			return api.Errorf(api.ErrInvalidParameterValue,
				"%s[%d] is an object; want a list of values", where, i)
		case isList != lists:
			return api.Errorf(api.ErrInvalidParameterValue,
				"%s[%d] is %s but %s[0] is %s; send rows of one kind", where, i, kindOf(v), where, kindOf(list[0]))
		case lists:
			plainRow(row)
			f.Rows[i] = row
		default:
			scalars[i] = v
			f.Rows[i] = scalars[i : i+1 : i+1]
		}
	}
	return nil
}

// maxCells caps the frame that records can make. Records with different
// keys fill each other's gaps with missing values, so a small body of many
// keys and many empty records would otherwise ask for rows × keys cells.
// The cap is more than 16 MiB of dense data can hold.
const maxCells = 1 << 24

// recordsFrame reads a list of objects, one a row. The columns are the union
// of the keys in order of first appearance; a key a record lacks is missing
// (nil), as pandas makes it NaN.
func recordsFrame(list []any, where string, f *Frame) error {
	f.Columns = []string{}
	col := make(map[string]int)
	for i, v := range list {
		o, ok := v.(*object)
		if !ok {
			return api.Errorf(api.ErrInvalidParameterValue,
				"%s[%d] is %s; want an object of column values", where, i, kindOf(v))
		}
		for _, k := range o.keys {
			if _, seen := col[k]; !seen {
				col[k] = len(f.Columns)
				f.Columns = append(f.Columns, k)
			}
		}
	}
	n := len(f.Columns)
	if n > 0 && len(list) > maxCells/n {
		return api.Errorf(api.ErrInvalidParameterValue,
			"%s makes %d rows of %d columns, more than %d values; send fewer rows or fewer distinct keys",
			where, len(list), n, maxCells)
	}
	cells := make([]any, len(list)*n)
	f.Rows = make([][]any, len(list))
	for i, v := range list {
		row := cells[i*n : (i+1)*n : (i+1)*n]
		o := v.(*object)
		for j, k := range o.keys {
			row[col[k]] = plain(o.vals[j])
		}
		f.Rows[i] = row
	}
	return nil
}

// columnsFrame reads the columnar form of inputs: {"col": [values], ...},
// every column the same length.
func columnsFrame(o *object, f *Frame) error {
	f.Columns = []string{}
	col := make(map[string]int)
	var values [][]any // by column
	for i, k := range o.keys {
		vals, ok := o.vals[i].([]any)
		if !ok {
			return api.Errorf(api.ErrInvalidParameterValue,
				"inputs.%s is %s; want a list of the column's values", clip(k), kindOf(o.vals[i]))
		}
		if j, seen := col[k]; seen {
			values[j] = vals // a repeated key replaces, as in Python
			continue
		}
		col[k] = len(f.Columns)
		f.Columns = append(f.Columns, k)
		values = append(values, vals)
	}
	rows := 0
	for j, vals := range values {
		if j == 0 {
			rows = len(vals)
		} else if len(vals) != rows {
			return api.Errorf(api.ErrInvalidParameterValue,
				"inputs.%s has %d values but inputs.%s has %d; columns must have equal lengths",
				clip(f.Columns[j]), len(vals), clip(f.Columns[0]), rows)
		}
	}
	n := len(f.Columns)
	cells := make([]any, rows*n)
	f.Rows = make([][]any, rows)
	for i := range f.Rows {
		row := cells[i*n : (i+1)*n : (i+1)*n]
		for j, vals := range values {
			row[j] = plain(vals[i])
		}
		f.Rows[i] = row
	}
	return nil
}

func isObject(v any) bool {
	_, ok := v.(*object)
	return ok
}

func checkUnique(names []string, where string) error {
	seen := make(map[string]struct{}, len(names))
	for _, n := range names {
		if _, dup := seen[n]; dup {
			return api.Errorf(api.ErrInvalidParameterValue, "%s names column %q twice", where, clip(n))
		}
		seen[n] = struct{}{}
	}
	return nil
}

// plainRow replaces decoder objects inside a row with maps, so that a Frame
// holds only the types its documentation lists.
func plainRow(row []any) {
	for i, v := range row {
		switch v.(type) {
		case *object, []any:
			row[i] = plain(v)
		}
	}
}

// plain turns decoder objects, at any depth, into maps.
func plain(v any) any {
	switch v := v.(type) {
	case *object:
		return v.toMap()
	case []any:
		plainRow(v)
	}
	return v
}

func (o *object) toMap() map[string]any {
	m := make(map[string]any, len(o.keys))
	for i, k := range o.keys {
		m[k] = plain(o.vals[i])
	}
	return m
}

// kindOf names the JSON kind of a decoded value for error messages.
func kindOf(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case json.Number, float64:
		return "a number"
	case string:
		return "a string"
	case []any:
		return "a list"
	case *object, map[string]any:
		return "an object"
	}
	return "a value"
}

// checkUsageContext refuses a usage_context that is not an object of
// strings, as the LLM entities' unified requests do.
func checkUsageContext(val any) error {
	o, ok := val.(*object)
	if !ok && val != nil {
		return api.Errorf(api.ErrInvalidParameterValue, "usage_context is %s; want an object of strings", kindOf(val))
	}
	if o == nil {
		return nil
	}
	for i, v := range o.vals {
		if _, ok := v.(string); !ok {
			return api.Errorf(api.ErrInvalidParameterValue, "usage_context.%s is %s; want a string", clip(o.keys[i]), kindOf(v))
		}
	}
	return nil
}
