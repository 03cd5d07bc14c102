package monitors_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/gantry/gantry/loggers"
	"github.com/gantry/gantry/monitors"
)

// python is Debian's interpreter: the pyenv python3 on the PATH lacks
// Debian's python3-scipy.
const python = "/usr/bin/python3"

// needScipy skips without python3-scipy, except under CI, where
// `make test-deps` installs it.
func needScipy(t *testing.T) {
	t.Helper()
	if err := exec.Command(python, "-c", "import scipy, numpy").Run(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI must provide python3-scipy: %v", err)
		}
		t.Skipf("needs Debian's python3-scipy (apt-get install -y python3-scipy): %v", err)
	}
}

// scipy runs testdata/parity.py on spec and returns its answers.
func scipy(t *testing.T, spec any) map[string]float64 {
	t.Helper()
	in, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(python, "testdata/parity.py")
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("parity.py: %v: %s", err, stderr.String())
	}
	var want map[string]float64
	if err := json.Unmarshal(out, &want); err != nil {
		t.Fatal(err)
	}
	return want
}

type parityCase struct {
	Key  string `json:"key"`
	Kind string `json:"kind"`
	Cur  []any  `json:"cur"`
	Ref  []any  `json:"ref"`
}

type parityProfile struct {
	Key    string `json:"key"`
	Kind   string `json:"kind"`
	Values []any  `json:"values"`
}

// sample draws a window's rows: x normal (mean mu, half of the values
// rounded to one decimal so that the two samples share values and ties
// matter), some nulls; c from weighted categories; the prediction from c.
func sample(r *rand.Rand, n int, mu float64, weights []float64) []row {
	cats := []string{"a", "b", "c", "d", "e"}
	rows := make([]row, n)
	for i := range rows {
		x := math.Round((mu+r.NormFloat64())*1000) / 1000
		if r.IntN(2) == 0 {
			x = math.Round(x*10) / 10
		}
		rows[i].x = f(x)
		if r.IntN(20) == 0 {
			rows[i].x = nil
		}
		u, acc := r.Float64(), 0.0
		for j, w := range weights {
			acc += w
			if u < acc || j == len(weights)-1 {
				rows[i].c = s(cats[j])
				break
			}
		}
		if r.IntN(25) == 0 {
			rows[i].c = nil
		}
		rows[i].pred = "no"
		if c := rows[i].c; c != nil && (*c == "a" || *c == "d") {
			rows[i].pred = "yes"
		}
	}
	return rows
}

// log sends rows as requests of 1 to 3 rows, alternating formats, spread
// over the hour from start.
func (tr *traffic) log(r *rand.Rand, entity string, start time.Time, rows []row) {
	for i := 0; i < len(rows); {
		k := min(1+r.IntN(3), len(rows)-i)
		at := start.Add(time.Duration(r.Int64N(int64(time.Hour))))
		tr.add(entity, at, rows[i:i+k], len(tr.recs)%2 == 0)
		i += k
	}
}

// values are col's values in rows, nil for null.
func values(rows []row, col string) []any {
	out := []any{}
	for _, r := range rows {
		var v any
		switch col {
		case "x":
			if r.x != nil {
				v = *r.x
			}
		case "c":
			if r.c != nil {
				v = *r.c
			}
		case "prediction":
			v = r.pred
		}
		out = append(out, v)
	}
	return out
}

// TestParityWithScipy checks every statistic against scipy on the same
// samples: CONSECUTIVE (second hour against the first) and BASELINE (each
// hour against a baseline table), and the profile of each hour.
func TestParityWithScipy(t *testing.T) {
	needScipy(t)
	db := startDB(t)
	ctx := context.Background()
	r := rand.New(rand.NewPCG(1, 2))
	// Five categories (chi-squared with an even number of degrees of
	// freedom) and a yes/no prediction (an odd one); the baseline is close
	// to the first hour, so that its p-values are neither 0 nor 1.
	h1 := sample(r, 400, 0, []float64{0.3, 0.25, 0.2, 0.15, 0.1})
	h2 := sample(r, 300, 0.3, []float64{0.2, 0.2, 0.2, 0.2, 0.2})
	base := sample(r, 500, 0.05, []float64{0.28, 0.26, 0.2, 0.16, 0.1})
	var tr traffic
	tr.log(r, "v1", t0, h1)
	tr.log(r, "v1", t0.Add(time.Hour), h2)
	tr.insert(t, db)

	// The baseline table: one column per watched column, any types.
	bt := loggers.Table{Database: "ml_logs", Name: "fraud_baseline"}
	if err := db.Exec(ctx, "CREATE TABLE "+bt.Quoted()+" (x Nullable(Float64), c Nullable(String), prediction String) ENGINE = MergeTree ORDER BY tuple()"); err != nil {
		t.Fatal(err)
	}
	var tuples []string
	for _, b := range base {
		x, c := "NULL", "NULL"
		if b.x != nil {
			x = fmt.Sprint(*b.x)
		}
		if b.c != nil {
			c = "'" + *b.c + "'"
		}
		tuples = append(tuples, fmt.Sprintf("(%s, %s, '%s')", x, c, b.pred))
	}
	// INSERT … SELECT from a literal array: the test's own data, no user text.
	if err := db.Exec(ctx, "INSERT INTO "+bt.Quoted()+" (x, c, prediction) SELECT t.1, t.2, t.3 FROM (SELECT arrayJoin(["+strings.Join(tuples, ", ")+"]) AS t)"); err != nil {
		t.Fatal(err)
	}

	m := &monitors.Monitor{Name: "parity", Endpoint: "fraud", Table: payload, Granularity: "1h",
		Columns:     []monitors.Column{{Name: "x", Kind: monitors.Numeric}, {Name: "c", Kind: monitors.Categorical}},
		ProblemType: monitors.Classification, Baseline: &monitors.Baseline{Table: &bt},
		Slices: []string{"x > 0", "c"}}
	if _, err := monitors.Refresh(ctx, db, m, t0, t0.Add(2*time.Hour+time.Minute)); err != nil {
		t.Fatal(err)
	}

	var spec struct {
		Cases    []parityCase    `json:"cases"`
		Profiles []parityProfile `json:"profiles"`
	}
	kinds := map[string]string{"x": "numeric", "c": "categorical", "prediction": "categorical"}
	// The whole window, the slice x > 0 split in two, and one slice per
	// value of c ("" for null), each keyed "slice_key=slice_value".
	slices := map[string]func(r row) bool{
		"=":           func(row) bool { return true },
		"x > 0=true":  func(r row) bool { return r.x != nil && *r.x > 0 },
		"x > 0=false": func(r row) bool { return r.x == nil || *r.x <= 0 },
		"c=":          func(r row) bool { return r.c == nil },
	}
	for _, v := range []string{"a", "b", "c", "d", "e"} {
		slices["c="+v] = func(r row) bool { return r.c != nil && *r.c == v }
	}
	for sl, keep := range slices {
		in := func(rows []row) []row {
			var out []row
			for _, r := range rows {
				if keep(r) {
					out = append(out, r)
				}
			}
			return out
		}
		for col, kind := range kinds {
			k := "/" + sl + "/" + col
			spec.Cases = append(spec.Cases,
				parityCase{"1/CONSECUTIVE" + k, kind, values(in(h2), col), values(in(h1), col)},
				parityCase{"0/BASELINE" + k, kind, values(in(h1), col), values(in(base), col)},
				parityCase{"1/BASELINE" + k, kind, values(in(h2), col), values(in(base), col)})
			spec.Profiles = append(spec.Profiles,
				parityProfile{"0" + k, kind, values(in(h1), col)},
				parityProfile{"1" + k, kind, values(in(h2), col)})
		}
	}
	want := scipy(t, spec)

	got := map[string]float64{}
	window := func(r monitors.Row) string { return fmt.Sprint(int(r.WindowStart.Sub(t0) / time.Hour)) }
	drift, err := monitors.DriftRows(ctx, db, m, t0, t0.Add(2*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	prof, err := monitors.ProfileRows(ctx, db, m, t0, t0.Add(2*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range append(drift, prof...) {
		if r.ServedEntity != "v1" {
			t.Errorf("unexpected row %+v", r)
		}
		k := window(r)
		if r.DriftType != "" {
			k += "/" + r.DriftType
		}
		k += "/" + r.SliceKey + "=" + r.SliceValue + "/" + r.Column + "/" + r.Metric
		got[k] = r.Value
		if r.Metric == monitors.ChiSquaredP && r.SliceKey == "" {
			t.Logf("%s = %.6g", k, r.Value)
		}
	}
	compare(t, want, got)
}

// compare checks every value scipy computed, to 1e-6 relative to the
// value's size (chi-squared statistics run into the hundreds), reports the
// largest difference per metric, and refuses values scipy did not expect.
func compare(t *testing.T, want, got map[string]float64) {
	t.Helper()
	worst := map[string]float64{}
	keys := make([]string, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		w := want[k]
		g, ok := got[k]
		if !ok {
			t.Errorf("%s: missing, want %v", k, w)
			continue
		}
		d := math.Abs(g - w)
		metric := k[strings.LastIndex(k, "/")+1:]
		worst[metric] = max(worst[metric], d)
		if d > 1e-6*max(1, math.Abs(w)) {
			t.Errorf("%s = %.12g, want %.12g (scipy)", k, g, w)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("%s = %v, not expected", k, got[k])
		}
	}
	names := make([]string, 0, len(worst))
	for k := range worst {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		t.Logf("max |diff| %-22s %.3g", k, worst[k])
	}
}
