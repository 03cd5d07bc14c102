package monitors_test

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/gantry/gantry/loggers/tables"
	"github.com/gantry/gantry/monitors"
)

// TestRowsPaged: reading more metrics than one query answers reads them a
// few windows at a time; crossings are filtered in SQL; a single window
// with more rows than a query answers is an error, never a cut.
func TestRowsPaged(t *testing.T) {
	db := startDB(t)
	ctx := context.Background()
	m := shiftMonitor("")
	m.Thresholds[monitors.KSP] = 0.01
	if err := monitors.Ensure(ctx, db, m); err != nil {
		t.Fatal(err)
	}
	// insert writes n rows of window w (5m windows from t0): ks_statistic
	// 0.9 for the first crossing of them, 0.1 for the others, and a
	// ks_pvalue of 0.5, one row per served entity.
	insert := func(w, n, crossing int) {
		start := strconv.FormatInt(t0.Add(time.Duration(w)*5*time.Minute).Unix(), 10)
		if err := db.Exec(ctx, "INSERT INTO "+m.DriftTable().Quoted()+
			` (monitor, granularity, window_start, window_end, served_entity, slice_key, slice_value, column_name, drift_type, metric, value, version)
SELECT 'alerting', '5m', toDateTime(`+start+`), toDateTime(`+start+`) + 300, concat('e', toString(number)), '', '', 'x', 'CONSECUTIVE', metric, value, 1
FROM (SELECT number, arrayJoin([('ks_statistic', if(number < `+strconv.Itoa(crossing)+`, 0.9, 0.1)), ('ks_pvalue', 0.5)]) AS mv, mv.1 AS metric, mv.2 AS value
	FROM system.numbers LIMIT `+strconv.Itoa(n)+`)`); err != nil {
			t.Fatal(err)
		}
	}
	for w := range 4 {
		insert(w, 6000, 2) // 4 windows of 6000 rows, 2 crossings each
	}
	rows, err := monitors.DriftRows(ctx, db, m, t0, t0.Add(20*time.Minute))
	if err != nil || len(rows) != 24000 {
		t.Fatalf("DriftRows = %d rows, %v; want 24000", len(rows), err)
	}
	for i := 1; i < len(rows); i++ {
		if rows[i].WindowStart.Before(rows[i-1].WindowStart) {
			t.Fatalf("rows out of order at %d", i)
		}
	}
	cross, err := monitors.CrossingRows(ctx, db, m, t0, t0.Add(20*time.Minute))
	if err != nil || len(cross) != 8 {
		t.Fatalf("CrossingRows = %d rows, %v; want 8", len(cross), err)
	}
	for _, r := range cross {
		if r.Metric != monitors.KS || r.Value != 0.9 {
			t.Errorf("crossing %+v", r)
		}
	}
	insert(4, 2*tables.MaxRows, 0)
	if _, err := monitors.DriftRows(ctx, db, m, t0, t0.Add(30*time.Minute)); !errors.Is(err, tables.ErrTooManyRows) {
		t.Errorf("a window over MaxRows: %v; want ErrTooManyRows", err)
	}
}
