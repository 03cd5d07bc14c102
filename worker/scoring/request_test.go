package scoring

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/gantry/gantry/api"
)

func n(s string) json.Number { return json.Number(s) }

func TestParseJSON(t *testing.T) {
	nan := math.NaN()
	for _, tc := range []struct {
		name string
		body string
		want Frame
	}{
		{
			name: "dataframe_split",
			body: `{"dataframe_split": {"columns": ["a", "b"], "data": [[1, "x"], [null, true]]}}`,
			want: Frame{Columns: []string{"a", "b"}, Rows: [][]any{{n("1"), "x"}, {nil, true}}},
		},
		{
			name: "dataframe_split with index",
			body: `{"dataframe_split": {"index": ["r1", "r2"], "columns": ["a"], "data": [[1], [2]]}}`,
			want: Frame{Columns: []string{"a"}, Rows: [][]any{{n("1")}, {n("2")}}},
		},
		{
			name: "dataframe_split without columns",
			body: `{"dataframe_split": {"data": [[1, 2], [3, 4]]}}`,
			want: Frame{Rows: [][]any{{n("1"), n("2")}, {n("3"), n("4")}}},
		},
		{
			name: "dataframe_split numbered columns",
			body: `{"dataframe_split": {"columns": [0, 1], "data": [[1, 2]]}}`,
			want: Frame{Columns: []string{"0", "1"}, Rows: [][]any{{n("1"), n("2")}}},
		},
		{
			name: "dataframe_split scalar data",
			body: `{"dataframe_split": {"columns": ["a"], "data": [1, 2]}}`,
			want: Frame{Columns: []string{"a"}, Rows: [][]any{{n("1")}, {n("2")}}},
		},
		{
			name: "dataframe_split empty",
			body: `{"dataframe_split": {"columns": ["a"], "data": []}}`,
			want: Frame{Columns: []string{"a"}, Rows: [][]any{}},
		},
		{
			name: "dataframe_records union of keys in first-seen order",
			body: `{"dataframe_records": [{"b": 1, "a": 2}, {"a": 3, "c": "x"}]}`,
			want: Frame{Columns: []string{"b", "a", "c"}, Rows: [][]any{{n("1"), n("2"), nil}, {nil, n("3"), "x"}}},
		},
		{
			name: "dataframe_records repeated key keeps the last value",
			body: `{"dataframe_records": [{"a": 1, "a": 2}]}`,
			want: Frame{Columns: []string{"a"}, Rows: [][]any{{n("2")}}},
		},
		{
			name: "instances rows",
			body: `{"instances": [[1, 2.5], [-3e2, 0]]}`,
			want: Frame{Rows: [][]any{{n("1"), n("2.5")}, {n("-3e2"), n("0")}}},
		},
		{
			name: "instances objects",
			body: `{"instances": [{"a": 1}, {"b": 2}]}`,
			want: Frame{Columns: []string{"a", "b"}, Rows: [][]any{{n("1"), nil}, {nil, n("2")}}},
		},
		{
			name: "instances scalars",
			body: `{"instances": [1, "2", null]}`,
			want: Frame{Rows: [][]any{{n("1")}, {"2"}, {nil}}},
		},
		{
			name: "instances empty",
			body: `{"instances": []}`,
			want: Frame{Rows: [][]any{}},
		},
		{
			name: "inputs columnar",
			body: `{"inputs": {"b": [1, 2], "a": [3, 4]}}`,
			want: Frame{Columns: []string{"b", "a"}, Rows: [][]any{{n("1"), n("3")}, {n("2"), n("4")}}},
		},
		{
			name: "inputs rows",
			body: `{"inputs": [[1, 2]]}`,
			want: Frame{Rows: [][]any{{n("1"), n("2")}}},
		},
		{
			name: "inputs records",
			body: `{"inputs": [{"a": 1}]}`,
			want: Frame{Columns: []string{"a"}, Rows: [][]any{{n("1")}}},
		},
		{
			name: "Python's NaN and Infinity tokens",
			body: `{"instances": [[NaN, Infinity, -Infinity]]}`,
			want: Frame{Rows: [][]any{{nan, math.Inf(1), math.Inf(-1)}}},
		},
		{
			name: "large numbers stay exact",
			body: `{"instances": [[12345678901234567890123, 0.1000000000000000055511151231257827]]}`,
			want: Frame{Rows: [][]any{{n("12345678901234567890123"), n("0.1000000000000000055511151231257827")}}},
		},
		{
			name: "nested values become maps and lists",
			body: `{"instances": [[{"x": [1, {"y": null}]}]]}`,
			want: Frame{Rows: [][]any{{map[string]any{"x": []any{n("1"), map[string]any{"y": nil}}}}}},
		},
		{
			name: "escapes",
			body: `{"dataframe_records": [{"caf\u00e9 \"q\"\n\ud83d\ude00\/": "\ud800"}]}`,
			want: Frame{Columns: []string{"café \"q\"\n😀/"}, Rows: [][]any{{"\ufffd"}}},
		},
		{
			name: "white space everywhere",
			body: " \r\n\t{ \"instances\" :\n[ [ 1 , 2 ] ] } \n",
			want: Frame{Rows: [][]any{{n("1"), n("2")}}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := ParseJSON([]byte(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if !frameEqual(req.Frame, tc.want) {
				t.Errorf("frame\n got %#v\nwant %#v", req.Frame, tc.want)
			}
		})
	}
}

// frameEqual is reflect.DeepEqual with NaN equal to NaN.
func frameEqual(a, b Frame) bool {
	if !reflect.DeepEqual(a.Columns, b.Columns) || len(a.Rows) != len(b.Rows) || (a.Rows == nil) != (b.Rows == nil) {
		return false
	}
	for i := range a.Rows {
		if len(a.Rows[i]) != len(b.Rows[i]) {
			return false
		}
		for j := range a.Rows[i] {
			x, xf := a.Rows[i][j].(float64)
			y, yf := b.Rows[i][j].(float64)
			if xf && yf && math.IsNaN(x) && math.IsNaN(y) {
				continue
			}
			if !reflect.DeepEqual(a.Rows[i][j], b.Rows[i][j]) {
				return false
			}
		}
	}
	return true
}

func TestParseJSONParamsAndID(t *testing.T) {
	req, err := ParseJSON([]byte(`{"params": {"k": 1, "nested": {"x": [true]}}, "instances": [[1]], "client_request_id": "req-7"}`))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"k": n("1"), "nested": map[string]any{"x": []any{true}}}
	if !reflect.DeepEqual(req.Params, want) {
		t.Errorf("params = %#v, want %#v", req.Params, want)
	}
	if req.ClientRequestID != "req-7" {
		t.Errorf("client_request_id = %q", req.ClientRequestID)
	}

	// usage_context is for the usage table: checked, not the model's.
	if _, err := ParseJSON([]byte(`{"instances": [[1]], "usage_context": {"team": "risk"}}`)); err != nil {
		t.Errorf("usage_context: %v", err)
	}

	req, err = ParseJSON([]byte(`{"params": null, "client_request_id": null, "instances": [[1]]}`))
	if err != nil {
		t.Fatal(err)
	}
	if req.Params != nil || req.ClientRequestID != "" {
		t.Errorf("null params and id: got %#v, %q", req.Params, req.ClientRequestID)
	}
}

func TestParseJSONErrors(t *testing.T) {
	for _, tc := range []struct {
		body, code, msg string
	}{
		// Unreadable JSON.
		{``, api.ErrMalformedRequest, "body is empty"},
		{`  `, api.ErrMalformedRequest, "body is empty"},
		{`{`, api.ErrMalformedRequest, "invalid JSON at byte 1: unexpected end of input in an object; want a quoted key"},
		{`{"instances": [1, 2,]}`, api.ErrMalformedRequest, "invalid JSON at byte 20: unexpected ']' where a value should start"},
		{`{"instances": [1 2]}`, api.ErrMalformedRequest, "unexpected '2' in a list; want , or ]"},
		{`{"instances" [1]}`, api.ErrMalformedRequest, "want :"},
		{`{"instances": [1]} x`, api.ErrMalformedRequest, "unexpected 'x' after the end of the JSON value"},
		{`{instances: [1]}`, api.ErrMalformedRequest, "want a quoted key"},
		{`{"instances": [01]}`, api.ErrMalformedRequest, "unexpected '1' in a list"},
		{`{"instances": [1.]}`, api.ErrMalformedRequest, "want a digit after the point"},
		{`{"instances": [1e]}`, api.ErrMalformedRequest, "want a digit in the exponent"},
		{`{"instances": [-]}`, api.ErrMalformedRequest, "in a number"},
		{`{"instances": [tru]}`, api.ErrMalformedRequest, "where a value should start"},
		{`{"instances": ["a` + "\x01" + `"]}`, api.ErrMalformedRequest, "control character U+0001"},
		{`{"instances": ["\x"]}`, api.ErrMalformedRequest, "invalid escape 'x' after a backslash"},
		{`{"instances": ["\u12"]}`, api.ErrMalformedRequest, "invalid \\u escape"},
		{`{"instances": ["abc]}`, api.ErrMalformedRequest, "unterminated string"},
		{strings.Repeat("[", 2000), api.ErrMalformedRequest, "deeper than 1000 levels"},
		// Wrong top-level shape.
		{`[[1, 2]]`, api.ErrMalformedRequest, "body is a list; send a JSON object with one of dataframe_split, dataframe_records, instances, inputs"},
		{`{}`, api.ErrMalformedRequest, "body has none of dataframe_split, dataframe_records, instances, inputs"},
		{`{"params": {"k": 1}}`, api.ErrMalformedRequest, "body has none of"},
		{`{"dataframe_split": {"data": [[1]]}, "instances": [[1]]}`, api.ErrMalformedRequest, "body has both dataframe_split and instances; send exactly one"},
		{`{"columns": ["a"], "data": [[1]]}`, api.ErrInvalidParameterValue, `body has unknown key "columns"`},
		{`{"instances": [[1]], "extra": 1}`, api.ErrInvalidParameterValue, `body has unknown key "extra"`},
		{`{"instances": [[1]], "params": [1]}`, api.ErrInvalidParameterValue, "params is a list; want an object"},
		{`{"instances": [[1]], "client_request_id": 7}`, api.ErrInvalidParameterValue, "client_request_id is a number; want a string"},
		{`{"instances": [[1]], "usage_context": ["a"]}`, api.ErrInvalidParameterValue, "usage_context is a list; want an object of strings"},
		{`{"instances": [[1]], "usage_context": {"team": 1}}`, api.ErrInvalidParameterValue, "usage_context.team is a number; want a string"},
		// dataframe_split.
		{`{"dataframe_split": [[1]]}`, api.ErrInvalidParameterValue, "dataframe_split is a list; want an object with columns and data"},
		{`{"dataframe_split": {"columns": ["a"]}}`, api.ErrInvalidParameterValue, "dataframe_split has no data"},
		{`{"dataframe_split": {"data": {"a": 1}}}`, api.ErrInvalidParameterValue, "dataframe_split.data is an object; want a list of rows"},
		{`{"dataframe_split": {"data": [[1]], "dtype": "x"}}`, api.ErrInvalidParameterValue, `dataframe_split has unknown key "dtype"`},
		{`{"dataframe_split": {"columns": "a", "data": [[1]]}}`, api.ErrInvalidParameterValue, "dataframe_split.columns is a string; want a list of names"},
		{`{"dataframe_split": {"columns": [true], "data": [[1]]}}`, api.ErrInvalidParameterValue, "dataframe_split.columns[0] is a boolean; want a string"},
		{`{"dataframe_split": {"columns": ["a", "a"], "data": [[1, 2]]}}`, api.ErrInvalidParameterValue, `dataframe_split.columns names column "a" twice`},
		{`{"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2], [3]]}}`, api.ErrInvalidParameterValue, "dataframe_split.data[1] has 1 values for 2 columns"},
		{`{"dataframe_split": {"index": [0], "data": [[1], [2]]}}`, api.ErrInvalidParameterValue, "dataframe_split.index has 1 entries for 2 rows of data"},
		{`{"dataframe_split": {"index": 0, "data": [[1]]}}`, api.ErrInvalidParameterValue, "dataframe_split.index is a number; want a list"},
		{`{"dataframe_split": {"data": [{"a": 1}]}}`, api.ErrInvalidParameterValue, "dataframe_split.data[0] is an object; want a list of values"},
		// dataframe_records.
		{`{"dataframe_records": {"a": [1]}}`, api.ErrInvalidParameterValue, "dataframe_records is an object; want a list of objects"},
		{`{"dataframe_records": [{"a": 1}, [1]]}`, api.ErrInvalidParameterValue, "dataframe_records[1] is a list; want an object of column values"},
		// instances.
		{`{"instances": {"a": [1]}}`, api.ErrInvalidParameterValue, "instances is an object; want a list of rows (send named columns as inputs)"},
		{`{"instances": null}`, api.ErrInvalidParameterValue, "instances is null; want a list of rows"},
		{`{"instances": [[1], 2]}`, api.ErrInvalidParameterValue, "instances[1] is a number but instances[0] is a list; send rows of one kind"},
		{`{"instances": [1, [2]]}`, api.ErrInvalidParameterValue, "instances[1] is a list but instances[0] is a number; send rows of one kind"},
		{`{"instances": [[1], {"a": 1}]}`, api.ErrInvalidParameterValue, "instances[1] is an object; want a list of values"},
		{`{"instances": [{"a": 1}, 2]}`, api.ErrInvalidParameterValue, "instances[1] is a number; want an object of column values"},
		// inputs.
		{`{"inputs": "x"}`, api.ErrInvalidParameterValue, "inputs is a string; want an object of columns or a list of rows"},
		{`{"inputs": {"a": 1}}`, api.ErrInvalidParameterValue, "inputs.a is a number; want a list of the column's values"},
		{`{"inputs": {"a": [1, 2], "b": [3]}}`, api.ErrInvalidParameterValue, "inputs.b has 1 values but inputs.a has 2; columns must have equal lengths"},
	} {
		t.Run(tc.body, func(t *testing.T) {
			_, err := ParseJSON([]byte(tc.body))
			checkError(t, err, tc.code, tc.msg)
		})
	}
}

// Records with disjoint keys multiply into rows × keys cells; a small body
// must not be able to ask for gigabytes.
func TestParseJSONRecordsTooSparse(t *testing.T) {
	var b strings.Builder
	b.WriteString(`{"dataframe_records": [{`)
	for j := range 4096 {
		if j > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"k%d": 1`, j)
	}
	b.WriteString("}")
	b.WriteString(strings.Repeat(", {}", 4096))
	b.WriteString("]}")
	_, err := ParseJSON([]byte(b.String()))
	checkError(t, err, api.ErrInvalidParameterValue,
		"dataframe_records makes 4097 rows of 4096 columns, more than 16777216 values")
}

func checkError(t *testing.T, err error, code, msg string) {
	t.Helper()
	var ae *api.Error
	if !errors.As(err, &ae) {
		t.Fatalf("error = %v (%T), want an *api.Error", err, err)
	}
	if ae.Code != code || !strings.Contains(ae.Message, msg) {
		t.Errorf("error = %s: %q, want %s containing %q", ae.Code, ae.Message, code, msg)
	}
}
