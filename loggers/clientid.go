package loggers

import (
	"bytes"
	"encoding/json"
)

// ClientRequestID returns the top-level "client_request_id" string of a JSON
// scoring body (the MLflow protocol lets clients name their requests so),
// or "" when there is none or the body is not a JSON object.
func ClientRequestID(body []byte) string {
	v := topLevel(body, `"client_request_id"`)
	if v == nil || v[0] != '"' {
		return ""
	}
	var id string
	if json.Unmarshal(v, &id) != nil {
		return ""
	}
	return id
}

// UsageContext returns the top-level "usage_context" object of a JSON
// body (Databricks' map of strings that callers attribute usage with:
// a project, a team), or nil when there is none or it is not an object
// of strings. Invalid ones are refused for LLM entities (external.Decode)
// before any usage row is written; other bodies' are left out.
func UsageContext(body []byte) map[string]string {
	v := topLevel(body, `"usage_context"`)
	if v == nil || v[0] != '{' {
		return nil
	}
	var m map[string]string
	if json.Unmarshal(v, &m) != nil || len(m) == 0 {
		return nil
	}
	return m
}

// topLevel returns the raw value of the member key (quoted, as it is
// written) of the JSON object body, or nil.
//
// It skips the other values without decoding them: bodies can hold
// thousands of rows, and this runs for every captured request.
func topLevel(body []byte, key string) []byte {
	s := scanner{b: body}
	if s.skipSpace(); !s.eat('{') {
		return nil
	}
	for {
		s.skipSpace()
		k, ok := s.str()
		if !ok {
			return nil
		}
		if s.skipSpace(); !s.eat(':') {
			return nil
		}
		s.skipSpace()
		start := s.i
		if !s.value() {
			return nil
		}
		if string(k) == key {
			return s.b[start:s.i]
		}
		if s.skipSpace(); !s.eat(',') {
			return nil
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
