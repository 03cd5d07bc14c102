package external

import (
	"bufio"
	"bytes"
	"errors"
	"io"
)

// MaxEventSize bounds one server-sent event (its data lines together): a
// provider that never ends a line cannot make the activator buffer
// without limit. OpenAI's chunks are a few hundred bytes.
const MaxEventSize = 1 << 20

// ErrEventTooLarge is what an event over MaxEventSize ends a stream with.
var ErrEventTooLarge = errors.New("server-sent event over 1 MiB")

// Event is one server-sent event: its "event:" name (empty for the
// default, "message") and its data lines joined by "\n".
type Event struct {
	Name string
	Data []byte
}

// SSEReader reads events as they arrive, following the WHATWG rules that
// providers rely on: lines end in LF, CRLF or CR; "data:" lines
// accumulate; a blank line dispatches; ":" starts a comment; one space
// after the colon is dropped; an event without data is not dispatched.
type SSEReader struct {
	r    *bufio.Reader
	data []byte
	name []byte
	// sawCR is set when the last line ended in CR, so that a following
	// LF (a CRLF split across reads) is not a second, blank line.
	sawCR bool
}

// NewSSEReader reads the events of r: a provider's stream here, a GGUF
// worker's in the activator.
func NewSSEReader(r io.Reader) *SSEReader {
	return &SSEReader{r: bufio.NewReaderSize(r, 4096)}
}

// Next returns the next event. Its Data is valid until the next call. At
// the end of the stream it returns io.EOF; a last event without its
// blank line is dropped, as the spec says.
func (s *SSEReader) Next() (Event, error) {
	for {
		line, err := s.line()
		if err != nil {
			return Event{}, err
		}
		if len(line) == 0 {
			if len(s.data) == 0 {
				s.name = s.name[:0]
				continue
			}
			ev := Event{Name: string(s.name), Data: bytes.TrimSuffix(s.data, []byte("\n"))}
			s.data, s.name = s.data[:0], s.name[:0]
			return ev, nil
		}
		if line[0] == ':' {
			continue
		}
		field, value := line, []byte(nil)
		if i := bytes.IndexByte(line, ':'); i >= 0 {
			field, value = line[:i], line[i+1:]
			value = bytes.TrimPrefix(value, []byte(" "))
		}
		switch string(field) {
		case "data":
			if len(s.data)+len(value)+1 > MaxEventSize {
				return Event{}, ErrEventTooLarge
			}
			s.data = append(s.data, value...)
			s.data = append(s.data, '\n')
		case "event":
			s.name = append(s.name[:0], value...)
		}
		// id and retry mean nothing to a proxy that does not reconnect.
	}
}

// line reads one line without its end, at most MaxEventSize long.
func (s *SSEReader) line() ([]byte, error) {
	var buf []byte
	for {
		b, err := s.r.ReadByte()
		if err != nil {
			if errors.Is(err, io.EOF) && len(buf) > 0 {
				// A line cut by the end of the stream still counts as a
				// line, but no blank line follows, so no event completes.
				return nil, io.ErrUnexpectedEOF
			}
			return nil, err
		}
		if s.sawCR {
			s.sawCR = false
			if b == '\n' {
				continue
			}
		}
		switch b {
		case '\n':
			return buf, nil
		case '\r':
			s.sawCR = true
			return buf, nil
		}
		if len(buf) >= MaxEventSize {
			return nil, ErrEventTooLarge
		}
		buf = append(buf, b)
	}
}
