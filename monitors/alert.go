package monitors

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/loggers"
)

// The alerts table records every alert a webhook accepted, so that a
// crossing is sent once however often its window is refreshed. Keyed on
// the alert's ID; a second record of one ID (see Alerter) replaces the
// first.
const (
	alertsSuffix = "_alerts"
	alertsDDL    = `(
	monitor String,
	alert_id String,
	granularity String,
	window_start DateTime,
	served_entity String,
	slice_key String,
	slice_value String,
	column_name String,
	drift_type String,
	metric String,
	value Float64,
	threshold Float64,
	sent_ms UInt64
) ENGINE = ReplacingMergeTree(sent_ms)
PARTITION BY toYYYYMM(window_start)
ORDER BY (monitor, alert_id)`
)

// AlertsTable is where m's sent alerts are recorded, next to its
// inference table.
func (m *Monitor) AlertsTable() loggers.Table {
	return loggers.Table{Database: m.Table.Database, Name: m.Table.Name + alertsSuffix}
}

// Alerter posts threshold crossings to monitors' webhooks. Its zero value
// works; set fields before first use only.
//
// Each crossing (monitor, granularity, window, served entity, slice,
// column, drift type, metric) is one POST of an api.MonitorAlert, with its
// ID in the X-Gantry-Alert-Id header. Before sending, the Alerter reads the
// alerts table and skips the IDs recorded there; after the webhook accepts
// (any 2xx), it records the ID. A crash, or a failed write, between the
// two sends that alert again on the next refresh: delivery is at least
// once, and receivers that must not see a repeat dedupe on the ID.
type Alerter struct {
	// Allow names the non-public addresses webhooks may reach (see
	// WebhookAllow); nil: public addresses only.
	Allow *WebhookAllow
	// Client posts the alerts. Default: Allow.Client with a 10 s timeout,
	// which dials allowed addresses only and follows no redirect. A Client
	// set here is used as it is: its caller answers for where it goes.
	Client *http.Client
	// Attempts bounds the POSTs of one alert. Default 5.
	Attempts int
	// Backoff is the wait before the second attempt; each next wait
	// doubles it. Default 1 s.
	Backoff time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger

	// once makes the default client, which keeps its connections.
	once   sync.Once
	client *http.Client
}

// AlertID names a crossing of m: the same crossing gets the same ID in
// every refresh and every process.
func (m *Monitor) AlertID(r Row) string {
	h := sha256.Sum256([]byte(strings.Join([]string{m.Name, m.Granularity, strconv.FormatInt(r.WindowStart.Unix(), 10),
		r.ServedEntity, r.SliceKey, r.SliceValue, r.Column, r.DriftType, r.Metric}, "\x00")))
	return hex.EncodeToString(h[:16])
}

// Send posts an alert for each crossing in rows (m's drift rows) that was
// not sent before, and returns those it sent. Alerts that failed after
// every attempt are in the error; after the first such failure the rest
// are deferred (named in the error, sent by a later call) so that a dead
// webhook does not hold the refresh for every alert's attempts. A monitor
// without a webhook sends nothing.
func (a *Alerter) Send(ctx context.Context, s Store, m *Monitor, rows []Row) ([]api.MonitorAlert, error) {
	if m.AlertWebhookURL == "" {
		return nil, nil
	}
	var crossings []Row
	for _, r := range m.Crossings(rows) {
		// JSON has no infinity; such a value says nothing a user can act on.
		if !math.IsInf(r.Value, 0) {
			crossings = append(crossings, r)
		}
	}
	if len(crossings) == 0 {
		return nil, nil
	}
	t := m.AlertsTable()
	if err := s.Exec(ctx, "CREATE TABLE IF NOT EXISTS "+t.Quoted()+" "+alertsDDL); err != nil {
		return nil, fmt.Errorf("monitor %s: create table %s: %w", m.Name, t, err)
	}
	// Which were sent, asked by ID a batch at a time: Query answers at
	// most tables.MaxRows rows.
	sent := map[string]bool{}
	const batch = 1000
	for i := 0; i < len(crossings); i += batch {
		from, to := crossings[i].WindowStart, crossings[i].WindowStart
		var ids []string
		for _, r := range crossings[i:min(i+batch, len(crossings))] {
			from, to = minTime(from, r.WindowStart), maxTime(to, r.WindowStart)
			ids = append(ids, quote(m.AlertID(r)))
		}
		res, err := s.Query(ctx, "SELECT DISTINCT alert_id FROM "+t.Quoted()+" WHERE monitor = "+quote(m.Name)+
			" AND window_start >= toDateTime("+strconv.FormatInt(from.Unix(), 10)+") AND window_start <= toDateTime("+strconv.FormatInt(to.Unix(), 10)+")"+
			" AND alert_id IN ("+strings.Join(ids, ", ")+")")
		if err != nil {
			return nil, fmt.Errorf("monitor %s: read sent alerts: %w", m.Name, err)
		}
		for _, r := range res.Rows {
			sent[r[0]] = true
		}
	}
	var out []api.MonitorAlert
	var errs []error
	down, deferred := false, 0
	for _, r := range crossings {
		id := m.AlertID(r)
		if sent[id] {
			continue
		}
		sent[id] = true
		if down {
			deferred++
			continue
		}
		_, threshold := m.Crossed(r.Metric, r.Value)
		al := api.MonitorAlert{ID: id, Monitor: m.Name, Endpoint: m.Endpoint, Granularity: m.Granularity,
			WindowStart: r.WindowStart, WindowEnd: r.WindowStart.Add(m.Window()), ServedEntity: r.ServedEntity,
			SliceKey: r.SliceKey, SliceValue: r.SliceValue, Column: r.Column, DriftType: r.DriftType,
			Metric: r.Metric, Value: r.Value, Threshold: threshold}
		if err := a.post(ctx, m.AlertWebhookURL, &al); err != nil {
			errs = append(errs, fmt.Errorf("monitor %s: alert %s (%s %s %s of %s at %s): %w", m.Name, id,
				r.DriftType, r.Column, r.Metric, r.ServedEntity, r.WindowStart.Format(time.RFC3339), err))
			if ctx.Err() != nil {
				break
			}
			// The webhook failed every attempt: the others would wait as
			// long, holding the monitor's refresh. They go next time.
			var final *finalError
			down = !errors.As(err, &final)
			continue
		}
		out = append(out, al)
		// The webhook took the alert: record it even when ctx ended meanwhile,
		// or the next refresh sends it again.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
		err := s.Exec(rctx, "INSERT INTO "+t.Quoted()+` (monitor, alert_id, granularity, window_start, served_entity, slice_key, slice_value, column_name, drift_type, metric, value, threshold, sent_ms)
SELECT `+strings.Join([]string{quote(m.Name), quote(id), quote(m.Granularity), "toDateTime(" + strconv.FormatInt(r.WindowStart.Unix(), 10) + ")",
			quote(r.ServedEntity), quote(r.SliceKey), quote(r.SliceValue), quote(r.Column), quote(r.DriftType), quote(r.Metric),
			"toFloat64(" + strconv.FormatFloat(r.Value, 'g', -1, 64) + ")", "toFloat64(" + strconv.FormatFloat(threshold, 'g', -1, 64) + ")",
			"toUInt64(" + strconv.FormatInt(time.Now().UnixMilli(), 10) + ")"}, ", "))
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("monitor %s: record alert %s (sent; it may be sent again): %w", m.Name, id, err))
		}
	}
	if deferred > 0 {
		errs = append(errs, fmt.Errorf("monitor %s: %d more alerts deferred: webhook %s is failing", m.Name, deferred, m.AlertWebhookURL))
	}
	return out, errors.Join(errs...)
}

// recordTimeout bounds the write that records a sent alert.
const recordTimeout = 10 * time.Second

// post sends one alert, retrying with a doubling backoff. A 4xx other
// than 408 and 429 is final: the receiver refuses the alert itself.
func (a *Alerter) post(ctx context.Context, url string, al *api.MonitorAlert) error {
	body, err := json.Marshal(al)
	if err != nil {
		return err
	}
	client, attempts, wait := a.Client, a.Attempts, a.Backoff
	if client == nil {
		a.once.Do(func() { a.client = a.Allow.Client(10 * time.Second) })
		client = a.client
	}
	if attempts <= 0 {
		attempts = 5
	}
	if wait <= 0 {
		wait = time.Second
	}
	log := a.Logger
	if log == nil {
		log = slog.Default()
	}
	for i := 1; ; i++ {
		err = a.postOnce(ctx, client, url, al.ID, body)
		var final *finalError
		if err == nil || errors.As(err, &final) || i == attempts {
			return err
		}
		log.Warn("alert webhook failed; retrying", "monitor", al.Monitor, "alert_id", al.ID, "attempt", i, "wait", wait, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (after %d attempts: %v)", ctx.Err(), i, err)
		case <-t.C:
		}
		wait *= 2
	}
}

// finalError is a webhook answer that retrying will not change.
// It has the status the webhook answered, or err when no request went out.
type finalError struct {
	status int
	err    error
}

func (e *finalError) Error() string {
	if e.err != nil {
		return e.err.Error()
	}
	return fmt.Sprintf("webhook answered %d", e.status)
}

func (e *finalError) Unwrap() error { return e.err }

func (a *Alerter) postOnce(ctx context.Context, client *http.Client, url, id string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		// A URL that no request can be made of: retrying will not help.
		return &finalError{err: fmt.Errorf("webhook request: %w", err)}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(api.AlertIDHeader, id)
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	switch {
	case resp.StatusCode/100 == 2:
		return nil
	case resp.StatusCode/100 == 3:
		// Redirects are not followed (see WebhookAllow): fix the URL.
		return &finalError{status: resp.StatusCode, err: fmt.Errorf("webhook answered %d (a redirect to %q); Gantry does not follow redirects: set alert_webhook_url to where it points",
			resp.StatusCode, resp.Header.Get("Location"))}
	case resp.StatusCode/100 == 4 && resp.StatusCode != http.StatusRequestTimeout && resp.StatusCode != http.StatusTooManyRequests:
		return &finalError{status: resp.StatusCode}
	}
	return fmt.Errorf("webhook answered %d", resp.StatusCode)
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
