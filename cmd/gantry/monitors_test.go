package main

// gantry monitors against gantry dev and a real ClickHouse: synthetic
// traffic is written straight into the endpoint's inference table, two
// hours back, with x shifting in its fourth window of 5 minutes;
// monitors' own tests check the statistics, this one the commands.

import (
	"bytes"
	"context"
	"encoding/xml"
	"fmt"
	"image/png"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/internal/chtest"
	"github.com/gantry/gantry/loggers"
)

func TestMonitorsCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("runs ClickHouse and gantry dev; run without -short")
	}
	bin, addr := buildGantry(t), freeAddr(t)
	ch := chtest.Start(t)
	db := chtest.Open(t, ch)
	dev := startDev(t, bin, addr, t.TempDir(), "--clickhouse", ch.Addr(), "--monitor-interval", "200ms", "--webhook-allow", "127.0.0.1")
	mustCLI(t, bin, addr, "models", "upload", "binary", filepath.Join(fixtures, "binary"))
	dir := t.TempDir()
	ep := filepath.Join(dir, "ep.json")
	writeFile(t, ep, `{"name": "fraud", "config": {"served_entities": [{"entity_name": "binary", "entity_version": "1", "workload_size": "Small", "scale_to_zero_enabled": true}],
		"auto_capture_config": {"catalog_name": "ml", "schema_name": "logs", "enabled": true}}}`)
	mustCLI(t, bin, addr, "endpoints", "create", "-f", ep)

	ctx := context.Background()
	tbl := loggers.Table{Database: "ml_logs", Name: "fraud_payload"}
	const g = 5 * time.Minute
	base := time.Now().Add(-2 * time.Hour).Truncate(g)
	r := rand.New(rand.NewPCG(7, 8))
	var recs []loggers.Record
	for w := range 6 {
		for i := range 80 {
			x := r.NormFloat64()
			if w >= 3 {
				x += 3
			}
			recs = append(recs, loggers.Record{RequestID: fmt.Sprintf("r%d-%d", w, i), Endpoint: "fraud", ServedEntity: "binary-1",
				TimestampMs: base.Add(time.Duration(w)*g + time.Duration(i)*time.Second).UnixMilli(), StatusCode: 200,
				Request:  fmt.Appendf(nil, `{"dataframe_split": {"columns": ["x"], "data": [[%g]]}}`, x),
				Response: []byte(`{"predictions": [1]}`), SamplingFraction: 1})
		}
	}
	if err := db.Insert(ctx, tbl, recs); err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	got := map[string]int{}
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got[r.Header.Get(api.AlertIDHeader)]++
		mu.Unlock()
	}))
	defer hook.Close()
	def := filepath.Join(dir, "drift.json")
	writeFile(t, def, `{"name": "fraud_drift", "endpoint": "fraud", "granularity": "5m", "columns": [{"name": "x", "kind": "numeric"}],
		"thresholds": {"ks_statistic": 0.5}, "alert_webhook_url": "`+hook.URL+`"}`)
	bad := filepath.Join(dir, "bad.json")
	writeFile(t, bad, `{"name": "bad", "endpoint": "fraud", "granularity": "7m", "columns": [{"name": "amount", "kind": "numeric"}]}`)
	if out, err := cli(t, bin, addr, "monitors", "create", "-f", bad); err == nil || !strings.Contains(out, `granularity "7m"`) {
		t.Errorf("create a bad monitor: %v\n%s", err, out)
	}
	out := mustCLI(t, bin, addr, "monitors", "create", "-f", def)
	if !strings.Contains(out, `"table": "ml_logs.fraud_payload"`) {
		t.Errorf("create printed:\n%s", out)
	}
	if out := mustCLI(t, bin, addr, "monitors", "list"); line(out, []string{"fraud_drift", "fraud", "5m", "ml_logs.fraud_payload", "x"}) == "" {
		t.Errorf("list:\n%s", out)
	}

	for i := range 2 {
		out := mustCLI(t, bin, addr, "monitors", "run", "fraud_drift", "--lookback", "3h")
		want := "1 alerts sent"
		if i == 1 {
			want = "0 alerts sent"
		}
		if !strings.Contains(out, want) {
			t.Errorf("run %d: no %q in:\n%s", i, want, out)
		}
	}
	mu.Lock()
	if len(got) != 1 {
		t.Errorf("webhook got %v; want one alert, once", got)
	}
	for id, n := range got {
		if n != 1 {
			t.Errorf("alert %s delivered %d times", id, n)
		}
	}
	mu.Unlock()

	svg, pngFile := filepath.Join(dir, "drift.svg"), filepath.Join(dir, "drift.png")
	out = mustCLI(t, bin, addr, "monitors", "report", "fraud_drift", "--windows", "6", "--plot", svg)
	shift := base.Add(3 * g).UTC().Format(time.RFC3339)
	if l := line(out, []string{shift, "binary-1", "-", "x", "CONSECUTIVE", "ks_statistic"}); !strings.HasSuffix(l, "yes") {
		t.Errorf("report: the shifted window's KS line is %q; want it crossed, in:\n%s", l, out)
	}
	crossed := 0
	for _, l := range strings.Split(out, "\n") {
		if strings.HasSuffix(l, " yes") {
			crossed++
		}
	}
	if crossed != 1 {
		t.Errorf("report: %d crossed lines, want 1:\n%s", crossed, out)
	}
	b, err := os.ReadFile(svg)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		XMLName   xml.Name `xml:"svg"`
		Polylines []struct {
			Points string `xml:"points,attr"`
		} `xml:"polyline"`
		Texts []string `xml:"text"`
	}
	if err := xml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("%s is not valid SVG: %v", svg, err)
	}
	if len(doc.Polylines) != 1 || len(strings.Fields(doc.Polylines[0].Points)) != 5 || !strings.Contains(strings.Join(doc.Texts, "|"), "x — ks_statistic") {
		t.Errorf("SVG: %d lines, texts %q; want one line of 5 windows titled x — ks_statistic", len(doc.Polylines), doc.Texts)
	}

	mustCLI(t, bin, addr, "monitors", "report", "fraud_drift", "--plot", pngFile)
	f, err := os.ReadFile(pngFile)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(f))
	if err != nil {
		t.Fatalf("%s is not a PNG: %v", pngFile, err)
	}
	colored := 0
	for y := img.Bounds().Min.Y; y < img.Bounds().Max.Y; y++ {
		for x := img.Bounds().Min.X; x < img.Bounds().Max.X; x++ {
			if r, g, b, _ := img.At(x, y).RGBA(); r != g || g != b {
				colored++
			}
		}
	}
	if colored < 100 {
		t.Errorf("PNG has %d colored pixels; want a drawn chart", colored)
	}

	// The in-process logger refreshes the monitor on its own too.
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(dev.log.String(), "monitors: refreshed"); {
		if time.Now().After(deadline) {
			t.Fatalf("gantry dev did not refresh the monitor on schedule:\n%s", dev.log)
		}
		time.Sleep(50 * time.Millisecond)
	}

	mustCLI(t, bin, addr, "monitors", "delete", "fraud_drift")
	if out, err := cli(t, bin, addr, "monitors", "get", "fraud_drift"); err == nil || !strings.Contains(out, "does not exist") {
		t.Errorf("get after delete: %v\n%s", err, out)
	}
}

// TestMonitorDefinitionsOverAPI: what `gantry logger --scheduler` reads
// each tick is the definitions the API lists, as monitors.
func TestMonitorDefinitionsOverAPI(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/2.0/gantry/monitors" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprint(w, `{"monitors": [{"name": "d", "endpoint": "fraud", "table": "ml_logs.fraud_payload", "granularity": "5m",
			"columns": [{"name": "x", "kind": "numeric"}], "baseline": {"table": "ml.base"}, "thresholds": {"psi": 0.2},
			"alert_webhook_url": "http://hooks.test/a"}]}`)
	}))
	defer srv.Close()
	cl, err := newClient(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	ms, err := apiMonitors(cl)(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 1 {
		t.Fatalf("got %d monitors, want 1", len(ms))
	}
	m := ms[0]
	if err := m.Validate(); err != nil {
		t.Fatalf("the definition read does not validate: %v", err)
	}
	if m.Table.String() != "ml_logs.fraud_payload" || m.Baseline == nil || m.Baseline.Table == nil || m.Baseline.Table.String() != "ml.base" ||
		m.Window() != 5*time.Minute || m.AlertWebhookURL != "http://hooks.test/a" || m.Thresholds["psi"] != 0.2 {
		t.Errorf("monitor read = %+v", m)
	}
}
