package api

import (
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Monitor is a drift monitor's definition, the body of
// POST /api/2.0/gantry/monitors and the answer of GET. The scheduler sets
// Table (the endpoint's inference table) and CreationTimestamp; a create
// body leaves them out.
type Monitor struct {
	Name     string `json:"name"`
	Endpoint string `json:"endpoint"`
	// Table is the inference table, database.table; read-only.
	Table string `json:"table,omitempty"`
	// Granularity is the window length: 5m, 1h, 1d…
	Granularity string          `json:"granularity"`
	Columns     []MonitorColumn `json:"columns,omitempty"`
	// ProblemType, classification or regression, watches the prediction too.
	ProblemType string           `json:"problem_type,omitempty"`
	Baseline    *MonitorBaseline `json:"baseline,omitempty"`
	Slices      []string         `json:"slices,omitempty"`
	// Thresholds map drift metric names (ks_statistic, psi, js_distance…)
	// to the value that raises an alert.
	Thresholds map[string]float64 `json:"thresholds,omitempty"`
	// AlertWebhookURL receives one POST per threshold crossing (a
	// MonitorAlert); empty sends none.
	AlertWebhookURL   string `json:"alert_webhook_url,omitempty"`
	CreationTimestamp int64  `json:"creation_timestamp,omitempty"`
}

// MonitorColumn is a watched request feature; Kind is numeric or categorical.
type MonitorColumn struct {
	Name string `json:"name"`
	Kind string `json:"kind"`
}

// MonitorBaseline is what BASELINE drift compares with: a ClickHouse table
// (database.table), or a frozen time range [From, To) of the inference table.
type MonitorBaseline struct {
	Table string    `json:"table,omitempty"`
	From  time.Time `json:"from,omitzero"`
	To    time.Time `json:"to,omitzero"`
}

// ListMonitorsResponse is the body of GET /api/2.0/gantry/monitors.
type ListMonitorsResponse struct {
	Monitors []Monitor `json:"monitors"`
}

// MonitorMetric is one metric of one window, as the metric tables hold it.
// Profile metrics have no DriftType. Value is null when it is not a number
// (a p-value of an empty comparison, say).
type MonitorMetric struct {
	WindowStart  time.Time `json:"window_start"`
	ServedEntity string    `json:"served_entity"`
	SliceKey     string    `json:"slice_key,omitempty"`
	SliceValue   string    `json:"slice_value,omitempty"`
	Column       string    `json:"column"`
	DriftType    string    `json:"drift_type,omitempty"`
	Metric       string    `json:"metric"`
	Value        *float64  `json:"value"`
	// Threshold is set when the monitor has one for Metric; Crossed says
	// whether Value crosses it.
	Threshold *float64 `json:"threshold,omitempty"`
	Crossed   bool     `json:"crossed,omitempty"`
}

// MonitorReport is the answer of GET /api/2.0/gantry/monitors/{name}/report:
// the metrics of the latest windows, oldest first.
type MonitorReport struct {
	Monitor     string          `json:"monitor"`
	Granularity string          `json:"granularity"`
	Profile     []MonitorMetric `json:"profile_metrics"`
	Drift       []MonitorMetric `json:"drift_metrics"`
}

// MonitorAlert is the body of the POST a monitor sends to its webhook when a
// drift metric crosses its threshold. ID names the crossing (monitor,
// window, entity, slice, column, drift type, metric) and travels in the
// X-Gantry-Alert-Id header too: receivers dedupe on it.
type MonitorAlert struct {
	ID           string    `json:"id"`
	Monitor      string    `json:"monitor"`
	Endpoint     string    `json:"endpoint"`
	Granularity  string    `json:"granularity"`
	WindowStart  time.Time `json:"window_start"`
	WindowEnd    time.Time `json:"window_end"`
	ServedEntity string    `json:"served_entity"`
	SliceKey     string    `json:"slice_key,omitempty"`
	SliceValue   string    `json:"slice_value,omitempty"`
	Column       string    `json:"column"`
	DriftType    string    `json:"drift_type"`
	Metric       string    `json:"metric"`
	Value        float64   `json:"value"`
	Threshold    float64   `json:"threshold"`
}

// AlertIDHeader carries MonitorAlert.ID.
const AlertIDHeader = "X-Gantry-Alert-Id"

// MonitorRun is the answer of POST /api/2.0/gantry/monitors/{name}/run: the
// windows refreshed, [From, To), and the alerts sent (not those sent before).
type MonitorRun struct {
	From   time.Time      `json:"from"`
	To     time.Time      `json:"to"`
	Alerts []MonitorAlert `json:"alerts"`
	// AlertErrors lists alerts that failed after every retry; the next
	// refresh of their window tries them again.
	AlertErrors []string `json:"alert_errors,omitempty"`
}

// Monitors returns a handle on the drift monitors API (a Gantry extension).
func (c *Client) Monitors() *Monitors { return &Monitors{client: c} }

// Monitors is the drift monitors API.
type Monitors struct{ client *Client }

const monitorsPath = "/api/2.0/gantry/monitors"

func monitorPath(name string) string { return monitorsPath + "/" + url.PathEscape(name) }

// Create stores a monitor; the answer has Table filled in.
func (m *Monitors) Create(mon *Monitor, w *WriteOptions) (*Monitor, *WriteMeta, error) {
	var out Monitor
	meta, err := m.client.write(http.MethodPost, monitorsPath, mon, w, &out)
	if err != nil {
		return nil, nil, err
	}
	return &out, meta, nil
}

// Get reads one monitor; a monitor whose endpoint was deleted is a 404.
func (m *Monitors) Get(name string, q *QueryOptions) (*Monitor, *QueryMeta, error) {
	var out Monitor
	meta, err := m.client.query(monitorPath(name), q, &out)
	if err != nil {
		return nil, nil, err
	}
	return &out, meta, nil
}

// List reads every monitor, sorted by name.
func (m *Monitors) List(q *QueryOptions) ([]Monitor, *QueryMeta, error) {
	var out ListMonitorsResponse
	meta, err := m.client.query(monitorsPath, q, &out)
	if err != nil {
		return nil, nil, err
	}
	return out.Monitors, meta, nil
}

// Delete removes a monitor; its metric tables stay.
func (m *Monitors) Delete(name string, w *WriteOptions) (*WriteMeta, error) {
	return m.client.write(http.MethodDelete, monitorPath(name), nil, w, nil)
}

// Run refreshes the monitor's windows that closed in the last lookback
// (0: the server's default, 24 windows) and sends their alerts.
func (m *Monitors) Run(name string, lookback time.Duration, w *WriteOptions) (*MonitorRun, *WriteMeta, error) {
	path := monitorPath(name) + "/run"
	if lookback > 0 {
		path += "?lookback=" + url.QueryEscape(lookback.String())
	}
	var out MonitorRun
	meta, err := m.client.write(http.MethodPost, path, nil, w, &out)
	if err != nil {
		return nil, nil, err
	}
	return &out, meta, nil
}

// Report reads the metrics of the latest windows (0: the server's
// default, 12).
func (m *Monitors) Report(name string, windows int, q *QueryOptions) (*MonitorReport, *QueryMeta, error) {
	path := monitorPath(name) + "/report"
	if windows > 0 {
		path += "?windows=" + strconv.Itoa(windows)
	}
	var out MonitorReport
	meta, err := m.client.query(path, q, &out)
	if err != nil {
		return nil, nil, err
	}
	return &out, meta, nil
}
