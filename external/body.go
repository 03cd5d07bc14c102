package external

import (
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"unicode/utf8"
)

// body writes a provider's JSON request body member by member: byte for
// byte what json.Marshal wrote from the map[string]any it replaces
// (members in key order, strings escaped as encoding/json escapes them,
// extra_params merged in where their keys fall, the unified fields
// winning), without building the map and reflecting over every value of
// it on each call. Members must be added in key order.
type body struct {
	b     []byte
	extra map[string]json.RawMessage
	keys  []string // extra's keys not written yet, in order
	err   error
}

// newBody starts a body of about size bytes, extra_params merged in.
func newBody(size int, extra map[string]json.RawMessage) body {
	w := body{b: make([]byte, 1, size+64), extra: extra}
	w.b[0] = '{'
	if len(extra) > 0 {
		w.keys = slices.Sorted(maps.Keys(extra))
	}
	return w
}

// key starts the member k, after the extra_params that come before it;
// one of the same key is dropped: the unified field wins.
func (w *body) key(k string) {
	for len(w.keys) > 0 && w.keys[0] <= k {
		if w.keys[0] < k {
			w.extraParam(w.keys[0])
		}
		w.keys = w.keys[1:]
	}
	w.name(k)
}

// extraParam writes the extra_params member k as json.Marshal writes a
// json.RawMessage: compacted, HTML characters escaped.
func (w *body) extraParam(k string) {
	w.name(k)
	v, err := json.Marshal(w.extra[k])
	if err != nil && w.err == nil {
		w.err = err
	}
	w.b = append(w.b, v...)
}

func (w *body) name(k string) {
	if len(w.b) > 1 {
		w.b = append(w.b, ',')
	}
	w.b = appendString(w.b, k)
	w.b = append(w.b, ':')
}

// bytes ends the body, after the extra_params that come last.
func (w *body) bytes() ([]byte, error) {
	for _, k := range w.keys {
		w.extraParam(k)
	}
	w.keys = nil
	return append(w.b, '}'), w.err
}

func (w *body) string(k, v string) {
	w.key(k)
	w.b = appendString(w.b, v)
}

func (w *body) int(k string, v int) {
	w.key(k)
	w.b = strconv.AppendInt(w.b, int64(v), 10)
}

// float writes v as json.Marshal writes a float64.
func (w *body) float(k string, v float64) {
	w.key(k)
	if math.IsInf(v, 0) || math.IsNaN(v) {
		if w.err == nil {
			w.err = fmt.Errorf("%s: %v is not a JSON number", k, v)
		}
		return
	}
	f := byte('f')
	if a := math.Abs(v); a != 0 && (a < 1e-6 || a >= 1e21) {
		f = 'e'
	}
	w.b = strconv.AppendFloat(w.b, v, f, -1, 64)
	if n := len(w.b); f == 'e' && n >= 4 && w.b[n-4] == 'e' && w.b[n-3] == '-' && w.b[n-2] == '0' {
		w.b[n-2] = w.b[n-1] // e-07 as e-7
		w.b = w.b[:n-1]
	}
}

// raw writes v, JSON as it is.
func (w *body) raw(k, v string) {
	w.key(k)
	w.b = append(w.b, v...)
}

func (w *body) strings(k string, v []string) {
	list(w, k, v, func(s string) { w.b = appendString(w.b, s) })
}

func (w *body) messages(k string, v []Message) {
	list(w, k, v, func(m Message) {
		w.b = append(w.b, `{"role":`...)
		w.b = appendString(w.b, m.Role)
		w.b = append(w.b, `,"content":`...)
		w.b = appendString(w.b, m.Content)
		w.b = append(w.b, '}')
	})
}

// list writes v as a JSON list, each element by elem; a nil v as null,
// as json.Marshal writes a nil slice.
func list[T any](w *body, k string, v []T, elem func(T)) {
	w.key(k)
	if v == nil {
		w.b = append(w.b, "null"...)
		return
	}
	w.b = append(w.b, '[')
	for i, e := range v {
		if i > 0 {
			w.b = append(w.b, ',')
		}
		elem(e)
	}
	w.b = append(w.b, ']')
}

// sizeOf is about the size of messages and strings in a body, to start
// its buffer large enough.
func sizeOf(msgs []Message, strs ...[]string) int {
	n := 0
	for _, m := range msgs {
		n += len(m.Role) + len(m.Content) + 32
	}
	for _, l := range strs {
		for _, s := range l {
			n += len(s) + 4
		}
	}
	return n
}

// appendString appends s as json.Marshal writes a string: quotes,
// backslashes and control characters escaped, and, as json.Marshal
// escapes HTML too, <, > and &, U+2028 and U+2029; invalid UTF-8 as
// U+FFFD.
func appendString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			start = i + size
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xF])
			start = i + size
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
