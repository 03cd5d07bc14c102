package tables_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/internal/chtest"
	"github.com/gantry/gantry/loggers"
	"github.com/gantry/gantry/loggers/tables"
)

func TestEnsureInsertQuery(t *testing.T) {
	db := chtest.Open(t, chtest.Start(t))
	ctx := context.Background()
	tbl := loggers.Table{Database: "ml_prod_logs", Name: "fraud_payload"}
	for range 2 { // idempotent
		if err := db.Ensure(ctx, tbl); err != nil {
			t.Fatal(err)
		}
	}
	recs := []loggers.Record{
		{RequestID: "a", Endpoint: "fraud", ServedEntity: "v1", TimestampMs: 1732500000123, StatusCode: 200,
			ExecutionTimeMs: 3, Request: []byte(`{"inputs": [1]}`), Response: []byte{0xff, 'x'}, SamplingFraction: 1},
		{RequestID: "b", Endpoint: "fraud", ServedEntity: "v2", TimestampMs: 1732500000999, StatusCode: 503,
			LoggingErrorCodes: []string{loggers.ErrRequestTooLarge}},
	}
	for range 2 { // a redelivery
		if err := db.Insert(ctx, tbl, recs); err != nil {
			t.Fatal(err)
		}
	}
	res, err := db.Query(ctx, "SELECT request_id, date, status_code, request, response, logging_error_codes FROM "+tbl.Quoted()+" FINAL ORDER BY request_id")
	if err != nil {
		t.Fatal(err)
	}
	got := make([]string, 0, len(res.Rows))
	for _, r := range res.Rows {
		got = append(got, strings.Join(r, "|"))
	}
	want := []string{"a|2024-11-25|200|{\"inputs\": [1]}|\xffx|[]", "b|2024-11-25|503|||[MAX_REQUEST_SIZE_EXCEEDED]"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("rows:\n%q\nwant\n%q", got, want)
	}
	res, err = db.Query(ctx, "SELECT minute, served_entity, requests, errors, error_rate, p50_ms, p99_ms FROM "+tbl.String()+"_per_minute")
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(res.Rows); got != "[[2024-11-25 02:00:00 v1 1 0 0 3 3] [2024-11-25 02:00:00 v2 1 1 1 0 0]]" {
		t.Errorf("per-minute view: %s", got)
	}
	res, err = db.Query(ctx, "SELECT request_id, status_code FROM "+tbl.String()+"_latest")
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(res.Rows); got != "[[b 503] [a 200]]" {
		t.Errorf("latest view: %s", got)
	}
	if _, err := db.Query(ctx, "DROP TABLE "+tbl.Quoted()); err == nil {
		t.Fatal("Query ran a DROP; it must be read-only")
	}
	err = db.Insert(ctx, loggers.Table{Database: "nope", Name: "nope"}, recs)
	if !tables.IsMissingTable(err) {
		t.Fatalf("insert into a missing table: %v; want IsMissingTable", err)
	}
}

// TestExec: Exec runs writes that Query's readonly setting refuses, and
// returns ClickHouse's error for a bad statement.
func TestExec(t *testing.T) {
	db := chtest.Open(t, chtest.Start(t))
	ctx := context.Background()
	if err := db.Exec(ctx, "CREATE TABLE default.e (n UInt64) ENGINE = MergeTree ORDER BY n"); err != nil {
		t.Fatal(err)
	}
	if err := db.Exec(ctx, "INSERT INTO default.e (n) SELECT number FROM system.numbers LIMIT 3"); err != nil {
		t.Fatal(err)
	}
	res, err := db.Query(ctx, "SELECT sum(n) FROM default.e")
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Rows[0][0]; got != "3" {
		t.Errorf("sum = %s, want 3", got)
	}
	if err := db.Exec(ctx, "INSERT INTO default.missing (n) SELECT 1"); err == nil || !tables.IsMissingTable(err) {
		t.Errorf("insert into a missing table: %v, want a missing-table error", err)
	}
}

// TestQueryErrors: a wrong query is a 400 *api.Error that keeps the
// ClickHouse exception; a result over MaxRows is refused, not cut; a
// query over a limit of the server is a plain error.
func TestQueryErrors(t *testing.T) {
	db := chtest.Open(t, chtest.Start(t))
	ctx := context.Background()
	refused := func(sql string) error {
		t.Helper()
		_, err := db.Query(ctx, sql)
		var ae *api.Error
		if !errors.As(err, &ae) || ae.Code != api.ErrInvalidParameterValue {
			t.Errorf("%s: %v; want an *api.Error %s", sql, err, api.ErrInvalidParameterValue)
		}
		return err
	}
	for _, sql := range []string{"SELEC 1", "SELECT nope FROM system.one", "SELECT nofunc(1)", "DROP TABLE system.one", "SELECT 1 + 'a'"} {
		if err := refused(sql); tables.IsMissingTable(err) {
			t.Errorf("%s: IsMissingTable(%v)", sql, err)
		}
	}
	for _, sql := range []string{"SELECT 1 FROM nodb.t", "SELECT 1 FROM system.nope"} {
		if err := refused(sql); !tables.IsMissingTable(err) {
			t.Errorf("%s: IsMissingTable(%v) = false", sql, err)
		}
	}
	if res, err := db.Query(ctx, fmt.Sprintf("SELECT number FROM system.numbers LIMIT %d", tables.MaxRows)); err != nil || len(res.Rows) != tables.MaxRows {
		t.Errorf("MaxRows rows: %v", err)
	}
	if err := refused(fmt.Sprintf("SELECT number FROM system.numbers LIMIT %d", tables.MaxRows+1)); !errors.Is(err, tables.ErrTooManyRows) {
		t.Errorf("MaxRows+1 rows: %v; want ErrTooManyRows", err)
	}
	_, err := db.Query(ctx, "SELECT count() FROM (SELECT number FROM system.numbers LIMIT 100000) SETTINGS max_rows_to_read = 10")
	var ae *api.Error
	if err == nil || errors.As(err, &ae) {
		t.Errorf("over max_rows_to_read: %v; want a plain error", err)
	}
	// ClickHouse's own time limit is a deadline (504 through the API).
	_, err = db.Query(ctx, "SELECT count() FROM system.numbers SETTINGS max_execution_time = 1")
	if !errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ae) {
		t.Errorf("over max_execution_time: %v; want a deadline", err)
	}
}
