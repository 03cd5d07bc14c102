package xgboost

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
)

// XGBoost's UBJSON model format (Booster.save_model("model.ubj"), the
// default of XGBoost 2.x and of mlflow.xgboost since MLflow 2.12) is the
// JSON document's tree in Universal Binary JSON, as XGBoost's UBJWriter
// writes it (src/common/json.cc): big-endian numbers; object keys as an
// int64-length string without the 'S' marker; arrays of one numeric type
// in the optimized form [$<type>#L<count> followed by the raw values.
// Transcoding it to JSON text lets one parser, with its checks, read both.

// isUBJ reports whether b starts like a UBJSON object: '{' and then the
// type marker of the first key's length, never JSON's '"' or whitespace.
func isUBJ(b []byte) bool {
	return len(b) > 1 && b[0] == '{' && (b[1] == 'i' || b[1] == 'U' || b[1] == 'I' || b[1] == 'l' || b[1] == 'L' || b[1] == '}')
}

// maxUBJDepth bounds nesting: XGBoost models are six levels deep, and a
// hostile file must not recurse the worker's stack away.
const maxUBJDepth = 64

var errUBJ = errors.New("invalid UBJSON")

type ubjReader struct {
	b   []byte
	out []byte
}

// ubjToJSON transcodes a UBJSON document into JSON text. Numbers keep
// their exact value: float32 values are written with float32 precision
// so that parsing them back as float32 gives the same bits.
func ubjToJSON(b []byte) ([]byte, error) {
	r := &ubjReader{b: b, out: make([]byte, 0, 2*len(b))}
	if err := r.value(0); err != nil {
		return nil, err
	}
	if len(r.b) != 0 {
		return nil, fmt.Errorf("%w: %d bytes after the document", errUBJ, len(r.b))
	}
	return r.out, nil
}

func (r *ubjReader) take(n int) ([]byte, error) {
	if n < 0 || n > len(r.b) {
		return nil, fmt.Errorf("%w: the document is cut short", errUBJ)
	}
	p := r.b[:n]
	r.b = r.b[n:]
	return p, nil
}

func (r *ubjReader) marker() (byte, error) {
	for {
		p, err := r.take(1)
		if err != nil {
			return 0, err
		}
		if p[0] != 'N' { // no-op
			return p[0], nil
		}
	}
}

// size reads a length or count: an integer of any width, not negative.
func (r *ubjReader) size() (int, error) {
	m, err := r.marker()
	if err != nil {
		return 0, err
	}
	n, err := r.integer(m)
	if err != nil {
		return 0, err
	}
	if n < 0 || n > math.MaxInt32 {
		return 0, fmt.Errorf("%w: length %d", errUBJ, n)
	}
	return int(n), nil
}

func (r *ubjReader) integer(m byte) (int64, error) {
	switch m {
	case 'i':
		p, err := r.take(1)
		if err != nil {
			return 0, err
		}
		return int64(int8(p[0])), nil
	case 'U':
		p, err := r.take(1)
		if err != nil {
			return 0, err
		}
		return int64(p[0]), nil
	case 'I':
		p, err := r.take(2)
		if err != nil {
			return 0, err
		}
		return int64(int16(binary.BigEndian.Uint16(p))), nil
	case 'l':
		p, err := r.take(4)
		if err != nil {
			return 0, err
		}
		return int64(int32(binary.BigEndian.Uint32(p))), nil
	case 'L':
		p, err := r.take(8)
		if err != nil {
			return 0, err
		}
		return int64(binary.BigEndian.Uint64(p)), nil
	}
	return 0, fmt.Errorf("%w: %q is not an integer type", errUBJ, m)
}

func (r *ubjReader) value(depth int) error {
	m, err := r.marker()
	if err != nil {
		return err
	}
	return r.typed(m, depth)
}

// typed transcodes one value whose marker m was read.
func (r *ubjReader) typed(m byte, depth int) error {
	switch m {
	case 'Z':
		r.out = append(r.out, "null"...)
	case 'T':
		r.out = append(r.out, "true"...)
	case 'F':
		r.out = append(r.out, "false"...)
	case 'i', 'U', 'I', 'l', 'L':
		n, err := r.integer(m)
		if err != nil {
			return err
		}
		r.out = strconv.AppendInt(r.out, n, 10)
	case 'd':
		p, err := r.take(4)
		if err != nil {
			return err
		}
		return r.float(float64(math.Float32frombits(binary.BigEndian.Uint32(p))), 32)
	case 'D':
		p, err := r.take(8)
		if err != nil {
			return err
		}
		return r.float(math.Float64frombits(binary.BigEndian.Uint64(p)), 64)
	case 'C':
		p, err := r.take(1)
		if err != nil {
			return err
		}
		r.out = appendJSONString(r.out, p)
	case 'S', 'H':
		n, err := r.size()
		if err != nil {
			return err
		}
		p, err := r.take(n)
		if err != nil {
			return err
		}
		if m == 'H' { // a high-precision number, as text
			if _, err := strconv.ParseFloat(string(p), 64); err != nil {
				return fmt.Errorf("%w: high-precision number %q", errUBJ, p)
			}
			r.out = append(r.out, p...)
		} else {
			r.out = appendJSONString(r.out, p)
		}
	case '[':
		return r.array(depth + 1)
	case '{':
		return r.object(depth + 1)
	default:
		return fmt.Errorf("%w: unknown type marker %q", errUBJ, m)
	}
	return nil
}

func (r *ubjReader) float(x float64, bits int) error {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		// JSON models hold none either; a tree split on NaN cannot be.
		return fmt.Errorf("%w: a number is %v", errUBJ, x)
	}
	r.out = strconv.AppendFloat(r.out, x, 'g', -1, bits)
	return nil
}

// header reads the optimized container header: $<type> and #<count>, each
// optional ($ only with #). count is -1 without one.
func (r *ubjReader) header() (typ byte, count int, err error) {
	count = -1
	if len(r.b) > 0 && r.b[0] == '$' {
		r.b = r.b[1:]
		if typ, err = r.marker(); err != nil {
			return 0, 0, err
		}
		if len(r.b) == 0 || r.b[0] != '#' {
			return 0, 0, fmt.Errorf("%w: a typed container without a count", errUBJ)
		}
	}
	if len(r.b) > 0 && r.b[0] == '#' {
		r.b = r.b[1:]
		if count, err = r.size(); err != nil {
			return 0, 0, err
		}
	}
	// Every other element takes at least a byte, so the document's end
	// bounds the count; these take none.
	if (typ == 'Z' || typ == 'T' || typ == 'F') && count > 1<<16 {
		return 0, 0, fmt.Errorf("%w: %d elements of no size", errUBJ, count)
	}
	return typ, count, nil
}

func (r *ubjReader) array(depth int) error {
	if depth > maxUBJDepth {
		return fmt.Errorf("%w: nested deeper than %d", errUBJ, maxUBJDepth)
	}
	typ, count, err := r.header()
	if err != nil {
		return err
	}
	r.out = append(r.out, '[')
	for k := 0; count < 0 || k < count; k++ {
		if count < 0 {
			if len(r.b) > 0 && r.b[0] == ']' {
				r.b = r.b[1:]
				break
			}
		}
		if k > 0 {
			r.out = append(r.out, ',')
		}
		if typ != 0 {
			err = r.typed(typ, depth)
		} else {
			err = r.value(depth)
		}
		if err != nil {
			return err
		}
	}
	r.out = append(r.out, ']')
	return nil
}

func (r *ubjReader) object(depth int) error {
	if depth > maxUBJDepth {
		return fmt.Errorf("%w: nested deeper than %d", errUBJ, maxUBJDepth)
	}
	typ, count, err := r.header()
	if err != nil {
		return err
	}
	r.out = append(r.out, '{')
	for k := 0; count < 0 || k < count; k++ {
		if count < 0 {
			if len(r.b) > 0 && r.b[0] == '}' {
				r.b = r.b[1:]
				break
			}
		}
		if k > 0 {
			r.out = append(r.out, ',')
		}
		n, err := r.size()
		if err != nil {
			return err
		}
		key, err := r.take(n)
		if err != nil {
			return err
		}
		r.out = appendJSONString(r.out, key)
		r.out = append(r.out, ':')
		if typ != 0 {
			err = r.typed(typ, depth)
		} else {
			err = r.value(depth)
		}
		if err != nil {
			return err
		}
	}
	r.out = append(r.out, '}')
	return nil
}

// appendJSONString appends s as a JSON string, escaping what JSON needs;
// invalid UTF-8 becomes U+FFFD, as encoding/json makes it.
func appendJSONString(dst, s []byte) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	for _, c := range string(s) {
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', byte(c))
		case c < 0x20:
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
		default:
			dst = append(dst, string(c)...)
		}
	}
	return append(dst, '"')
}
