package monitors

import (
	"context"
	"fmt"
	"strconv"
	"time"
)

// Row is one metric of one window, as the metric tables hold it. Profile
// rows have no DriftType.
type Row struct {
	WindowStart  time.Time
	ServedEntity string
	SliceKey     string
	SliceValue   string
	Column       string
	DriftType    string
	Metric       string
	Value        float64
}

// ProfileRows reads m's profile metrics of the windows starting in
// [from, to), one row per key (FINAL keeps the latest refresh's).
func ProfileRows(ctx context.Context, s Store, m *Monitor, from, to time.Time) ([]Row, error) {
	return m.rows(ctx, s, m.ProfileTable().Quoted(), "''", from, to)
}

// DriftRows reads m's drift metrics of the windows starting in [from, to).
func DriftRows(ctx context.Context, s Store, m *Monitor, from, to time.Time) ([]Row, error) {
	return m.rows(ctx, s, m.DriftTable().Quoted(), "drift_type", from, to)
}

func (m *Monitor) rows(ctx context.Context, s Store, table, driftType string, from, to time.Time) ([]Row, error) {
	res, err := s.Query(ctx, `SELECT toUnixTimestamp(window_start), served_entity, slice_key, slice_value, column_name, `+driftType+`, metric, value
FROM `+table+` FINAL
WHERE monitor = `+quote(m.Name)+` AND granularity = `+quote(m.Granularity)+`
	AND window_start >= toDateTime(`+strconv.FormatInt(from.Unix(), 10)+`) AND window_start < toDateTime(`+strconv.FormatInt(to.Unix(), 10)+`)
ORDER BY window_start, served_entity, slice_key, slice_value, column_name, `+driftType+`, metric`)
	if err != nil {
		return nil, fmt.Errorf("monitor %s: read %s: %w", m.Name, table, err)
	}
	out := make([]Row, 0, len(res.Rows))
	for _, r := range res.Rows {
		sec, err := strconv.ParseInt(r[0], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("monitor %s: window_start %q: %w", m.Name, r[0], err)
		}
		v, err := strconv.ParseFloat(r[7], 64)
		if err != nil {
			return nil, fmt.Errorf("monitor %s: value %q: %w", m.Name, r[7], err)
		}
		out = append(out, Row{WindowStart: time.Unix(sec, 0).UTC(), ServedEntity: r[1], SliceKey: r[2], SliceValue: r[3],
			Column: r[4], DriftType: r[5], Metric: r[6], Value: v})
	}
	return out, nil
}

// Crossings are the drift rows whose value crosses m's threshold for
// their metric (Monitor.Crossed): what the alerter sends, one per
// (window, entity, slice, column, drift type, metric).
func (m *Monitor) Crossings(rows []Row) []Row {
	var out []Row
	for _, r := range rows {
		if ok, _ := m.Crossed(r.Metric, r.Value); ok && r.DriftType != "" {
			out = append(out, r)
		}
	}
	return out
}
