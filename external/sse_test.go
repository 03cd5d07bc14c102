package external

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestSSEReader(t *testing.T) {
	in := ": comment\r\nevent: a\r\ndata: one\r\ndata:two\r\n\r\n" + // CRLF, two data lines, no space after the colon
		"data: {\"x\":1}\n\n" +
		"event: b\nid: 7\nretry: 10\n\n" + // no data: not dispatched
		"data: cr\r\rdata: last-without-blank"
	r := NewSSEReader(strings.NewReader(in))
	var got []string
	for {
		ev, err := r.Next()
		if err != nil {
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("end = %v, want ErrUnexpectedEOF for a cut line", err)
			}
			break
		}
		got = append(got, ev.Name+"|"+string(ev.Data))
	}
	want := []string{"a|one\ntwo", `|{"x":1}`, "|cr"}
	if strings.Join(got, ";") != strings.Join(want, ";") {
		t.Errorf("events = %q, want %q", got, want)
	}
	// A line that never ends stops at MaxEventSize.
	r = NewSSEReader(io.MultiReader(strings.NewReader("data: "), bytes.NewReader(bytes.Repeat([]byte("x"), MaxEventSize+10))))
	if _, err := r.Next(); !errors.Is(err, ErrEventTooLarge) {
		t.Errorf("endless line: %v", err)
	}
}

func FuzzSSE(f *testing.F) {
	f.Add("data: a\n\n")
	f.Add("event: x\r\ndata: 1\r\ndata: 2\r\n\r\n")
	f.Add(":c\rdata\r\r")
	f.Fuzz(func(t *testing.T, in string) {
		r := NewSSEReader(strings.NewReader(in))
		total := 0
		for i := 0; ; i++ {
			ev, err := r.Next()
			if err != nil {
				break
			}
			total += len(ev.Data)
			if total > len(in) || i > len(in) {
				t.Fatalf("event %d %q from %d bytes of input", i, ev.Data, len(in))
			}
		}
		// Every translator survives any event without panicking.
		r = NewSSEReader(strings.NewReader(in))
		trs := []translator{openAIStream{}, &anthropicStream{}, &cohereStream{}}
		for {
			ev, err := r.Next()
			if err != nil {
				break
			}
			for _, tr := range trs {
				tr.event(ev)
			}
		}
	})
}
