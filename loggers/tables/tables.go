// Package tables creates, fills and queries inference tables in ClickHouse.
//
// The SQL runs on Debian's ClickHouse 18.16 and on current releases: Date
// plus a millisecond column instead of DateTime64, day partitions, batch
// inserts with an explicit column list, settings as integers.
package tables

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/loggers"
)

// Options say how to reach ClickHouse.
type Options struct {
	Addr     string // host:port of the native protocol
	Username string
	Password string
	// Limits bound queries whose SQL comes from a caller (UserQuery);
	// zero fields take DefaultLimits.
	Limits Limits
}

// DB is a connection pool to ClickHouse.
type DB struct {
	conn driver.Conn
	user *userQueries
}

// Open connects to ClickHouse and checks that it answers.
func Open(ctx context.Context, o Options) (*DB, error) {
	conn, err := clickhouse.Open(&clickhouse.Options{
		Addr:        []string{o.Addr},
		Auth:        clickhouse.Auth{Username: o.Username, Password: o.Password},
		DialTimeout: 5 * time.Second,
		Compression: &clickhouse.Compression{Method: clickhouse.CompressionLZ4},
	})
	if err != nil {
		return nil, fmt.Errorf("clickhouse %s: %w", o.Addr, err)
	}
	if err := conn.Ping(ctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("clickhouse %s: %w", o.Addr, err)
	}
	return &DB{conn: conn, user: newUserQueries(o.Limits)}, nil
}

// Close closes the pool.
func (db *DB) Close() error { return db.conn.Close() }

// Exec runs a statement that returns no rows (DDL, INSERT … SELECT), for
// code that computes in ClickHouse, such as drift monitors.
func (db *DB) Exec(ctx context.Context, sql string, args ...any) error {
	return db.conn.Exec(ctx, sql, args...)
}

// Ping checks that ClickHouse answers.
func (db *DB) Ping(ctx context.Context) error { return db.conn.Ping(ctx) }

// columns of a payload table, in insert order.
const columns = "request_id, client_request_id, date, timestamp_ms, status_code, execution_time_ms, " +
	"request, response, served_entity, endpoint, sampling_fraction, logging_error_codes, requester, shadow"

// Ensure creates t's database and table if they do not exist.
//
// ReplacingMergeTree ordered by request_id makes delivery exactly once in
// the table: the logger delivers at least once, and rows with the same
// request_id collapse in merges. Queries that must not count a redelivered
// row twice read the table with FINAL (which merges at read time within a
// partition; a record keeps its date, so its copies share one).
func (db *DB) Ensure(ctx context.Context, t loggers.Table) error {
	if err := db.conn.Exec(ctx, "CREATE DATABASE IF NOT EXISTS `"+t.Database+"`"); err != nil {
		return fmt.Errorf("create database %s: %w", t.Database, err)
	}
	ddl := "CREATE TABLE IF NOT EXISTS " + t.Quoted() + ` (
	request_id String,
	client_request_id String,
	date Date,
	timestamp_ms Int64,
	status_code Int32,
	execution_time_ms Int64,
	request String,
	response String,
	served_entity String,
	endpoint String,
	sampling_fraction Float64,
	logging_error_codes Array(String),
	requester String,
	shadow UInt8
) ENGINE = ReplacingMergeTree()
PARTITION BY date
ORDER BY request_id`
	if err := db.conn.Exec(ctx, ddl); err != nil {
		return fmt.Errorf("create table %s: %w", t, err)
	}
	for _, v := range Views {
		if err := db.conn.Exec(ctx, "CREATE VIEW IF NOT EXISTS "+t.String()+v.Suffix+" AS "+v.Select(t)); err != nil {
			return fmt.Errorf("create view %s%s: %w", t, v.Suffix, err)
		}
	}
	return nil
}

// View is a monitoring view created next to each payload table, named
// <table><Suffix>. Each reads the table with FINAL, so a redelivered row
// counts once.
type View struct {
	Suffix, Help string
	sql          string // {table} stands for the payload table
}

// Select is the view's query over t.
func (v View) Select(t loggers.Table) string { return strings.ReplaceAll(v.sql, "{table}", t.String()) }

// Views are the monitoring views. The SQL runs on ClickHouse 18.16: no
// window functions, -If combinators for conditional aggregates.
var Views = []View{
	{
		Suffix: "_per_minute",
		Help:   "per minute and served entity: requests, errors (status >= 400), error rate, latency p50/p99 in ms",
		sql: `SELECT
	toStartOfMinute(toDateTime(intDiv(timestamp_ms, 1000))) AS minute,
	served_entity,
	count() AS requests,
	countIf(status_code >= 400) AS errors,
	errors / requests AS error_rate,
	quantileExact(0.5)(execution_time_ms) AS p50_ms,
	quantileExact(0.99)(execution_time_ms) AS p99_ms
FROM {table} FINAL
GROUP BY minute, served_entity
ORDER BY minute, served_entity`,
	},
	{
		Suffix: "_latest",
		Help:   "the 100 latest requests, newest first",
		sql: `SELECT
	toDateTime(intDiv(timestamp_ms, 1000)) AS time,
	request_id, client_request_id, served_entity, status_code, execution_time_ms,
	request, response, logging_error_codes
FROM {table} FINAL
ORDER BY timestamp_ms DESC
LIMIT 100`,
	},
}

// Insert writes recs, which all belong to t, as one block.
func (db *DB) Insert(ctx context.Context, t loggers.Table, recs []loggers.Record) error {
	batch, err := db.conn.PrepareBatch(ctx, "INSERT INTO "+t.Quoted()+" ("+columns+")")
	if err != nil {
		return fmt.Errorf("insert into %s: %w", t, err)
	}
	defer batch.Abort()
	n := len(recs)
	var (
		ids, clientIDs, requests, responses = make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		entities, endpoints, requesters     = make([]string, n), make([]string, n), make([]string, n)
		dates                               = make([]time.Time, n)
		timestamps, durations               = make([]int64, n), make([]int64, n)
		statuses                            = make([]int32, n)
		fractions                           = make([]float64, n)
		codes                               = make([][]string, n)
		shadows                             = make([]uint8, n)
	)
	for i := range recs {
		r := &recs[i]
		ids[i], clientIDs[i] = r.RequestID, r.ClientRequestID
		requests[i], responses[i] = string(r.Request), string(r.Response)
		entities[i], endpoints[i], requesters[i] = r.ServedEntity, r.Endpoint, r.Requester
		dates[i] = time.UnixMilli(r.TimestampMs).UTC()
		timestamps[i], durations[i] = r.TimestampMs, r.ExecutionTimeMs
		statuses[i] = r.StatusCode
		fractions[i] = r.SamplingFraction
		codes[i] = r.LoggingErrorCodes
		if codes[i] == nil {
			codes[i] = []string{}
		}
		if r.Shadow {
			shadows[i] = 1
		}
	}
	for i, col := range []any{ids, clientIDs, dates, timestamps, statuses, durations,
		requests, responses, entities, endpoints, fractions, codes, requesters, shadows} {
		if err := batch.Column(i).Append(col); err != nil {
			return fmt.Errorf("insert into %s: column %d: %w", t, i, err)
		}
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("insert into %s: %w", t, err)
	}
	return nil
}

// IsMissingTable reports whether err says a table or its database does not
// exist (ClickHouse codes 60 and 81).
func IsMissingTable(err error) bool {
	var ex *clickhouse.Exception
	return errors.As(err, &ex) && (ex.Code == 60 || ex.Code == 81)
}

// MaxRows bounds what Query returns, so that a SELECT * cannot exhaust the
// memory of the control plane.
const MaxRows = 10000

// ErrTooManyRows is a query whose result has more than MaxRows rows.
// Callers that need more page (by time, say) or aggregate in SQL.
var ErrTooManyRows = fmt.Errorf("the result has more than %d rows: add a LIMIT, page, or aggregate in SQL", MaxRows)

// RefusedError is a query that is wrong in itself (bad SQL, an unknown
// table, column or function, a write, a result over MaxRows): running it
// again will not help. It is an *api.Error (INVALID_PARAMETER_VALUE, so
// the API answers 400) that also unwraps to its cause, the
// *clickhouse.Exception (so that IsMissingTable works) or ErrTooManyRows.
type RefusedError struct {
	API *api.Error
	Err error
}

func (e *RefusedError) Error() string   { return e.API.Error() }
func (e *RefusedError) Unwrap() []error { return []error{e.API, e.Err} }

// refusedCodes are the ClickHouse error codes that say the query itself is
// wrong, rather than that the server could not run it now (memory limit,
// too many queries, network).
var refusedCodes = map[int32]bool{
	6:   true, // CANNOT_PARSE_TEXT
	36:  true, // BAD_ARGUMENTS
	38:  true, // CANNOT_PARSE_DATE
	41:  true, // CANNOT_PARSE_DATETIME
	42:  true, // NUMBER_OF_ARGUMENTS_DOESNT_MATCH
	43:  true, // ILLEGAL_TYPE_OF_ARGUMENT
	44:  true, // ILLEGAL_COLUMN
	46:  true, // UNKNOWN_FUNCTION
	47:  true, // UNKNOWN_IDENTIFIER
	53:  true, // TYPE_MISMATCH
	60:  true, // UNKNOWN_TABLE
	62:  true, // SYNTAX_ERROR
	69:  true, // ARGUMENT_OUT_OF_BOUND
	70:  true, // CANNOT_CONVERT_TYPE
	72:  true, // CANNOT_PARSE_NUMBER
	81:  true, // UNKNOWN_DATABASE
	164: true, // READONLY
	184: true, // ILLEGAL_AGGREGATION
	215: true, // NOT_AN_AGGREGATE
	352: true, // AMBIGUOUS_COLUMN_NAME
	386: true, // NO_COMMON_TYPE
}

// queryErr classifies an error of Query: a refused query is a
// *RefusedError; anything else (ClickHouse could not run it now, or did
// not answer) is returned wrapped, its *clickhouse.Exception kept.
func queryErr(err error) error {
	var ex *clickhouse.Exception
	if !errors.As(err, &ex) {
		return err
	}
	if ex.Code == 159 { // TIMEOUT_EXCEEDED: the query's max_execution_time
		return fmt.Errorf("clickhouse stopped the query at its time limit: %w (%w)", context.DeadlineExceeded, err)
	}
	if refusedCodes[ex.Code] {
		return &RefusedError{API: api.Errorf(api.ErrInvalidParameterValue, "clickhouse refused the query: %s (code %d)", ex.Message, ex.Code), Err: err}
	}
	return fmt.Errorf("clickhouse could not run the query: %w", err)
}

// Query runs a read-only query of Gantry's own (ClickHouse refuses writes
// under the readonly setting) and returns its rows. A query ClickHouse
// refuses as wrong, or whose result has more than MaxRows rows, is a
// *RefusedError; other failures are plain errors, a *clickhouse.Exception
// kept in the chain. SQL that comes from a caller goes to UserQuery,
// which locks it down.
func (db *DB) Query(ctx context.Context, sql string, args ...any) (*api.QueryResult, error) {
	ctx = clickhouse.Context(ctx, clickhouse.WithSettings(clickhouse.Settings{"readonly": 2}))
	rows, err := db.conn.Query(ctx, sql, args...)
	if err != nil {
		return nil, queryErr(err)
	}
	defer rows.Close()
	res, err := collect(rows, MaxRows, 0)
	if errors.Is(err, ErrTooManyRows) {
		return nil, &RefusedError{API: api.Errorf(api.ErrInvalidParameterValue, "%v", ErrTooManyRows), Err: ErrTooManyRows}
	}
	if err != nil {
		return nil, queryErr(err)
	}
	return res, nil
}

// collect reads rows, formatted as text, up to maxRows rows and (unless
// 0) maxBytes bytes of values and names: past either it stops with
// ErrTooManyRows or ErrResultTooLarge, so that the answer never holds
// much more than that.
func collect(rows driver.Rows, maxRows, maxBytes int) (*api.QueryResult, error) {
	res := &api.QueryResult{Columns: rows.Columns(), Rows: [][]string{}}
	types := rows.ColumnTypes()
	dest := make([]any, len(types))
	size := 0
	for i, ct := range types {
		res.Types = append(res.Types, ct.DatabaseTypeName())
		dest[i] = reflect.New(ct.ScanType()).Interface()
		size += len(res.Columns[i]) + len(res.Types[i])
	}
	for rows.Next() {
		if len(res.Rows) == maxRows {
			return nil, ErrTooManyRows
		}
		if err := rows.Scan(dest...); err != nil {
			return nil, err
		}
		row := make([]string, len(dest))
		for i, d := range dest {
			row[i] = format(reflect.ValueOf(d).Elem().Interface())
			// A value's length plus its quotes and comma in JSON.
			size += len(row[i]) + 3
		}
		if maxBytes > 0 && size > maxBytes {
			return nil, ErrResultTooLarge
		}
		res.Rows = append(res.Rows, row)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return res, nil
}

func format(v any) string {
	switch v := v.(type) {
	case time.Time:
		if v.Hour() == 0 && v.Minute() == 0 && v.Second() == 0 && v.Nanosecond() == 0 {
			return v.Format(time.DateOnly)
		}
		return v.Format(time.DateTime)
	case *string: // Nullable(String)
		if v == nil {
			return "NULL"
		}
		return *v
	}
	return fmt.Sprint(v)
}
