package xgboost

import (
	"fmt"
	"path/filepath"
	"testing"
)

// BenchmarkPredict times Model.Predict for one row and for a batch of
// 1,000 rows made from the fixture's expected rows (see benchRows). Its
// Python counterpart is deploy/bench/xgb_python.py, which times
// booster.predict(DMatrix(rows)) on the same rows and prints the same
// format.
func BenchmarkPredict(b *testing.B) {
	for _, name := range []string{"binary", "multiclass"} {
		m, _, exp := loadFixture(b, filepath.Join(fixtures, name))
		rows := exp.rows()
		for _, n := range []int{1, 1000} {
			batch := benchRows(rows, n)
			b.Run(fmt.Sprintf("%s/rows=%d", name, n), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if _, err := m.Predict(batch); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkParse times parsing the regressor fixture's model.json.
func BenchmarkParse(b *testing.B) {
	data, err := readFixtureModel("regressor")
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := Parse(data); err != nil {
			b.Fatal(err)
		}
	}
}

// benchRows makes n rows from the given ones: the first len(rows) as they
// are, the others mixing columns of different rows. Repeating the same few
// rows would let the branch predictor learn the trees' paths, which real
// traffic does not allow. deploy/bench/xgb_python.py builds the same rows.
func benchRows(rows [][]float64, n int) [][]float64 {
	out := make([][]float64, n)
	for i := range out {
		out[i] = make([]float64, len(rows[0]))
		for j := range out[i] {
			out[i][j] = rows[(i+7*j*(i/len(rows)))%len(rows)][j]
		}
	}
	return out
}
