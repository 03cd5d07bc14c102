package features

import (
	"context"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gantry/gantry/features/onlinestore"
)

// Cache is a Looker that answers the keys it read from the online store
// within Staleness from memory, so that hot keys skip the round trip to
// Redis (issue 17: "a bounded in-process cache whose staleness is a
// setting, 0 by default"). A value changed in the store is seen once
// Staleness has passed since the cache read it, never later; a key with
// no row is remembered the same way. Memory is bounded by MaxBytes.
//
// Why a staleness bound rather than invalidation: the online store has
// many writers (SNAPSHOT swaps, continuous syncs) and any number of
// activators, and a bound that each activator enforces alone needs no
// message between them. 0 (the default) means every lookup reads Redis.
type Cache struct {
	next      Looker
	staleness time.Duration
	now       func() time.Time
	maxShard  int64 // bytes per shard
	seed      maphash.Seed
	shards    [cacheShards]cacheShard

	// hits and misses count keys, for Stats.
	hits, misses atomic.Int64

	// cols interns each table's columns (one string per table, not per
	// entry): generations rarely change them.
	colsMu sync.Mutex
	cols   map[string]string
}

// CacheOptions configure a Cache.
type CacheOptions struct {
	// Staleness is how long a value read from the store may be served
	// from memory; it must be positive (0 means no cache: use the store).
	Staleness time.Duration
	// MaxBytes bounds the entries' memory (keys, rows and a per-entry
	// overhead); default 64 MiB.
	MaxBytes int64
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// DefaultCacheBytes is CacheOptions.MaxBytes's default.
const DefaultCacheBytes = 64 << 20

const (
	// cacheShards spreads the entries over locks, so that activator
	// goroutines rarely wait on one another.
	cacheShards = 16
	// entryOverhead approximates what an entry costs beyond its key and
	// row: the map slot, the entry struct and the key's string header.
	entryOverhead = 96
)

type cacheShard struct {
	mu    sync.Mutex
	m     map[string]cacheEntry // table + "\x00" + canonical key
	bytes int64
}

type cacheEntry struct {
	cols string
	row  []byte // nil: the key has no row
	// at is when the read that stored the entry was sent: the value is
	// at least this recent, so serving it until at+staleness keeps the
	// bound.
	at time.Time
}

func (e *cacheEntry) size(key string) int64 { return int64(len(key) + len(e.row) + entryOverhead) }

// Fresh reports whether an entry read at at may still be served at now:
// the staleness decision, a pure function of the entry's age.
func Fresh(at, now time.Time, staleness time.Duration) bool {
	return now.Sub(at) < staleness
}

// NewCache wraps next with a cache; o.Staleness must be positive.
func NewCache(next Looker, o CacheOptions) *Cache {
	if o.MaxBytes <= 0 {
		o.MaxBytes = DefaultCacheBytes
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	c := &Cache{next: next, staleness: o.Staleness, now: o.Now,
		maxShard: max(o.MaxBytes/cacheShards, 1), seed: maphash.MakeSeed(), cols: map[string]string{}}
	for i := range c.shards {
		c.shards[i].m = map[string]cacheEntry{}
	}
	return c
}

// CacheStats count a Cache's keys since it was made.
type CacheStats struct {
	Hits, Misses int64 // keys answered from memory, and read from the store
	Bytes        int64 // the memory the entries are accounted for now
}

// Stats reads the cache's counters: the hit ratio is what tells whether a
// staleness is worth its cost.
func (c *Cache) Stats() CacheStats {
	return CacheStats{Hits: c.hits.Load(), Misses: c.misses.Load(), Bytes: c.Bytes()}
}

// Bytes is the memory the entries are accounted for.
func (c *Cache) Bytes() int64 {
	var n int64
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		n += s.bytes
		s.mu.Unlock()
	}
	return n
}

// cacheKey writes table, a 0 byte and key into buf (a 0 byte is in no
// table name).
func cacheKey(buf []byte, table, key string) []byte {
	buf = append(buf[:0], table...)
	buf = append(buf, 0)
	return append(buf, key...)
}

func (c *Cache) shard(k []byte) *cacheShard {
	return &c.shards[maphash.Bytes(c.seed, k)%cacheShards]
}

// get returns the entry of k when it is fresh at now.
func (c *Cache) get(k []byte, now time.Time) (cacheEntry, bool) {
	s := c.shard(k)
	s.mu.Lock()
	e, ok := s.m[string(k)] // no allocation: the compiler looks up by the bytes
	s.mu.Unlock()
	if !ok || !Fresh(e.at, now, c.staleness) {
		return cacheEntry{}, false
	}
	return e, true
}

// put stores e under k unless the shard holds a read sent later, then
// evicts until the shard is within its bound.
func (c *Cache) put(k []byte, e cacheEntry) {
	s := c.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.m[string(k)]; ok {
		if old.at.After(e.at) {
			return
		}
		s.bytes -= old.size(string(k))
	}
	key := string(k)
	s.m[key] = e
	s.bytes += e.size(key)
	// Go's map iteration starts at a random place: this evicts random
	// entries, which suits a cache whose entries all expire after the same
	// time anyway. The entry just stored may go too when it alone is
	// over the bound.
	for k, old := range s.m {
		if s.bytes <= c.maxShard {
			break
		}
		delete(s.m, k)
		s.bytes -= old.size(k)
	}
}

// intern returns the one copy of table's columns equal to cols.
func (c *Cache) intern(table, cols string) string {
	c.colsMu.Lock()
	defer c.colsMu.Unlock()
	if have, ok := c.cols[table]; ok && have == cols {
		return have
	}
	c.cols[table] = cols
	return cols
}

// Lookup answers what it holds fresh from memory and the rest from the
// store, in one round trip. A table's answer is read with one set of
// columns: when a table's columns changed between the entries and the
// store's answer (a SNAPSHOT with another schema), every key of that table
// is read again.
func (c *Cache) Lookup(ctx context.Context, qs []onlinestore.Query) ([]onlinestore.Result, error) {
	now := c.now()
	out := make([]onlinestore.Result, len(qs))
	var miss []onlinestore.Query // the keys not answered, by query
	var missOf []int             // miss[m] answers qs[missOf[m]]
	var missAt [][]int           // missAt[m][k]: the position of miss[m].Keys[k] in its query
	var buf [128]byte
	keys := 0
	for i, q := range qs {
		keys += len(q.Keys)
		out[i].Rows = make([][]byte, len(q.Keys))
		var hit bool
		var m int = -1
		for j, key := range q.Keys {
			e, ok := c.get(cacheKey(buf[:0], q.Table, key), now)
			if ok && (!hit || e.cols == out[i].Columns) {
				hit, out[i].Columns, out[i].Rows[j] = true, e.cols, e.row
				continue
			}
			if m < 0 {
				m = len(miss)
				miss = append(miss, onlinestore.Query{Table: q.Table})
				missOf = append(missOf, i)
				missAt = append(missAt, nil)
			}
			miss[m].Keys = append(miss[m].Keys, key)
			missAt[m] = append(missAt[m], j)
		}
	}
	var missed int
	for _, m := range miss {
		missed += len(m.Keys)
	}
	c.misses.Add(int64(missed))
	c.hits.Add(int64(keys - missed))
	if len(miss) == 0 {
		return out, nil
	}
	res, err := c.next.Lookup(ctx, miss)
	if err != nil {
		return nil, err
	}
	var again []int // queries whose entries have other columns than the store's
	for m, r := range res {
		i := missOf[m]
		cols := c.intern(qs[i].Table, r.Columns)
		for j, key := range miss[m].Keys {
			c.put(cacheKey(buf[:0], qs[i].Table, key), cacheEntry{cols: cols, row: r.Rows[j], at: now})
		}
		if out[i].Columns != "" && out[i].Columns != cols {
			again = append(again, i)
			continue
		}
		out[i].Columns = cols
		for k, j := range missAt[m] {
			out[i].Rows[j] = r.Rows[k]
		}
	}
	if len(again) == 0 {
		return out, nil
	}
	re := make([]onlinestore.Query, len(again))
	for n, i := range again {
		re[n] = qs[i]
	}
	res, err = c.next.Lookup(ctx, re)
	if err != nil {
		return nil, err
	}
	for n, i := range again {
		cols := c.intern(qs[i].Table, res[n].Columns)
		out[i] = onlinestore.Result{Columns: cols, Rows: res[n].Rows}
		for j, key := range qs[i].Keys {
			c.put(cacheKey(buf[:0], qs[i].Table, key), cacheEntry{cols: cols, row: res[n].Rows[j], at: now})
		}
	}
	return out, nil
}
