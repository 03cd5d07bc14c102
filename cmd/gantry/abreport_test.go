package main

// gantry ab-report against gantry dev and a real ClickHouse. The rows are
// written straight into the endpoint's inference table, so the counts are
// known without waiting on traffic; loggers/report's tests check every
// number, this one the command: flags, output and errors.

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/gantry/gantry/internal/chtest"
	"github.com/gantry/gantry/loggers"
	"github.com/gantry/gantry/loggers/tables"
)

func TestABReport(t *testing.T) {
	if testing.Short() {
		t.Skip("runs ClickHouse and gantry dev; run without -short")
	}
	bin, addr := buildGantry(t), freeAddr(t)
	ch := chtest.Start(t)
	db := chtest.Open(t, ch)
	startDev(t, bin, addr, t.TempDir(), "--clickhouse", ch.Addr())
	mustCLI(t, bin, addr, "models", "upload", "binary", filepath.Join(fixtures, "binary"))
	ep := filepath.Join(t.TempDir(), "ep.json")
	writeFile(t, ep, `{"name": "fraud", "config": {"served_entities": [{"entity_name": "binary", "entity_version": "1", "workload_size": "Small", "scale_to_zero_enabled": true}],
		"auto_capture_config": {"catalog_name": "ml", "schema_name": "logs", "enabled": true}}}`)
	mustCLI(t, bin, addr, "endpoints", "create", "-f", ep)
	writeFile(t, ep, `{"name": "plain", "config": {"served_entities": [{"entity_name": "binary", "entity_version": "1", "workload_size": "Small", "scale_to_zero_enabled": true}]}}`)
	mustCLI(t, bin, addr, "endpoints", "create", "-f", ep)

	// Two minutes ago: champion answers 6 requests (one fails),
	// challenger 4, and challenger's shadow route 2 mirrored ones.
	ctx := context.Background()
	tbl := loggers.Table{Database: "ml_logs", Name: "fraud_payload"}
	if err := db.Ensure(ctx, tbl); err != nil {
		t.Fatal(err)
	}
	start := time.Now().Add(-2 * time.Minute).UnixMilli()
	var recs []loggers.Record
	add := func(entity string, shadow bool, n, failures int) {
		for i := range n {
			r := loggers.Record{RequestID: fmt.Sprintf("%s-%d", entity, i), ClientRequestID: fmt.Sprintf("k%d", i),
				Endpoint: "fraud", ServedEntity: entity, TimestampMs: start + int64(len(recs)), StatusCode: 200,
				ExecutionTimeMs: int64(10 + i), Response: []byte(`{"predictions": [1]}`), Shadow: shadow}
			if shadow {
				r.RequestID += loggers.ShadowSuffix
			}
			if i < failures {
				r.StatusCode, r.Response = 503, []byte(`{"error_code": "TEMPORARILY_UNAVAILABLE", "message": "x"}`)
			}
			recs = append(recs, r)
		}
	}
	add("champion", false, 6, 1)
	add("challenger", false, 4, 0)
	add("challenger", true, 2, 0)
	if err := db.Insert(ctx, tbl, recs); err != nil {
		t.Fatal(err)
	}

	out := mustCLI(t, bin, addr, "ab-report", "fraud")
	if !strings.Contains(out, "endpoint fraud: requests from ") || !strings.Contains(out, "(last 1h0m0s)") {
		t.Errorf("no window line:\n%s", out)
	}
	// Each entity's line: name, shadow, requests, error rate.
	for _, want := range [][]string{
		{"champion", "no", "6", "16.67%", "(1)"},
		{"challenger", "no", "4", "0.00%", "(0)"},
		{"challenger", "yes", "2", "0.00%", "(0)"},
	} {
		if line(out, want) == "" {
			t.Errorf("no line starting %q in:\n%s", want, out)
		}
	}

	// Labels add an accuracy column: champion's 5 answers are all 1, and
	// keys k0..k2 are labelled 1, 0, 1, so k1 is wrong; k0 failed there.
	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{ch.Addr()}, Auth: clickhouse.Auth{Username: "default"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, q := range []string{
		"CREATE DATABASE IF NOT EXISTS truth",
		"CREATE TABLE truth.outcomes (id String, y UInt8) ENGINE = MergeTree() ORDER BY id",
	} {
		if err := conn.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	b, err := conn.PrepareBatch(ctx, "INSERT INTO truth.outcomes (id, y)")
	if err != nil {
		t.Fatal(err)
	}
	for i, y := range []uint8{1, 0, 1} {
		if err := b.Append(fmt.Sprintf("k%d", i), y); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}
	out = mustCLI(t, bin, addr, "ab-report", "fraud", "--since", "10m", "--labels", "truth.outcomes", "--key", "id", "--label-col", "y", "--threshold", "0.5")
	// champion: k1 wrong, k2 right. challenger: k0 and k2 right, k1
	// wrong. The shadow: k0 right, k1 wrong.
	for _, c := range []struct {
		start    []string
		accuracy string
	}{
		{[]string{"champion", "no", "6", "16.67%", "(1)"}, "50.00% (1/2)"},
		{[]string{"challenger", "no", "4"}, "66.67% (2/3)"},
		{[]string{"challenger", "yes", "2"}, "50.00% (1/2)"},
	} {
		if l := line(out, c.start); !strings.HasSuffix(l, "  "+c.accuracy) {
			t.Errorf("line starting %q is %q; want it to end with accuracy %s in:\n%s", c.start, l, c.accuracy, out)
		}
	}
	for _, want := range []string{"ACCURACY", "(a number >= 0.5 counts as 1, below as 0)", "matched on truth.outcomes.id = client_request_id"} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in:\n%s", want, out)
		}
	}

	// Errors say what is wrong, and nothing reaches SQL from a bad name.
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"ab-report", "fraud", "--since", "1m"}, "no requests of endpoint fraud were logged in the last 1m0s"},
		{[]string{"ab-report", "plain"}, "endpoint plain has no inference table"},
		{[]string{"ab-report", "fraud", "--labels", "truth.outcomes; DROP TABLE ml_logs.fraud_payload"}, "labels table"},
		{[]string{"ab-report", "fraud", "--labels", "truth.outcomes", "--label-col", "y` OR 1"}, "label column"},
		{[]string{"ab-report", "fraud", "--labels", "truth.nope", "--label-col", "y"}, "accuracy from labels table truth.nope"},
		{[]string{"ab-report", "fraud", "--threshold", "0.5"}, "need --labels"},
		{[]string{"ab-report", "fraud", "--since", "-1h"}, "want a positive duration"},
	} {
		out, err := cli(t, bin, addr, c.args...)
		if err == nil || !strings.Contains(out, c.want) {
			t.Errorf("gantry %s: %v\n%s\nwant an error saying %q", strings.Join(c.args, " "), err, out, c.want)
		}
	}
	if n := countRows(t, db, tbl); n != len(recs) {
		t.Errorf("the table holds %d rows after the injection attempts; want %d", n, len(recs))
	}
}

// line is the line of out that starts with the fields start, or "".
func line(out string, start []string) string {
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) >= len(start) && strings.Join(f[:len(start)], " ") == strings.Join(start, " ") {
			return l
		}
	}
	return ""
}

// countRows counts the rows of tbl, each request once.
func countRows(t *testing.T, db *tables.DB, tbl loggers.Table) int {
	t.Helper()
	res, err := db.Query(context.Background(), "SELECT count() FROM "+tbl.Quoted()+" FINAL")
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(res.Rows[0][0])
	if err != nil {
		t.Fatal(err)
	}
	return n
}
