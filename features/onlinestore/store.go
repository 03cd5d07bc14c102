// Package onlinestore keeps published feature tables in Redis, where
// activators look rows up by primary key at inference time.
//
// Layout, under the prefix "gantry:ft:" (one Redis database):
//
//	tables             SET of published source tables ("db.table")
//	t:{src}:meta       STRING, the api.OnlineTable as JSON (state, columns, sync)
//	t:{src}:gen        STRING, the generation that readers use now
//	t:{src}:g:{n}      HASH, generation n: field "\x00" holds the columns
//	                   (a JSON array of names), every other field is a
//	                   canonical key (features.Key) and its value the row's
//	                   values as a JSON array in that column order
//	specs              HASH of feature specs by name, as JSON
//
// Why a hash per generation: a SNAPSHOT publish writes generation n+1 next
// to n while readers go on reading n, then moves the pointer; the lookup
// is one Lua script that reads the pointer and the rows together, which
// Redis runs atomically, so a reader sees all of n or all of n+1, never
// half a table, and the old generation can go (UNLINK, freed in the
// background) right after the swap. The columns sit in the generation, so
// a table whose schema changed is read with its own columns.
package onlinestore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/redis/go-redis/v9"
)

const (
	prefix = "gantry:ft:"
	// ColumnsField is the field of a generation that holds its columns.
	// Canonical keys are never empty, so it cannot clash with one.
	columnsField = "\x00"
	// maxArgs bounds the keys of one script call: Lua's unpack has a
	// stack limit near 8,000; larger lookups are split into calls that
	// still go in one round trip (pipelined).
	maxArgs = 4000
)

func metaKey(src string) string            { return prefix + "t:" + src + ":meta" }
func genKey(src string) string             { return prefix + "t:" + src + ":gen" }
func genPrefix(src string) string          { return prefix + "t:" + src + ":g:" }
func genHash(src string, gen int64) string { return genPrefix(src) + strconv.FormatInt(gen, 10) }

// lookupScript reads the current generation and its rows in one atomic step.
var lookupScript = redis.NewScript(`
local g = redis.call('GET', KEYS[1])
if not g then return false end
return redis.call('HMGET', KEYS[2] .. g, unpack(ARGV))
`)

// ErrUnavailable marks a failure to reach the online store (refused, reset,
// timed out): the activator answers 503 with the reason, never a
// prediction made without its features.
var ErrUnavailable = errors.New("the online store is unavailable")

// ErrNotPublished says that a table has no generation in the store.
var ErrNotPublished = errors.New("feature table is not published to the online store")

// Options tune a Store; the zero value works.
type Options struct {
	// Timeout bounds one call (dial, read, write). Default 500 ms: a
	// lookup is on the request path, and a store slower than that is
	// better reported than waited for.
	Timeout time.Duration
	// PoolSize bounds the connections; go-redis's default (10 per
	// GOMAXPROCS) when 0.
	PoolSize int
}

// Store is a connection pool to the online store.
type Store struct {
	rdb *redis.Client
	url string
	// keys holds each table's script keys (its generation pointer and
	// the prefix of its generations), built once rather than per lookup.
	keys sync.Map // string → []string
}

func (s *Store) scriptKeys(table string) []string {
	if k, ok := s.keys.Load(table); ok {
		return k.([]string)
	}
	k := []string{genKey(table), genPrefix(table)}
	s.keys.Store(table, k)
	return k
}

// Open connects to the Redis named by url (redis://host:port/db) and
// checks that it answers.
func Open(ctx context.Context, url string, o Options) (*Store, error) {
	opt, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("online store %q: %w", url, err)
	}
	if o.Timeout <= 0 {
		o.Timeout = 500 * time.Millisecond
	}
	opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout = o.Timeout, o.Timeout, o.Timeout
	opt.PoolSize = o.PoolSize
	// A failed call is reported at once (503), not retried behind the
	// caller's back with backoff that the request cannot afford.
	opt.MaxRetries = -1
	opt.DisableIdentity = true
	s := &Store{rdb: redis.NewClient(opt), url: opt.Addr}
	if err := s.rdb.Ping(ctx).Err(); err != nil {
		s.rdb.Close()
		return nil, s.wrap(err)
	}
	return s, nil
}

// Close closes the pool.
func (s *Store) Close() error { return s.rdb.Close() }

// Ping checks that the store answers.
func (s *Store) Ping(ctx context.Context) error { return s.wrap(s.rdb.Ping(ctx).Err()) }

// wrap turns a connection failure into ErrUnavailable with its reason;
// errors Redis answered stay as they are.
func (s *Store) wrap(err error) error {
	if err == nil || errors.Is(err, redis.Nil) {
		return err
	}
	// An error Redis answered (WRONGTYPE, a script error) is a bug or a
	// foreign key in our prefix, not an outage; LOADING (a restarted
	// Redis reading its snapshot) is one.
	var re redis.Error
	if errors.As(err, &re) && !strings.HasPrefix(re.Error(), "LOADING") {
		return fmt.Errorf("online store %s: %w", s.url, err)
	}
	return fmt.Errorf("%w: redis at %s: %v", ErrUnavailable, s.url, err)
}

// Query asks for the rows of Keys (canonical keys) in Table.
type Query struct {
	Table string
	Keys  []string
}

// Result answers one Query: the columns of the generation read, and each
// key's row as a JSON array in that order (nil when the key has no row).
type Result struct {
	Columns string // the generation's columns, a JSON array, as stored
	Rows    [][]byte
}

// Lookup answers qs in one round trip: every query's script calls go in
// one pipeline. A table that is not published fails with ErrNotPublished.
func (s *Store) Lookup(ctx context.Context, qs []Query) ([]Result, error) {
	type call struct {
		q     int
		first int // index of the call's first key in qs[q].Keys
		cmd   *redis.Cmd
	}
	calls := make([]call, 0, len(qs))
	// One script call goes alone; more go in a pipeline, one round trip
	// for all (a pipeline costs allocations a lone call does not).
	var run redis.Scripter = s.rdb
	var pipe redis.Pipeliner
	if len(qs) > 1 || (len(qs) == 1 && len(qs[0].Keys) > maxArgs) {
		pipe = s.rdb.Pipeline()
		run = pipe
	}
	for i, q := range qs {
		keys := s.scriptKeys(q.Table)
		for first := 0; first == 0 || first < len(q.Keys); first += maxArgs {
			end := min(first+maxArgs, len(q.Keys))
			args := make([]any, 0, end-first+1)
			args = append(args, columnsField)
			for _, k := range q.Keys[first:end] {
				args = append(args, k)
			}
			calls = append(calls, call{q: i, first: first, cmd: lookupScript.EvalSha(ctx, run, keys, args...)})
			if end == len(q.Keys) {
				break
			}
		}
	}
	var err error
	if pipe != nil {
		_, err = pipe.Exec(ctx)
	} else if len(calls) > 0 {
		err = calls[0].cmd.Err()
	}
	if err != nil && isNoScript(err) {
		// The first lookup after a Redis restart: load the script and
		// go once more.
		if err := lookupScript.Load(ctx, s.rdb).Err(); err != nil {
			return nil, s.wrap(err)
		}
		return s.Lookup(ctx, qs)
	}
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, s.wrap(err)
	}
	out := make([]Result, len(qs))
	for i := range out {
		out[i].Rows = make([][]byte, len(qs[i].Keys))
	}
	for _, c := range calls {
		v, err := c.cmd.Result()
		if errors.Is(err, redis.Nil) {
			return nil, fmt.Errorf("%w: %s", ErrNotPublished, qs[c.q].Table)
		}
		if err != nil {
			return nil, s.wrap(err)
		}
		vals, _ := v.([]any)
		if len(vals) == 0 {
			return nil, fmt.Errorf("online store: unexpected answer for %s", qs[c.q].Table)
		}
		cols, _ := vals[0].(string)
		if cols == "" {
			return nil, fmt.Errorf("%w: %s (its generation has no columns)", ErrNotPublished, qs[c.q].Table)
		}
		r := &out[c.q]
		r.Columns = cols
		for j, row := range vals[1:] {
			if s, ok := row.(string); ok {
				r.Rows[c.first+j] = []byte(s)
			}
		}
	}
	return out, nil
}

func isNoScript(err error) bool { return err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT") }

// Generation is the generation readers use now for src; 0 when none.
func (s *Store) Generation(ctx context.Context, src string) (int64, error) {
	n, err := s.rdb.Get(ctx, genKey(src)).Int64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	return n, s.wrap(err)
}

// Writer fills one generation of a table in batches.
type Writer struct {
	s     *Store
	src   string
	gen   int64
	batch []any // field, value, field, value, ...
	rows  int64
	// fresh is set for a new generation (a snapshot) that Commit swaps in;
	// committed once it has.
	fresh, committed bool
}

// batchRows is the rows one HSET carries; a pipeline of them is sent per
// Flush.
const batchRows = 1000

// NewGeneration starts a new generation of src, invisible to readers until
// Commit.
func (s *Store) NewGeneration(ctx context.Context, src string) (*Writer, error) {
	gen, err := s.rdb.Incr(ctx, prefix+"t:"+src+":next").Result()
	if err != nil {
		return nil, s.wrap(err)
	}
	// A generation left by a publish that died half way would be
	// reused by nobody, but clear it in case.
	if err := s.rdb.Unlink(ctx, genHash(src, gen)).Err(); err != nil {
		return nil, s.wrap(err)
	}
	return &Writer{s: s, src: src, gen: gen, fresh: true}, nil
}

// Update writes into the generation readers use now (TRIGGERED and
// CONTINUOUS syncs): each row replaces its key's row at once.
func (s *Store) Update(ctx context.Context, src string, gen int64) *Writer {
	return &Writer{s: s, src: src, gen: gen}
}

// Generation is the generation w writes.
func (w *Writer) Generation() int64 { return w.gen }

// Rows counts the rows written so far.
func (w *Writer) Rows() int64 { return w.rows }

// Put adds the row of key (values as a JSON array), sent with the next
// Flush, which Put calls itself every batchRows rows.
func (w *Writer) Put(ctx context.Context, key string, row []byte) error {
	w.batch = append(w.batch, key, row)
	w.rows++
	if len(w.batch) >= 2*batchRows*8 {
		return w.Flush(ctx)
	}
	return nil
}

// Flush sends the rows put since the last Flush, in one pipeline of HSETs.
func (w *Writer) Flush(ctx context.Context) error {
	if len(w.batch) == 0 {
		return nil
	}
	pipe := w.s.rdb.Pipeline()
	h := genHash(w.src, w.gen)
	for i := 0; i < len(w.batch); i += 2 * batchRows {
		pipe.HSet(ctx, h, w.batch[i:min(i+2*batchRows, len(w.batch))]...)
	}
	_, err := pipe.Exec(ctx)
	w.batch = w.batch[:0]
	return w.s.wrap(err)
}

// Commit flushes, stores the columns and, for a new generation, swaps it
// in and drops the one it replaces.
func (w *Writer) Commit(ctx context.Context, columns []string) error {
	if err := w.Flush(ctx); err != nil {
		return err
	}
	cols, _ := json.Marshal(columns)
	if err := w.s.rdb.HSet(ctx, genHash(w.src, w.gen), columnsField, cols).Err(); err != nil {
		return w.s.wrap(err)
	}
	if !w.fresh {
		return nil
	}
	old, err := w.s.rdb.SetArgs(ctx, genKey(w.src), w.gen, redis.SetArgs{Get: true}).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return w.s.wrap(err)
	}
	w.committed = true
	if old != "" {
		// Readers of the old generation finished inside their script.
		w.s.rdb.Unlink(ctx, genPrefix(w.src)+old)
	}
	return nil
}

// Abort removes what w wrote to a new generation that was not committed
// (a snapshot that failed half way); it does nothing for a committed one or
// for Update's writer, whose rows readers may already use. It has its own
// deadline, so that it runs when ctx has ended (the failure may be that).
func (w *Writer) Abort(ctx context.Context) {
	if !w.fresh || w.committed {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	w.s.rdb.Unlink(ctx, genHash(w.src, w.gen))
}

// Drop removes a table and every generation of it.
func (s *Store) Drop(ctx context.Context, src string) error {
	gen, err := s.Generation(ctx, src)
	if err != nil {
		return err
	}
	pipe := s.rdb.TxPipeline()
	pipe.Unlink(ctx, genKey(src), metaKey(src), genHash(src, gen))
	pipe.SRem(ctx, prefix+"tables", src)
	_, err = pipe.Exec(ctx)
	return s.wrap(err)
}

// SaveTable records a table's state.
func (s *Store) SaveTable(ctx context.Context, t api.OnlineTable) error {
	b, _ := json.Marshal(t)
	pipe := s.rdb.TxPipeline()
	pipe.Set(ctx, metaKey(t.Source), b, 0)
	pipe.SAdd(ctx, prefix+"tables", t.Source)
	_, err := pipe.Exec(ctx)
	return s.wrap(err)
}

// Table is a published table's state; ok is false when it was never
// published.
func (s *Store) Table(ctx context.Context, src string) (t api.OnlineTable, ok bool, err error) {
	b, err := s.rdb.Get(ctx, metaKey(src)).Bytes()
	if errors.Is(err, redis.Nil) {
		return t, false, nil
	}
	if err != nil {
		return t, false, s.wrap(err)
	}
	if err := json.Unmarshal(b, &t); err != nil {
		return t, false, fmt.Errorf("online table %s: %w", src, err)
	}
	return t, true, nil
}

// Tables lists the published tables, sorted by source name.
func (s *Store) Tables(ctx context.Context) ([]api.OnlineTable, error) {
	names, err := s.rdb.SMembers(ctx, prefix+"tables").Result()
	if err != nil {
		return nil, s.wrap(err)
	}
	slices.Sort(names)
	out := make([]api.OnlineTable, 0, len(names))
	for _, n := range names {
		t, ok, err := s.Table(ctx, n)
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, t)
		}
	}
	return out, nil
}

// CreateSpec stores a new feature spec; ok is false when the name is taken.
func (s *Store) CreateSpec(ctx context.Context, spec api.FeatureSpec) (ok bool, err error) {
	b, _ := json.Marshal(spec)
	ok, err = s.rdb.HSetNX(ctx, prefix+"specs", spec.Name, b).Result()
	return ok, s.wrap(err)
}

// Spec reads a feature spec; ok is false when there is none of that name.
func (s *Store) Spec(ctx context.Context, name string) (spec api.FeatureSpec, ok bool, err error) {
	b, err := s.rdb.HGet(ctx, prefix+"specs", name).Bytes()
	if errors.Is(err, redis.Nil) {
		return spec, false, nil
	}
	if err != nil {
		return spec, false, s.wrap(err)
	}
	return spec, true, json.Unmarshal(b, &spec)
}

// Specs lists the feature specs, sorted by name.
func (s *Store) Specs(ctx context.Context) ([]api.FeatureSpec, error) {
	m, err := s.rdb.HGetAll(ctx, prefix+"specs").Result()
	if err != nil {
		return nil, s.wrap(err)
	}
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	slices.Sort(names)
	out := make([]api.FeatureSpec, 0, len(m))
	for _, n := range names {
		var spec api.FeatureSpec
		if err := json.Unmarshal([]byte(m[n]), &spec); err == nil {
			out = append(out, spec)
		}
	}
	return out, nil
}

// DeleteSpec removes a feature spec; ok is false when there was none.
func (s *Store) DeleteSpec(ctx context.Context, name string) (ok bool, err error) {
	n, err := s.rdb.HDel(ctx, prefix+"specs", name).Result()
	return n > 0, s.wrap(err)
}

// Count is the rows of generation gen of src.
func (s *Store) Count(ctx context.Context, src string, gen int64) (int64, error) {
	n, err := s.rdb.HLen(ctx, genHash(src, gen)).Result()
	if err != nil {
		return 0, s.wrap(err)
	}
	return max(n-1, 0), nil // less the columns field
}
