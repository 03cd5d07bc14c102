package features_test

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/features"
	"github.com/gantry/gantry/features/onlinestore"
	"github.com/gantry/gantry/features/onlinestore/redistest"
	"github.com/gantry/gantry/internal/fakeclock"
)

// counting counts the lookups that reach the store.
type counting struct {
	next  features.Looker
	calls atomic.Int64
	keys  atomic.Int64
}

func (c *counting) Lookup(ctx context.Context, qs []onlinestore.Query) ([]onlinestore.Result, error) {
	c.calls.Add(1)
	for _, q := range qs {
		c.keys.Add(int64(len(q.Keys)))
	}
	return c.next.Lookup(ctx, qs)
}

func publishRows(t *testing.T, st *onlinestore.Store, table string, cols []string, rows map[string]string) {
	t.Helper()
	ctx := context.Background()
	w, err := st.NewGeneration(ctx, table)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range rows {
		w.Put(ctx, k, []byte(v))
	}
	if err := w.Commit(ctx, cols); err != nil {
		t.Fatal(err)
	}
}

// update rewrites rows in the generation readers use now, as a TRIGGERED
// or CONTINUOUS sync does.
func update(t *testing.T, st *onlinestore.Store, table string, cols []string, rows map[string]string) {
	t.Helper()
	ctx := context.Background()
	gen, err := st.Generation(ctx, table)
	if err != nil {
		t.Fatal(err)
	}
	w := st.Update(ctx, table, gen)
	for k, v := range rows {
		w.Put(ctx, k, []byte(v))
	}
	if err := w.Commit(ctx, cols); err != nil {
		t.Fatal(err)
	}
}

var usersRoute = api.FeatureRoute{Serving: true, Lookups: []api.LookupRoute{{
	Table: "features.users", LookupKey: []string{"user_id"},
	Features: []string{"txn_count_7d"}, Outputs: []string{"txn_count_7d"},
	Defaults: []api.RawJSON{nil},
}}}

func serve(t *testing.T, p *features.Plan, look features.Looker, body string) string {
	t.Helper()
	out, e := p.Serve(context.Background(), []byte(body), look)
	if e != nil {
		return e.Code + ": " + e.Message
	}
	return string(out)
}

// A value changed in Redis is served from the cache until the staleness
// bound has passed since the cache read it, and read again from Redis at
// the bound, on a fake clock; a key with no row is remembered alike.
func TestCacheStaleness(t *testing.T) {
	srv := redistest.Start(t)
	st := redistest.Open(t, srv)
	cols := []string{"txn_count_7d"}
	publishRows(t, st, "features.users", cols, map[string]string{"42": "[7]"})
	var clock fakeclock.Clock
	clock.Add(time.Hour) // not the zero time
	store := &counting{next: st}
	const staleness = 5 * time.Second
	cache := features.NewCache(store, features.CacheOptions{Staleness: staleness, Now: clock.Now})
	p, err := features.Compile(&usersRoute)
	if err != nil {
		t.Fatal(err)
	}

	if got := serve(t, p, cache, `{"dataframe_records":[{"user_id":42}]}`); got != `{"outputs":[{"txn_count_7d":7}]}` {
		t.Fatalf("first lookup: %s", got)
	}
	update(t, st, "features.users", cols, map[string]string{"42": "[8]", "43": "[1]"})
	clock.Add(staleness - time.Nanosecond)
	// 42 is cached (the old value, no round trip); 43 is read.
	if got := serve(t, p, cache, `{"dataframe_records":[{"user_id":42},{"user_id":43}]}`); got != `{"outputs":[{"txn_count_7d":7},{"txn_count_7d":1}]}` {
		t.Errorf("just within the bound: %s", got)
	}
	if n := store.keys.Load(); n != 2 {
		t.Errorf("keys read from Redis: %d, want 2 (42 once, then 43 only)", n)
	}
	if s := cache.Stats(); s.Hits != 1 || s.Misses != 2 || s.Bytes <= 0 {
		t.Errorf("stats %+v, want 1 hit (42) and 2 misses (42, then 43)", s)
	}
	calls := store.calls.Load()
	if got := serve(t, p, cache, `{"dataframe_records":[{"user_id":42}]}`); got != `{"outputs":[{"txn_count_7d":7}]}` || store.calls.Load() != calls {
		t.Errorf("a hit went to Redis, or answered %s", got)
	}
	clock.Add(time.Nanosecond)
	if got := serve(t, p, cache, `{"dataframe_records":[{"user_id":42}]}`); got != `{"outputs":[{"txn_count_7d":8}]}` {
		t.Errorf("at the bound: %s, want the new value", got)
	}

	// A key with no row: remembered within the bound, seen once it has a
	// row after the bound.
	if got := serve(t, p, cache, `{"dataframe_records":[{"user_id":44}]}`); got != "INVALID_PARAMETER_VALUE: no row for user_id=44 in feature table features.users, and the feature spec gives no default for txn_count_7d" {
		t.Errorf("missing key: %s", got)
	}
	update(t, st, "features.users", cols, map[string]string{"44": "[3]"})
	clock.Add(staleness / 2)
	if got := serve(t, p, cache, `{"dataframe_records":[{"user_id":44}]}`); got[:23] != "INVALID_PARAMETER_VALUE" {
		t.Errorf("missing key within the bound: %s", got)
	}
	clock.Add(staleness / 2)
	if got := serve(t, p, cache, `{"dataframe_records":[{"user_id":44}]}`); got != `{"outputs":[{"txn_count_7d":3}]}` {
		t.Errorf("missing key after the bound: %s", got)
	}

	// A SNAPSHOT with other columns: cached rows of the old schema are
	// not mixed with rows of the new one in an answer.
	clock.Add(time.Second) // 42 and 43 of above are stale; re-read them
	serve(t, p, cache, `{"dataframe_records":[{"user_id":42}]}`)
	publishRows(t, st, "features.users", []string{"segment", "txn_count_7d"}, map[string]string{"42": `["gold",9]`, "45": `["new",2]`})
	if got := serve(t, p, cache, `{"dataframe_records":[{"user_id":42},{"user_id":45}]}`); got != `{"outputs":[{"txn_count_7d":9},{"txn_count_7d":2}]}` {
		t.Errorf("a schema change within the bound: %s (want both rows as published now)", got)
	}
}

// Redis down: a fresh entry still answers; a miss is the store's error
// (503), never a default.
func TestCacheOutage(t *testing.T) {
	srv := redistest.Start(t)
	st := redistest.Open(t, srv)
	publishRows(t, st, "features.users", []string{"txn_count_7d"}, map[string]string{"42": "[7]"})
	var clock fakeclock.Clock
	cache := features.NewCache(st, features.CacheOptions{Staleness: time.Minute, Now: clock.Now})
	p, _ := features.Compile(&usersRoute)
	serve(t, p, cache, `{"dataframe_records":[{"user_id":42}]}`)
	srv.Kill()
	if got := serve(t, p, cache, `{"dataframe_records":[{"user_id":42}]}`); got != `{"outputs":[{"txn_count_7d":7}]}` {
		t.Errorf("a fresh entry with Redis down: %s", got)
	}
	if got := serve(t, p, cache, `{"dataframe_records":[{"user_id":43}]}`); got[:23] != "TEMPORARILY_UNAVAILABLE" {
		t.Errorf("a miss with Redis down: %s", got)
	}
	clock.Add(time.Minute)
	if got := serve(t, p, cache, `{"dataframe_records":[{"user_id":42}]}`); got[:23] != "TEMPORARILY_UNAVAILABLE" {
		t.Errorf("a stale entry with Redis down: %s", got)
	}
}

// The cache's memory stays within MaxBytes however many keys pass.
func TestCacheBounded(t *testing.T) {
	rows := map[string]string{}
	for k := range 20000 {
		rows[fmt.Sprint(k)] = `[1,2,3,4,5,6,7,8,9,10]`
	}
	srv := redistest.Start(t)
	st := redistest.Open(t, srv)
	publishRows(t, st, "features.users", []string{"txn_count_7d"}, rows)
	const max = 256 << 10
	cache := features.NewCache(st, features.CacheOptions{Staleness: time.Hour, MaxBytes: max})
	ctx := context.Background()
	for k := 0; k < 20000; k += 500 {
		q := onlinestore.Query{Table: "features.users"}
		for i := k; i < k+500; i++ {
			q.Keys = append(q.Keys, fmt.Sprint(i))
		}
		res, err := cache.Lookup(ctx, []onlinestore.Query{q})
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range res[0].Rows {
			if string(r) != rows[q.Keys[i]] {
				t.Fatalf("key %s: %s", q.Keys[i], r)
			}
		}
		if b := cache.Bytes(); b > max {
			t.Fatalf("after %d keys the cache holds %d bytes, over its bound of %d", k+500, b, max)
		}
	}
	if b := cache.Bytes(); b < max/2 {
		t.Errorf("the cache holds %d bytes of a %d bound: it evicts too much", b, max)
	}
}

func TestFresh(t *testing.T) {
	at := time.Unix(1000, 0)
	for _, c := range []struct {
		age  time.Duration
		want bool
	}{{0, true}, {time.Second - 1, true}, {time.Second, false}, {time.Hour, false}, {-time.Second, true}} {
		if got := features.Fresh(at, at.Add(c.age), time.Second); got != c.want {
			t.Errorf("age %v: fresh %v, want %v", c.age, got, c.want)
		}
	}
}

// mapStore is an in-memory Looker: row "[k]" for every key k below n.
type mapStore struct{ n int }

func (m mapStore) Lookup(_ context.Context, qs []onlinestore.Query) ([]onlinestore.Result, error) {
	out := make([]onlinestore.Result, len(qs))
	for i, q := range qs {
		out[i] = onlinestore.Result{Columns: `["v"]`, Rows: make([][]byte, len(q.Keys))}
		for j, k := range q.Keys {
			if n, err := strconv.Atoi(k); err == nil && n < m.n {
				out[i].Rows[j] = []byte("[" + k + "]")
			}
		}
	}
	return out, nil
}

// Goroutines looking up overlapping keys, hits and misses mixed, through
// a cache small enough to evict all the time: every answer is the key's
// row (run with -race).
func TestCacheConcurrent(t *testing.T) {
	cache := features.NewCache(mapStore{n: 400}, features.CacheOptions{Staleness: time.Hour, MaxBytes: 16 << 10})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 500 {
				q := onlinestore.Query{Table: "t", Keys: []string{fmt.Sprint((g*7 + i) % 500), fmt.Sprint(i % 50)}}
				res, err := cache.Lookup(context.Background(), []onlinestore.Query{q})
				if err != nil {
					t.Error(err)
					return
				}
				for j, k := range q.Keys {
					want := "[" + k + "]"
					if n, _ := strconv.Atoi(k); n >= 400 {
						want = ""
					}
					if string(res[0].Rows[j]) != want || res[0].Columns != `["v"]` {
						t.Errorf("key %s: %q %s", k, res[0].Rows[j], res[0].Columns)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	if b := cache.Bytes(); b > 16<<10 {
		t.Errorf("%d bytes over a bound of %d", b, 16<<10)
	}
}
