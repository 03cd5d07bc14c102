package identity

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// maxFilterLen bounds a SCIM filter: the supported grammar is one
// comparison, and names are short.
const maxFilterLen = 1024

// Filter is a parsed SCIM filter (RFC 7644 §3.4.2.2), of the one form
// Databricks' SDKs send: `attribute op "value"`, with op eq (exact),
// co (contains) or sw (starts with). Attribute names match in any case,
// as the RFC says; values compare exactly for eq and sw/co alike.
type Filter struct {
	Attr  string // as the resource spells it, e.g. userName
	Op    string // eq, co or sw, lower case
	Value string
}

// Match reports whether the attribute value v passes the filter.
func (f *Filter) Match(v string) bool {
	switch f.Op {
	case "eq":
		return v == f.Value
	case "co":
		return strings.Contains(v, f.Value)
	case "sw":
		return strings.HasPrefix(v, f.Value)
	}
	return false
}

// String writes the filter back in SCIM syntax.
func (f *Filter) String() string {
	return f.Attr + " " + f.Op + " " + quote(f.Value)
}

func quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		if r == '"' || r == '\\' {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	b.WriteByte('"')
	return b.String()
}

// ParseFilter parses filter s for a resource whose filterable attributes
// are attrs. An empty s is no filter (nil). Errors say what is wrong and
// what Gantry takes.
func ParseFilter(s string, attrs ...string) (*Filter, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	if len(s) > maxFilterLen {
		return nil, fmt.Errorf("filter: longer than %d bytes", maxFilterLen)
	}
	if !utf8.ValidString(s) {
		return nil, fmt.Errorf("filter: not valid UTF-8")
	}
	want := func() error {
		return fmt.Errorf("filter: %q is not of the form `%s eq \"value\"` (operators eq, co, sw)", s, attrs[0])
	}
	attr, rest, ok := strings.Cut(s, " ")
	if !ok {
		return nil, want()
	}
	rest = strings.TrimLeft(rest, " ")
	op, rest, ok := strings.Cut(rest, " ")
	if !ok {
		return nil, want()
	}
	rest = strings.TrimLeft(rest, " ")
	f := &Filter{Op: strings.ToLower(op)}
	for _, a := range attrs {
		if strings.EqualFold(a, attr) {
			f.Attr = a
		}
	}
	if f.Attr == "" {
		return nil, fmt.Errorf("filter: attribute %q cannot be filtered on; use %s", attr, strings.Join(attrs, " or "))
	}
	switch f.Op {
	case "eq", "co", "sw":
	default:
		return nil, fmt.Errorf("filter: operator %q is not supported; use eq, co or sw", op)
	}
	v, tail, err := unquote(rest)
	if err != nil {
		return nil, fmt.Errorf("filter: value: %v", err)
	}
	if strings.TrimSpace(tail) != "" {
		return nil, fmt.Errorf("filter: %q after the value; Gantry takes one comparison, without and/or", tail)
	}
	f.Value = v
	return f, nil
}

// unquote reads a JSON-style string at the start of s (escapes \" and \\
// only, which is what names need) and returns it with the rest of s.
func unquote(s string) (string, string, error) {
	if !strings.HasPrefix(s, `"`) {
		return "", "", fmt.Errorf("want a string in double quotes")
	}
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		switch c := s[i]; c {
		case '"':
			return b.String(), s[i+1:], nil
		case '\\':
			if i+1 == len(s) || (s[i+1] != '"' && s[i+1] != '\\') {
				return "", "", fmt.Errorf(`only \" and \\ may follow a backslash`)
			}
			i++
			b.WriteByte(s[i])
		default:
			b.WriteByte(c)
		}
	}
	return "", "", fmt.Errorf("the closing double quote is missing")
}
