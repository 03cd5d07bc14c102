package features

import (
	"errors"
	"math"
	"reflect"
	"strconv"
	"time"
)

// Keys are compared as canonical strings, so that the key a request sends
// and the key ClickHouse stores meet whatever their JSON or Go types:
// 42, 42.0 and "42" are one key (clients send ids as strings as often as
// numbers), a string is its text, a composite key joins its parts with
// KeySep, which no id contains.
const KeySep = '\x1f'

var errKeyType = errors.New("a lookup key must be a string, a number or a boolean")

// appendKeyPart appends the canonical form of a raw JSON key value.
func appendKeyPart(dst, raw []byte) ([]byte, error) {
	if len(raw) == 0 {
		return nil, errKeyType
	}
	switch c := raw[0]; {
	case c == '"':
		s, err := unquote(raw)
		if err != nil {
			return nil, err
		}
		return append(dst, s...), nil
	case c == 't' || c == 'f':
		return append(dst, raw...), nil
	case c == '-' || (c >= '0' && c <= '9'):
		for _, d := range raw {
			if d == '.' || d == 'e' || d == 'E' {
				f, err := strconv.ParseFloat(string(raw), 64)
				if err != nil {
					return nil, err
				}
				return appendFloatKey(dst, f), nil
			}
		}
		return append(dst, raw...), nil
	}
	return nil, errKeyType
}

// appendFloatKey writes an integral float as an integer, so that 42.0
// finds the row of 42.
func appendFloatKey(dst []byte, f float64) []byte {
	if f == math.Trunc(f) && math.Abs(f) < 1<<53 {
		return strconv.AppendInt(dst, int64(f), 10)
	}
	return strconv.AppendFloat(dst, f, 'g', -1, 64)
}

// AppendGoKey appends the canonical form of a key value scanned from
// ClickHouse; dateOnly formats a time as a date (a Date column).
func AppendGoKey(dst []byte, v any, dateOnly bool) []byte {
	rv := reflect.ValueOf(v)
	for rv.Kind() == reflect.Pointer {
		if rv.IsNil() {
			return dst
		}
		rv = rv.Elem()
	}
	switch x := rv.Interface().(type) {
	case time.Time:
		if dateOnly {
			return x.UTC().AppendFormat(dst, time.DateOnly)
		}
		return x.UTC().AppendFormat(dst, time.RFC3339)
	}
	switch rv.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return strconv.AppendInt(dst, rv.Int(), 10)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return strconv.AppendUint(dst, rv.Uint(), 10)
	case reflect.Float32, reflect.Float64:
		return appendFloatKey(dst, rv.Float())
	case reflect.Bool:
		return strconv.AppendBool(dst, rv.Bool())
	case reflect.String:
		return append(dst, rv.String()...)
	}
	return append(dst, []byte(reflect.ValueOf(v).String())...)
}
