package scoring

import (
	"bytes"
	"fmt"
	"testing"
)

// splitBody is a dataframe_split body of rows × cols numbers.
func splitBody(rows, cols int) []byte {
	var b bytes.Buffer
	b.WriteString(`{"dataframe_split": {"columns": [`)
	for j := range cols {
		if j > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, `"f%d"`, j)
	}
	b.WriteString(`], "data": [`)
	for i := range rows {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteByte('[')
		for j := range cols {
			if j > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "%.6f", float64(i*cols+j)/7)
		}
		b.WriteByte(']')
	}
	b.WriteString("]}}")
	return b.Bytes()
}

func BenchmarkParseJSON(b *testing.B) {
	body := splitBody(1000, 10)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseJSON(body); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParseJSONFloats is the whole request path of a native runtime:
// parse, then order and convert the features.
func BenchmarkParseJSONFloats(b *testing.B) {
	body := splitBody(1000, 10)
	names := make([]string, 10)
	for j := range names {
		names[j] = fmt.Sprintf("f%d", j)
	}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		req, err := ParseJSON(body)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := req.Frame.Floats(names, 10); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseCSV(b *testing.B) {
	var body bytes.Buffer
	body.WriteString("f0,f1,f2,f3,f4,f5,f6,f7,f8,f9\n")
	for i := range 1000 {
		for j := range 10 {
			if j > 0 {
				body.WriteByte(',')
			}
			fmt.Fprintf(&body, "%.6f", float64(i*10+j)/7)
		}
		body.WriteByte('\n')
	}
	b.SetBytes(int64(body.Len()))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseCSV(body.Bytes()); err != nil {
			b.Fatal(err)
		}
	}
}
