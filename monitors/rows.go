package monitors

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gantry/gantry/loggers/tables"
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
	return m.rows(ctx, s, m.ProfileTable().Quoted(), "''", "", from, to)
}

// DriftRows reads m's drift metrics of the windows starting in [from, to).
func DriftRows(ctx context.Context, s Store, m *Monitor, from, to time.Time) ([]Row, error) {
	return m.rows(ctx, s, m.DriftTable().Quoted(), "drift_type", "", from, to)
}

// CrossingRows reads m's drift metrics of the windows starting in [from,
// to) that cross their thresholds (the SQL form of Crossings): what the
// alerter needs, without reading every metric.
func CrossingRows(ctx context.Context, s Store, m *Monitor, from, to time.Time) ([]Row, error) {
	cond := m.crossingSQL()
	if cond == "" {
		return nil, nil
	}
	rows, err := m.rows(ctx, s, m.DriftTable().Quoted(), "drift_type", cond, from, to)
	if err != nil {
		return nil, err
	}
	// The same test in Go, so that SQL and Go cannot disagree.
	return m.Crossings(rows), nil
}

// crossingSQL is the condition on metric and value that Crossed tests, or
// "" when m has no thresholds.
func (m *Monitor) crossingSQL() string {
	names := make([]string, 0, len(m.Thresholds))
	for k := range m.Thresholds {
		if _, ok := metricRange[k]; ok {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	var or []string
	for _, k := range names {
		t := "toFloat64(" + strconv.FormatFloat(m.Thresholds[k], 'g', -1, 64) + ")"
		switch r := metricRange[k]; {
		case r.below:
			or = append(or, "(metric = "+quote(k)+" AND value < "+t+")")
		case r.abs:
			or = append(or, "(metric = "+quote(k)+" AND abs(value) > "+t+")")
		default:
			or = append(or, "(metric = "+quote(k)+" AND value > "+t+")")
		}
	}
	return strings.Join(or, " OR ")
}

// rows reads table's rows of m's windows starting in [from, to) that pass
// cond (any when ""), in order. Query answers at most tables.MaxRows rows,
// so it reads as many windows at a time as fit; a single window with more
// rows than that is an error.
func (m *Monitor) rows(ctx context.Context, s Store, table, driftType, cond string, from, to time.Time) ([]Row, error) {
	// The value test is outside the FINAL read: a condition on a column
	// outside the key must not pick a replaced version of a row.
	sel := func(from, to time.Time) string {
		q := `SELECT toUnixTimestamp(window_start) AS w, served_entity, slice_key, slice_value, column_name, ` + driftType + ` AS dt, metric, value
FROM ` + table + ` FINAL
WHERE monitor = ` + quote(m.Name) + ` AND granularity = ` + quote(m.Granularity) + `
	AND window_start >= toDateTime(` + strconv.FormatInt(from.Unix(), 10) + `) AND window_start < toDateTime(` + strconv.FormatInt(to.Unix(), 10) + `)`
		if cond != "" {
			q = "SELECT * FROM (" + q + ") WHERE " + cond
		}
		return q
	}
	counts, err := s.Query(ctx, "SELECT w, count() FROM ("+sel(from, to)+") GROUP BY w ORDER BY w")
	if err != nil {
		return nil, fmt.Errorf("monitor %s: count %s: %w", m.Name, table, err)
	}
	type window struct {
		start time.Time
		n     int
	}
	var windows []window
	for _, r := range counts.Rows {
		sec, err1 := strconv.ParseInt(r[0], 10, 64)
		n, err2 := strconv.Atoi(r[1])
		if err := errors.Join(err1, err2); err != nil {
			return nil, fmt.Errorf("monitor %s: count %s: %w", m.Name, table, err)
		}
		windows = append(windows, window{time.Unix(sec, 0).UTC(), n})
	}
	var out []Row
	for i := 0; i < len(windows); {
		// Windows i to j-1 in one query.
		j, n := i, 0
		for j < len(windows) && (j == i || n+windows[j].n <= tables.MaxRows) {
			n += windows[j].n
			j++
		}
		end := to
		if j < len(windows) {
			end = windows[j].start
		}
		res, err := s.Query(ctx, sel(windows[i].start, end)+`
ORDER BY w, served_entity, slice_key, slice_value, column_name, dt, metric`)
		if err != nil {
			return nil, fmt.Errorf("monitor %s: read %s: %w", m.Name, table, err)
		}
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
		i = j
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
