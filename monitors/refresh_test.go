package monitors_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"reflect"
	"sort"
	"testing"
	"time"

	"github.com/gantry/gantry/monitors"
)

// TestShift sends 12 windows of 5 minutes of traffic to two entities. At
// the start of window 7 (t0+35m) v1's inputs shift: x moves by two
// standard deviations and c's categories swap their shares; v2's do not.
// The baseline is the inference table's first 30 minutes. The monitor is
// refreshed the way the logger will run it, a minute after each window
// closes with a 10-minute lookback (so each window is written twice), then
// once more over everything.
func TestShift(t *testing.T) {
	db := startDB(t)
	ctx := context.Background()
	r := rand.New(rand.NewPCG(3, 4))
	const g, windows, perWindow, shift = 5 * time.Minute, 12, 150, 7
	var tr traffic
	for w := range windows {
		for _, entity := range []string{"v1", "v2"} {
			shifted := entity == "v1" && w >= shift
			rows := make([]row, perWindow)
			for i := range rows {
				x := r.NormFloat64()
				weights := []float64{0.7, 0.2, 0.1}
				if shifted {
					x += 2
					weights = []float64{0.1, 0.2, 0.7}
				}
				u, c := r.Float64(), "c"
				if u < weights[0] {
					c = "a"
				} else if u < weights[0]+weights[1] {
					c = "b"
				}
				rows[i] = row{x: f(x), c: s(c), pred: "0"}
			}
			for i := 0; i < len(rows); {
				k := min(1+r.IntN(3), len(rows)-i)
				tr.add(entity, t0.Add(time.Duration(w)*g+time.Duration(r.Int64N(int64(g)))), rows[i:i+k], i%2 == 0)
				i += k
			}
		}
	}
	tr.insert(t, db)

	m := &monitors.Monitor{Name: "shift", Endpoint: "fraud", Table: payload, Granularity: "5m",
		Columns:    []monitors.Column{{Name: "x", Kind: monitors.Numeric}, {Name: "c", Kind: monitors.Categorical}},
		Baseline:   &monitors.Baseline{From: t0, To: t0.Add(30 * time.Minute)},
		Thresholds: map[string]float64{monitors.KS: 0.3, monitors.JensenShannon: 0.2}}
	end := t0.Add(windows * g)
	for now := t0.Add(time.Minute); !now.After(end.Add(time.Minute)); now = now.Add(g) {
		res, err := monitors.Refresh(ctx, db, m, now.Add(-10*time.Minute), now)
		if err != nil {
			t.Fatal(err)
		}
		if res.To.After(now) {
			t.Fatalf("refresh at %s covered windows to %s, past now", now, res.To)
		}
		if now.Equal(t0.Add(shift*g + time.Minute)) {
			// The shifted window is open: no rows for it yet.
			rows, err := monitors.ProfileRows(ctx, db, m, t0.Add(shift*g), end)
			if err != nil {
				t.Fatal(err)
			}
			if len(rows) != 0 {
				t.Errorf("at %s, %d profile rows for windows that have not closed, want 0", now, len(rows))
			}
		}
	}
	drift, err := monitors.DriftRows(ctx, db, m, t0, end)
	if err != nil {
		t.Fatal(err)
	}
	prof, err := monitors.ProfileRows(ctx, db, m, t0, end)
	if err != nil {
		t.Fatal(err)
	}

	var got []string
	for _, c := range m.Crossings(drift) {
		got = append(got, fmt.Sprintf("%d %s %s %s %s", int(c.WindowStart.Sub(t0)/g), c.ServedEntity, c.DriftType, c.Column, c.Metric))
	}
	var want []string
	for w := shift; w < windows; w++ {
		want = append(want, fmt.Sprintf("%d v1 BASELINE c js_distance", w), fmt.Sprintf("%d v1 BASELINE x ks_statistic", w))
	}
	want = append(want, fmt.Sprintf("%d v1 CONSECUTIVE c js_distance", shift), fmt.Sprintf("%d v1 CONSECUTIVE x ks_statistic", shift))
	sort.Strings(got)
	sort.Strings(want)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("crossings (window entity type column metric):\n got %q\nwant %q", got, want)
	}
	// Every window of both entities has its drift against the baseline,
	// and every window but the first against the one before.
	n := map[string]int{}
	for _, d := range drift {
		n[d.DriftType]++
	}
	if want := windows * 2 * (7 + 7); n[monitors.BaselineRef] != want {
		t.Errorf("%d BASELINE rows, want %d (windows x entities x (7 numeric + 7 categorical metrics))", n[monitors.BaselineRef], want)
	}
	if want := (windows - 1) * 2 * (7 + 7); n[monitors.Consecutive] != want {
		t.Errorf("%d CONSECUTIVE rows, want %d", n[monitors.Consecutive], want)
	}

	// Refreshing everything again, later, changes no value and adds no row.
	if _, err := monitors.Refresh(ctx, db, m, t0, end.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	drift2, err := monitors.DriftRows(ctx, db, m, t0, end)
	if err != nil {
		t.Fatal(err)
	}
	prof2, err := monitors.ProfileRows(ctx, db, m, t0, end)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(drift, drift2) || !reflect.DeepEqual(prof, prof2) {
		t.Errorf("a second refresh changed the metrics: %d/%d drift rows, %d/%d profile rows", len(drift), len(drift2), len(prof), len(prof2))
	}
	// Merged for good, the tables hold one row per key: the copies that
	// every refresh wrote are gone, not just hidden by FINAL.
	for _, tb := range []string{m.DriftTable().Quoted(), m.ProfileTable().Quoted()} {
		if err := db.Exec(ctx, "OPTIMIZE TABLE "+tb+" FINAL"); err != nil {
			t.Fatal(err)
		}
	}
	res, err := db.Query(ctx, "SELECT count() FROM "+m.DriftTable().Quoted())
	if err != nil {
		t.Fatal(err)
	}
	if res.Rows[0][0] != fmt.Sprint(len(drift)) {
		t.Errorf("drift table holds %s rows after merging, want %d", res.Rows[0][0], len(drift))
	}
	// Every refresh dropped its scratch tables.
	res, err = db.Query(ctx, "SELECT name FROM system.tables WHERE database = 'ml_logs' AND name LIKE '%scratch%'")
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Rows) != 0 {
		t.Errorf("scratch tables left: %v", res.Rows)
	}
}

// TestDropScratch removes what a killed refresh of the monitor left, and
// nothing of another monitor whose name starts the same.
func TestDropScratch(t *testing.T) {
	db := startDB(t)
	ctx := context.Background()
	for _, name := range []string{"fraud_payload_scratch_m_1732492800000_42_cur", "fraud_payload_scratch_m_1732492800000_42_base",
		"fraud_payload_scratch_m_b_1732492800000_7_cur"} {
		if err := db.Exec(ctx, "CREATE TABLE ml_logs."+name+" (n UInt8) ENGINE = MergeTree ORDER BY tuple()"); err != nil {
			t.Fatal(err)
		}
	}
	m := &monitors.Monitor{Name: "m", Endpoint: "fraud", Table: payload, Granularity: "1h", ProblemType: monitors.Regression}
	// They were created just now: a refresh of another process may be
	// using them.
	if err := monitors.DropScratch(ctx, db, m, time.Hour); err != nil {
		t.Fatal(err)
	}
	res, err := db.Query(ctx, "SELECT count() FROM system.tables WHERE database = 'ml_logs' AND name LIKE '%scratch%'")
	if err != nil || res.Rows[0][0] != "3" {
		t.Fatalf("scratch tables after DropScratch(1h): %v %v; want all 3", res, err)
	}
	if err := monitors.DropScratch(ctx, db, m, 0); err != nil {
		t.Fatal(err)
	}
	res, err = db.Query(ctx, "SELECT name FROM system.tables WHERE database = 'ml_logs' AND name LIKE '%scratch%'")
	if err != nil {
		t.Fatal(err)
	}
	if want := [][]string{{"fraud_payload_scratch_m_b_1732492800000_7_cur"}}; !reflect.DeepEqual(res.Rows, want) {
		t.Errorf("tables left = %v, want %v", res.Rows, want)
	}
}
