package scoring

import (
	"encoding/json"
	"math"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/gantry/gantry/api"
)

// maxDepth bounds nesting so that a hostile body cannot exhaust the stack.
// Scoring inputs, tensors included, nest a handful of levels.
const maxDepth = 1000

// object is a decoded JSON object that keeps its keys in the order they were
// written: pandas takes column order from key order, and for models without
// a signature that order decides which value is which feature.
type object struct {
	keys []string
	vals []any
}

// decoder is a small JSON reader written for scoring bodies instead of
// encoding/json because the formats need key order (records, columnar
// inputs), numbers kept as exact text (json.Number), and the NaN, Infinity
// and -Infinity tokens that Python's json module writes. It decodes to
// nil, bool, json.Number, float64 (only for those three tokens), string,
// []any and *object.
type decoder struct {
	s     string
	i     int
	depth int
	// Elements and keys collect on these shared stacks while a list or
	// object is read, so that each one costs a single exact allocation.
	vals []any
	keys []string
}

// decodeJSON decodes one JSON value that must fill the whole body, apart from
// surrounding white space.
func decodeJSON(body []byte) (any, error) {
	// One copy of the body: strings and numbers are then substrings of it
	// and cost no allocation of their own, and the caller may reuse body.
	d := &decoder{s: string(body)}
	d.skipSpace()
	if d.i == len(d.s) {
		return nil, api.Errorf(api.ErrMalformedRequest, "body is empty; send a JSON object")
	}
	v, err := d.value()
	if err != nil {
		return nil, err
	}
	d.skipSpace()
	if d.i < len(d.s) {
		return nil, d.errorf("unexpected %s after the end of the JSON value", d.found())
	}
	return v, nil
}

func (d *decoder) errorf(format string, args ...any) error {
	args = append([]any{d.i}, args...)
	return api.Errorf(api.ErrMalformedRequest, "invalid JSON at byte %d: "+format, args...)
}

// found describes the input at the current position for an error message.
func (d *decoder) found() string {
	if d.i >= len(d.s) {
		return "end of input"
	}
	r, _ := utf8.DecodeRuneInString(d.s[d.i:])
	return strconv.QuoteRune(r)
}

func (d *decoder) skipSpace() {
	for d.i < len(d.s) {
		switch d.s[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

func (d *decoder) value() (any, error) {
	if d.i >= len(d.s) {
		return nil, d.errorf("unexpected end of input")
	}
	switch c := d.s[d.i]; c {
	case '{':
		return d.object()
	case '[':
		return d.array()
	case '"':
		s, err := d.quoted()
		if err != nil {
			return nil, err
		}
		return s, nil
	case 't':
		return d.literal("true", true)
	case 'f':
		return d.literal("false", false)
	case 'n':
		return d.literal("null", nil)
	case 'N':
		return d.literal("NaN", math.NaN())
	case 'I':
		return d.literal("Infinity", math.Inf(1))
	case '-':
		if strings.HasPrefix(d.s[d.i:], "-Infinity") {
			d.i += len("-Infinity")
			return math.Inf(-1), nil
		}
		return d.number()
	default:
		if '0' <= c && c <= '9' {
			return d.number()
		}
	}
	return nil, d.errorf("unexpected %s where a value should start", d.found())
}

func (d *decoder) literal(word string, v any) (any, error) {
	if !strings.HasPrefix(d.s[d.i:], word) {
		return nil, d.errorf("unexpected %s where a value should start", d.found())
	}
	d.i += len(word)
	return v, nil
}

func (d *decoder) enter() error {
	d.depth++
	if d.depth > maxDepth {
		return d.errorf("values nest deeper than %d levels", maxDepth)
	}
	return nil
}

func (d *decoder) array() (any, error) {
	if err := d.enter(); err != nil {
		return nil, err
	}
	d.i++ // [
	base := len(d.vals)
	d.skipSpace()
	if d.i < len(d.s) && d.s[d.i] == ']' {
		d.i++
		d.depth--
		return []any{}, nil
	}
	for {
		d.skipSpace()
		v, err := d.value()
		if err != nil {
			return nil, err
		}
		d.vals = append(d.vals, v)
		d.skipSpace()
		if d.i >= len(d.s) {
			return nil, d.errorf("unexpected end of input in a list")
		}
		switch d.s[d.i] {
		case ',':
			d.i++
		case ']':
			d.i++
			out := make([]any, len(d.vals)-base)
			copy(out, d.vals[base:])
			d.vals = d.vals[:base]
			d.depth--
			return out, nil
		default:
			return nil, d.errorf("unexpected %s in a list; want , or ]", d.found())
		}
	}
}

func (d *decoder) object() (any, error) {
	if err := d.enter(); err != nil {
		return nil, err
	}
	d.i++ // {
	base := len(d.vals)
	d.skipSpace()
	if d.i < len(d.s) && d.s[d.i] == '}' {
		d.i++
		d.depth--
		return &object{}, nil
	}
	for {
		d.skipSpace()
		if d.i >= len(d.s) || d.s[d.i] != '"' {
			return nil, d.errorf("unexpected %s in an object; want a quoted key", d.found())
		}
		k, err := d.quoted()
		if err != nil {
			return nil, err
		}
		d.skipSpace()
		if d.i >= len(d.s) || d.s[d.i] != ':' {
			return nil, d.errorf("unexpected %s after an object key; want :", d.found())
		}
		d.i++
		d.skipSpace()
		v, err := d.value()
		if err != nil {
			return nil, err
		}
		d.keys = append(d.keys, k)
		d.vals = append(d.vals, v)
		d.skipSpace()
		if d.i >= len(d.s) {
			return nil, d.errorf("unexpected end of input in an object")
		}
		switch d.s[d.i] {
		case ',':
			d.i++
		case '}':
			d.i++
			n := len(d.vals) - base
			o := &object{keys: make([]string, n), vals: make([]any, n)}
			copy(o.keys, d.keys[len(d.keys)-n:])
			copy(o.vals, d.vals[base:])
			d.keys = d.keys[:len(d.keys)-n]
			d.vals = d.vals[:base]
			d.depth--
			return o, nil
		default:
			return nil, d.errorf("unexpected %s in an object; want , or }", d.found())
		}
	}
}

// number checks the JSON number grammar and keeps the text, so that large
// integers and long decimals reach the runtime exactly as sent.
func (d *decoder) number() (any, error) {
	start := d.i
	if d.s[d.i] == '-' {
		d.i++
	}
	switch {
	case d.i < len(d.s) && d.s[d.i] == '0':
		d.i++
	case d.i < len(d.s) && '1' <= d.s[d.i] && d.s[d.i] <= '9':
		d.digits()
	default:
		return nil, d.errorf("unexpected %s in a number", d.found())
	}
	if d.i < len(d.s) && d.s[d.i] == '.' {
		d.i++
		if d.digits() == 0 {
			return nil, d.errorf("unexpected %s in a number; want a digit after the point", d.found())
		}
	}
	if d.i < len(d.s) && (d.s[d.i] == 'e' || d.s[d.i] == 'E') {
		d.i++
		if d.i < len(d.s) && (d.s[d.i] == '+' || d.s[d.i] == '-') {
			d.i++
		}
		if d.digits() == 0 {
			return nil, d.errorf("unexpected %s in a number; want a digit in the exponent", d.found())
		}
	}
	return json.Number(d.s[start:d.i]), nil
}

func (d *decoder) digits() int {
	start := d.i
	for d.i < len(d.s) && '0' <= d.s[d.i] && d.s[d.i] <= '9' {
		d.i++
	}
	return d.i - start
}

// quoted reads a quoted string. Strings without escapes or invalid UTF-8,
// which is nearly all of them, are substrings of the body.
func (d *decoder) quoted() (string, error) {
	d.i++ // opening quote
	start := d.i
	for d.i < len(d.s) {
		c := d.s[d.i]
		switch {
		case c == '"':
			d.i++
			return d.s[start : d.i-1], nil
		case c == '\\' || c < 0x20:
			return d.quotedSlow(start)
		case c >= utf8.RuneSelf:
			r, size := utf8.DecodeRuneInString(d.s[d.i:])
			if r == utf8.RuneError && size == 1 {
				return d.quotedSlow(start)
			}
			d.i += size
		default:
			d.i++
		}
	}
	return "", d.errorf("unterminated string")
}

// quotedSlow decodes escapes the way encoding/json does, including its
// choice to turn invalid UTF-8 and lone surrogates into U+FFFD.
func (d *decoder) quotedSlow(start int) (string, error) {
	var b strings.Builder
	b.WriteString(d.s[start:d.i])
	for d.i < len(d.s) {
		c := d.s[d.i]
		switch {
		case c == '"':
			d.i++
			return b.String(), nil
		case c < 0x20:
			return "", d.errorf("control character %U in a string; escape it", rune(c))
		case c == '\\':
			if d.i+1 >= len(d.s) {
				return "", d.errorf("unterminated string")
			}
			d.i++
			switch e := d.s[d.i]; e {
			case '"', '\\', '/':
				b.WriteByte(e)
			case 'b':
				b.WriteByte('\b')
			case 'f':
				b.WriteByte('\f')
			case 'n':
				b.WriteByte('\n')
			case 'r':
				b.WriteByte('\r')
			case 't':
				b.WriteByte('\t')
			case 'u':
				r, ok := hex4(d.s[d.i+1:])
				if !ok {
					return "", d.errorf("invalid \\u escape; want four hex digits")
				}
				d.i += 4
				if utf16.IsSurrogate(r) {
					high := r
					r = utf8.RuneError
					if rest := d.s[d.i+1:]; len(rest) >= 6 && rest[0] == '\\' && rest[1] == 'u' {
						if low, ok := hex4(rest[2:]); ok {
							if dec := utf16.DecodeRune(high, low); dec != utf8.RuneError {
								r = dec
								d.i += 6
							}
						}
					}
				}
				b.WriteRune(r)
			default:
				return "", d.errorf("invalid escape %s after a backslash", d.found())
			}
			d.i++
		case c >= utf8.RuneSelf:
			r, size := utf8.DecodeRuneInString(d.s[d.i:])
			b.WriteRune(r) // RuneError for an invalid byte, as encoding/json does
			d.i += size
		default:
			b.WriteByte(c)
			d.i++
		}
	}
	return "", d.errorf("unterminated string")
}

// hex4 reads four hex digits at the start of s.
func hex4(s string) (rune, bool) {
	if len(s) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range []byte(s[:4]) {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}
