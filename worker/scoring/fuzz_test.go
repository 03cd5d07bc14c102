package scoring

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"testing"

	"github.com/gantry/gantry/api"
)

// The seed corpora live in testdata/fuzz; go test runs them as tests.

func FuzzParseJSON(f *testing.F) {
	f.Fuzz(func(t *testing.T, body []byte) {
		checkDecoder(t, body)
		req, err := ParseJSON(body)
		if err != nil {
			checkAPIError(t, err)
			return
		}
		exerciseFrame(t, &req.Frame)
	})
}

func FuzzParseCSV(f *testing.F) {
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := ParseCSV(body)
		if err != nil {
			checkAPIError(t, err)
			return
		}
		if req.Frame.Columns == nil {
			t.Fatal("CSV frame without column names")
		}
		for i, row := range req.Frame.Rows {
			if len(row) != len(req.Frame.Columns) {
				t.Fatalf("row %d has %d cells for %d columns", i, len(row), len(req.Frame.Columns))
			}
		}
		exerciseFrame(t, &req.Frame)
	})
}

// checkDecoder holds the decoder to encoding/json: the same bodies valid, the
// same values out. The only bodies it may accept beyond JSON are those with
// Python's NaN and Infinity tokens.
func checkDecoder(t *testing.T, body []byte) {
	if len(body) > maxDepth { // encoding/json allows deeper nesting
		return
	}
	got, err := decodeJSON(body)
	if !json.Valid(body) {
		if err == nil && !bytes.Contains(body, []byte("NaN")) && !bytes.Contains(body, []byte("Infinity")) {
			t.Fatalf("decoded invalid JSON %q to %#v", body, got)
		}
		return
	}
	if err != nil {
		t.Fatalf("rejected valid JSON %q: %v", body, err)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var want any
	if err := dec.Decode(&want); err != nil {
		t.Fatalf("encoding/json: %v", err)
	}
	if got := plain(got); !reflect.DeepEqual(got, want) {
		t.Fatalf("decoded %q\n got %#v\nwant %#v", body, got, want)
	}
}

func checkAPIError(t *testing.T, err error) {
	var ae *api.Error
	if !errors.As(err, &ae) {
		t.Fatalf("error %v is a %T, want *api.Error", err, err)
	}
	if ae.Code != api.ErrMalformedRequest && ae.Code != api.ErrInvalidParameterValue {
		t.Fatalf("error code %s", ae.Code)
	}
	// Messages quote what the client sent, clipped: never the body back.
	if len(ae.Message) > maxErrorMessage {
		t.Fatalf("error message of %d bytes: %.200s…", len(ae.Message), ae.Message)
	}
}

// maxErrorMessage bounds every parser error: two lists of maxNamesInError
// names of maxNameInError bytes, and words around them.
const maxErrorMessage = 2*maxNamesInError*(maxNameInError+8) + 512

// exerciseFrame converts the frame every way a server would: positionally,
// with a feature count, and by the frame's own column names.
func exerciseFrame(t *testing.T, f *Frame) {
	for _, call := range []struct {
		inputs []string
		n      int
	}{
		{nil, 0},
		{nil, 3},
		{f.Columns, len(f.Columns)},
		{[]string{"a", "b"}, 2},
	} {
		rows, err := f.Floats(call.inputs, call.n)
		if err != nil {
			checkAPIError(t, err)
			continue
		}
		if len(rows) != len(f.Rows) {
			t.Fatalf("Floats gave %d rows for %d", len(rows), len(f.Rows))
		}
		for _, row := range rows {
			for _, x := range row {
				if math.IsInf(float64(float32(x)), 0) {
					t.Fatalf("Floats gave %v, which no float32 runtime takes", x)
				}
			}
		}
	}
}
