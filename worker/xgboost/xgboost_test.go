package xgboost

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"

	"github.com/gantry/gantry/worker/mlmodel"
)

// fixtures is where deploy/fixtures/make_models.py writes its models.
const fixtures = "../testdata/models"

// expected is a fixture's expected.json: rows (null for missing) and what
// MLflow's pyfunc predicted for them with the Python xgboost library.
type expected struct {
	Columns     []string        `json:"columns"`
	Data        [][]*float64    `json:"data"`
	Predictions json.RawMessage `json:"predictions"`
}

func fixtureDirs(t testing.TB) []string {
	t.Helper()
	dirs, err := filepath.Glob(filepath.Join(fixtures, "*", "expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(dirs) == 0 {
		t.Fatalf("no fixtures under %s; run make fixtures", fixtures)
	}
	// The py_* fixtures beside them are the Python runtime's.
	var out []string
	for _, d := range dirs {
		d = filepath.Dir(d)
		if mm, err := mlmodel.Load(d); err == nil && mm.Flavors["xgboost"] == nil {
			continue
		}
		out = append(out, d)
	}
	return out
}

// loadFixture loads a fixture model the way the worker does: through its
// MLmodel file's xgboost flavor.
func loadFixture(t testing.TB, dir string) (*Model, *mlmodel.Model, *expected) {
	t.Helper()
	mm, err := mlmodel.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	conf, ok := mm.Flavors["xgboost"]
	if !ok {
		t.Fatalf("%s: no xgboost flavor", dir)
	}
	m, err := Load(dir, conf)
	if err != nil {
		t.Fatalf("Load(%s): %v", dir, err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	var exp expected
	if err := json.Unmarshal(b, &exp); err != nil {
		t.Fatalf("%s/expected.json: %v", dir, err)
	}
	return m, mm, &exp
}

func (e *expected) rows() [][]float64 {
	rows := make([][]float64, len(e.Data))
	for i, r := range e.Data {
		rows[i] = make([]float64, len(r))
		for j, v := range r {
			if v == nil {
				rows[i][j] = math.NaN()
			} else {
				rows[i][j] = *v
			}
		}
	}
	return rows
}

// close reports whether got matches want to 1e-6, absolute or relative.
func close(got, want float64) bool {
	d := math.Abs(got - want)
	return d <= 1e-6 || d <= 1e-6*math.Abs(want)
}

func TestFixtures(t *testing.T) {
	for _, dir := range fixtureDirs(t) {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			m, mm, exp := loadFixture(t, dir)
			if m.NumFeatures() != len(exp.Columns) {
				t.Fatalf("NumFeatures() = %d, expected.json has %d columns", m.NumFeatures(), len(exp.Columns))
			}
			if names := mm.InputNames(); !slices.Equal(names, exp.Columns) {
				t.Errorf("signature inputs %v, expected.json columns %v", names, exp.Columns)
			}
			if names := m.Booster().FeatureNames(); !slices.Equal(names, exp.Columns) {
				t.Errorf("model feature names %v, expected.json columns %v", names, exp.Columns)
			}
			got, err := m.Predict(exp.rows())
			if err != nil {
				t.Fatal(err)
			}
			exact := comparePredictions(t, got, exp.Predictions)
			t.Logf("%d rows, %s, %d trees: %d predictions bit-exact", len(exp.Data),
				m.Booster().Objective(), m.Booster().NumTrees(), exact)
		})
	}
}

// comparePredictions checks got against the JSON predictions want and
// returns how many values matched exactly.
func comparePredictions(t *testing.T, got any, want json.RawMessage) (exact int) {
	t.Helper()
	check := func(i int, g, w float64) {
		t.Helper()
		switch {
		case g == w:
			exact++
		case !close(g, w):
			t.Errorf("prediction %d = %v, want %v (diff %g)", i, g, w, g-w)
		}
	}
	switch g := got.(type) {
	case []float64:
		var w []float64
		if err := json.Unmarshal(want, &w); err != nil {
			t.Fatalf("got []float64, expected.json has %s...: %v", want[:min(len(want), 40)], err)
		}
		if len(g) != len(w) {
			t.Fatalf("%d predictions, want %d", len(g), len(w))
		}
		for i := range g {
			check(i, g[i], w[i])
		}
	case [][]float64:
		var w [][]float64
		if err := json.Unmarshal(want, &w); err != nil {
			t.Fatalf("got [][]float64, expected.json has %s...: %v", want[:min(len(want), 40)], err)
		}
		if len(g) != len(w) {
			t.Fatalf("%d predictions, want %d", len(g), len(w))
		}
		for i := range g {
			if len(g[i]) != len(w[i]) {
				t.Fatalf("prediction %d has %d values, want %d", i, len(g[i]), len(w[i]))
			}
			for j := range g[i] {
				check(i, g[i][j], w[i][j])
			}
		}
	case []int64:
		var w []int64
		if err := json.Unmarshal(want, &w); err != nil {
			t.Fatalf("got []int64, expected.json has %s...: %v", want[:min(len(want), 40)], err)
		}
		if !slices.Equal(g, w) {
			t.Errorf("labels\n got %v\nwant %v", g, w)
		}
		exact = len(g)
	default:
		t.Fatalf("Predict returned %T", got)
	}
	return exact
}

func TestPredictRowLength(t *testing.T) {
	m, _, _ := loadFixture(t, filepath.Join(fixtures, "binary"))
	rows := [][]float64{make([]float64, m.NumFeatures()), make([]float64, m.NumFeatures()+1)}
	_, err := m.Predict(rows)
	want := "row 1 has 7 values, the model expects 6 features"
	if err == nil || err.Error() != want {
		t.Errorf("Predict error %v, want %q", err, want)
	}
}

func TestPredictEmpty(t *testing.T) {
	m, _, _ := loadFixture(t, filepath.Join(fixtures, "multiclass"))
	got, err := m.Predict(nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(got)
	if string(b) != "[]" {
		t.Errorf("Predict(nil) encodes as %s, want []", b)
	}
}

func TestPredictInfinity(t *testing.T) {
	m, _, _ := loadFixture(t, filepath.Join(fixtures, "binary"))
	for _, v := range []float64{math.Inf(1), math.Inf(-1), 1e300} {
		row := make([]float64, m.NumFeatures())
		row[2] = v
		if _, err := m.Predict([][]float64{row}); err == nil {
			t.Errorf("Predict with %v: no error", v)
		}
	}
}

// TestSklearnMissing checks that the regressor_sklearn fixture, saved with
// missing=-1, treats -1 as missing and NaN still as missing.
func TestSklearnMissing(t *testing.T) {
	m, _, _ := loadFixture(t, filepath.Join(fixtures, "regressor_sklearn"))
	if m.missing != -1 {
		t.Fatalf("missing = %v, want -1", m.missing)
	}
	a := []float64{0.5, -1, 0.2, 1}
	b := []float64{0.5, math.NaN(), 0.2, 1}
	got, err := m.Predict([][]float64{a, b})
	if err != nil {
		t.Fatal(err)
	}
	if p := got.([]float64); p[0] != p[1] {
		t.Errorf("-1 predicts %v, NaN predicts %v; want equal", p[0], p[1])
	}
}

// TestBestIteration checks that the early-stopped sklearn classifier uses
// only the rounds up to best_iteration while a Booster uses all trees.
func TestBestIteration(t *testing.T) {
	m, _, _ := loadFixture(t, filepath.Join(fixtures, "classifier_sklearn"))
	b := m.Booster()
	if want := b.bestIteration + 1; m.ntrees != want || m.ntrees >= b.NumTrees() {
		t.Errorf("sklearn model uses %d of %d trees, want %d", m.ntrees, b.NumTrees(), want)
	}
	mb, err := newModel(b, "xgboost.core.Booster")
	if err != nil {
		t.Fatal(err)
	}
	if mb.ntrees != b.NumTrees() {
		t.Errorf("Booster uses %d of %d trees", mb.ntrees, b.NumTrees())
	}
}

func TestClassLabels(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(fixtures, "classifier_sklearn", "model.json"))
	if err != nil {
		t.Fatal(err)
	}
	bst, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		meta string
		want any
	}{
		{`{"_le": {"classes_": ["no", "yes"]}, "_estimator_type": "classifier"}`, []string{}},
		{`{"_le": {"classes_": [3, 7]}, "missing": NaN}`, []int64{}},
		{`{"classes_": [0.5, 1.5]}`, []float64{}},
	} {
		bst.attributes["scikit_learn"] = tc.meta
		m, err := newModel(bst, "xgboost.sklearn.XGBClassifier")
		if err != nil {
			t.Fatalf("%s: %v", tc.meta, err)
		}
		row := make([]float64, m.NumFeatures())
		got, err := m.Predict([][]float64{row})
		if err != nil {
			t.Fatalf("%s: %v", tc.meta, err)
		}
		if reflect.TypeOf(got) != reflect.TypeOf(tc.want) {
			t.Errorf("%s: Predict returned %T, want %T", tc.meta, got, tc.want)
		}
	}
	bst.attributes["scikit_learn"] = `{"_estimator_type": "regressor"}`
	if _, err := newModel(bst, "xgboost.sklearn.XGBClassifier"); err == nil {
		t.Error("regressor meta loaded as a classifier")
	}
}

func TestPythonJSON(t *testing.T) {
	in := `{"a": NaN, "b": "NaN Infinity", "c": [Infinity, -Infinity], "d": "\"NaN"}`
	want := `{"a": null, "b": "NaN Infinity", "c": ["Infinity", "-Infinity"], "d": "\"NaN"}`
	if got := pythonJSON(in); got != want {
		t.Errorf("pythonJSON:\n got %s\nwant %s", got, want)
	}
}

// TestConcurrentPredict runs Predict from several goroutines, for the race
// detector.
func TestConcurrentPredict(t *testing.T) {
	m, _, exp := loadFixture(t, filepath.Join(fixtures, "multiclass"))
	rows := exp.rows()
	want, err := m.Predict(rows)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan any)
	for range 4 {
		go func() {
			got, _ := m.Predict(rows)
			done <- got
		}()
	}
	for range 4 {
		if got := <-done; !reflect.DeepEqual(got, want) {
			t.Error("concurrent Predict differs")
		}
	}
}

func readFixtureModel(name string) ([]byte, error) {
	return os.ReadFile(filepath.Join(fixtures, name, "model.json"))
}
