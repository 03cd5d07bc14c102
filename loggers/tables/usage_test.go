package tables_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/gantry/gantry/internal/chtest"
	"github.com/gantry/gantry/loggers"
)

// TestInsertUsage: the first insert creates the usage table, and a
// redelivered row counts once with FINAL.
func TestInsertUsage(t *testing.T) {
	db := chtest.Open(t, chtest.Start(t))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	u := loggers.UsageRow{RequestID: "r1", TimestampMs: time.Now().UnixMilli(), Endpoint: "chat", ServedEntity: "gpt",
		Requester: "alice@corp.com", StatusCode: 200, InputTokens: 12, OutputTokens: 30, Streaming: true}
	for range 2 {
		if err := db.InsertUsage(ctx, []loggers.UsageRow{u}); err != nil {
			t.Fatal(err)
		}
	}
	res, err := db.Query(ctx, "SELECT endpoint, served_entity, requester, status_code, sum(input_tokens), sum(output_tokens), count() FROM "+loggers.UsageTable.Quoted()+" FINAL GROUP BY endpoint, served_entity, requester, status_code")
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(res.Rows); got != "[[chat gpt alice@corp.com 200 12 30 1]]" {
		t.Fatalf("rows %s", got)
	}
}

// TestEnsureUsageAddsUsageContext: a usage table made before
// usage_context was a column gets it, and rows written then read "{}".
func TestEnsureUsageAddsUsageContext(t *testing.T) {
	db := chtest.Open(t, chtest.Start(t))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The table as the first usage tracking made it, with a row.
	for _, q := range []string{
		"CREATE DATABASE IF NOT EXISTS `default`",
		"CREATE TABLE " + loggers.UsageTable.Quoted() + ` (request_id String, date Date, timestamp_ms Int64, endpoint String,
			served_entity String, requester String, status_code Int32, input_tokens Int64, output_tokens Int64, streaming UInt8,
			client_request_id String) ENGINE = ReplacingMergeTree() PARTITION BY date ORDER BY request_id`,
		// INSERT … VALUES through the driver waits for a block: SELECT.
		"INSERT INTO " + loggers.UsageTable.Quoted() + " (request_id, date, endpoint) SELECT 'old', today(), 'chat'",
	} {
		if err := db.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 { // the second finds the column
		if err := db.EnsureUsage(ctx); err != nil {
			t.Fatal(err)
		}
	}
	u := loggers.UsageRow{RequestID: "new", TimestampMs: time.Now().UnixMilli(), Endpoint: "chat", UsageContext: map[string]string{"team": "risk", "a": "b"}}
	if err := db.InsertUsage(ctx, []loggers.UsageRow{u}); err != nil {
		t.Fatal(err)
	}
	res, err := db.Query(ctx, "SELECT request_id, usage_context FROM "+loggers.UsageTable.Quoted()+" FINAL ORDER BY request_id")
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(res.Rows); got != `[[new {"a":"b","team":"risk"}] [old {}]]` {
		t.Fatalf("rows %s", got)
	}
}
