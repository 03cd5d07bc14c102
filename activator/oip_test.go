package activator

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestTranslateInfer(t *testing.T) {
	for _, tc := range []struct {
		name, in, want, err string
	}{
		{"columns", `{"id": "7", "inputs": [
			{"name": "plan", "shape": [2], "datatype": "BYTES", "data": ["pro", "basic"]},
			{"name": "tenure", "shape": [2, 1], "datatype": "INT64", "data": [[14], [1]]},
			{"name": "spend", "shape": [2], "datatype": "FP64", "data": [31.5, 2]}]}`,
			`{"inputs":{"plan":["pro","basic"],"tenure":[14,1],"spend":[31.5,2]}}`, ""},
		{"rows flat", `{"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32", "data": [1, 2, 3, 4, 5, 6]}]}`,
			`{"instances":[[1,2,3],[4,5,6]]}`, ""},
		{"rows nested", `{"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2], [3, 4]]}]}`,
			`{"instances":[[1,2],[3,4]]}`, ""},
		{"too few values", `{"inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": [1, 2]}]}`, "", `input "x" has 2 values; its shape [3] holds 3`},
		{"too many values", `{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1, 2]}]}`, "", "more than the 1 values"},
		{"wrong type", `{"inputs": [{"name": "x", "shape": [1], "datatype": "INT64", "data": [1.5]}]}`, "", `input "x" value 0: 1.5 is not an integer`},
		{"string as number", `{"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": ["a"]}]}`, "", "a is not a number"},
		{"unknown datatype", `{"inputs": [{"name": "x", "shape": [1], "datatype": "FP8", "data": [1]}]}`, "", `datatype "FP8"`},
		{"3-D", `{"inputs": [{"name": "x", "shape": [1, 1, 1], "datatype": "FP64", "data": [1]}]}`, "", "shape [1 1 1]"},
		{"2-D and 1-D", `{"inputs": [{"name": "a", "shape": [1], "datatype": "FP64", "data": [1]}, {"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [1, 2]}]}`, "", "not both"},
		{"no inputs", `{"inputs": []}`, "", "inputs is empty"},
		{"unknown field", `{"inputs": [], "rows": 1}`, "", `unknown field "rows"`},
		{"huge shape", `{"inputs": [{"name": "x", "shape": [100000, 100000], "datatype": "FP64", "data": []}]}`, "", "dimensions must be"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, out, err := translateInfer([]byte(tc.in))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(out) != tc.want {
				t.Errorf("body = %s, want %s", out, tc.want)
			}
			if tc.name == "columns" && req.ID != "7" {
				t.Errorf("id = %q", req.ID)
			}
		})
	}
}

func TestPredictionTensors(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"labels", `[0, 1, 1]`, `[{"name":"predictions","shape":[3],"datatype":"INT64","data":[0,1,1]}]`},
		{"floats", `[0.5, 1, null]`, `[{"name":"predictions","shape":[3],"datatype":"FP64","data":[0.5,1,null]}]`},
		{"strings", `["high", "low"]`, `[{"name":"predictions","shape":[2],"datatype":"BYTES","data":["high","low"]}]`},
		{"rows", `[[0.1, 0.9], [0.7, 0.3]]`, `[{"name":"predictions","shape":[2,2],"datatype":"FP64","data":[0.1,0.9,0.7,0.3]}]`},
		{"records", `[{"0": 1.5, "1": 2, "10": 3}, {"0": 4, "1": 5, "10": 6}]`,
			`[{"name":"0","shape":[2],"datatype":"FP64","data":[1.5,4]},{"name":"1","shape":[2],"datatype":"INT64","data":[2,5]},{"name":"10","shape":[2],"datatype":"INT64","data":[3,6]}]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var p any
			dec := json.NewDecoder(strings.NewReader(tc.in))
			dec.UseNumber()
			if err := dec.Decode(&p); err != nil {
				t.Fatal(err)
			}
			got, err := predictionTensors(p)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := json.Marshal(got)
			if string(b) != tc.want {
				t.Errorf("tensors = %s\nwant      %s", b, tc.want)
			}
		})
	}
}
