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
