package monitors_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/loggers/tables"
	"github.com/gantry/gantry/monitors"
)

// shifted logs 6 windows of 5 minutes from t0 for entity v1; x moves by
// three standard deviations from window 3 on.
func shifted(t *testing.T, db *tables.DB) {
	r := rand.New(rand.NewPCG(5, 6))
	var tr traffic
	for w := range 6 {
		for i := range 100 {
			x := r.NormFloat64()
			if w >= 3 {
				x += 3
			}
			tr.add("v1", t0.Add(time.Duration(w)*5*time.Minute+time.Duration(i)*time.Second), []row{{x: f(x), c: s("a"), pred: "0"}}, false)
		}
	}
	tr.insert(t, db)
}

// hook answers 503 to the first fail posts, then 200, counting the posts
// of each alert ID.
type hook struct {
	mu    sync.Mutex
	fail  int
	posts map[string]int
}

func (h *hook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.posts[r.Header.Get(api.AlertIDHeader)]++
	if h.fail > 0 {
		h.fail--
		w.WriteHeader(http.StatusServiceUnavailable)
	}
}

func (h *hook) count() map[string]int {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := map[string]int{}
	for k, v := range h.posts {
		out[k] = v
	}
	return out
}

func shiftMonitor(url string) *monitors.Monitor {
	return &monitors.Monitor{Name: "alerting", Endpoint: "fraud", Table: payload, Granularity: "5m",
		Columns: []monitors.Column{{Name: "x", Kind: monitors.Numeric}}, Thresholds: map[string]float64{monitors.KS: 0.5},
		AlertWebhookURL: url}
}

// TestAlertRetried: a webhook that fails twice gets the alert on the third
// attempt, and the alert is recorded once; sending the same rows again
// posts nothing.
func TestAlertRetried(t *testing.T) {
	db := startDB(t)
	ctx := context.Background()
	shifted(t, db)
	h := &hook{fail: 2, posts: map[string]int{}}
	srv := httptest.NewServer(h)
	defer srv.Close()
	m := shiftMonitor(srv.URL)
	end := t0.Add(30 * time.Minute)
	if _, err := monitors.Refresh(ctx, db, m, t0, end); err != nil {
		t.Fatal(err)
	}
	rows, err := monitors.DriftRows(ctx, db, m, t0, end)
	if err != nil {
		t.Fatal(err)
	}
	a := &monitors.Alerter{Allow: loopback(t), Backoff: time.Millisecond}
	sent, err := a.Send(ctx, db, m, rows)
	if err != nil || len(sent) != 1 {
		t.Fatalf("Send = %d alerts, %v; want 1 alert", len(sent), err)
	}
	if got := h.count(); len(got) != 1 || got[sent[0].ID] != 3 {
		t.Errorf("posts by alert ID = %v; want 3 of %s", got, sent[0].ID)
	}
	again, err := a.Send(ctx, db, m, rows)
	if err != nil || len(again) != 0 {
		t.Errorf("second Send = %v, %v; want nothing sent", again, err)
	}
	res, err := db.Query(ctx, "SELECT alert_id, window_start, column_name, metric FROM "+m.AlertsTable().Quoted())
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Rows) != 1 || res.Rows[0][0] != sent[0].ID || res.Rows[0][2] != "x" || res.Rows[0][3] != monitors.KS {
		t.Errorf("alerts table rows %v; want one of %s", res.Rows, sent[0].ID)
	}

	// A webhook that keeps failing: bounded attempts, an error, no record.
	h2 := &hook{fail: 100, posts: map[string]int{}}
	srv2 := httptest.NewServer(h2)
	defer srv2.Close()
	m2 := shiftMonitor(srv2.URL)
	m2.Name = "failing"
	if _, err := monitors.Refresh(ctx, db, m2, t0, end); err != nil {
		t.Fatal(err)
	}
	rows, err = monitors.DriftRows(ctx, db, m2, t0, end)
	if err != nil {
		t.Fatal(err)
	}
	if sent, err := (&monitors.Alerter{Allow: loopback(t), Backoff: time.Millisecond, Attempts: 3}).Send(ctx, db, m2, rows); err == nil || len(sent) != 0 {
		t.Errorf("Send to a failing webhook = %v, %v; want an error", sent, err)
	}
	for id, n := range h2.count() {
		if n != 3 {
			t.Errorf("alert %s posted %d times, want 3 (Attempts)", id, n)
		}
	}
	res, err = db.Query(ctx, "SELECT count() FROM "+m.AlertsTable().Quoted()+" WHERE monitor = 'failing'")
	if err != nil || res.Rows[0][0] != "0" {
		t.Errorf("failed alerts recorded: %v %v", res, err)
	}
}

// TestRunner runs the scheduled refresh the way the logger does, on a
// clock that moves 2 minutes a tick from t0 to past the traffic's end: it
// drops a killed refresh's scratch table, writes every window as it
// closes, and sends the one alert once, though windows are written more
// than once.
func TestRunner(t *testing.T) {
	db := startDB(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	shifted(t, db)
	h := &hook{posts: map[string]int{}}
	srv := httptest.NewServer(h)
	defer srv.Close()
	m := shiftMonitor(srv.URL)
	left := "fraud_payload_scratch_alerting_1732492800000_42_cur"
	if err := db.Exec(ctx, "CREATE TABLE ml_logs."+left+" (n UInt8) ENGINE = MergeTree ORDER BY tuple()"); err != nil {
		t.Fatal(err)
	}
	const ticks = 20 // t0 to t0+38m
	tick := make(chan struct{})
	n := 0
	r := &monitors.Runner{
		Refresher: monitors.NewRefresher(db, &monitors.Alerter{Allow: loopback(t), Backoff: time.Millisecond}),
		Monitors: func(ctx context.Context) ([]*monitors.Monitor, error) {
			select {
			case tick <- struct{}{}:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			return []*monitors.Monitor{m}, nil
		},
		Tick: time.Millisecond, Lookback: 10 * time.Minute, ScratchAge: time.Nanosecond,
		// Now is read once a tick, before Monitors.
		Now: func() time.Time { n++; return t0.Add(time.Duration(n-1) * 2 * time.Minute) },
	}
	done := make(chan error)
	go func() { done <- r.Run(ctx) }()
	for range ticks + 1 { // the last one starts once the others are done
		select {
		case <-tick:
		case <-time.After(time.Minute):
			t.Fatal("the runner did not tick")
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	got := h.count()
	if len(got) != 1 {
		t.Errorf("webhook posts by alert ID = %v; want one alert", got)
	}
	for id, n := range got {
		if n != 1 {
			t.Errorf("alert %s posted %d times", id, n)
		}
	}
	res, err := db.Query(context.Background(), "SELECT name FROM system.tables WHERE database = 'ml_logs' AND name LIKE '%scratch%'")
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Rows) != 0 {
		t.Errorf("scratch tables left: %v", res.Rows)
	}
	rows, err := monitors.DriftRows(context.Background(), db, m, t0, t0.Add(30*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	windows := map[time.Duration]bool{}
	var crossed []string
	for _, r := range rows {
		windows[r.WindowStart.Sub(t0)] = true
	}
	for _, c := range m.Crossings(rows) {
		crossed = append(crossed, fmt.Sprint(c.WindowStart.Sub(t0)))
	}
	// Window 0 has no window before it, so no CONSECUTIVE drift.
	if len(windows) != 5 {
		t.Errorf("drift rows for windows %v; want 5m to 25m", windows)
	}
	if len(crossed) != 1 || crossed[0] != "15m0s" {
		t.Errorf("crossings at %v; want [15m0s]", crossed)
	}
}

// cancelAfter is a transport that ends a context once the webhook has
// answered: the caller's deadline passes just after the POST succeeded.
type cancelAfter struct{ cancel context.CancelFunc }

func (c cancelAfter) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(r)
	c.cancel()
	return resp, err
}

// crossingRows are n CONSECUTIVE ks_statistic crossings of x, one a window.
func crossingRows(n int) []monitors.Row {
	var rows []monitors.Row
	for i := range n {
		rows = append(rows, monitors.Row{WindowStart: t0.Add(time.Duration(i) * 5 * time.Minute), ServedEntity: "v1",
			Column: "x", DriftType: "CONSECUTIVE", Metric: monitors.KS, Value: 0.9})
	}
	return rows
}

// TestAlertRecordedAfterCancel: an alert the webhook took is recorded
// though the caller's context ended right after, so it is not sent again.
func TestAlertRecordedAfterCancel(t *testing.T) {
	db := startDB(t)
	h := &hook{posts: map[string]int{}}
	srv := httptest.NewServer(h)
	defer srv.Close()
	m := shiftMonitor(srv.URL)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a := &monitors.Alerter{Client: &http.Client{Transport: cancelAfter{cancel}}}
	sent, err := a.Send(ctx, db, m, crossingRows(1))
	if len(sent) != 1 {
		t.Fatalf("Send = %v, %v; want 1 alert", sent, err)
	}
	again, err := (&monitors.Alerter{Allow: loopback(t)}).Send(context.Background(), db, m, crossingRows(1))
	if err != nil || len(again) != 0 {
		t.Errorf("second Send = %v, %v; want nothing sent", again, err)
	}
	if got := h.count(); len(got) != 1 || got[sent[0].ID] != 1 {
		t.Errorf("posts by alert ID = %v; want one", got)
	}
}

// TestAlertBadURL: a webhook URL no request can be made of says why.
func TestAlertBadURL(t *testing.T) {
	db := startDB(t)
	m := shiftMonitor("http://[::1")
	_, err := (&monitors.Alerter{Allow: loopback(t), Backoff: time.Millisecond}).Send(context.Background(), db, m, crossingRows(1))
	if err == nil || strings.Contains(err.Error(), "answered 0") || !strings.Contains(err.Error(), "webhook request") {
		t.Errorf("Send = %v; want the request's error", err)
	}
}

// TestAlertDeadWebhook: once an alert fails every attempt, the round's
// other alerts to that webhook are deferred, not tried.
func TestAlertDeadWebhook(t *testing.T) {
	db := startDB(t)
	h := &hook{fail: 1000, posts: map[string]int{}}
	srv := httptest.NewServer(h)
	defer srv.Close()
	m := shiftMonitor(srv.URL)
	sent, err := (&monitors.Alerter{Allow: loopback(t), Backoff: time.Millisecond, Attempts: 2}).Send(context.Background(), db, m, crossingRows(5))
	if len(sent) != 0 || err == nil || !strings.Contains(err.Error(), "4 more alerts deferred") {
		t.Errorf("Send = %v, %v; want 4 alerts deferred", sent, err)
	}
	if got := h.count(); len(got) != 1 {
		t.Errorf("posts by alert ID = %v; want one alert tried", got)
	}
}

// runTicks runs r until Monitors has been asked ticks+1 times.
func runTicks(t *testing.T, r *monitors.Runner, m *monitors.Monitor, ticks int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tick := make(chan struct{})
	r.Monitors = func(ctx context.Context) ([]*monitors.Monitor, error) {
		select {
		case tick <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return []*monitors.Monitor{m}, nil
	}
	done := make(chan error)
	go func() { done <- r.Run(ctx) }()
	for range ticks + 1 {
		select {
		case <-tick:
		case <-time.After(time.Minute):
			t.Fatal("the runner did not tick")
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestRunnerResumesAndRetries: a Runner that starts long after the last
// computed window computes the windows since, not only the last
// lookback's; an alert whose webhook failed is sent at a later tick though
// its window is not refreshed again.
func TestRunnerResumesAndRetries(t *testing.T) {
	db := startDB(t)
	ctx := context.Background()
	shifted(t, db)
	h := &hook{fail: 5, posts: map[string]int{}} // every attempt of the first round
	srv := httptest.NewServer(h)
	defer srv.Close()
	m := shiftMonitor(srv.URL)
	// An earlier process computed windows 0 and 5m, then stopped.
	if _, err := monitors.Refresh(ctx, db, m, t0, t0.Add(10*time.Minute)); err != nil {
		t.Fatal(err)
	}
	n := 0
	r := &monitors.Runner{
		Refresher: monitors.NewRefresher(db, &monitors.Alerter{Allow: loopback(t), Backoff: time.Millisecond, Attempts: 5}),
		Tick:      time.Millisecond, Lookback: 2 * time.Minute,
		Now: func() time.Time { n++; return t0.Add(31*time.Minute + time.Duration(n-1)*time.Minute) },
	}
	runTicks(t, r, m, 3) // 00:31 to 00:33
	rows, err := monitors.DriftRows(ctx, db, m, t0, t0.Add(30*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	windows := map[time.Duration]bool{}
	for _, r := range rows {
		windows[r.WindowStart.Sub(t0)] = true
	}
	if len(windows) != 5 {
		t.Errorf("drift rows for windows %v; want 5m to 25m", windows)
	}
	got := h.count()
	if len(got) != 1 {
		t.Fatalf("webhook posts by alert ID = %v; want one alert", got)
	}
	for id, n := range got {
		if n != 6 {
			t.Errorf("alert %s posted %d times; want 5 failed, then 1", id, n)
		}
	}
}
