package scheduler

import (
	"context"
	"fmt"
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
	if code, e := h.call(t, "GET", "/api/2.0/gantry/usage", "", nil); code != 503 || !strings.Contains(e.Message, "usage tables are off") {
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
		{RequestID: "1", TimestampMs: now, Endpoint: "fraud", ServedEntity: "a", Requester: "alice", StatusCode: 200, InputTokens: 10, OutputTokens: 20,
			UsageContext: map[string]string{"team": "risk", "project": "p-1"}},
		{RequestID: "2", TimestampMs: now, Endpoint: "fraud", ServedEntity: "b", Requester: "bob", StatusCode: 429, UsageContext: map[string]string{"team": "ops"}},
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
		// By a key of usage_context; "" for requests without it.
		{"?since=1d&by=usage_context.team", "[{ 1 0 1 2} {ops 1 1 0 0} {risk 1 0 10 20}]"},
	} {
		var out api.UsageResponse
		if code, e := h.call(t, "GET", "/api/2.0/gantry/usage"+c.query, "", &out); code != 200 || fmtRows(out.Rows) != c.want {
			t.Errorf("%s: %d %+v %s; want %s", c.query, code, e, fmtRows(out.Rows), c.want)
		}
	}
	// Provisioned time, priced: an hour of a Small CPU replica at 0.36
	// and half an hour saved; 6 minutes of a GPU_SMALL one at 3.6.
	h.s.cfg.UnitCosts, _ = ParseUnitCosts("CPU/Small=0.36,GPU_SMALL=3.6")
	minute := now - now%60000
	prov := []loggers.ProvisionedRow{
		{RowID: "p1", TimestampMs: minute, PeriodMs: 60000, Endpoint: "fraud", ServedEntity: "a", WorkloadSize: "Small", WorkloadType: "CPU", ReplicaSeconds: 1800, SavedReplicaSeconds: 1800},
		{RowID: "p2", TimestampMs: minute - 60000, PeriodMs: 60000, Endpoint: "fraud", ServedEntity: "a", WorkloadSize: "Small", WorkloadType: "CPU", ReplicaSeconds: 1800},
		{RowID: "p3", TimestampMs: minute, PeriodMs: 60000, Endpoint: "fraud", ServedEntity: "b", WorkloadSize: "Medium", WorkloadType: "GPU_SMALL", ReplicaSeconds: 360},
		{RowID: "p4", TimestampMs: minute, PeriodMs: 60000, Endpoint: "idle", ServedEntity: "z", WorkloadSize: "Small", WorkloadType: "CPU", SavedReplicaSeconds: 60},
	}
	if err := db.InsertProvisioned(ctx, append(prov, prov[0])); err != nil { // a redelivery counts once
		t.Fatal(err)
	}
	var rep api.UsageResponse
	if code, e := h.call(t, "GET", "/api/2.0/gantry/usage?since=1h&by=endpoint", "", &rep); code != 200 {
		t.Fatalf("usage: %d %+v", code, e)
	}
	if got, want := fmtCosts(rep.Rows), "[{fraud 2 3960 0.72 1800 0.18 [Small/CPU 3600 0.36, Medium/GPU_SMALL 360 0.36]} {chat 1 0 0 0 0 []} {idle 0 0 0 60 0.006 [Small/CPU 0 0]}]"; got != want {
		t.Errorf("provisioned by endpoint:\n got %s\nwant %s", got, want)
	}
	// The series: 1-minute buckets for an hour, the busiest keys.
	if rep.Step != "1m" || len(rep.Series) != 3 || rep.Series[0].Key != "fraud" || len(rep.Series[0].Points) != 2 {
		t.Fatalf("series %s %+v", rep.Step, rep.Series)
	}
	p0, p1 := rep.Series[0].Points[0], rep.Series[0].Points[1]
	if p0.TimeMs != minute-60000 || p0.ReplicaSeconds != 1800 || p0.Requests != 0 ||
		p1.TimeMs != minute || p1.ReplicaSeconds != 2160 || p1.Requests != 2 || p1.InputTokens != 10 {
		t.Errorf("fraud's points %+v", rep.Series[0].Points)
	}
	var byReq, month api.UsageResponse
	if code, _ := h.call(t, "GET", "/api/2.0/gantry/usage?since=1h&by=requester", "", &byReq); code != 200 || fmtCosts(byReq.Rows) != "[{alice 2 0 0 0 0 []} {bob 1 0 0 0 0 []}]" {
		t.Errorf("by requester (no replicas): %s", fmtCosts(byReq.Rows))
	}
	if code, _ := h.call(t, "GET", "/api/2.0/gantry/usage?since=30d&by=entity", "", &month); code != 200 || month.Step != "1d" || len(month.Rows) != 4 {
		t.Errorf("30d by entity: step %q rows %s", month.Step, fmtCosts(month.Rows))
	}

	for _, c := range []struct{ query, want string }{
		{"?since=7", "since: \"7\" is not a duration"},
		{"?since=1w", "since: \"1w\" is not a duration"},
		{"?by=model", "by: \"model\" is not one of endpoint, entity, requester, usage_context.KEY"},
		{"?by=usage_context.a'b", "by: \"usage_context.a'b\" is not one of"},
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

func fmtCosts(rows []api.UsageRow) string {
	var b []string
	for _, r := range rows {
		var ws []string
		for _, w := range r.Workloads {
			ws = append(ws, fmt.Sprintf("%s/%s %g %.3g", w.WorkloadSize, w.WorkloadType, w.ReplicaSeconds, w.Cost))
		}
		b = append(b, fmt.Sprintf("{%s %d %g %.3g %g %.3g [%s]}", r.Key, r.Requests, r.ReplicaSeconds, r.Cost, r.SavedReplicaSeconds, r.SavedCost, strings.Join(ws, ", ")))
	}
	return "[" + strings.Join(b, " ") + "]"
}

func TestUsageStep(t *testing.T) {
	for _, c := range []struct {
		since time.Duration
		want  string
	}{{30 * time.Minute, "1m"}, {3 * time.Hour, "1m"}, {4 * time.Hour, "1h"}, {7 * 24 * time.Hour, "1h"},
		{9 * 24 * time.Hour, "1d"}, {200 * 24 * time.Hour, "1d"}, {365 * 24 * time.Hour, "7d"}, {3660 * 24 * time.Hour, "30d"}} {
		if _, got := usageStep(c.since); got != c.want {
			t.Errorf("usageStep(%v) = %s; want %s", c.since, got, c.want)
		}
	}
}
