package monitors_test

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/gantry/gantry/monitors"
)

// BenchmarkRefresh refreshes an hour of 5-minute windows holding 100,000
// requests of two rows each (two features and the prediction, a slice,
// CONSECUTIVE and BASELINE drift): what one refresh of a busy endpoint's
// hour costs in ClickHouse.
func BenchmarkRefresh(b *testing.B) {
	db := startDB(b)
	r := rand.New(rand.NewPCG(5, 6))
	var tr traffic
	cats := []string{"a", "b", "c", "d"}
	for i := range 100_000 {
		rows := []row{
			{x: f(r.NormFloat64()), c: s(cats[r.IntN(4)]), pred: cats[r.IntN(2)]},
			{x: f(r.NormFloat64()), c: s(cats[r.IntN(4)]), pred: cats[r.IntN(2)]},
		}
		tr.add("v1", t0.Add(time.Duration(r.Int64N(int64(time.Hour)))), rows, i%2 == 0)
	}
	tr.insert(b, db)
	m := &monitors.Monitor{Name: "bench", Endpoint: "fraud", Table: payload, Granularity: "5m",
		Columns:     []monitors.Column{{Name: "x", Kind: monitors.Numeric}, {Name: "c", Kind: monitors.Categorical}},
		ProblemType: monitors.Classification, Slices: []string{"c"},
		Baseline: &monitors.Baseline{From: t0, To: t0.Add(15 * time.Minute)}}
	b.ResetTimer()
	for b.Loop() {
		if _, err := monitors.Refresh(context.Background(), db, m, t0, t0.Add(time.Hour)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/refresh")
}
