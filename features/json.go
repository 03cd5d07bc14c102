package features

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
)

// A small JSON scanner: the lookup path splices values it never decodes
// (the request's own columns, the stored rows), so it only finds where
// each value starts and ends. Values it hands out point into the input.

var errSyntax = errors.New("invalid JSON")

func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipValue returns the end of the value that starts at b[i] (after space).
func skipValue(b []byte, i int) (int, error) {
	i = skipWS(b, i)
	if i >= len(b) {
		return 0, errSyntax
	}
	switch c := b[i]; {
	case c == '"':
		for i++; i < len(b); i++ {
			switch b[i] {
			case '\\':
				i++
			case '"':
				return i + 1, nil
			}
		}
		return 0, errSyntax
	case c == '{' || c == '[':
		close := byte('}')
		if c == '[' {
			close = ']'
		}
		i = skipWS(b, i+1)
		if i < len(b) && b[i] == close {
			return i + 1, nil
		}
		for {
			if c == '{' {
				end, err := skipValue(b, i)
				if err != nil || b[skipWS(b, i)] != '"' {
					return 0, errSyntax
				}
				i = skipWS(b, end)
				if i >= len(b) || b[i] != ':' {
					return 0, errSyntax
				}
				i++
			}
			end, err := skipValue(b, i)
			if err != nil {
				return 0, err
			}
			i = skipWS(b, end)
			if i >= len(b) {
				return 0, errSyntax
			}
			if b[i] == close {
				return i + 1, nil
			}
			if b[i] != ',' {
				return 0, errSyntax
			}
			i++
		}
	default:
		start := i
		for i < len(b) && (b[i] == '-' || b[i] == '+' || b[i] == '.' || (b[i] >= '0' && b[i] <= '9') ||
			(b[i] >= 'a' && b[i] <= 'z') || (b[i] >= 'A' && b[i] <= 'Z')) {
			i++
		}
		switch v := string(b[start:i]); {
		case v == "true" || v == "false" || v == "null":
		case v != "" && (v[0] == '-' || (v[0] >= '0' && v[0] <= '9')):
			if _, err := strconv.ParseFloat(v, 64); err != nil {
				return 0, errSyntax
			}
		default:
			return 0, errSyntax
		}
		return i, nil
	}
}

// field is one member of a JSON object.
type field struct {
	key string
	val []byte
}

// objectFields splits a JSON object into its members, in order.
func objectFields(b []byte, dst []field) ([]field, error) {
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '{' {
		return nil, errors.New("not a JSON object")
	}
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == '}' {
		return dst, nil
	}
	for {
		i = skipWS(b, i)
		end, err := skipValue(b, i)
		if err != nil || b[i] != '"' {
			return nil, errSyntax
		}
		key, err := unquote(b[i:end])
		if err != nil {
			return nil, err
		}
		i = skipWS(b, end)
		if i >= len(b) || b[i] != ':' {
			return nil, errSyntax
		}
		start := skipWS(b, i+1)
		end, err = skipValue(b, start)
		if err != nil {
			return nil, err
		}
		dst = append(dst, field{key: key, val: b[start:end]})
		i = skipWS(b, end)
		if i >= len(b) {
			return nil, errSyntax
		}
		if b[i] == '}' {
			return dst, nil
		}
		if b[i] != ',' {
			return nil, errSyntax
		}
		i++
	}
}

// arrayElems splits a JSON array into its elements.
func arrayElems(b []byte, dst [][]byte) ([][]byte, error) {
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '[' {
		return nil, errors.New("not a JSON array")
	}
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == ']' {
		return dst, nil
	}
	for {
		start := skipWS(b, i)
		end, err := skipValue(b, start)
		if err != nil {
			return nil, err
		}
		dst = append(dst, b[start:end])
		i = skipWS(b, end)
		if i >= len(b) {
			return nil, errSyntax
		}
		if b[i] == ']' {
			return dst, nil
		}
		if b[i] != ',' {
			return nil, errSyntax
		}
		i++
	}
}

// unquote decodes a JSON string; without escapes it only copies.
func unquote(b []byte) (string, error) {
	if len(b) < 2 || b[0] != '"' {
		return "", errSyntax
	}
	inner := b[1 : len(b)-1]
	for _, c := range inner {
		if c == '\\' {
			var s string
			if err := json.Unmarshal(b, &s); err != nil {
				return "", fmt.Errorf("invalid JSON string: %w", err)
			}
			return s, nil
		}
	}
	return string(inner), nil
}

// appendQuoted appends s as a JSON string.
func appendQuoted(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= 0x80 {
			b, _ := json.Marshal(s)
			return append(dst, b...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}
