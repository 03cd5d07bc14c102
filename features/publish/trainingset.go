package publish

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/gantry/gantry/api"
)

// execer is the part of a ClickHouse connection a training set needs.
type execer interface {
	querier
	Exec(ctx context.Context, sql string, args ...any) error
}

// TrainingSet writes table out: every row of labels with the features of
// route (a feature spec resolved against the published tables) as of the
// row's timestamp column ts: for each lookup, the feature table's row of
// the same key with the newest timeseries key at or before ts, never a
// later one (point-in-time correct). A key with no such row gets the
// spec's default, else NULL. tables gives each feature table's primary
// key and timeseries key (a table without one is joined on the key
// alone). The SQL runs on ClickHouse 18.16 and current versions: one JOIN
// per SELECT with USING, argMax for the newest row, no ASOF JOIN; each
// lookup is a step table (out__gantry_stepN), dropped at the end.
func TrainingSet(ctx context.Context, ch execer, route *api.FeatureRoute, tables map[string]api.OnlineTable, labels, ts, out string) error {
	for _, n := range []string{labels, out} {
		if _, _, err := SplitSource(n); err != nil {
			return err
		}
	}
	if !ident.MatchString(ts) {
		return fmt.Errorf("--timestamp %q is not a column name", ts)
	}
	ctx = clickhouse.Context(ctx, clickhouse.WithSettings(clickhouse.Settings{"join_use_nulls": 1}))
	step := func(i int) string { return fmt.Sprintf("%s__gantry_step%d", out, i) }
	var made []string
	defer func() {
		for _, t := range made {
			ch.Exec(context.WithoutCancel(ctx), "DROP TABLE IF EXISTS "+t)
		}
	}()
	create := func(name, sel string) error {
		if err := ch.Exec(ctx, "DROP TABLE IF EXISTS "+name); err != nil {
			return err
		}
		if err := ch.Exec(ctx, "CREATE TABLE "+name+" ENGINE = MergeTree ORDER BY tuple() AS "+sel); err != nil {
			return fmt.Errorf("create %s: %w", name, err)
		}
		return nil
	}
	labelCols, err := columnNames(ctx, ch, labels)
	if err != nil {
		return err
	}
	cur := step(0)
	made = append(made, cur)
	if err := create(cur, "SELECT *, rowNumberInAllBlocks() AS __gantry_row FROM "+labels); err != nil {
		return err
	}
	var outputs []string
	// have are cur's columns, listed rather than * (which current
	// versions expand with both sides' __gantry_row).
	have := []string{"__gantry_row"}
	for _, c := range labelCols {
		have = append(have, quote(c))
	}
	for i, l := range route.Lookups {
		t, ok := tables[l.Table]
		if !ok {
			return fmt.Errorf("feature table %s is not published", l.Table)
		}
		if len(t.PrimaryKeyColumns) != len(l.LookupKey) {
			return fmt.Errorf("feature table %s has %d primary key columns, the lookup %d", l.Table, len(t.PrimaryKeyColumns), len(l.LookupKey))
		}
		var left, right, using, aggs []string
		left = append(left, "__gantry_row", quote(ts)+" AS __gantry_label_ts")
		for j, k := range l.LookupKey {
			// Keys match as text, as the online store's do (42 and "42").
			left = append(left, fmt.Sprintf("toString(%s) AS __gantry_k%d", quote(k), j))
			right = append(right, fmt.Sprintf("toString(%s) AS __gantry_k%d", quote(t.PrimaryKeyColumns[j]), j))
			using = append(using, fmt.Sprintf("__gantry_k%d", j))
		}
		where := ""
		if t.TimeseriesKey != "" {
			right = append(right, quote(t.TimeseriesKey)+" AS __gantry_feature_ts")
			where = " WHERE __gantry_feature_ts <= __gantry_label_ts"
		}
		for j, f := range l.Features {
			right = append(right, fmt.Sprintf("%s AS __gantry_f%d", quote(f), j))
			agg := fmt.Sprintf("any(__gantry_f%d)", j)
			if t.TimeseriesKey != "" {
				agg = fmt.Sprintf("argMax(__gantry_f%d, __gantry_feature_ts)", j)
			}
			aggs = append(aggs, fmt.Sprintf("%s AS %s", agg, quote(l.Outputs[j])))
		}
		lookup := fmt.Sprintf("SELECT __gantry_row, %s FROM (SELECT %s FROM %s) ALL INNER JOIN (SELECT %s FROM %s) USING (%s)%s GROUP BY __gantry_row",
			strings.Join(aggs, ", "), strings.Join(left, ", "), cur, strings.Join(right, ", "), l.Table, strings.Join(using, ", "), where)
		next := step(i + 1)
		made = append(made, next)
		for _, o := range l.Outputs {
			have = append(have, quote(o))
		}
		if err := create(next, fmt.Sprintf("SELECT %s FROM %s ALL LEFT JOIN (%s) USING (__gantry_row)", strings.Join(have, ", "), cur, lookup)); err != nil {
			return err
		}
		cur = next
		for j, o := range l.Outputs {
			col := quote(o)
			if lit, ok := sqlLiteral(l.Defaults[j]); ok {
				col = fmt.Sprintf("ifNull(%s, %s) AS %s", quote(o), lit, quote(o))
			}
			outputs = append(outputs, col)
		}
	}
	sel := make([]string, 0, len(labelCols)+len(outputs))
	for _, c := range labelCols {
		sel = append(sel, quote(c))
	}
	sel = append(sel, outputs...)
	return create(out, fmt.Sprintf("SELECT %s FROM %s ORDER BY __gantry_row", strings.Join(sel, ", "), cur))
}

// columnNames lists a table's columns.
func columnNames(ctx context.Context, ch querier, table string) ([]string, error) {
	rows, err := ch.Query(ctx, "DESCRIBE TABLE "+table)
	if err != nil {
		return nil, fmt.Errorf("describe %s: %w", table, err)
	}
	defer rows.Close()
	n := len(rows.Columns())
	var out []string
	for rows.Next() {
		vals := make([]string, n)
		dest := make([]any, n)
		for i := range vals {
			dest[i] = &vals[i]
		}
		if err := rows.Scan(dest...); err != nil {
			return nil, err
		}
		out = append(out, vals[0])
	}
	return out, rows.Err()
}

// sqlLiteral renders a spec's JSON default (a number, string or boolean)
// as a ClickHouse literal.
func sqlLiteral(raw api.RawJSON) (string, bool) {
	if len(raw) == 0 {
		return "", false
	}
	var v any
	if json.Unmarshal(raw, &v) != nil {
		return "", false
	}
	switch x := v.(type) {
	case float64:
		return string(raw), true
	case bool:
		if x {
			return "1", true
		}
		return "0", true
	case string:
		return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(x) + "'", true
	}
	return "", false
}
