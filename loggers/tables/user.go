package tables

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/gantry/gantry/api"
)

// Limits bound one query whose SQL comes from a caller (UserQuery: the
// tables query API and what is built on it, gantry tables query and
// gantry ab-report). ClickHouse enforces all but MaxConcurrent, as
// settings sent with the query next to readonly = 1, which forbids the
// query to change any setting (a SETTINGS clause or SET is refused) and
// forbids table functions (url, remote, file, s3, hdfs, mysql, jdbc,
// numbers, ...), so none of this depends on Gantry parsing the SQL.
// A zero field takes its value from DefaultLimits.
type Limits struct {
	// Timeout is ClickHouse's max_execution_time. Gantry waits killGrace
	// longer, then kills the query in ClickHouse (KILL QUERY by its id):
	// ClickHouse checks its own limit only between blocks of data.
	Timeout time.Duration
	// MaxMemory is max_memory_usage, in bytes.
	MaxMemory uint64
	// MaxRowsToRead and MaxBytesToRead bound what the query reads from
	// tables (max_rows_to_read, max_bytes_to_read; bytes uncompressed).
	MaxRowsToRead, MaxBytesToRead uint64
	// MaxResultRows and MaxResultBytes bound the answer: ClickHouse refuses
	// to send more (max_result_rows, max_result_bytes, checked before each
	// block is sent) and Gantry counts the formatted values too, so that
	// the control plane never holds more than about this much per query.
	MaxResultRows, MaxResultBytes int
	// MaxConcurrent is how many such queries run at once in this Gantry;
	// more wait for a slot (within their Timeout). With MaxMemory it
	// bounds what callers can take of ClickHouse's memory.
	MaxConcurrent int
}

// DefaultLimits are the limits of queries from callers unless
// Options.Limits says otherwise.
var DefaultLimits = Limits{
	Timeout:        60 * time.Second,
	MaxMemory:      4 << 30,
	MaxRowsToRead:  1_000_000_000,
	MaxBytesToRead: 64 << 30,
	MaxResultRows:  MaxRows,
	MaxResultBytes: 16 << 20,
	MaxConcurrent:  4,
}

// withDefaults fills l's zero fields from DefaultLimits.
func (l Limits) withDefaults() Limits {
	d := DefaultLimits
	if l.Timeout <= 0 {
		l.Timeout = d.Timeout
	}
	if l.MaxMemory == 0 {
		l.MaxMemory = d.MaxMemory
	}
	if l.MaxRowsToRead == 0 {
		l.MaxRowsToRead = d.MaxRowsToRead
	}
	if l.MaxBytesToRead == 0 {
		l.MaxBytesToRead = d.MaxBytesToRead
	}
	if l.MaxResultRows <= 0 {
		l.MaxResultRows = d.MaxResultRows
	}
	if l.MaxResultBytes <= 0 {
		l.MaxResultBytes = d.MaxResultBytes
	}
	if l.MaxConcurrent <= 0 {
		l.MaxConcurrent = d.MaxConcurrent
	}
	return l
}

// settings are the ClickHouse settings of a caller's query. Integers
// only: 18.16's protocol carries settings as numbers (enum settings such
// as the overflow modes keep their default, throw).
func (l Limits) settings() clickhouse.Settings {
	secs := int((l.Timeout + time.Second - 1) / time.Second)
	return clickhouse.Settings{
		"readonly":           1,
		"max_execution_time": secs,
		"max_memory_usage":   int(l.MaxMemory),
		"max_rows_to_read":   int(l.MaxRowsToRead),
		"max_bytes_to_read":  int(l.MaxBytesToRead),
		"max_result_rows":    l.MaxResultRows,
		"max_result_bytes":   l.MaxResultBytes,
	}
}

// killGrace is how long after a caller's query should have ended Gantry
// waits before it kills the query in ClickHouse, and again before it
// drops the connection when ClickHouse does not end the query after KILL.
const killGrace = 2 * time.Second

// userQueries is the state of DB that UserQuery needs; shared by the
// copies WithLimits makes, except the limits.
type userQueries struct {
	limits Limits
	slots  chan struct{}

	mu       sync.Mutex
	verified bool // the server applied the settings once (checkLockdown)
}

func newUserQueries(l Limits) *userQueries {
	l = l.withDefaults()
	return &userQueries{limits: l, slots: make(chan struct{}, l.MaxConcurrent)}
}

// WithLimits returns a DB on the same connections whose UserQuery runs
// under l (zero fields from DefaultLimits).
func (db *DB) WithLimits(l Limits) *DB {
	return &DB{conn: db.conn, user: newUserQueries(l)}
}

// Limits are the limits UserQuery applies.
func (db *DB) Limits() Limits { return db.user.limits }

// ErrResultTooLarge is a caller's query whose answer is over
// Limits.MaxResultRows rows or Limits.MaxResultBytes bytes.
var ErrResultTooLarge = errors.New("result too large")

// ErrNotReadOnly is SQL from a caller that is not a read.
var ErrNotReadOnly = errors.New("not a read")

// readStatements are the statements a caller may run, by their first
// word. ClickHouse's readonly = 1 refuses writes, DDL, SYSTEM and
// settings changes itself, but lets KILL QUERY through, which would let
// a caller stop any query, the logger's inserts included (18.16 checks
// no owner). So Gantry also allows only these.
var readStatements = map[string]bool{"SELECT": true, "WITH": true, "SHOW": true, "DESCRIBE": true, "DESC": true, "EXISTS": true}

// checkStatement refuses SQL that does not start with a read statement.
// It reads the first word as ClickHouse's lexer does: after whitespace,
// comments and opening parentheses. A block comment that holds "/*" is
// refused: 18.16 does not nest block comments and current releases do,
// so the two would see different first words.
func checkStatement(sql string) error {
	refuse := func(format string, args ...any) error {
		return &RefusedError{API: api.Errorf(api.ErrInvalidParameterValue, "sql: "+format, args...), Err: ErrNotReadOnly}
	}
	s := sql
	for {
		s = strings.TrimLeft(s, " \t\n\r\f\v(")
		switch {
		case strings.HasPrefix(s, "--"):
			i := strings.IndexByte(s, '\n')
			if i < 0 {
				s = ""
				continue
			}
			s = s[i+1:]
		case strings.HasPrefix(s, "/*"):
			i := strings.Index(s[2:], "*/")
			if i < 0 {
				return refuse("a comment is not closed")
			}
			if strings.Contains(s[2:2+i], "/*") {
				return refuse("nested comments are not allowed")
			}
			s = s[2+i+2:]
		default:
			n := 0
			for n < len(s) && (s[n] == '_' || 'a' <= s[n]|0x20 && s[n]|0x20 <= 'z' || '0' <= s[n] && s[n] <= '9') {
				n++
			}
			word := strings.ToUpper(s[:n])
			if readStatements[word] {
				return nil
			}
			if word == "" {
				return refuse("want a SELECT (or WITH, SHOW, DESCRIBE, EXISTS) statement")
			}
			return refuse("a statement starting with %s is not allowed: only reads run through this API (SELECT, WITH, SHOW, DESCRIBE, EXISTS)", word)
		}
	}
}

// lockdownError is why ClickHouse did not take the settings of callers'
// queries.
type lockdownError struct{ msg string }

func (e *lockdownError) Error() string { return e.msg }

// checkLockdown checks, once, that ClickHouse applies the settings that
// UserQuery sends. A user whose profile already has readonly = 1 makes
// ClickHouse ignore them (no limits), and readonly = 2 makes it ignore
// readonly = 1 (table functions allowed): then no caller's query runs.
func (db *DB) checkLockdown(ctx context.Context) error {
	u := db.user
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.verified {
		return nil
	}
	want := u.limits.settings()
	names := make([]string, 0, len(want))
	for k := range want {
		names = append(names, quote(k))
	}
	// A timer rather than a deadline: clickhouse-go turns a context's
	// deadline into max_execution_time, over the one being checked.
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer time.AfterFunc(10*time.Second, cancel).Stop()
	defer cancel()
	rows, err := db.conn.Query(clickhouse.Context(ctx, clickhouse.WithSettings(want)),
		"SELECT name, value FROM system.settings WHERE name IN ("+strings.Join(names, ", ")+")")
	if err != nil {
		return fmt.Errorf("check the settings of queries from callers: %w", err)
	}
	defer rows.Close()
	got := map[string]string{}
	for rows.Next() {
		var name, value string
		if err := rows.Scan(&name, &value); err != nil {
			return fmt.Errorf("check the settings of queries from callers: %w", err)
		}
		got[name] = value
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("check the settings of queries from callers: %w", err)
	}
	for k, v := range want {
		if got[k] != fmt.Sprint(v) {
			return &lockdownError{fmt.Sprintf("ClickHouse does not apply the limits of queries from callers (%s is %q, want %v): "+
				"the ClickHouse user Gantry connects as must not have readonly set in its profile", k, got[k], v)}
		}
	}
	u.verified = true
	return nil
}

// UserQuery runs SQL that comes from a caller, not from Gantry, under
// db's Limits: only a read statement; readonly = 1 and the limits as
// ClickHouse settings the query cannot change; at most MaxConcurrent at
// once; the query killed in ClickHouse when ctx ends or Timeout (plus
// killGrace) passes, so that nothing keeps running after Gantry gave up.
//
// Errors: a query that is wrong or over a limit other than time is a
// *RefusedError (INVALID_PARAMETER_VALUE, 400); one over its time or whose
// ctx passed its deadline wraps context.DeadlineExceeded; anything else is
// a plain error (ClickHouse could not run it now).
func (db *DB) UserQuery(ctx context.Context, sql string) (*api.QueryResult, error) {
	l := db.user.limits
	if err := checkStatement(sql); err != nil {
		return nil, err
	}
	if err := db.checkLockdown(ctx); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, l.Timeout+killGrace)
	defer cancel()
	select {
	case db.user.slots <- struct{}{}:
		defer func() { <-db.user.slots }()
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, timeoutErr(l, fmt.Sprintf("%d queries from callers were already running", l.MaxConcurrent))
		}
		return nil, fmt.Errorf("query from a caller: %w", ctx.Err())
	}

	// The driver gets a context that does not end with ctx, and has no
	// deadline (clickhouse-go would make one max_execution_time): on ctx's end
	// (deadline, or the caller gone) the watchdog kills the query in
	// ClickHouse, which then ends the stream with an error. Cancelling
	// the driver's context would only drop the connection (and, in
	// clickhouse-go 2.51, can race a block being delivered: a panic), so
	// that is the last resort, killGrace after the KILL.
	id := queryID()
	dctx, dcancel := context.WithCancel(context.WithoutCancel(ctx))
	defer dcancel()
	var kill sync.Once
	killQuery := func() {
		kill.Do(func() {
			kctx, kcancel := context.WithTimeout(context.Background(), killGrace)
			defer kcancel()
			// The id is ours (hex): safe in a literal.
			db.conn.Exec(kctx, "KILL QUERY WHERE query_id = '"+id+"' ASYNC")
		})
	}
	done := make(chan struct{})
	defer close(done)
	// Registered after cancel, so it runs before: a query that ends
	// normally is not killed.
	defer context.AfterFunc(ctx, func() {
		killQuery()
		select {
		case <-done:
		case <-time.After(killGrace):
			dcancel()
		}
	})()

	dctx = clickhouse.Context(dctx, clickhouse.WithSettings(l.settings()), clickhouse.WithQueryID(id))
	rows, err := db.conn.Query(dctx, sql)
	if err != nil {
		return nil, userErr(ctx, l, err)
	}
	res, err := collect(rows, l.MaxResultRows, l.MaxResultBytes)
	tooLarge := errors.Is(err, ErrTooManyRows) || errors.Is(err, ErrResultTooLarge)
	if tooLarge {
		// Stop it in ClickHouse before Close drains the rest.
		killQuery()
	}
	if cerr := rows.Close(); err == nil {
		err = cerr
	}
	switch {
	case tooLarge:
		return nil, resultTooLarge(l, "")
	case err != nil:
		return nil, userErr(ctx, l, err)
	}
	return res, nil
}

// queryID is a fresh query id for ClickHouse.
func queryID() string {
	b := make([]byte, 12)
	rand.Read(b)
	return "gantry-user-" + hex.EncodeToString(b)
}

// userErr classifies an error of UserQuery.
func userErr(ctx context.Context, l Limits, err error) error {
	var re *RefusedError
	if errors.As(err, &re) {
		return err
	}
	if ctx.Err() != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return timeoutErr(l, "")
		}
		return fmt.Errorf("query from a caller: %w", ctx.Err())
	}
	var ex *clickhouse.Exception
	if !errors.As(err, &ex) {
		return queryErr(err)
	}
	switch ex.Code {
	case 159: // TIMEOUT_EXCEEDED: max_execution_time
		return timeoutErr(l, "")
	case 396: // TOO_MANY_ROWS_OR_BYTES: max_result_rows, max_result_bytes
		return resultTooLarge(l, ex.Message)
	case 158, 307: // TOO_MANY_ROWS, TOO_MANY_BYTES: max_rows_to_read, max_bytes_to_read
		return &RefusedError{API: api.Errorf(api.ErrInvalidParameterValue,
			"the query reads more than queries through this API may (%s rows, %s): narrow it, for example WHERE date >= today() - 7 on an inference table (clickhouse: %s)",
			count(l.MaxRowsToRead), size(l.MaxBytesToRead), ex.Message), Err: err}
	case 241: // MEMORY_LIMIT_EXCEEDED: max_memory_usage
		return &RefusedError{API: api.Errorf(api.ErrInvalidParameterValue,
			"the query needs more than the %s of memory queries through this API may use: read fewer rows or group by fewer keys (clickhouse: %s)",
			size(l.MaxMemory), ex.Message), Err: err}
	case 164: // READONLY
		what := "writes and changes of settings (SETTINGS, SET) are not allowed: the limits of queries through this API are fixed"
		if strings.Contains(ex.Message, "Table functions") {
			what = "table functions (url, remote, file, s3, mysql, numbers, ...) are not allowed in queries through this API; read tables (system.numbers is one)"
		}
		return &RefusedError{API: api.Errorf(api.ErrInvalidParameterValue, "%s (clickhouse: %s)", what, ex.Message), Err: err}
	}
	return queryErr(err)
}

// timeoutErr is a caller's query that ran out of time.
func timeoutErr(l Limits, why string) error {
	if why != "" {
		why = " (" + why + ")"
	}
	return fmt.Errorf("the query did not finish within %s, the limit for queries through this API%s: narrow it, for example WHERE date >= today() - 7 on an inference table, or aggregate less: %w",
		l.Timeout, why, context.DeadlineExceeded)
}

// resultTooLarge refuses an answer over the result limits.
func resultTooLarge(l Limits, detail string) error {
	if detail != "" {
		detail = " (clickhouse: " + detail + ")"
	}
	return &RefusedError{API: api.Errorf(api.ErrInvalidParameterValue,
		"the result is larger than queries through this API may return (%d rows, %s): add a LIMIT, select fewer or shorter columns, page, or aggregate in SQL%s",
		l.MaxResultRows, size(uint64(l.MaxResultBytes)), detail), Err: ErrResultTooLarge}
}

// size is n bytes for a message: 16 MiB, 4 GiB.
func size(n uint64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return strconv.FormatUint(n>>30, 10) + " GiB"
	case n >= 1<<20 && n%(1<<20) == 0:
		return strconv.FormatUint(n>>20, 10) + " MiB"
	}
	return strconv.FormatUint(n, 10) + " bytes"
}

// count is n with thousands separators.
func count(n uint64) string {
	s := strconv.FormatUint(n, 10)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// quote is s as a ClickHouse string literal.
func quote(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}
