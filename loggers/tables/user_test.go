package tables_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/internal/chtest"
	"github.com/gantry/gantry/loggers/tables"
)

// refusedWith checks that err is a 400 *api.Error whose message holds
// want.
func refusedWith(t *testing.T, sql string, err error, want string) {
	t.Helper()
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != api.ErrInvalidParameterValue || !strings.Contains(ae.Message, want) {
		t.Errorf("%s: %v; want %s naming %q", sql, err, api.ErrInvalidParameterValue, want)
	}
}

// TestUserQueryTableFunctions: a caller's SQL cannot use table functions,
// the SSRF of issue 19 (url() read any HTTP service the ClickHouse host
// reaches). The same url() through Gantry's own Query reaches the test
// server, so the refusal is the lockdown, not an unreachable server.
func TestUserQueryTableFunctions(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		fmt.Fprintln(w, "secret")
	}))
	defer srv.Close()
	ch := chtest.Start(t)
	db := chtest.Open(t, ch)
	ctx := context.Background()

	ssrf := "SELECT * FROM url('" + srv.URL + "/secret', CSV, 'a String')"
	for _, sql := range []string{
		ssrf,
		"SELECT * FROM remote('" + ch.Addr() + "', system.one)",
		"SELECT * FROM file('x.csv', CSV, 'a String')",
		"SELECT * FROM numbers(10)",
		"SELECT * FROM mysql('127.0.0.1:3306', 'd', 't', 'u', 'p')",
		"SELECT count() FROM (SELECT * FROM url('" + srv.URL + "/x', CSV, 'a String'))",
		"DESCRIBE TABLE url('" + srv.URL + "/x', CSV, 'a String')",
	} {
		_, err := db.UserQuery(ctx, sql)
		refusedWith(t, sql, err, "table functions (url, remote, file")
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("ClickHouse fetched the test server %d times for a caller's query", n)
	}
	if res, err := db.Query(ctx, ssrf); err != nil || len(res.Rows) != 1 || res.Rows[0][0] != "secret" || hits.Load() == 0 {
		t.Fatalf("url() through Query: %v %+v; the test server should be reachable from ClickHouse", err, res)
	}
}

// TestUserQueryStatements: only reads run. KILL QUERY (which readonly = 1
// lets through) and settings changes are refused with 400, however the
// SQL hides them.
func TestUserQueryStatements(t *testing.T) {
	db := chtest.Open(t, chtest.Start(t))
	ctx := context.Background()
	for _, sql := range []string{
		"KILL QUERY WHERE 1",
		"kill query where user = 'default' SYNC",
		"  /* c */ -- d\n ( KILL QUERY WHERE 1)",
		"/* /* */ SELECT */ KILL QUERY WHERE 1",
		"/* unclosed",
		"-- only a comment",
		"SET max_execution_time = 0",
		"INSERT INTO system.one VALUES (1)",
		"DROP TABLE system.one",
		"`SELECT`",
	} {
		_, err := db.UserQuery(ctx, sql)
		refusedWith(t, sql, err, "sql: ")
		if !errors.Is(err, tables.ErrNotReadOnly) {
			t.Errorf("%q: %v; want ErrNotReadOnly", sql, err)
		}
	}
	for _, sql := range []string{
		"SELECT 1 SETTINGS max_execution_time = 0",
		"SELECT 1 SETTINGS readonly = 0",
		"SELECT 1 SETTINGS max_result_bytes = 0",
		"SELECT count() FROM system.numbers SETTINGS max_rows_to_read = 0, max_memory_usage = 0",
		"SELECT * FROM (SELECT 1 SETTINGS max_memory_usage = 0)",
	} {
		_, err := db.UserQuery(ctx, sql)
		refusedWith(t, sql, err, "changes of settings (SETTINGS, SET) are not allowed")
	}
	for _, sql := range []string{
		"SELECT 1",
		"  -- c\n/* d */ (SELECT 1) UNION ALL (SELECT 2)",
		"WITH 2 AS x SELECT x",
		"SHOW DATABASES",
		"DESCRIBE TABLE system.one",
		"EXISTS TABLE system.one",
	} {
		if _, err := db.UserQuery(ctx, sql); err != nil {
			t.Errorf("%q: %v", sql, err)
		}
	}
}

// TestUserQueryLimits: the limits are ClickHouse settings the query runs
// with; each one crossed is a clear 400.
func TestUserQueryLimits(t *testing.T) {
	base := chtest.Open(t, chtest.Start(t))
	ctx := context.Background()
	if got := base.Limits(); got != tables.DefaultLimits {
		t.Fatalf("limits %+v; want DefaultLimits %+v", got, tables.DefaultLimits)
	}
	res, err := base.UserQuery(ctx, "SELECT name, value FROM system.settings WHERE name IN ('readonly', 'max_execution_time', 'max_memory_usage', 'max_result_bytes') ORDER BY name")
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(res.Rows); got != "[[max_execution_time 60] [max_memory_usage 4294967296] [max_result_bytes 16777216] [readonly 1]]" {
		t.Errorf("settings of a caller's query: %s", got)
	}

	db := base.WithLimits(tables.Limits{MaxResultRows: 100, MaxResultBytes: 1 << 20, MaxRowsToRead: 1_000_000, MaxMemory: 64 << 20})
	if res, err := db.UserQuery(ctx, "SELECT number FROM system.numbers LIMIT 100"); err != nil || len(res.Rows) != 100 {
		t.Errorf("100 rows: %v", err)
	}
	for _, c := range []struct{ sql, want string }{
		// Over max_result_rows, refused by ClickHouse.
		{"SELECT number FROM system.numbers LIMIT 101", "100 rows, 1 MiB"},
		// Over max_result_bytes in ClickHouse: 8 values of 300 kB.
		{"SELECT arrayStringConcat(arrayMap(x -> 'x', range(300000))) FROM system.numbers LIMIT 8", "larger than"},
		// Under max_result_bytes in ClickHouse (50 rows of 10 kB) but
		// over it formatted: 20-digit numbers. Refused by Gantry (no
		// ClickHouse message).
		{"SELECT arrayMap(x -> toUInt64(x + 10000000000000000000), range(1200)) FROM system.numbers LIMIT 50", "aggregate in SQL"},
		{"SELECT count() FROM system.numbers", "reads more than"},
		{"SELECT length(groupArray(range(100))) FROM (SELECT number FROM system.numbers LIMIT 900000)", "memory"},
	} {
		_, err := db.UserQuery(ctx, c.sql)
		refusedWith(t, c.sql, err, c.want)
	}
	if _, err := db.UserQuery(ctx, "SELECT arrayMap(x -> toUInt64(x + 10000000000000000000), range(1200)) FROM system.numbers LIMIT 50"); err == nil || strings.Contains(err.Error(), "clickhouse:") {
		t.Errorf("a result over the limit only once formatted: %v; want Gantry's refusal", err)
	}
	_, err = db.UserQuery(ctx, "SELECT number FROM system.numbers LIMIT 101")
	if !errors.Is(err, tables.ErrResultTooLarge) {
		t.Errorf("101 rows: %v; want ErrResultTooLarge", err)
	}

	// Over max_execution_time: a deadline, not a 400.
	slow := base.WithLimits(tables.Limits{Timeout: time.Second, MaxRowsToRead: 1 << 50, MaxBytesToRead: 1 << 50})
	start := time.Now()
	_, err = slow.UserQuery(ctx, "SELECT count() FROM system.numbers WHERE NOT ignore(toString(number))")
	var ae *api.Error
	if !errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ae) || !strings.Contains(err.Error(), "within 1s") {
		t.Errorf("over the time limit: %v; want a deadline", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("over the time limit: returned after %s", d)
	}
}

// TestUserQueryCancelled: when the caller's context ends (Gantry's
// deadline, or the client gone), the query stops in ClickHouse, though
// its own max_execution_time is far off; other queries wait for a slot.
// (Before, the driver's cancel packet could not be written once the
// deadline had passed, and the query ran on.)
func TestUserQueryCancelled(t *testing.T) {
	base := chtest.Open(t, chtest.Start(t))
	db := base.WithLimits(tables.Limits{Timeout: time.Minute, MaxRowsToRead: 1 << 50, MaxBytesToRead: 1 << 50, MaxConcurrent: 1})
	running := func(marker string) bool {
		t.Helper()
		res, err := base.Query(context.Background(), "SELECT count() FROM system.processes WHERE query LIKE '%"+marker+"%' AND query NOT LIKE '%system.processes%'")
		if err != nil {
			t.Fatal(err)
		}
		return res.Rows[0][0] != "0"
	}
	// start runs a query that would take minutes, and waits until
	// ClickHouse runs it.
	start := func(ctx context.Context, marker string) <-chan error {
		errc := make(chan error, 1)
		go func() {
			_, err := db.UserQuery(ctx, "SELECT count() FROM system.numbers WHERE toString(number) != '"+marker+"'")
			errc <- err
		}()
		for !running(marker) {
			select {
			case err := <-errc:
				t.Fatalf("the query ended at once: %v", err)
			case <-time.After(50 * time.Millisecond):
			}
		}
		return errc
	}
	stopped := func(marker string) {
		t.Helper()
		gaveUp := time.Now()
		for running(marker) {
			if time.Since(gaveUp) > 2*time.Second {
				t.Fatalf("%s: the query still runs in ClickHouse 2 s after Gantry gave up", marker)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	// Gantry's deadline.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	errc := start(ctx, "deadline-7f3a")
	// The only slot is taken: a second query waits, then gives up.
	wctx, wcancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer wcancel()
	if _, err := db.UserQuery(wctx, "SELECT 1"); !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "already running") {
		t.Errorf("a query with no free slot: %v; want a deadline naming the running queries", err)
	}
	if err := <-errc; !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("past the deadline: %v; want a deadline", err)
	}
	stopped("deadline-7f3a")

	// The client gone.
	ctx, cancel = context.WithCancel(context.Background())
	errc = start(ctx, "gone-7f3a")
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("the client gone: %v; want context.Canceled", err)
	}
	stopped("gone-7f3a")

	// The slot is free again.
	if _, err := db.UserQuery(context.Background(), "SELECT 1"); err != nil {
		t.Fatal(err)
	}
}
