package scoring

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/gantry/gantry/api"
)

func TestFloats(t *testing.T) {
	nan := math.NaN()
	for _, tc := range []struct {
		name   string
		frame  Frame
		inputs []string
		n      int
		want   [][]float64
	}{
		{
			name:  "positional",
			frame: Frame{Rows: [][]any{{n("1"), n("2.5")}, {n("-3"), n("1e2")}}},
			n:     2,
			want:  [][]float64{{1, 2.5}, {-3, 100}},
		},
		{
			name:  "positional without a feature count",
			frame: Frame{Rows: [][]any{{n("1")}, {n("2")}}},
			want:  [][]float64{{1}, {2}},
		},
		{
			name:   "by name in signature order, extra columns ignored",
			frame:  Frame{Columns: []string{"id", "b", "a"}, Rows: [][]any{{"x", n("2"), n("1")}}},
			inputs: []string{"a", "b"},
			n:      2,
			want:   [][]float64{{1, 2}},
		},
		{
			name:   "names on the model but not the input",
			frame:  Frame{Rows: [][]any{{n("1"), n("2")}}},
			inputs: []string{"a", "b"},
			want:   [][]float64{{1, 2}},
		},
		{
			name:  "names on the input but not the model keep their order",
			frame: Frame{Columns: []string{"b", "a"}, Rows: [][]any{{n("1"), n("2")}}},
			n:     2,
			want:  [][]float64{{1, 2}},
		},
		{
			name: "conversions",
			frame: Frame{Rows: [][]any{{
				nil, "", "  ", "NaN", nan, true, false, " 4.5 ", n("3.4e38"), 7, int64(8), float32(0.5),
			}}},
			want: [][]float64{{nan, nan, nan, nan, nan, 1, 0, 4.5, 3.4e38, 7, 8, 0.5}},
		},
		{
			name:  "large integers round as float64",
			frame: Frame{Rows: [][]any{{n("12345678901234567890123"), n("9007199254740993")}}},
			want:  [][]float64{{12345678901234567890123, 9007199254740992}},
		},
		{
			name:   "empty batch",
			frame:  Frame{Columns: []string{"x"}, Rows: [][]any{}},
			inputs: []string{"a"},
			n:      1,
			want:   [][]float64{},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.frame.Floats(tc.inputs, tc.n)
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestFloatsErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		frame  Frame
		inputs []string
		n      int
		msg    string
	}{
		{
			name:   "missing and unexpected columns",
			frame:  Frame{Columns: []string{"age", "amt"}, Rows: [][]any{{n("1"), n("2")}}},
			inputs: []string{"age", "amount"},
			n:      2,
			msg:    "missing columns: amount; unexpected columns: amt",
		},
		{
			name:   "missing columns only",
			frame:  Frame{Columns: []string{"age"}, Rows: [][]any{{n("1")}}},
			inputs: []string{"age", "amount", "city"},
			msg:    "missing columns: amount, city",
		},
		{
			name:  "row width against the model",
			frame: Frame{Rows: [][]any{{n("1"), n("2"), n("3"), n("4")}, {n("1")}, {n("1")}, {n("1"), n("2"), n("3"), n("4"), n("5")}}},
			n:     4,
			msg:   "row 1 has 1 values, the model expects 4 features",
		},
		{
			name:   "row width against the signature",
			frame:  Frame{Rows: [][]any{{n("1")}}},
			inputs: []string{"a", "b"},
			msg:    "row 0 has 1 values, the model expects 2 features",
		},
		{
			name:  "ragged rows without a feature count",
			frame: Frame{Rows: [][]any{{n("1"), n("2")}, {n("1")}}},
			msg:   "row 1 has 1 values but row 0 has 2",
		},
		{
			name:  "a word",
			frame: Frame{Columns: []string{"a", "b"}, Rows: [][]any{{n("1"), n("2")}, {n("1"), "abc"}}},
			n:     2,
			msg:   `row 1, column "b": "abc" is not a number`,
		},
		{
			name:   "a word found by name",
			frame:  Frame{Columns: []string{"b", "a"}, Rows: [][]any{{"x", n("1")}}},
			inputs: []string{"a", "b"},
			msg:    `row 0, column "b": "x" is not a number`,
		},
		{
			name:  "a list in a cell",
			frame: Frame{Rows: [][]any{{n("1"), []any{n("2")}}}},
			msg:   "row 0, column 1: a list is not a number",
		},
		{
			name:  "an object in a cell",
			frame: Frame{Rows: [][]any{{map[string]any{}}}},
			msg:   "row 0, column 0: an object is not a number",
		},
		{
			name:   "a hand-built row shorter than the columns",
			frame:  Frame{Columns: []string{"a", "b"}, Rows: [][]any{{n("1")}}},
			inputs: []string{"b"},
			msg:    "row 0 has 1 values for 2 columns",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.frame.Floats(tc.inputs, tc.n)
			checkError(t, err, api.ErrInvalidParameterValue, tc.msg)
		})
	}
}

func TestFloatsModelDisagreesWithItself(t *testing.T) {
	f := Frame{Columns: []string{"a"}, Rows: [][]any{{n("1")}}}
	_, err := f.Floats([]string{"a"}, 2)
	if err == nil || !strings.Contains(err.Error(), "the signature has 1 inputs but the model expects 2 features") {
		t.Fatalf("err = %v", err)
	}
	if _, ok := err.(*api.Error); ok {
		t.Errorf("a broken model is not the client's fault, got %v", err)
	}
}

// TestFloatsRefusesInfinity: Infinity, -Infinity, 1e999 (which overflows to
// Infinity) and values beyond float32 once reached the runtime, which
// refused them with a 500; they are the input's fault, a 400 naming the
// row and column.
func TestFloatsRefusesInfinity(t *testing.T) {
	for _, v := range []any{math.Inf(1), math.Inf(-1), n("1e999"), n("-1e400"), n("1e39"), "inf", "-Infinity", "1e999"} {
		f := Frame{Columns: []string{"a", "b"}, Rows: [][]any{{n("1"), n("2")}, {n("1"), v}}}
		for _, call := range []struct {
			inputs []string
			n      int
		}{{nil, 2}, {[]string{"a", "b"}, 2}} {
			_, err := f.Floats(call.inputs, call.n)
			var ae *api.Error
			if !errors.As(err, &ae) || ae.Code != api.ErrInvalidParameterValue || !strings.Contains(ae.Message, `row 1, column "b"`) {
				t.Errorf("Floats with %v (inputs %v) = %v; want INVALID_PARAMETER_VALUE naming row 1, column b", v, call.inputs, err)
			}
		}
	}
}

// TestErrorsBounded: a frame of a million columns that misses the model's
// inputs once got an error naming every column, 8.9 MB; messages name a
// few and count the rest, and cut long names.
func TestErrorsBounded(t *testing.T) {
	cols := make([]string, 1_000_000)
	for i := range cols {
		cols[i] = fmt.Sprintf("column_%d", i)
	}
	cols[1] = strings.Repeat("x", 10_000)
	f := Frame{Columns: cols, Rows: [][]any{make([]any, len(cols))}}
	_, err := f.Floats([]string{"a", "b"}, 2)
	if err == nil {
		t.Fatal("no error for missing inputs")
	}
	msg := err.Error()
	if len(msg) > 2048 {
		t.Fatalf("error is %d bytes: %.300s…", len(msg), msg)
	}
	for _, want := range []string{"missing columns: a, b", "unexpected columns: column_0, xxxx", "and 999990 more"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not contain %q", msg, want)
		}
	}
}
