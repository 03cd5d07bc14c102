package scheduler

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/internal/chtest"
	"github.com/gantry/gantry/loggers"
	"github.com/gantry/gantry/loggers/tables"
	"github.com/gantry/gantry/monitors"
)

var monT0 = time.Date(2024, 11, 25, 0, 0, 0, 0, time.UTC)

// shiftTraffic logs 100 requests of one row in each of 6 windows of 5
// minutes from monT0; from window 3 on, x moves by three standard
// deviations.
func shiftTraffic(t *testing.T, db *tables.DB, table loggers.Table) {
	t.Helper()
	r := rand.New(rand.NewPCG(1, 2))
	var recs []loggers.Record
	for w := range 6 {
		for i := range 100 {
			x := r.NormFloat64()
			if w >= 3 {
				x += 3
			}
			recs = append(recs, loggers.Record{RequestID: fmt.Sprintf("r%d-%d", w, i), Endpoint: "fraud-det", ServedEntity: "v1",
				TimestampMs: monT0.Add(time.Duration(w)*5*time.Minute + time.Duration(i)*time.Second).UnixMilli(), StatusCode: 200,
				Request:  fmt.Appendf(nil, `{"dataframe_records": [{"x": %g, "c": "a"}]}`, x),
				Response: []byte(`{"predictions": [0]}`), SamplingFraction: 1})
		}
	}
	if err := db.Insert(context.Background(), table, recs); err != nil {
		t.Fatal(err)
	}
}

// webhook counts the deliveries of each alert ID.
type webhook struct {
	mu   sync.Mutex
	got  map[string]int
	body []api.MonitorAlert
}

func newWebhook(t *testing.T) (*webhook, string) {
	wh := &webhook{got: map[string]int{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var al api.MonitorAlert
		b, _ := io.ReadAll(r.Body)
		json.Unmarshal(b, &al)
		wh.mu.Lock()
		wh.got[r.Header.Get(api.AlertIDHeader)]++
		wh.body = append(wh.body, al)
		wh.mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	return wh, srv.URL
}

const monitorBody = `{"name": "drift", "endpoint": "fraud-det", "granularity": "5m",
	"columns": [{"name": "x", "kind": "numeric"}], "thresholds": {"ks_statistic": 0.5}, "alert_webhook_url": "%s"}`

func TestMonitorsAPI(t *testing.T) {
	h := newHarness(t, t.TempDir())
	h.upload(t, "m")
	db := chtest.Open(t, chtest.Start(t))
	h.s.cfg.Tables = db
	// The webhook is an httptest server: loopback, refused unless allowed.
	allow, err := monitors.ParseWebhookAllow([]string{"127.0.0.1", "::1"})
	if err != nil {
		t.Fatal(err)
	}
	h.s.cfg.WebhookAllow = allow
	h.s.cfg.Monitors = monitors.NewRefresher(db, &monitors.Alerter{Allow: allow, Backoff: time.Millisecond})
	now := monT0.Add(31 * time.Minute)
	h.s.cfg.Now = func() time.Time { return now }
	if code, e := h.call(t, "POST", "/api/2.0/serving-endpoints", captureBody("ml", "logs", ""), nil); code != 200 {
		t.Fatalf("create endpoint: %d %v", code, e)
	}
	if code, e := h.call(t, "POST", "/api/2.0/serving-endpoints", createBody, nil); code != 200 {
		t.Fatalf("create endpoint: %d %v", code, e)
	}
	shiftTraffic(t, db, loggers.Table{Database: "ml_logs", Name: "fraud_det_payload"})
	wh, url := newWebhook(t)

	for _, c := range []struct {
		name, body, want string
		code             int
	}{
		{"unknown column", strings.Replace(monitorBody, `"x"`, `"amount"`, 1), `has a column "amount"`, 400},
		{"bad granularity", strings.Replace(monitorBody, `"5m"`, `"7m"`, 1), `granularity "7m"`, 400},
		{"threshold out of range", strings.Replace(monitorBody, "0.5}", "1.5}", 1), "thresholds.ks_statistic: 1.5 is out of range", 400},
		{"webhook", monitorBody, "alert_webhook_url", 400},
		{"unknown endpoint", strings.Replace(monitorBody, `"fraud-det"`, `"nope"`, 1), `endpoint "nope" does not exist`, 404},
		{"no inference table", strings.Replace(monitorBody, `"fraud-det"`, `"fraud"`, 1), "no inference table", 400},
		{"table given", strings.Replace(monitorBody, `"5m"`, `"5m", "table": "ml_logs.other"`, 1), "table: Gantry sets it", 400},
		{"unknown field", strings.Replace(monitorBody, `"5m"`, `"5m", "schedule": "daily"`, 1), `unknown field "schedule"`, 400},
	} {
		body := c.body
		if c.name != "webhook" {
			body = fmt.Sprintf(body, url)
		} else {
			body = fmt.Sprintf(body, "ftp://example.com/hook")
		}
		code, e := h.call(t, "POST", "/api/2.0/gantry/monitors", body, nil)
		if code != c.code || !strings.Contains(e.Message, c.want) {
			t.Errorf("%s: %d %v; want %d naming %q", c.name, code, e, c.code, c.want)
		}
	}

	var m api.Monitor
	if code, e := h.call(t, "POST", "/api/2.0/gantry/monitors", fmt.Sprintf(monitorBody, url), &m); code != 200 {
		t.Fatalf("create monitor: %d %v", code, e)
	}
	if m.Table != "ml_logs.fraud_det_payload" || m.CreationTimestamp != now.UnixMilli() {
		t.Errorf("created monitor: table %q created %d", m.Table, m.CreationTimestamp)
	}
	if code, _ := h.call(t, "POST", "/api/2.0/gantry/monitors", fmt.Sprintf(monitorBody, url), nil); code != 409 {
		t.Errorf("second create: %d, want 409", code)
	}
	var list api.ListMonitorsResponse
	if code, e := h.call(t, "GET", "/api/2.0/gantry/monitors", "", &list); code != 200 || len(list.Monitors) != 1 || list.Monitors[0].Name != "drift" {
		t.Errorf("list: %d %v %+v", code, e, list)
	}

	// Two runs over the same windows: one alert, for the window where x
	// shifted, against the window before it.
	var runs []api.MonitorRun
	for range 2 {
		var run api.MonitorRun
		if code, e := h.call(t, "POST", "/api/2.0/gantry/monitors/drift/run?lookback=1h", "", &run); code != 200 {
			t.Fatalf("run: %d %v", code, e)
		}
		runs = append(runs, run)
	}
	if !runs[0].From.Equal(monT0.Add(-30*time.Minute)) || !runs[0].To.Equal(monT0.Add(30*time.Minute)) {
		t.Errorf("run covered %s to %s", runs[0].From, runs[0].To)
	}
	if len(runs[0].Alerts) != 1 || len(runs[1].Alerts) != 0 || len(runs[0].AlertErrors)+len(runs[1].AlertErrors) != 0 {
		t.Fatalf("alerts of two runs: %+v / %+v; want one, then none", runs[0], runs[1])
	}
	al := runs[0].Alerts[0]
	if !al.WindowStart.Equal(monT0.Add(15*time.Minute)) || al.Column != "x" || al.Metric != monitors.KS ||
		al.DriftType != monitors.Consecutive || al.ServedEntity != "v1" || al.Threshold != 0.5 || al.Value <= 0.5 {
		t.Errorf("alert %+v; want x's ks_statistic at window 3 (00:15)", al)
	}
	if len(wh.got) != 1 || wh.got[al.ID] != 1 || wh.body[0].ID != al.ID || wh.body[0].Monitor != "drift" {
		t.Errorf("webhook got %v; want alert %s once", wh.got, al.ID)
	}

	// The report: x's CONSECUTIVE KS crosses at window 3 and nowhere else.
	var rep api.MonitorReport
	if code, e := h.call(t, "GET", "/api/2.0/gantry/monitors/drift/report?windows=6", "", &rep); code != 200 {
		t.Fatalf("report: %d %v", code, e)
	}
	var crossed []string
	ks := 0
	for _, d := range rep.Drift {
		if d.Metric == monitors.KS && d.DriftType == monitors.Consecutive {
			ks++
			if d.Crossed {
				crossed = append(crossed, d.WindowStart.Format("15:04"))
			}
		}
	}
	if ks != 5 || len(crossed) != 1 || crossed[0] != "00:15" {
		t.Errorf("report: %d CONSECUTIVE KS rows, crossed at %v; want 5, crossed at [00:15]", ks, crossed)
	}
	if len(rep.Profile) == 0 {
		t.Error("report has no profile metrics")
	}
	// 1000 windows of 5m is 83h20m.
	if code, _ := h.call(t, "POST", "/api/2.0/gantry/monitors/drift/run?lookback=84h", "", nil); code != 400 {
		t.Errorf("lookback=84h: %d, want 400", code)
	}
	if code, _ := h.call(t, "GET", "/api/2.0/gantry/monitors/drift/report?windows=0", "", nil); code != 400 {
		t.Errorf("windows=0: %d, want 400", code)
	}

	// A monitor of a deleted endpoint is gone.
	if code, e := h.call(t, "DELETE", "/api/2.0/serving-endpoints/fraud-det", "", nil); code != 200 {
		t.Fatalf("delete endpoint: %d %v", code, e)
	}
	for _, p := range []string{"GET /api/2.0/gantry/monitors/drift", "POST /api/2.0/gantry/monitors/drift/run", "DELETE /api/2.0/gantry/monitors/drift"} {
		method, path, _ := strings.Cut(p, " ")
		if code, _ := h.call(t, method, path, "", nil); code != 404 {
			t.Errorf("%s after the endpoint's deletion: %d, want 404", p, code)
		}
	}
}
