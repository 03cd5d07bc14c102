package tables_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/gantry/gantry/internal/chtest"
	"github.com/gantry/gantry/loggers"
)

// TestInsertAudit: the first insert creates the audit table, and a
// redelivered event counts once with FINAL.
func TestInsertAudit(t *testing.T) {
	db := chtest.Open(t, chtest.Start(t))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e := loggers.AuditEvent{EventID: "e1", TimestampMs: time.Now().UnixMilli(), Principal: "alice@corp.com",
		Action: "DELETE /api/2.0/serving-endpoints/{name}", Path: "/api/2.0/serving-endpoints/fraud", StatusCode: 403, ErrorCode: "PERMISSION_DENIED"}
	for range 2 {
		if err := db.InsertAudit(ctx, []loggers.AuditEvent{e}); err != nil {
			t.Fatal(err)
		}
	}
	res, err := db.Query(ctx, "SELECT principal, action, path, status_code, error_code, count() FROM "+loggers.AuditTable.Quoted()+" FINAL GROUP BY principal, action, path, status_code, error_code")
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(res.Rows); got != "[[alice@corp.com DELETE /api/2.0/serving-endpoints/{name} /api/2.0/serving-endpoints/fraud 403 PERMISSION_DENIED 1]]" {
		t.Fatalf("rows %s", got)
	}
}
