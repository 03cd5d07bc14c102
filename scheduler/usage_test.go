package scheduler

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/internal/chtest"
	"github.com/gantry/gantry/loggers"
)

// TestUsage: usage_tracking_config needs ClickHouse, creates the usage
// table and reaches the route table; GET /api/2.0/gantry/usage sums the
// rows since a time, by endpoint, entity or requester.
func TestUsage(t *testing.T) {
	h := newHarness(t, t.TempDir())
	h.upload(t, "m")
	if code, e := h.call(t, "POST", "/api/2.0/serving-endpoints", createBody, nil); code != 200 {
		t.Fatalf("create: %d %v", code, e)
	}
	const path = "/api/2.0/serving-endpoints/fraud/ai-gateway"
	if code, e := h.call(t, "PUT", path, `{"usage_tracking_config": {"enabled": true}}`, nil); code != 400 || !strings.Contains(e.Message, "usage_tracking_config: usage tables are off") {
		t.Errorf("without ClickHouse: %d %+v", code, e)
	}
	if code, e := h.call(t, "GET", "/api/2.0/gantry/usage", "", nil); code != 400 || !strings.Contains(e.Message, "usage tables are off") {
		t.Errorf("GET without ClickHouse: %d %+v", code, e)
	}
	db := chtest.Open(t, chtest.Start(t))
	h.s.cfg.Tables = db
	var out api.UsageResponse
	if code, e := h.call(t, "GET", "/api/2.0/gantry/usage", "", &out); code != 200 || len(out.Rows) != 0 || out.Since != "7d" || out.By != "endpoint" {
		t.Errorf("GET before any row: %d %+v %+v", code, e, out)
	}
	if code, e := h.call(t, "PUT", path, `{"usage_tracking_config": {"enabled": true}}`, nil); code != 200 {
		t.Fatalf("enable: %d %+v", code, e)
	}
	h.reconcile()
	for _, r := range h.routes.Current().Endpoints {
		if r.Name == "fraud" && !r.Usage {
			t.Errorf("route %+v: want usage", r)
		}
	}
	now := h.s.cfg.Now().UnixMilli()
	rows := []loggers.UsageRow{
		{RequestID: "1", TimestampMs: now, Endpoint: "fraud", ServedEntity: "a", Requester: "alice", StatusCode: 200, InputTokens: 10, OutputTokens: 20},
		{RequestID: "2", TimestampMs: now, Endpoint: "fraud", ServedEntity: "b", Requester: "bob", StatusCode: 429},
		{RequestID: "3", TimestampMs: now, Endpoint: "chat", ServedEntity: "a", Requester: "alice", StatusCode: 200, InputTokens: 1, OutputTokens: 2},
		{RequestID: "4", TimestampMs: now - (48 * time.Hour).Milliseconds(), Endpoint: "chat", Requester: "alice", StatusCode: 200, InputTokens: 100},
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := db.InsertUsage(ctx, append(rows, rows[0])); err != nil { // a redelivery counts once
		t.Fatal(err)
	}
	for _, c := range []struct{ query, want string }{
		{"?since=1d&by=endpoint", "[{fraud 2 1 10 20} {chat 1 0 1 2}]"},
		{"?since=7d&by=endpoint", "[{chat 2 0 101 2} {fraud 2 1 10 20}]"},
		{"?since=24h&by=requester", "[{alice 2 0 11 22} {bob 1 1 0 0}]"},
		{"?since=30m&by=entity", "[{a 2 0 11 22} {b 1 1 0 0}]"},
	} {
		var out api.UsageResponse
		if code, e := h.call(t, "GET", "/api/2.0/gantry/usage"+c.query, "", &out); code != 200 || fmtRows(out.Rows) != c.want {
			t.Errorf("%s: %d %+v %s; want %s", c.query, code, e, fmtRows(out.Rows), c.want)
		}
	}
	for _, c := range []struct{ query, want string }{
		{"?since=7", "since: \"7\" is not a duration"},
		{"?since=1w", "since: \"1w\" is not a duration"},
		{"?by=model", "by: \"model\" is not one of endpoint, entity, requester"},
	} {
		if code, e := h.call(t, "GET", "/api/2.0/gantry/usage"+c.query, "", nil); code != 400 || !strings.Contains(e.Message, c.want) {
			t.Errorf("%s: %d %+v", c.query, code, e)
		}
	}
}

func fmtRows(rows []api.UsageRow) string {
	var b strings.Builder
	b.WriteString("[")
	for i, r := range rows {
		if i > 0 {
			b.WriteString(" ")
		}
		b.WriteString("{" + r.Key + " " + itoa(r.Requests) + " " + itoa(r.Errors) + " " + itoa(r.InputTokens) + " " + itoa(r.OutputTokens) + "}")
	}
	return b.String() + "]"
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
