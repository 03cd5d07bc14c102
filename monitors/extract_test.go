package monitors_test

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/gantry/gantry/loggers"
	"github.com/gantry/gantry/monitors"
)

// TestRequestFormats reads features from every request format the scoring
// protocol has, and predictions whatever the inputs look like; the
// profile's counts and means are worked out by hand below.
func TestRequestFormats(t *testing.T) {
	db := startDB(t)
	ctx := context.Background()
	var recs []loggers.Record
	add := func(req, resp string, status int32, shadow bool) {
		recs = append(recs, loggers.Record{RequestID: "r" + string(rune('a'+len(recs))), Endpoint: "fraud", ServedEntity: "v1",
			TimestampMs: t0.Add(time.Duration(len(recs)) * time.Minute).UnixMilli(), StatusCode: status,
			Request: []byte(req), Response: []byte(resp), Shadow: shadow})
	}
	// Two rows; a string holding "," and "]" stays one value.
	add(`{"dataframe_split": {"index": [0, 1], "columns": ["c", "x"], "data": [["a", 1], ["b,]", 2.5]]}}`, `{"predictions": [10, 20]}`, 200, false)
	// An escaped quote, no spaces.
	add(`{"dataframe_records":[{"x":3,"c":"q\"uote"}]}`, `{"predictions":[30]}`, 200, false)
	// instances as records; a number in a string is a number.
	add(`{"instances": [{"x": "4", "c": "a"}]}`, `{"predictions": [40]}`, 200, false)
	// inputs as columns, with a null.
	add(`{"inputs": {"x": [5, null], "c": ["a", "b"]}}`, `{"predictions": [50, 60]}`, 200, false)
	// A tensor: no feature can be read, the prediction counts.
	add(`{"inputs": [[1, 2]]}`, `{"predictions": [70]}`, 200, false)
	// Not a number where one is expected; 1.0 is category "1".
	add(`{"dataframe_records": [{"x": "abc", "c": 1.0}]}`, `{"predictions": ["n/a"]}`, 200, false)
	// Failed and shadow answers are left out.
	add(`{"dataframe_records": [{"x": 100, "c": "z"}]}`, `{"error_code": "INTERNAL_ERROR"}`, 500, false)
	add(`{"dataframe_records": [{"x": 100, "c": "z"}]}`, `{"predictions": [100]}`, 200, true)
	if err := db.Insert(ctx, payload, recs); err != nil {
		t.Fatal(err)
	}

	m := &monitors.Monitor{Name: "formats", Endpoint: "fraud", Table: payload, Granularity: "1h",
		Columns:     []monitors.Column{{Name: "x", Kind: monitors.Numeric}, {Name: "c", Kind: monitors.Categorical}},
		ProblemType: monitors.Regression, Slices: []string{"c"}}
	if _, err := monitors.Refresh(ctx, db, m, t0, t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	rows, err := monitors.ProfileRows(ctx, db, m, t0, t0.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	slices := map[string]float64{}
	for _, r := range rows {
		switch {
		case r.SliceKey == "":
			got[r.Column+" "+r.Metric] = r.Value
		case r.Column == "prediction" && r.Metric == "count":
			slices[r.SliceValue] = r.Value
		}
	}
	// A monitor of the prediction alone reads the same predictions.
	only := &monitors.Monitor{Name: "predictions", Endpoint: "fraud", Table: payload, Granularity: "1h", ProblemType: monitors.Regression}
	if _, err := monitors.Refresh(ctx, db, only, t0, t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	prows, err := monitors.ProfileRows(ctx, db, only, t0, t0.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range prows {
		if r.Metric == "count" && r.Value != 8 || r.Metric == "mean" && r.Value != 40 {
			t.Errorf("prediction-only monitor: %s = %v, want %v", r.Metric, r.Value, got["prediction "+r.Metric])
		}
	}
	if len(prows) == 0 {
		t.Error("prediction-only monitor: no profile rows")
	}
	// Slicing by c shows its values as text, unescaped; "" is null.
	if want := map[string]float64{"a": 3, "b,]": 1, `q"uote`: 1, "b": 1, "1": 1, "": 1}; !reflect.DeepEqual(slices, want) {
		t.Errorf("predictions per slice of c = %v, want %v", slices, want)
	}
	for k, want := range map[string]float64{
		// 8 rows: 2 split, 1 record, 1 instance, 2 columns, 1 tensor, 1 "abc".
		"x count": 8, "x null_count": 3, "x mean": 3.1, "x min": 1, "x max": 5, "x distinct_count": 5,
		"c count": 8, "c null_count": 1, "c distinct_count": 5, // a, "b,]", q"uote, b, 1
		"prediction count": 8, "prediction null_count": 1, "prediction mean": 40, "prediction max": 70,
	} {
		if g, ok := got[k]; !ok || g != want {
			t.Errorf("%s = %v (present %v), want %v", k, g, ok, want)
		}
	}
}
