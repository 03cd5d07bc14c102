package loggers

import (
	"bytes"
	"encoding/json"
)

// ClientRequestID returns the top-level "client_request_id" string of a JSON
// scoring body (the MLflow protocol lets clients name their requests so),
// or "" when there is none or the body is not a JSON object.
//
// It skips the other values without decoding them: bodies can hold
// thousands of rows, and this runs for every captured request.
func ClientRequestID(body []byte) string {
	s := scanner{b: body}
	if s.skipSpace(); !s.eat('{') {
		return ""
	}
	for {
		s.skipSpace()
		key, ok := s.str()
		if !ok {
			return ""
		}
		if s.skipSpace(); !s.eat(':') {
			return ""
		}
		s.skipSpace()
		if string(key) == `"client_request_id"` {
			v, ok := s.str()
			if !ok {
				return ""
			}
			var id string
			if json.Unmarshal(v, &id) != nil {
				return ""
			}
			return id
		}
		if !s.value() {
			return ""
		}
		if s.skipSpace(); !s.eat(',') {
			return ""
		}
	}
}

// scanner walks JSON just far enough to skip values.
type scanner struct {
	b []byte
	i int
}

func (s *scanner) skipSpace() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *scanner) eat(c byte) bool {
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

// str skips a string and returns it with its quotes.
func (s *scanner) str() ([]byte, bool) {
	start := s.i
	if !s.eat('"') {
		return nil, false
	}
	for s.i < len(s.b) {
		j := bytes.IndexAny(s.b[s.i:], `"\`)
		if j < 0 {
			return nil, false
		}
		s.i += j
		if s.b[s.i] == '\\' {
			s.i += 2
			continue
		}
		s.i++
		return s.b[start:s.i], true
	}
	return nil, false
}

// value skips one value of any kind. Containers are skipped by counting
// brackets outside strings; their contents are not checked.
func (s *scanner) value() bool {
	if s.i >= len(s.b) {
		return false
	}
	switch s.b[s.i] {
	case '"':
		_, ok := s.str()
		return ok
	case '{', '[':
		depth := 0
		for s.i < len(s.b) {
			switch s.b[s.i] {
			case '"':
				if _, ok := s.str(); !ok {
					return false
				}
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					s.i++
					return true
				}
			}
			s.i++
		}
		return false
	default: // number, true, false, null
		start := s.i
		for s.i < len(s.b) {
			switch s.b[s.i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return s.i > start
			}
			s.i++
		}
		return false
	}
}
