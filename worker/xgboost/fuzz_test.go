package xgboost

import (
	"math"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// FuzzParse feeds Parse arbitrary documents and, when one parses, predicts
// with it under each model class: nothing may panic, hang or index out of
// range. The committed corpus (testdata/fuzz/FuzzParse) holds small
// fixture models, hand-made corruptions and anything the fuzzer found; the
// current fixture models are added here as well.
//
//	go test -run '^$' -fuzz FuzzParse -fuzztime 60s ./worker/xgboost/
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join(fixtures, "*", "model.json"))
	ubj, _ := filepath.Glob(filepath.Join(fixtures, "*", "model.ubj"))
	for _, name := range append(files, ubj...) {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := Parse(data)
		if err != nil {
			if b != nil {
				t.Fatal("Parse returned a Booster and an error")
			}
			return
		}
		// A model may ask for rows this wide legitimately; the fuzzer
		// just cannot afford them.
		if b.numFeature > 1<<12 || b.numGroup > 1<<12 {
			return
		}
		rows := probeRows(b.numFeature)
		for _, class := range []string{
			"xgboost.core.Booster",
			"xgboost.sklearn.XGBClassifier",
			"xgboost.sklearn.XGBRegressor",
		} {
			m, err := newModel(b, class)
			if err != nil {
				continue
			}
			p, err := m.Predict(rows)
			if err != nil {
				continue
			}
			if n := reflect.ValueOf(p).Len(); n != len(rows) {
				t.Fatalf("%s: %d predictions for %d rows", class, n, len(rows))
			}
		}
	})
}

// probeRows are rows that take different paths through the trees: all
// missing, all zero, and large values of either sign.
func probeRows(n int) [][]float64 {
	vals := []float64{math.NaN(), 0, 1e30, -1e30, 0.5}
	rows := make([][]float64, len(vals))
	for i, v := range vals {
		rows[i] = make([]float64, n)
		for j := range rows[i] {
			rows[i][j] = v
		}
	}
	return rows
}
