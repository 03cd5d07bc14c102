package openai

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
)

// Every external call reads JSON the activator does not keep: the usage
// of a whole answer, the model named by an OpenAI SDK's body, the fields
// of the unified request around their values. json.Unmarshal checks such
// a document in one pass and then, by reflection, walks it again to skip
// what it does not keep; the scanner below checks it in one pass that
// neither decodes nor allocates, and only what is kept is decoded.

// maxDepth is encoding/json's limit on nesting, kept so that both refuse
// the same documents.
const maxDepth = 10000

// errNotObject is a document json.Unmarshal would refuse to decode into
// a struct: not JSON, or JSON but not an object (nor null).
var errNotObject = errors.New("not a JSON object")

// DecodeMember decodes the top-level member name of the JSON document
// doc into dst, as json.Unmarshal(doc, &s) does for a struct s whose one
// field, tagged `json:"name"`, dst points to (see members).
func DecodeMember(doc []byte, name string, dst any) error {
	var buf [2][]byte
	values, err := members(doc, name, buf[:0])
	if err != nil {
		return err
	}
	for _, v := range values {
		if err := json.Unmarshal(v, dst); err != nil {
			return err
		}
	}
	return nil
}

// UsageOf is the usage of a whole OpenAI-shaped answer, as
// DecodeMember(answer, "usage", &u) has it; the counts are read without
// reflection.
func UsageOf(answer []byte) (*Usage, error) {
	var buf [2][]byte
	values, err := members(answer, "usage", buf[:0])
	if err != nil {
		return nil, err
	}
	var u *Usage
	for _, v := range values {
		if err := decodeUsage(v, &u); err != nil {
			return nil, err
		}
	}
	return u, nil
}

// decodeUsage decodes v into *u as json.Unmarshal(v, u) does. What
// providers send, an object whose counts are integers (or null), is read
// here; anything else goes to json.Unmarshal, which decides (it
// overwrites, member by member, what was read here).
func decodeUsage(v []byte, u **Usage) error {
	if string(v) == "null" {
		*u = nil
		return nil
	}
	if *u == nil {
		*u = new(Usage)
	}
	x, common := *u, true
	s := scanner{b: v}
	ok := s.object(maxDepth, func(key, value []byte) {
		var dst *int
		switch {
		case keyIs(key, "prompt_tokens"):
			dst = &x.PromptTokens
		case keyIs(key, "completion_tokens"):
			if string(value) == "null" {
				x.CompletionTokens = nil
				return
			}
			if x.CompletionTokens == nil {
				x.CompletionTokens = new(int)
			}
			dst = x.CompletionTokens
		case keyIs(key, "total_tokens"):
			dst = &x.TotalTokens
		default:
			return
		}
		if string(value) == "null" {
			return // an int keeps its value, as json.Unmarshal does
		}
		n, err := strconv.ParseInt(string(value), 10, 64)
		if err != nil || int64(int(n)) != n {
			common = false
			return
		}
		*dst = int(n)
	})
	if !ok || !common {
		return json.Unmarshal(v, u)
	}
	return nil
}

// members appends to values the value of each top-level member of the
// JSON document doc whose key matches name as encoding/json matches a
// key to a struct field's name (keyIs). doc is checked whole first, and
// refused (errNotObject) where json.Unmarshal into a struct refuses it:
// not JSON, or neither an object nor null (null has no members). The
// other members are scanned, not decoded.
func members(doc []byte, name string, values [][]byte) ([][]byte, error) {
	s := scanner{b: doc}
	s.space()
	if !s.at('{') {
		if s.literal("null") && s.end() {
			return values, nil
		}
		return nil, errNotObject
	}
	ok := s.object(maxDepth, func(key, value []byte) {
		if keyIs(key, name) {
			values = append(values, value)
		}
	})
	if !ok || !s.end() {
		return nil, errNotObject
	}
	return values, nil
}

// keyIs reports whether the object key key (quoted, as sent) matches name
// as encoding/json matches a key to a struct field's name: unescaped,
// then compared with bytes.EqualFold, as its foldName is.
func keyIs(key []byte, name string) bool {
	in := key[1 : len(key)-1]
	if bytes.IndexByte(in, '\\') < 0 {
		// Invalid UTF-8 compares as U+FFFD, which unescaping would
		// have made of it.
		return bytes.EqualFold(in, []byte(name))
	}
	var k string
	return json.Unmarshal(key, &k) == nil && bytes.EqualFold([]byte(k), []byte(name))
}

// scanner checks JSON as encoding/json's scanner does (RFC 8259, any
// bytes in strings, at most maxDepth levels of nesting) and moves past
// values without decoding them. Each method starts at s.i and, when it
// succeeds, leaves s.i after what it read.
type scanner struct {
	b []byte
	i int
}

// space moves past white space.
func (s *scanner) space() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// end reports whether nothing but white space is left.
func (s *scanner) end() bool {
	s.space()
	return s.i == len(s.b)
}

// at reports whether c is next.
func (s *scanner) at(c byte) bool { return s.i < len(s.b) && s.b[s.i] == c }

// skip moves past c if it is next.
func (s *scanner) skip(c byte) bool {
	if s.at(c) {
		s.i++
		return true
	}
	return false
}

// literal moves past lit if it is next.
func (s *scanner) literal(lit string) bool {
	if len(s.b)-s.i < len(lit) || string(s.b[s.i:s.i+len(lit)]) != lit {
		return false
	}
	s.i += len(lit)
	return true
}

// object moves past the object at s.i, whose values may nest depth-1
// more levels, and passes member each member's key (quoted, as sent) and
// value.
func (s *scanner) object(depth int, member func(key, value []byte)) bool {
	if depth == 0 || !s.skip('{') {
		return false
	}
	s.space()
	if s.skip('}') {
		return true
	}
	for {
		s.space()
		k := s.i
		if !s.string() {
			return false
		}
		key := s.b[k:s.i]
		s.space()
		if !s.skip(':') {
			return false
		}
		s.space()
		v := s.i
		if !s.value(depth - 1) {
			return false
		}
		member(key, s.b[v:s.i])
		s.space()
		if s.skip('}') {
			return true
		}
		if !s.skip(',') {
			return false
		}
	}
}

// value moves past the value at s.i, which may nest depth levels. The
// containers it is in are kept in a list, not on the call stack, so that
// a document nested 10,000 deep costs no more than 10 KB.
func (s *scanner) value(depth int) bool {
	var buf [32]byte
	open := buf[:0] // the closer of each container entered, innermost last
	for {
		s.space()
		if s.i == len(s.b) {
			return false
		}
		switch c := s.b[s.i]; {
		case c == '{' || c == '[':
			if len(open) == depth {
				return false
			}
			closer := byte(']')
			if c == '{' {
				closer = '}'
			}
			s.i++
			s.space()
			if s.skip(closer) {
				break // empty: a value ended
			}
			open = append(open, closer)
			if c == '{' && !s.key() {
				return false
			}
			continue // to its first value
		case c == '"':
			if !s.string() {
				return false
			}
		case c == '-' || '0' <= c && c <= '9':
			if !s.number() {
				return false
			}
		default:
			if !s.literal("true") && !s.literal("false") && !s.literal("null") {
				return false
			}
		}
		// A value ended: close the containers that end with it, then on
		// to the next value.
		for {
			if len(open) == 0 {
				return true
			}
			s.space()
			closer := open[len(open)-1]
			if s.skip(closer) {
				open = open[:len(open)-1]
				continue
			}
			if !s.skip(',') || closer == '}' && !s.key() {
				return false
			}
			break
		}
	}
}

// key moves past an object's key and its colon.
func (s *scanner) key() bool {
	s.space()
	if !s.string() {
		return false
	}
	s.space()
	return s.skip(':')
}

// string moves past a string: no control characters, only JSON's
// escapes, any other bytes. (Its bytes are read from locals, not s: the
// loop is most of a scan's time.)
func (s *scanner) string() bool {
	if !s.skip('"') {
		return false
	}
	b, i := s.b, s.i
	for i < len(b) {
		c := b[i]
		i++
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		switch {
		case c == '"':
			s.i = i
			return true
		case c < 0x20 || i == len(b):
			return false
		}
		switch b[i] { // after a backslash
		case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			i++
		case 'u':
			if len(b)-i < 5 || !isHex(b[i+1]) || !isHex(b[i+2]) || !isHex(b[i+3]) || !isHex(b[i+4]) {
				return false
			}
			i += 5
		default:
			return false
		}
	}
	return false
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// number moves past a number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (s *scanner) number() bool {
	s.skip('-')
	if !s.skip('0') && s.digits() == 0 {
		return false
	}
	if s.skip('.') && s.digits() == 0 {
		return false
	}
	if s.skip('e') || s.skip('E') {
		if !s.skip('+') {
			s.skip('-')
		}
		if s.digits() == 0 {
			return false
		}
	}
	return true
}

// digits moves past decimal digits and says how many.
func (s *scanner) digits() int {
	n := s.i
	for s.i < len(s.b) && '0' <= s.b[s.i] && s.b[s.i] <= '9' {
		s.i++
	}
	return s.i - n
}
