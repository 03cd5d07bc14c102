package scoring

import (
	"fmt"
	"testing"

	"github.com/gantry/gantry/api"
)

func TestParseCSV(t *testing.T) {
	req, err := ParseCSV([]byte("\ufeffage,amount,city\r\n31,12.5,\"Paris, FR\"\n,NA,null\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := Frame{
		Columns: []string{"age", "amount", "city"},
		Rows:    [][]any{{"31", "12.5", "Paris, FR"}, {nil, nil, nil}},
	}
	if !frameEqual(req.Frame, want) {
		t.Errorf("frame = %#v, want %#v", req.Frame, want)
	}
	got, err := req.Frame.Floats([]string{"amount", "age"}, 2)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != "[[12.5 31] [NaN NaN]]" {
		t.Errorf("floats = %v", got)
	}

	req, err = ParseCSV([]byte("a,b\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(req.Frame.Rows) != 0 || req.Frame.Rows == nil {
		t.Errorf("header only: rows = %#v, want empty", req.Frame.Rows)
	}
}

func TestParseCSVErrors(t *testing.T) {
	for _, tc := range []struct {
		body, code, msg string
	}{
		{"", api.ErrMalformedRequest, "CSV body is empty; its first row must name the columns"},
		{"\n\n", api.ErrMalformedRequest, "CSV body is empty"},
		{"a,b\n1,\"2\n", api.ErrMalformedRequest, `invalid CSV: parse error on line 2, column 6: extraneous or missing " in quoted-field`},
		{"a,b\n1,2\"x\n", api.ErrMalformedRequest, `invalid CSV: parse error on line 2, column 4: bare " in non-quoted-field`},
		{"a,b\n1,2\n3\n", api.ErrInvalidParameterValue, "CSV line 3 has 1 fields but the header has 2"},
		{"a,b,a\n1,2,3\n", api.ErrInvalidParameterValue, `the CSV header names column "a" twice`},
	} {
		t.Run(tc.body, func(t *testing.T) {
			_, err := ParseCSV([]byte(tc.body))
			checkError(t, err, tc.code, tc.msg)
		})
	}
}
