package pyfunc

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
)

// The wire between the worker and its model host (host.py is the other
// half). Every message is a little-endian u32 length and that many bytes.
//
// Worker to host, after the load request:
//
//	'P' u32 rows, u16 columns, then per column:
//	    u16 name length, name, u8 type, u8 has-mask,
//	    [rows bytes of mask, 1 = missing], data:
//	    d, f: rows × f64 (NaN missing)     l, i: rows × i64
//	    b: rows × u8                        s, j: (rows+1) × u32 offsets, UTF-8 bytes
//
// Host to worker: 'R' JSON (loaded, or why not); 'E' u8 kind ('I' the
// input's fault, 'M' the model's) and a message; 'O' and an output:
//
//	'A' array:  u8 type (d l b s j), u32 rows, u32 width (0: 1-D), data
//	'F' frame:  u16 columns, per column u16 name length, name, array
//	'J' JSON:   the whole output as JSON text (not split by rows)
//
// Numbers travel as machine words and strings as one run of bytes, so a
// batch costs a few copies, not a JSON parse, on either side.

// Wire types of columns and arrays.
const (
	typeDouble = 'd'
	typeFloat  = 'f' // sent as f64; the host makes it float32
	typeLong   = 'l'
	typeInt    = 'i' // sent as i64; the host makes it int32
	typeBool   = 'b'
	typeString = 's'
	typeJSON   = 'j' // one JSON text a value: lists, objects, mixed columns
)

// column is one named input column. Exactly one of the value slices is
// used, by typ.
type column struct {
	name    string
	typ     byte
	missing []bool // nil when no value is missing
	f       []float64
	i       []int64
	b       []bool
	s       []string // strings, or JSON texts for typeJSON
}

// batch is one request's rows, as columns.
type batch struct {
	rows int
	cols []column
}

// key says which batches can travel in one message: the same columns of
// the same types.
func (b *batch) key() string {
	n := 0
	for _, c := range b.cols {
		n += len(c.name) + 2
	}
	k := make([]byte, 0, n)
	for _, c := range b.cols {
		k = append(k, c.name...)
		k = append(k, 0, c.typ)
	}
	return string(k)
}

// appendPredict appends a 'P' message (without its length) holding the
// rows of every batch in order. The batches must have equal keys.
func appendPredict(dst []byte, bs []*batch) []byte {
	rows := 0
	for _, b := range bs {
		rows += b.rows
	}
	dst = append(dst, 'P')
	dst = binary.LittleEndian.AppendUint32(dst, uint32(rows))
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(bs[0].cols)))
	for j, c := range bs[0].cols {
		dst = binary.LittleEndian.AppendUint16(dst, uint16(len(c.name)))
		dst = append(dst, c.name...)
		dst = append(dst, c.typ)
		masked := false
		for _, b := range bs {
			masked = masked || b.cols[j].missing != nil
		}
		if masked {
			dst = append(dst, 1)
			for _, b := range bs {
				m := b.cols[j].missing
				for r := 0; r < b.rows; r++ {
					if m != nil && m[r] {
						dst = append(dst, 1)
					} else {
						dst = append(dst, 0)
					}
				}
			}
		} else {
			dst = append(dst, 0)
		}
		switch c.typ {
		case typeDouble, typeFloat:
			for _, b := range bs {
				for _, x := range b.cols[j].f {
					dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(x))
				}
			}
		case typeLong, typeInt:
			for _, b := range bs {
				for _, x := range b.cols[j].i {
					dst = binary.LittleEndian.AppendUint64(dst, uint64(x))
				}
			}
		case typeBool:
			for _, b := range bs {
				for _, x := range b.cols[j].b {
					if x {
						dst = append(dst, 1)
					} else {
						dst = append(dst, 0)
					}
				}
			}
		case typeString, typeJSON:
			off := uint32(0)
			dst = binary.LittleEndian.AppendUint32(dst, 0)
			for _, b := range bs {
				for _, s := range b.cols[j].s {
					off += uint32(len(s))
					dst = binary.LittleEndian.AppendUint32(dst, off)
				}
			}
			for _, b := range bs {
				for _, s := range b.cols[j].s {
					dst = append(dst, s...)
				}
			}
		}
	}
	return dst
}

// array is a 1-D (width 0) or row-major 2-D array of the model's output.
type array struct {
	typ   byte
	rows  int
	width int
	f     []float64
	i     []int64
	b     []bool
	s     []string // strings, or JSON texts for typeJSON
}

// output is one answer of the host.
type output struct {
	kind  byte // 'A', 'F' or 'J'
	arr   array
	names []string // 'F': column names
	cols  []array  // 'F': 1-D columns
	json  []byte   // 'J'
}

// rows is the number of rows of the output, -1 when it has none (a JSON
// object, which cannot be split between requests).
func (o *output) rowCount() int {
	switch o.kind {
	case 'A':
		return o.arr.rows
	case 'F':
		if len(o.cols) == 0 {
			return 0
		}
		return o.cols[0].rows
	}
	return -1
}

var errShort = errors.New("model host answer is cut short")

type reader struct {
	b   []byte
	err error
}

func (r *reader) take(n int) []byte {
	if r.err != nil || n < 0 || n > len(r.b) {
		r.err = errShort
		return nil
	}
	p := r.b[:n]
	r.b = r.b[n:]
	return p
}

func (r *reader) u8() byte {
	p := r.take(1)
	if p == nil {
		return 0
	}
	return p[0]
}

func (r *reader) u16() int {
	p := r.take(2)
	if p == nil {
		return 0
	}
	return int(binary.LittleEndian.Uint16(p))
}

func (r *reader) u32() int {
	p := r.take(4)
	if p == nil {
		return 0
	}
	return int(binary.LittleEndian.Uint32(p))
}

// maxCells bounds what an answer may claim before its bytes are checked:
// a claim is checked against the bytes that are there, so this only keeps
// rows × width from overflowing.
const maxCells = 1 << 40

func (r *reader) array() array {
	a := array{typ: r.u8(), rows: r.u32(), width: r.u32()}
	n := a.rows
	if a.width > 0 {
		n = a.rows * a.width
	}
	if r.err != nil || n > maxCells {
		r.err = errShort
		return a
	}
	switch a.typ {
	case typeDouble:
		p := r.take(8 * n)
		if p != nil {
			a.f = make([]float64, n)
			for k := range a.f {
				a.f[k] = math.Float64frombits(binary.LittleEndian.Uint64(p[8*k:]))
			}
		}
	case typeLong:
		p := r.take(8 * n)
		if p != nil {
			a.i = make([]int64, n)
			for k := range a.i {
				a.i[k] = int64(binary.LittleEndian.Uint64(p[8*k:]))
			}
		}
	case typeBool:
		p := r.take(n)
		if p != nil {
			a.b = make([]bool, n)
			for k := range a.b {
				a.b[k] = p[k] != 0
			}
		}
	case typeString, typeJSON:
		offs := r.take(4 * (n + 1))
		if offs == nil {
			return a
		}
		end := int(binary.LittleEndian.Uint32(offs[4*n:]))
		data := r.take(end)
		if data == nil {
			return a
		}
		a.s = make([]string, n)
		prev := 0
		for k := range a.s {
			next := int(binary.LittleEndian.Uint32(offs[4*(k+1):]))
			if next < prev || next > end {
				r.err = errShort
				return a
			}
			a.s[k] = string(data[prev:next])
			prev = next
		}
	default:
		r.err = fmt.Errorf("model host answered an array of unknown type %q", a.typ)
	}
	return a
}

// parseOutput reads an 'O' answer (after the 'O').
func parseOutput(b []byte) (*output, error) {
	r := &reader{b: b}
	o := &output{kind: r.u8()}
	switch o.kind {
	case 'A':
		o.arr = r.array()
	case 'F':
		n := r.u16()
		for k := 0; k < n && r.err == nil; k++ {
			o.names = append(o.names, string(r.take(r.u16())))
			c := r.array()
			if c.width != 0 && r.err == nil {
				r.err = errors.New("model host answered a frame column that is not 1-D")
			}
			if k > 0 && c.rows != o.cols[0].rows && r.err == nil {
				r.err = errors.New("model host answered frame columns of different lengths")
			}
			o.cols = append(o.cols, c)
		}
	case 'J':
		o.json = r.b
		if !json.Valid(o.json) {
			return nil, errors.New("model host answered invalid JSON")
		}
		r.b = nil
	default:
		return nil, fmt.Errorf("model host answered an output of unknown kind %q", o.kind)
	}
	if r.err != nil {
		return nil, r.err
	}
	if len(r.b) != 0 {
		return nil, fmt.Errorf("model host answer has %d bytes left over", len(r.b))
	}
	return o, nil
}

// Predictions is the rows lo..hi of a model's output, which the worker
// encodes under "predictions" the way MLflow's scoring server writes the
// Python value: arrays as (nested) lists, a DataFrame as records, NaN as
// null (JSON has no NaN).
type Predictions struct {
	o      *output
	lo, hi int
}

// Len is the number of rows, or -1 for an output that is not rows.
func (p Predictions) Len() int {
	if p.o.kind == 'J' {
		return -1
	}
	return p.hi - p.lo
}

// MarshalJSON implements json.Marshaler.
func (p Predictions) MarshalJSON() ([]byte, error) {
	o := p.o
	if o.kind == 'J' {
		return o.json, nil
	}
	b := make([]byte, 0, 16*(p.hi-p.lo)+2)
	b = append(b, '[')
	for r := p.lo; r < p.hi; r++ {
		if r > p.lo {
			b = append(b, ',')
		}
		switch o.kind {
		case 'A':
			b = o.arr.appendRow(b, r)
		case 'F':
			b = append(b, '{')
			for k, c := range o.cols {
				if k > 0 {
					b = append(b, ',')
				}
				b = appendString(b, o.names[k])
				b = append(b, ':')
				b = c.appendCell(b, r)
			}
			b = append(b, '}')
		}
	}
	return append(b, ']'), nil
}

func (a *array) appendRow(b []byte, r int) []byte {
	if a.width == 0 {
		return a.appendCell(b, r)
	}
	b = append(b, '[')
	for k := 0; k < a.width; k++ {
		if k > 0 {
			b = append(b, ',')
		}
		b = a.appendCell(b, r*a.width+k)
	}
	return append(b, ']')
}

func (a *array) appendCell(b []byte, k int) []byte {
	switch a.typ {
	case typeDouble:
		x := a.f[k]
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return append(b, "null"...)
		}
		return strconv.AppendFloat(b, x, 'g', -1, 64)
	case typeLong:
		return strconv.AppendInt(b, a.i[k], 10)
	case typeBool:
		return strconv.AppendBool(b, a.b[k])
	case typeString:
		return appendString(b, a.s[k])
	case typeJSON:
		return append(b, a.s[k]...)
	}
	return append(b, "null"...)
}

func appendString(b []byte, s string) []byte {
	q, _ := json.Marshal(s) // a string always encodes
	return append(b, q...)
}
