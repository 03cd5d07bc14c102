package monitors

import (
	"math"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/loggers"
)

// FromAPI is the monitor that a wire definition describes. A table name
// that does not parse is kept as is for Validate to refuse, naming it.
func FromAPI(a *api.Monitor) *Monitor {
	m := &Monitor{Name: a.Name, Endpoint: a.Endpoint, Granularity: a.Granularity,
		ProblemType: ProblemType(a.ProblemType), Slices: a.Slices, Thresholds: a.Thresholds,
		AlertWebhookURL: a.AlertWebhookURL, Table: parseTable(a.Table)}
	for _, c := range a.Columns {
		m.Columns = append(m.Columns, Column{Name: c.Name, Kind: Kind(c.Kind)})
	}
	if b := a.Baseline; b != nil {
		m.Baseline = &Baseline{From: b.From, To: b.To}
		if b.Table != "" {
			t := parseTable(b.Table)
			m.Baseline.Table = &t
		}
	}
	return m
}

// parseTable reads database.table; what does not parse becomes a Table
// that Validate refuses with the text in its message.
func parseTable(s string) loggers.Table {
	t, err := loggers.ParseTable(s)
	if err != nil {
		return loggers.Table{Name: s}
	}
	return t
}

// API is m as a wire definition.
func (m *Monitor) API() *api.Monitor {
	a := &api.Monitor{Name: m.Name, Endpoint: m.Endpoint, Table: m.Table.String(), Granularity: m.Granularity,
		ProblemType: string(m.ProblemType), Slices: m.Slices, Thresholds: m.Thresholds, AlertWebhookURL: m.AlertWebhookURL}
	for _, c := range m.Columns {
		a.Columns = append(a.Columns, api.MonitorColumn{Name: c.Name, Kind: string(c.Kind)})
	}
	if b := m.Baseline; b != nil {
		a.Baseline = &api.MonitorBaseline{From: b.From, To: b.To}
		if b.Table != nil {
			a.Baseline.Table = b.Table.String()
		}
	}
	return a
}

// Metric is r on the wire, with m's threshold for it.
func (m *Monitor) Metric(r Row) api.MonitorMetric {
	out := api.MonitorMetric{WindowStart: r.WindowStart, ServedEntity: r.ServedEntity, SliceKey: r.SliceKey,
		SliceValue: r.SliceValue, Column: r.Column, DriftType: r.DriftType, Metric: r.Metric}
	if !math.IsNaN(r.Value) && !math.IsInf(r.Value, 0) {
		v := r.Value
		out.Value = &v
	}
	if _, ok := m.Thresholds[r.Metric]; ok && r.DriftType != "" {
		crossed, t := m.Crossed(r.Metric, r.Value)
		out.Threshold, out.Crossed = &t, crossed
	}
	return out
}
