package publish_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/features"
	"github.com/gantry/gantry/features/onlinestore"
	"github.com/gantry/gantry/features/onlinestore/redistest"
	"github.com/gantry/gantry/features/publish"
	"github.com/gantry/gantry/internal/chtest"
	"github.com/gantry/gantry/loggers/tables"
)

// env is a real ClickHouse with features.user_behavior and a real Redis.
type env struct {
	db    *tables.DB
	srv   *onlinestore.Server
	store *onlinestore.Store
	pub   *publish.Publisher
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ch := chtest.Start(t)
	db := chtest.Open(t, ch)
	srv := redistest.Start(t)
	store := redistest.Open(t, srv)
	ctx := context.Background()
	conn, err := publish.OpenClickHouse(ctx, ch.Addr(), "default", "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	pub := publish.New(publish.Config{ClickHouse: conn, Store: store, Interval: 100 * time.Millisecond})
	t.Cleanup(pub.Close)
	for _, q := range []string{
		"CREATE DATABASE IF NOT EXISTS features",
		"CREATE TABLE features.user_behavior (user_id UInt64, ts DateTime, txn_count_7d UInt32, " +
			"avg_amount_30d Float64, segment String, first_seen Date, amounts Array(Float64)) " +
			"ENGINE = MergeTree() ORDER BY (user_id, ts)",
		"INSERT INTO features.user_behavior SELECT 42, toDateTime('2026-01-01 00:00:00'), 1, 1.5, 'old', toDate('2025-01-01'), [1.0]",
		"INSERT INTO features.user_behavior SELECT 42, toDateTime('2026-01-02 00:00:00'), 7, 310.25, 'gold', toDate('2025-01-01'), [1.5, 2.0]",
		"INSERT INTO features.user_behavior SELECT 7, toDateTime('2026-01-02 00:00:00'), 2, 20.0, 'new', toDate('2025-12-31'), []",
	} {
		if err := db.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	return &env{db: db, srv: srv, store: store, pub: pub}
}

func (e *env) publish(t *testing.T, mode string) api.OnlineTable {
	t.Helper()
	tb, err := e.pub.Publish(context.Background(), "features.user_behavior", api.PublishRequest{
		PublishSpec:       api.PublishSpec{OnlineTableName: "user_behavior", PublishMode: mode},
		PrimaryKeyColumns: []string{"user_id"}, TimeseriesKey: "ts"})
	if err != nil {
		t.Fatalf("publish %s: %v", mode, err)
	}
	return tb
}

func (e *env) plan(t *testing.T, spec api.FeatureSpec, sig *api.Schema) *features.Plan {
	t.Helper()
	ctx := context.Background()
	r, err := features.Resolve(spec, func(src string) (api.OnlineTable, bool, error) {
		return e.store.Table(ctx, src)
	}, sig, false)
	if err != nil {
		t.Fatal(err)
	}
	p, err := features.Compile(r)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

var userSpec = api.FeatureSpec{Name: "fraud", Features: []api.FeatureLookup{{
	TableName: "features.user_behavior", LookupKey: []string{"user_id"},
	FeatureNames:  []string{"txn_count_7d", "avg_amount_30d", "segment", "first_seen", "amounts"},
	RenameOutputs: map[string]string{"avg_amount_30d": "avg_amount"},
	DefaultValues: map[string]any{"txn_count_7d": 0, "avg_amount": 0.0, "segment": "none",
		"first_seen": "1970-01-01", "amounts": []any{}},
}}}

func TestPublishAndLookup(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	tb := e.publish(t, api.PublishSnapshot)
	if tb.State != api.OnlineTableOnline || tb.Rows != 2 || tb.Generation == 0 || tb.LastSync == 0 {
		t.Fatalf("table after publish = %+v, want ONLINE with 2 rows", tb)
	}
	if want := time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC).UnixMilli(); tb.Watermark != want {
		t.Errorf("watermark = %d, want %d", tb.Watermark, want)
	}
	p := e.plan(t, userSpec, nil)

	// Lookup: the newest row of 42 (argMax by ts), every type as JSON;
	// 7's empty array; 43 has no row and gets the defaults; the request's
	// own segment overrides the lookup.
	got, aerr := p.Augment(ctx, []byte(`{"dataframe_records": [{"user_id": 42, "amount": 310.0},
		{"user_id": "7", "amount": 1}, {"user_id": 43.0, "amount": 2, "segment": "given"}], "params": {"k": 1}}`), e.store)
	if aerr != nil {
		t.Fatal(aerr)
	}
	want := `{"dataframe_split":{"columns":["user_id","amount","segment","txn_count_7d","avg_amount","first_seen","amounts"],"data":[` +
		`[42,310.0,"gold",7,310.25,"2025-01-01",[1.5,2]],` +
		`["7",1,"new",2,20,"2025-12-31",[]],` +
		`[43.0,2,"given",0,0,"1970-01-01",[]]]},"params":{"k": 1}}`
	if string(got) != want {
		t.Errorf("augmented =\n%s\nwant\n%s", got, want)
	}
	var check map[string]any
	if err := json.Unmarshal(got, &check); err != nil {
		t.Fatalf("augmented body is not JSON: %v", err)
	}

	// Missing key with no default: 400 naming key and table.
	strict := userSpec
	strict.Features = []api.FeatureLookup{{TableName: "features.user_behavior", LookupKey: []string{"user_id"},
		FeatureNames: []string{"txn_count_7d"}}}
	sp := e.plan(t, strict, nil)
	_, aerr = sp.Augment(ctx, []byte(`{"dataframe_split": {"columns": ["user_id"], "data": [[42], [43]]}}`), e.store)
	if aerr == nil || aerr.Code != api.ErrInvalidParameterValue ||
		!strings.Contains(aerr.Message, "user_id=43") || !strings.Contains(aerr.Message, "features.user_behavior") {
		t.Errorf("missing key: %v, want a 400 naming user_id=43 and features.user_behavior", aerr)
	}
	// A row without its key is a 400 too.
	_, aerr = sp.Augment(ctx, []byte(`{"dataframe_records": [{"amount": 1}]}`), e.store)
	if aerr == nil || aerr.Code != api.ErrInvalidParameterValue || !strings.Contains(aerr.Message, "user_id") {
		t.Errorf("row without key: %v", aerr)
	}

	// Feature serving: the features of each key.
	out, aerr := sp.Serve(ctx, []byte(`{"dataframe_records": [{"user_id": 7}, {"user_id": 42}]}`), e.store)
	if aerr != nil || string(out) != `{"outputs":[{"txn_count_7d":2},{"txn_count_7d":7}]}` {
		t.Errorf("serve = %s, %v", out, aerr)
	}

	// Signature order: the model's inputs first, in its order.
	op := e.plan(t, strict, &api.Schema{Inputs: []api.ColSpec{{Name: "txn_count_7d", Type: "long"}, {Name: "user_id", Type: "long"}}})
	got, aerr = op.Augment(ctx, []byte(`{"dataframe_records": [{"user_id": 7, "x": 1}]}`), e.store)
	if aerr != nil || string(got) != `{"dataframe_split":{"columns":["txn_count_7d","user_id","x"],"data":[[2,7,1]]}}` {
		t.Errorf("signature order: %s, %v", got, aerr)
	}
}

func TestResolveTypes(t *testing.T) {
	e := newEnv(t)
	e.publish(t, api.PublishSnapshot)
	src := func(s string) (api.OnlineTable, bool, error) { return e.store.Table(context.Background(), s) }
	for _, c := range []struct {
		name string
		spec api.FeatureLookup
		sig  *api.Schema
		want string
	}{
		{"signature type", api.FeatureLookup{TableName: "features.user_behavior", LookupKey: []string{"user_id"}, FeatureNames: []string{"segment"}},
			&api.Schema{Inputs: []api.ColSpec{{Name: "segment", Type: "double"}}}, "segment is String in table features.user_behavior but double in the model's signature"},
		{"default type", api.FeatureLookup{TableName: "features.user_behavior", LookupKey: []string{"user_id"}, FeatureNames: []string{"txn_count_7d"},
			DefaultValues: map[string]any{"txn_count_7d": "zero"}}, nil, "default_values[txn_count_7d] is zero, which is not a UInt32"},
		{"no column", api.FeatureLookup{TableName: "features.user_behavior", LookupKey: []string{"user_id"}, FeatureNames: []string{"nope"}},
			nil, "has no column nope"},
		{"not published", api.FeatureLookup{TableName: "features.other", LookupKey: []string{"user_id"}}, nil, "is not published"},
		{"key arity", api.FeatureLookup{TableName: "features.user_behavior", LookupKey: []string{"a", "b"}}, nil, "primary key [user_id] has 1"},
	} {
		_, err := features.Resolve(api.FeatureSpec{Name: "s", Features: []api.FeatureLookup{c.spec}}, src, c.sig, false)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error with %q", c.name, err, c.want)
		}
	}
	// Every non-key column but the timeseries key by default.
	r, err := features.Resolve(api.FeatureSpec{Name: "s", Features: []api.FeatureLookup{{TableName: "features.user_behavior", LookupKey: []string{"user_id"}}}}, src, nil, false)
	if err != nil || strings.Join(r.Lookups[0].Features, ",") != "txn_count_7d,avg_amount_30d,segment,first_seen,amounts" {
		t.Errorf("default features: %+v, %v", r, err)
	}
}

func TestTriggeredAndContinuous(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.publish(t, api.PublishTriggered)
	p := e.plan(t, userSpec, nil)
	txn := func() string {
		out, aerr := p.Serve(ctx, []byte(`{"dataframe_records": [{"user_id": 42}]}`), e.store)
		if aerr != nil {
			t.Fatal(aerr)
		}
		var v struct{ Outputs []map[string]any }
		json.Unmarshal(out, &v)
		return fmt.Sprint(v.Outputs[0]["txn_count_7d"])
	}
	if got := txn(); got != "7" {
		t.Fatalf("after TRIGGERED: txn_count_7d = %s, want 7", got)
	}
	if err := e.db.Exec(ctx, "INSERT INTO features.user_behavior SELECT 42, toDateTime('2026-01-03 00:00:00'), 8, 1, 'gold', toDate('2025-01-01'), []"); err != nil {
		t.Fatal(err)
	}
	if got := txn(); got != "7" {
		t.Fatalf("before the next sync: %s, want 7", got)
	}
	tb := e.publish(t, api.PublishTriggered)
	if got := txn(); got != "8" || tb.Rows != 2 {
		t.Fatalf("after a second TRIGGERED: txn_count_7d = %s rows %d, want 8 and 2 rows", got, tb.Rows)
	}

	tb = e.publish(t, api.PublishContinuous)
	if tb.State != api.OnlineTableContinuous {
		t.Fatalf("state = %s", tb.State)
	}
	if err := e.db.Exec(ctx, "INSERT INTO features.user_behavior SELECT 42, toDateTime('2026-01-04 00:00:00'), 9, 1, 'gold', toDate('2025-01-01'), []"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for txn() != "9" {
		if time.Now().After(deadline) {
			t.Fatal("CONTINUOUS did not follow a new row within 10 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	tb, _, _ = e.store.Table(ctx, "features.user_behavior")
	if want := time.Date(2026, 1, 4, 0, 0, 0, 0, time.UTC).UnixMilli(); tb.Watermark != want || tb.LagMs <= 0 {
		t.Errorf("continuous state = %+v, want watermark %d and a lag", tb, want)
	}
}

// TestSnapshotSwap publishes SNAPSHOTs of a table whose every row carries
// its version while readers look up all keys at once: each answer must be
// one version throughout, with no key missing.
func TestSnapshotSwap(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	const keys = 3000
	if err := e.db.Exec(ctx, "CREATE TABLE features.snap (k UInt64, ts DateTime, ver UInt32) ENGINE = MergeTree() ORDER BY k"); err != nil {
		t.Fatal(err)
	}
	insert := func(v int) {
		q := fmt.Sprintf("INSERT INTO features.snap SELECT number, toDateTime(%d), %d FROM system.numbers LIMIT %d", 1700000000+v, v, keys)
		if err := e.db.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	pub := func() {
		if _, err := e.pub.Publish(ctx, "features.snap", api.PublishRequest{PublishSpec: api.PublishSpec{PublishMode: api.PublishSnapshot},
			PrimaryKeyColumns: []string{"k"}, TimeseriesKey: "ts"}); err != nil {
			t.Fatal(err)
		}
	}
	insert(1)
	pub()
	q := onlinestore.Query{Table: "features.snap"}
	for k := 0; k < keys; k++ {
		q.Keys = append(q.Keys, fmt.Sprint(k))
	}
	var stop atomic.Bool
	var reads atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				res, err := e.store.Lookup(ctx, []onlinestore.Query{q})
				if err != nil {
					errs <- err
					return
				}
				first := ""
				for i, row := range res[0].Rows {
					if row == nil {
						errs <- fmt.Errorf("key %d missing in a read", i)
						return
					}
					var vals []any
					json.Unmarshal(row, &vals)
					v := fmt.Sprint(vals[1])
					if first == "" {
						first = v
					} else if v != first {
						errs <- fmt.Errorf("half a table: key 0 has version %s, key %d version %s", first, i, v)
						return
					}
				}
				reads.Add(1)
			}
		}()
	}
	for v := 2; v <= 5; v++ {
		insert(v)
		pub()
	}
	stop.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if reads.Load() < 4 {
		t.Errorf("only %d reads ran during the swaps", reads.Load())
	}
	tb, _, _ := e.store.Table(ctx, "features.snap")
	if tb.Rows != keys || tb.Generation != 5 {
		t.Errorf("after 5 snapshots: %+v", tb)
	}
}

// TestRedisDown: a lookup with Redis gone is a 503 with the reason, and
// the store serves again once Redis is back.
func TestRedisDown(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.publish(t, api.PublishSnapshot)
	p := e.plan(t, userSpec, nil)
	body := []byte(`{"dataframe_records": [{"user_id": 42}]}`)
	if _, aerr := p.Augment(ctx, body, e.store); aerr != nil {
		t.Fatal(aerr)
	}
	e.srv.Stop() // SIGTERM: Redis saves its snapshot on the way out
	_, aerr := p.Augment(ctx, body, e.store)
	if aerr == nil || aerr.Code != api.ErrTemporarilyUnavailable || !strings.Contains(aerr.Message, "online store is unavailable") {
		t.Fatalf("with Redis down: %v, want 503 with the reason", aerr)
	}
	if err := e.srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, aerr = p.Augment(ctx, body, e.store)
		if aerr == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after Redis restarted: %v", aerr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.srv.Kill()
	if _, aerr = p.Serve(ctx, body, e.store); aerr == nil || aerr.Code != api.ErrTemporarilyUnavailable {
		t.Fatalf("with Redis killed: %v", aerr)
	}
}
