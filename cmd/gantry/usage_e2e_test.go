package main

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/internal/chtest"
	"github.com/gantry/gantry/internal/eventually"
)

// TestUsageProvisionedEndToEnd: gantry dev with ClickHouse and its Kafka,
// metering in 2-second rows. A model endpoint with usage tracking: its
// worker's replica time reaches default.gantry_provisioned through Kafka
// and the logger, and `gantry usage` prints it priced with --unit-costs
// next to the invocation (whose usage_context is in its usage row), and
// plots it.
func TestUsageProvisionedEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("runs ClickHouse, gantry dev and a worker; run without -short")
	}
	ch := chtest.Start(t)
	db := chtest.Open(t, ch)
	bin, addr, dataDir := buildGantry(t), freeAddr(t), t.TempDir()
	dev := startDev(t, bin, addr, dataDir, "--clickhouse", ch.Addr(), "--meter-period", "2s", "--unit-costs", "CPU/Small=3.6")
	mustCLI(t, bin, addr, "models", "upload", "binary", filepath.Join(fixtures, "binary"))
	mustCLI(t, bin, addr, "endpoints", "create", "-f", endpointFile(t, "bin", "binary", "1", "Small"), "--wait")
	a := &answers{base: "http://" + addr}
	a.ok(t, "PUT", "/api/2.0/serving-endpoints/bin/ai-gateway", `{"usage_tracking_config": {"enabled": true}}`)
	time.Sleep(500 * time.Millisecond) // the route table reaches the activator
	e := readExpected(t, "binary")
	body := strings.TrimSuffix(strings.TrimSpace(string(bodies(t, e)["instances"])), "}") + `, "usage_context": {"team": "risk"}}`
	if status, _, out := invoke(t, addr, "bin", "application/json", []byte(body)); status != 200 {
		t.Fatalf("invoke: %d %s", status, out)
	}

	// One Small replica at 3.6 an hour: a second of it costs 0.001.
	row := regexp.MustCompile(`(?m)^bin\s+1\s+0\s+\d+\s+\d+\s+([0-9.]+)\s+([0-9.]+)\s`)
	var out string
	eventually.True(t, 60*time.Second, "gantry usage shows bin's call and replica time", func() bool {
		out = mustCLI(t, bin, addr, "usage", "--since", "1h")
		m := row.FindStringSubmatch(out)
		return m != nil && toF(m[1]) > 0 && toF(m[2]) > 0
	})
	t.Logf("gantry usage:\n%s", out)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := db.Query(ctx, "SELECT endpoint, served_entity, workload_size, workload_type, period_ms, sum(replica_seconds), max(replica_seconds) FROM `default`.`gantry_provisioned` FINAL GROUP BY endpoint, served_entity, workload_size, workload_type, period_ms")
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Rows) != 1 || strings.Join(res.Rows[0][:5], " ") != "bin binary-1 Small CPU 2000" {
		t.Fatalf("provisioned rows %v", res.Rows)
	}
	// A 2-second row holds at most 2 replica-seconds of the one replica.
	if total, most := toF(res.Rows[0][5]), toF(res.Rows[0][6]); total <= 0 || most > 2.001 {
		t.Errorf("replica-seconds: %v in all, %v in a row", total, most)
	}
	res, err = db.Query(ctx, "SELECT usage_context FROM `default`.`gantry_usage` FINAL")
	if err != nil || len(res.Rows) != 1 || res.Rows[0][0] != `{"team":"risk"}` {
		t.Errorf("the model call's usage row: %v %v", res, err)
	}

	svg := filepath.Join(t.TempDir(), "usage.svg")
	if out := mustCLI(t, bin, addr, "usage", "--since", "1h", "--by", "entity", "--plot", svg); !strings.Contains(out, "binary-1") || !strings.Contains(out, "wrote "+svg) {
		t.Errorf("gantry usage --by entity --plot: %s", out)
	}
	b, err := os.ReadFile(svg)
	if err != nil || !strings.Contains(string(b), "replica-hours") || !strings.Contains(string(b), "binary-1") {
		t.Errorf("the chart: %v %.300s", err, b)
	}
	dev.stop(t)
}

func toF(s string) float64 {
	f, _ := strconv.ParseFloat(s, 64)
	return f
}

// TestPrintUsage: the table's columns, amounts under 0.01 kept visible,
// and a total; the charts leave out metrics with nothing.
func TestPrintUsage(t *testing.T) {
	u := &api.UsageResponse{Since: "7d", By: "endpoint", Step: "1h", Rows: []api.UsageRow{
		{Key: "chat", Requests: 10, Errors: 1, InputTokens: 100, OutputTokens: 200},
		{Key: "fraud", Requests: 2, UsageCost: api.UsageCost{ReplicaSeconds: 7200, Cost: 0.1, SavedReplicaSeconds: 18, SavedCost: 0.00025},
			Workloads: []api.WorkloadUsage{{WorkloadSize: "Small", WorkloadType: "CPU", UsageCost: api.UsageCost{ReplicaSeconds: 7200}}}},
	}, Series: []api.UsageSeries{{Key: "chat", Points: []api.UsagePoint{{TimeMs: 0, Requests: 4}, {TimeMs: 3600000, Requests: 6}}}}}
	var b strings.Builder
	if err := printUsage(&b, u); err != nil {
		t.Fatal(err)
	}
	want := `ENDPOINT  REQUESTS  ERRORS  INPUT_TOKENS  OUTPUT_TOKENS  REPLICA_HOURS  COST  SAVED_HOURS  SAVED_COST  WORKLOADS
chat      10        1       100           200            0              0     0            0
fraud     2         0       0             0              2.00           0.10  0.0050       0.0003      CPU/Small 2.00h
total     12        1       100           200            2.00           0.10  0.0050       0.0003
`
	var got []string
	for _, l := range strings.Split(b.String(), "\n") {
		got = append(got, strings.TrimRight(l, " "))
	}
	if strings.Join(got, "\n") != want {
		t.Errorf("table:\n%s\nwant:\n%s", strings.Join(got, "\n"), want)
	}
	ps := usagePanels(u)
	if len(ps) != 1 || ps[0].column != "requests" || ps[0].metric != "per 1h" || len(ps[0].series[0].pts) != 2 || ps[0].series[0].pts[1].v != 6 {
		t.Errorf("panels %+v", ps)
	}
}
