// Package features looks features up at inference time: it reads the
// keys of an MLflow scoring request, fetches every key's row from the
// online store in one round trip, and writes the request the model gets
// (the request's columns plus the features), or, for a feature-serving
// entity, the answer {"outputs": [...]} itself.
//
// Lookups run in the activator, not the worker: the activator holds the
// route table that names each entity's spec, one connection pool to Redis
// serves every replica behind it, a feature-serving entity needs no worker
// at all (like an external model), and an outage of the store is known
// before the request takes a replica's slot. The cost is that the
// activator reads the body it otherwise forwards untouched; the reader is
// a scanner that splices values without decoding them.
package features

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/features/onlinestore"
)

// Looker fetches rows by key; *onlinestore.Store is one.
type Looker interface {
	Lookup(ctx context.Context, qs []onlinestore.Query) ([]onlinestore.Result, error)
}

var _ Looker = (*onlinestore.Store)(nil)

// Plan is a compiled api.FeatureRoute; safe for concurrent use.
type Plan struct {
	route   api.FeatureRoute
	lookups []*lookup
	// outputs are every lookup's outputs, in spec order; outAt says
	// which lookup and which of its outputs each one is, and outIndex
	// finds one by name. Built once, so that a request needs no map of
	// its own to place the columns.
	outputs  []string
	outAt    []outPos
	outIndex map[string]int
}

type outPos struct{ lk, j int }

type lookup struct {
	table    string
	keys     []string
	features []string
	outputs  []string
	defaults [][]byte // by output; nil where none
	// cols maps features to the positions of the generation last read:
	// generations rarely change columns, so it is rebuilt only when the
	// stored columns differ from the ones it was built for.
	cols atomic.Pointer[colIndex]
}

type colIndex struct {
	raw string
	idx []int // by feature; -1 when the generation lacks it
	n   int   // the generation's columns: a stored row's length
}

// Compile checks r and prepares it for requests.
func Compile(r *api.FeatureRoute) (*Plan, error) {
	if r.Error != "" {
		return nil, errors.New(r.Error)
	}
	p := &Plan{route: *r, outIndex: map[string]int{}}
	for i, l := range r.Lookups {
		if l.Table == "" || len(l.LookupKey) == 0 || len(l.Features) == 0 || len(l.Outputs) != len(l.Features) {
			return nil, fmt.Errorf("feature lookup %d is incomplete (table, lookup_key and features are required)", i)
		}
		lk := &lookup{table: l.Table, keys: l.LookupKey, features: l.Features, outputs: l.Outputs,
			defaults: make([][]byte, len(l.Outputs))}
		for j := range l.Defaults {
			if j < len(lk.defaults) && len(l.Defaults[j]) > 0 {
				lk.defaults[j] = l.Defaults[j]
			}
		}
		for j, o := range l.Outputs {
			if _, dup := p.outIndex[o]; dup {
				return nil, fmt.Errorf("feature %s is the output of two lookups; rename one with rename_outputs", o)
			}
			p.outIndex[o] = len(p.outputs)
			p.outputs = append(p.outputs, o)
			p.outAt = append(p.outAt, outPos{lk: len(p.lookups), j: j})
		}
		p.lookups = append(p.lookups, lk)
	}
	return p, nil
}

// Serving reports whether the plan is a feature-serving entity's.
func (p *Plan) Serving() bool { return p.route.Serving }

// Outputs are the feature columns the plan adds, in spec order.
func (p *Plan) Outputs() []string { return p.outputs }

// Error is a request's failure with its API code: INVALID_PARAMETER_VALUE
// or MALFORMED_REQUEST for what the client sent, TEMPORARILY_UNAVAILABLE
// when the online store failed.
type Error = api.Error

func badRequest(format string, args ...any) *Error {
	return api.Errorf(api.ErrInvalidParameterValue, format, args...)
}

// frame is a scoring request read into rows of raw JSON cells.
type frame struct {
	cols  []string
	index map[string]int
	rows  [][][]byte // row → column → value (nil: absent)
	rest  []field    // other top-level members (params, client_request_id…)
}

func (f *frame) col(name string) int {
	if i, ok := f.index[name]; ok {
		return i
	}
	f.index[name] = len(f.cols)
	f.cols = append(f.cols, name)
	for r := range f.rows {
		f.rows[r] = append(f.rows[r], nil)
	}
	return len(f.cols) - 1
}

func (f *frame) cell(r, c int) []byte {
	if c < len(f.rows[r]) {
		return f.rows[r][c]
	}
	return nil
}

// parseFrame reads the request formats that carry column names:
// dataframe_records, dataframe_split, and instances or inputs as records
// or as columns. Lookups need names to find the key.
func parseFrame(body []byte) (*frame, *Error) {
	top, err := objectFields(body, make([]field, 0, 4))
	if err != nil {
		return nil, api.Errorf(api.ErrMalformedRequest, "the request body is not a JSON object: %v", err)
	}
	f := &frame{index: make(map[string]int, 16), cols: make([]string, 0, 16)}
	var input *field
	for i := range top {
		switch top[i].key {
		case "dataframe_records", "dataframe_split", "instances", "inputs":
			if input != nil {
				return nil, badRequest("the request has both %s and %s; send exactly one", input.key, top[i].key)
			}
			input = &top[i]
		default:
			f.rest = append(f.rest, top[i])
		}
	}
	if input == nil {
		return nil, badRequest("the request has none of dataframe_records, dataframe_split, instances or inputs")
	}
	switch {
	case input.key == "dataframe_split":
		parts, err := objectFields(input.val, nil)
		if err != nil {
			return nil, badRequest("dataframe_split must be an object with columns and data")
		}
		var cols, data []byte
		for _, p := range parts {
			switch p.key {
			case "columns":
				cols = p.val
			case "data":
				data = p.val
			}
		}
		names, err := arrayElems(cols, nil)
		if err != nil {
			return nil, badRequest("dataframe_split.columns must be an array of names")
		}
		for _, n := range names {
			s, err := unquote(n)
			if err != nil {
				return nil, badRequest("dataframe_split.columns must be an array of names")
			}
			if _, dup := f.index[s]; dup {
				return nil, badRequest("dataframe_split.columns names %s twice", s)
			}
			f.col(s)
		}
		rows, err := arrayElems(data, nil)
		if err != nil {
			return nil, badRequest("dataframe_split.data must be an array of rows")
		}
		for i, r := range rows {
			cells, err := arrayElems(r, make([][]byte, 0, len(f.cols)))
			if err != nil || len(cells) != len(f.cols) {
				return nil, badRequest("dataframe_split.data[%d] must be an array of %d values, one per column", i, len(f.cols))
			}
			f.rows = append(f.rows, cells)
		}
	case input.val[0] == '[':
		recs, err := arrayElems(input.val, nil)
		if err != nil {
			return nil, badRequest("%s must be an array of records", input.key)
		}
		kv := make([]field, 0, 16)
		f.rows = make([][][]byte, 0, len(recs))
		for i, rec := range recs {
			kv, err = objectFields(rec, kv[:0])
			if err != nil {
				return nil, badRequest("%s[%d] is not an object: feature lookup needs named columns (send dataframe_records or dataframe_split)", input.key, i)
			}
			// Room for this record's columns, so that the row does not
			// grow as they are named.
			f.rows = append(f.rows, make([][]byte, len(f.cols), max(len(f.cols), len(kv))))
			for _, c := range kv {
				j := f.col(c.key)
				f.rows[i][j] = c.val
			}
		}
	case input.val[0] == '{' && input.key != "dataframe_records":
		cols, err := objectFields(input.val, nil)
		if err != nil {
			return nil, badRequest("%s must be an object of columns", input.key)
		}
		n := -1
		for _, c := range cols {
			vals, err := arrayElems(c.val, nil)
			if err != nil {
				return nil, badRequest("%s.%s must be an array", input.key, c.key)
			}
			if n >= 0 && len(vals) != n {
				return nil, badRequest("%s.%s has %d values, the other columns %d", input.key, c.key, len(vals), n)
			}
			if n < 0 {
				n = len(vals)
				f.rows = make([][][]byte, n)
			}
			j := f.col(c.key)
			for r, v := range vals {
				f.rows[r][j] = v
			}
		}
	default:
		return nil, badRequest("%s must be an array of records", input.key)
	}
	if len(f.rows) == 0 {
		return nil, badRequest("the request has no rows")
	}
	return f, nil
}

// fetched is one lookup's answer: by row of the request, the stored row
// split into values (nil: no row, or no lookup needed).
type fetched struct {
	keys  []string // the request's key of each row; "" when not looked up
	vals  [][][]byte
	index *colIndex
}

// resolve looks up every row's keys. Rows that give every output of a
// lookup themselves are not looked up for it (a feature in the request
// overrides the lookup). Its slices are carved from a few allocations
// shared by the lookups: it runs on every request.
func (p *Plan) resolve(ctx context.Context, f *frame, store Looker) ([]fetched, *Error) {
	nl, nr := len(p.lookups), len(f.rows)
	out := make([]fetched, nl)
	qs := make([]onlinestore.Query, nl)
	keys := make([]string, nl*nr)  // lookup i's at [i*nr:]
	rowq := make([]int, nl*nr)     // row → position in qs[i].Keys, -1 none
	qkeys := make([]string, 0, nr) // the distinct keys, each lookup's after the last
	var kb [64]byte                // most keys fit: the key is built without an allocation
	buf := kb[:0]
	var seen map[string]int // for many rows; a few are searched
	some := false           // a query has keys
	for i, l := range p.lookups {
		qs[i].Table = l.table
		out[i].keys = keys[i*nr : (i+1)*nr : (i+1)*nr]
		rq := rowq[i*nr : (i+1)*nr]
		first := len(qkeys)
		if seen != nil {
			clear(seen)
		}
		for r := range f.rows {
			rq[r] = -1
			if p.overridden(f, r, l) {
				continue
			}
			buf = buf[:0]
			for k, kc := range l.keys {
				c, ok := f.index[kc]
				v := []byte(nil)
				if ok {
					v = f.cell(r, c)
				}
				if v == nil || string(v) == "null" {
					return nil, badRequest("row %d has no %s, the lookup key of feature table %s", r, kc, l.table)
				}
				if k > 0 {
					buf = append(buf, KeySep)
				}
				var err error
				if buf, err = appendKeyPart(buf, v); err != nil {
					return nil, badRequest("row %d: %s (the lookup key of feature table %s) is %s: %v", r, kc, l.table, clip(v), err)
				}
			}
			q := -1
			if nr > 8 {
				if seen == nil {
					seen = make(map[string]int, nr)
				}
				if at, ok := seen[string(buf)]; ok {
					q = at
				}
			} else {
				for at, k := range qkeys[first:] {
					if k == string(buf) {
						q = at
						break
					}
				}
			}
			if q < 0 {
				key := string(buf)
				q = len(qkeys) - first
				qkeys = append(qkeys, key)
				if seen != nil {
					seen[key] = q
				}
			}
			out[i].keys[r] = qkeys[first+q]
			rq[r] = q
		}
		qs[i].Keys = qkeys[first:len(qkeys):len(qkeys)]
		some = some || len(qs[i].Keys) > 0
	}
	vals := make([][][]byte, nl*nr)
	for i := range out {
		out[i].vals = vals[i*nr : (i+1)*nr : (i+1)*nr]
	}
	if !some {
		// Every row gives every feature: nothing to look up.
		return out, nil
	}
	res, err := store.Lookup(ctx, qs)
	switch {
	case errors.Is(err, onlinestore.ErrNotPublished):
		return nil, api.Errorf(api.ErrTemporarilyUnavailable, "feature lookup: %v; publish it (POST /api/2.0/feature-store/tables/{table}/publish)", err)
	case err != nil:
		return nil, api.Errorf(api.ErrTemporarilyUnavailable, "feature lookup failed, no prediction was made: %v", err)
	}
	split := make([][][]byte, len(qkeys))
	at := 0
	for i, l := range p.lookups {
		sp := split[at : at+len(qs[i].Keys)]
		at += len(qs[i].Keys)
		if len(qs[i].Keys) == 0 {
			continue // every row overrides this lookup
		}
		ix, err := l.columns(res[i].Columns)
		if err != nil {
			return nil, api.Errorf(api.ErrInternal, "feature table %s: %v", l.table, err)
		}
		out[i].index = ix
		for r := range f.rows {
			q := rowq[i*nr+r]
			if q < 0 || res[i].Rows[q] == nil {
				continue
			}
			if sp[q] == nil {
				vs, err := arrayElems(res[i].Rows[q], make([][]byte, 0, ix.n))
				if err != nil {
					return nil, api.Errorf(api.ErrInternal, "feature table %s: a stored row is not a JSON array: %v", l.table, err)
				}
				sp[q] = vs
			}
			out[i].vals[r] = sp[q]
		}
	}
	return out, nil
}

// overridden reports whether row r gives every output of l itself.
func (p *Plan) overridden(f *frame, r int, l *lookup) bool {
	for _, o := range l.outputs {
		c, ok := f.index[o]
		if !ok || f.cell(r, c) == nil {
			return false
		}
	}
	return true
}

// columns maps l's features to the positions of the stored columns raw.
func (l *lookup) columns(raw string) (*colIndex, error) {
	if ix := l.cols.Load(); ix != nil && ix.raw == raw {
		return ix, nil
	}
	var cols []string
	if err := json.Unmarshal([]byte(raw), &cols); err != nil {
		return nil, fmt.Errorf("stored columns %q: %w", raw, err)
	}
	ix := &colIndex{raw: raw, idx: make([]int, len(l.features)), n: len(cols)}
	for j, name := range l.features {
		ix.idx[j] = slices.Index(cols, name)
	}
	l.cols.Store(ix)
	return ix, nil
}

// value is output j of lookup i for row r: the request's own value, the
// stored one, or the default; an error names the key and table when there
// is none.
func (p *Plan) value(f *frame, fs []fetched, i, j, r int) ([]byte, *Error) {
	l := p.lookups[i]
	if c, ok := f.index[l.outputs[j]]; ok {
		if v := f.cell(r, c); v != nil {
			return v, nil
		}
	}
	vals := fs[i].vals[r]
	if vals != nil {
		k := fs[i].index.idx[j]
		if k >= 0 && k < len(vals) && string(vals[k]) != "null" {
			return vals[k], nil
		}
		if d := l.defaults[j]; d != nil {
			return d, nil
		}
		if k < 0 {
			return nil, api.Errorf(api.ErrTemporarilyUnavailable,
				"feature table %s as published has no column %s; publish it again or fix the feature spec", l.table, l.features[j])
		}
		return []byte("null"), nil
	}
	if d := l.defaults[j]; d != nil {
		return d, nil
	}
	return nil, badRequest("no row for %s in feature table %s, and the feature spec gives no default for %s",
		keyText(l.keys, fs[i].keys[r]), l.table, l.outputs[j])
}

// keyText writes a canonical key as user_id=42 (or a=1, b=x).
func keyText(names []string, key string) string {
	var b []byte
	start, part := 0, 0
	for i := 0; i <= len(key); i++ {
		if i == len(key) || key[i] == KeySep {
			if part > 0 {
				b = append(b, ", "...)
			}
			if part < len(names) {
				b = append(b, names[part]...)
				b = append(b, '=')
			}
			b = append(b, key[start:i]...)
			start, part = i+1, part+1
		}
	}
	return string(b)
}

func clip(b []byte) string {
	if len(b) > 64 {
		return string(b[:64]) + "…"
	}
	return string(b)
}

// Augment returns the request the model gets: body's columns plus every
// looked-up feature, as dataframe_split, with body's other members (params,
// client_request_id) kept. order, when not empty, puts the columns it names
// first, in its order (the model's signature); the rest follow.
func (p *Plan) Augment(ctx context.Context, body []byte, store Looker) ([]byte, *Error) {
	f, e := parseFrame(body)
	if e != nil {
		return nil, e
	}
	fs, e := p.resolve(ctx, f, store)
	if e != nil {
		return nil, e
	}
	// Columns: the request's, then the outputs it lacks; a signature's
	// order wins. A column is a source: the request's column c (c >= 0)
	// or output k of the plan (^k); a name that is both is the output,
	// whose value is the request's when it gives one.
	nc := len(f.cols)
	srcs := make([]int, 0, nc+len(p.outputs))
	used := make([]bool, nc+len(p.outputs)) // by c, then nc+k
	add := func(s int) {
		u := s
		if s < 0 {
			u = nc + ^s
		}
		if !used[u] {
			used[u] = true
			srcs = append(srcs, s)
		}
	}
	byName := func(n string) (int, bool) {
		if k, ok := p.outIndex[n]; ok {
			return ^k, true
		}
		c, ok := f.index[n]
		return c, ok
	}
	for _, n := range p.route.Order {
		if s, ok := byName(n); ok {
			add(s)
		}
	}
	for _, n := range f.cols {
		s, _ := byName(n)
		add(s)
	}
	for k := range p.outputs {
		add(^k)
	}
	name := func(s int) string {
		if s < 0 {
			return p.outputs[^s]
		}
		return f.cols[s]
	}

	out := make([]byte, 0, len(body)+len(f.rows)*len(p.outputs)*8+64)
	out = append(out, `{"dataframe_split":{"columns":[`...)
	for i, s := range srcs {
		if i > 0 {
			out = append(out, ',')
		}
		out = appendQuoted(out, name(s))
	}
	out = append(out, `],"data":[`...)
	for r := range f.rows {
		if r > 0 {
			out = append(out, ',')
		}
		out = append(out, '[')
		for i, s := range srcs {
			if i > 0 {
				out = append(out, ',')
			}
			var v []byte
			if s < 0 {
				at := p.outAt[^s]
				if v, e = p.value(f, fs, at.lk, at.j, r); e != nil {
					return nil, e
				}
			} else {
				v = f.cell(r, s)
			}
			if v == nil {
				v = []byte("null")
			}
			out = append(out, v...)
		}
		out = append(out, ']')
	}
	out = append(out, "]}"...)
	for _, m := range f.rest {
		out = append(out, ',')
		out = appendQuoted(out, m.key)
		out = append(out, ':')
		out = append(out, m.val...)
	}
	return append(out, '}'), nil
}

// Serve answers a feature-serving request: {"outputs": [{feature: value}]}
// with one object per row, the features in spec order.
func (p *Plan) Serve(ctx context.Context, body []byte, store Looker) ([]byte, *Error) {
	f, e := parseFrame(body)
	if e != nil {
		return nil, e
	}
	fs, e := p.resolve(ctx, f, store)
	if e != nil {
		return nil, e
	}
	out := make([]byte, 0, len(f.rows)*len(p.outputs)*24+16)
	out = append(out, `{"outputs":[`...)
	for r := range f.rows {
		if r > 0 {
			out = append(out, ',')
		}
		out = append(out, '{')
		n := 0
		for i, l := range p.lookups {
			for j, o := range l.outputs {
				v, e := p.value(f, fs, i, j, r)
				if e != nil {
					return nil, e
				}
				if n > 0 {
					out = append(out, ',')
				}
				n++
				out = appendQuoted(out, o)
				out = append(out, ':')
				out = append(out, v...)
			}
		}
		out = append(out, '}')
	}
	return append(out, "]}"...), nil
}
