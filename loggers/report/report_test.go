package report_test

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/internal/chtest"
	"github.com/gantry/gantry/loggers"
	"github.com/gantry/gantry/loggers/local"
	"github.com/gantry/gantry/loggers/report"
	"github.com/gantry/gantry/loggers/tables"
)

var (
	payload = loggers.Table{Database: "ml_logs", Name: "fraud_payload"}
	from    = time.Date(2024, 11, 25, 2, 0, 0, 0, time.UTC)
	to      = from.Add(time.Hour)
)

// rec is a request of the endpoint fraud at from+sec seconds.
func rec(id, client, entity string, sec float64, status int32, ms int64, response string) loggers.Record {
	return loggers.Record{RequestID: id, ClientRequestID: client, Endpoint: "fraud", ServedEntity: entity,
		TimestampMs: from.Add(time.Duration(sec * float64(time.Second))).UnixMilli(), StatusCode: status,
		ExecutionTimeMs: ms, Request: []byte(`{"inputs": [[1, 2]]}`), Response: []byte(response), SamplingFraction: 1}
}

func shadowRec(id, client, entity string, sec float64, status int32, ms int64, response string) loggers.Record {
	r := rec(id+loggers.ShadowSuffix, client, entity, sec, status, ms, response)
	r.Shadow = true
	return r
}

const failed = `{"error_code": "TEMPORARILY_UNAVAILABLE", "message": "no replica"}`

// fill writes three kinds of traffic whose report is worked out by hand in
// TestBuild: v1 answers probabilities, v2 answers class names, and v2's
// shadow route answers 0/1 classes for mirrored v1 requests.
func fill(t *testing.T, db *tables.DB) {
	t.Helper()
	ctx := context.Background()
	if err := db.Ensure(ctx, payload); err != nil {
		t.Fatal(err)
	}
	v1 := []loggers.Record{
		// Latencies 1..10 ms; r1 holds two rows.
		rec("r1", "c1", "v1", 1, 200, 1, `{"predictions": [0.75, 0.25]}`),
		rec("r2", "c2", "v1", 2, 200, 2, `{"predictions": [0.5]}`),
		rec("r3", "c3", "v1", 3, 200, 3, `{"predictions":[0.75]}`),
		rec("r4", "c4", "v1", 4, 200, 4, `{"predictions": [0.25]}`),
		rec("r5", "c5", "v1", 5, 200, 5, `{"predictions": [0.125]}`),
		rec("r6", "c6", "v1", 6, 200, 6, `{"predictions": [1]}`),
		rec("r7", "c7", "v1", 7, 200, 7, `{"predictions": [0]}`),
		rec("r8", "c8", "v1", 8, 200, 8, `{"predictions": [0.875]}`),
		rec("r9", "c9", "v1", 9, 200, 9, `{"predictions": [5e-1]}`),
		rec("r10", "c10", "v1", 10, 503, 10, failed),
	}
	v2 := []loggers.Record{
		// Latencies 10..50 ms; s5's nested list is unreadable.
		rec("s1", "s1", "v2", 11, 200, 20, `{"predictions": ["setosa", "virginica"]}`),
		rec("s2", "s2", "v2", 12, 200, 40, `{"predictions": ["setosa"]}`),
		rec("s3", "s3", "v2", 13, 200, 30, `{"predictions": ["versicolor"]}`),
		rec("s4", "s4", "v2", 14, 200, 10, `{"predictions": ["a, \"quoted\" b"]}`),
		rec("s5", "s5", "v2", 15, 200, 50, `{"predictions": [[0.1, 0.9]]}`),
	}
	shadow := []loggers.Record{
		shadowRec("r1", "c1", "v2", 1, 200, 5, `{"predictions": [1]}`),
		shadowRec("r2", "c2", "v2", 2, 200, 6, `{"predictions": [0]}`),
		shadowRec("r3", "c3", "v2", 3, 500, 7, failed),
	}
	outside := []loggers.Record{
		rec("early", "c1", "v1", -0.001, 500, 999, failed),
		rec("late", "c1", "v1", 3600, 500, 999, failed),
		rec("gone", "c1", "v3", -86400, 200, 999, `{"predictions": [7]}`),
	}
	other := rec("o1", "c1", "v1", 20, 500, 999, failed)
	other.Endpoint = "other"
	all := append(append(append(append(v1, v2...), shadow...), outside...), other)
	if err := db.Insert(ctx, payload, all); err != nil {
		t.Fatal(err)
	}
	// A redelivery: FINAL must count these once.
	if err := db.Insert(ctx, payload, v1[:3]); err != nil {
		t.Fatal(err)
	}
}

// labelTables creates two tables of true labels with plain SQL: numbers
// keyed by client_request_id, and class names (one of them NULL) under
// other column names.
func labelTables(t *testing.T, ch *local.ClickHouse) {
	t.Helper()
	ctx := context.Background()
	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{ch.Addr()}, Auth: clickhouse.Auth{Username: "default"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, q := range []string{
		"CREATE DATABASE IF NOT EXISTS truth",
		"CREATE TABLE truth.outcomes (client_request_id String, y Float64) ENGINE = MergeTree() ORDER BY client_request_id",
		"CREATE TABLE truth.species (request String, species Nullable(String)) ENGINE = MergeTree() ORDER BY request",
	} {
		if err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	b, err := conn.PrepareBatch(ctx, "INSERT INTO truth.outcomes (client_request_id, y)")
	if err != nil {
		t.Fatal(err)
	}
	for id, y := range map[string]float64{"c1": 1, "c2": 0, "c3": 1, "c4": 0, "c5": 1, "c6": 1, "c7": 0, "c8": 1, "c10": 1} {
		if err := b.Append(id, y); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}
	b, err = conn.PrepareBatch(ctx, "INSERT INTO truth.species (request, species)")
	if err != nil {
		t.Fatal(err)
	}
	str := func(s string) *string { return &s }
	for id, s := range map[string]*string{"s1": str("setosa"), "s2": str("virginica"), "s3": nil, "s4": str(`a, "quoted" b`), "s5": str("setosa")} {
		if err := b.Append(id, s); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}
}

func querier(db *tables.DB) report.Querier {
	return func(ctx context.Context, sql string) (*api.QueryResult, error) {
		return db.Query(ctx, strings.ReplaceAll(sql, "{table}", payload.String()))
	}
}

func TestBuild(t *testing.T) {
	ch := chtest.Start(t)
	db := chtest.Open(t, ch)
	fill(t, db)
	labelTables(t, ch)
	q := querier(db)
	ctx := context.Background()

	rep, err := report.Build(ctx, q, report.Spec{Endpoint: "fraud", From: from, To: to})
	if err != nil {
		t.Fatal(err)
	}
	// v1: 10 requests (r1..r3 redelivered, counted once), r10 failed.
	// Latencies 1..10: p50 is the 6th (index floor(0.5*10)), p99 the 10th.
	// Predictions 0.75 0.25 0.5 0.75 0.25 0.125 1 0 0.875 0.5 sum to 5:
	// mean 0.5; sorted, p10 is index 1 (0.125), p50 index 5 (0.5), p90
	// index 9 (1).
	v1 := &report.Entity{Name: "v1", Requests: 10, Errors: 1, P50Ms: 6, P99Ms: 10,
		Predictions: report.Predictions{Count: 10, Numeric: true, Mean: 0.5, P10: 0.125, P50: 0.5, P90: 1, Distinct: 7,
			Top: []report.Value{{"0.25", 2}, {"0.5", 2}, {"0.75", 2}, {"0", 1}, {"0.125", 1}}}}
	// v2: latencies 10 20 30 40 50: p50 index 2, p99 index 4. Five class
	// names from four readable answers; s5 is nested.
	v2 := &report.Entity{Name: "v2", Requests: 5, P50Ms: 30, P99Ms: 50,
		Predictions: report.Predictions{Count: 5, Unreadable: 1, Distinct: 4,
			Top: []report.Value{{"setosa", 2}, {`a, "quoted" b`, 1}, {"versicolor", 1}, {"virginica", 1}}}}
	// v2's shadow: latencies 5 6 7, one failure; classes 1 and 0.
	v2s := &report.Entity{Name: "v2", Shadow: true, Requests: 3, Errors: 1, P50Ms: 6, P99Ms: 7,
		Predictions: report.Predictions{Count: 2, Numeric: true, Whole: true, Mean: 0.5, P10: 0, P50: 1, P90: 1, Distinct: 2,
			Top: []report.Value{{"0", 1}, {"1", 1}}}}
	want := &report.Report{Endpoint: "fraud", From: from, To: to, Entities: []*report.Entity{v1, v2, v2s}}
	if diff := diff(want, rep); diff != "" {
		t.Fatalf("report (want, got):\n%s", diff)
	}
	for _, c := range []struct {
		e    *report.Entity
		want string
	}{
		{v1, "mean 0.5 p10/p50/p90 0.125/0.5/1"},
		{v2, `setosa: 40.00%, a, "quoted" b: 20.00%, versicolor: 20.00%, virginica: 20.00% (answers without a flat predictions list: 1)`},
		{v2s, "0: 50.00%, 1: 50.00%; mean 0.5 p10/p50/p90 0/1/1"},
	} {
		if got := c.e.Predictions.Summary(); got != c.want {
			t.Errorf("%s shadow=%v summary %q; want %q", c.e.Name, c.e.Shadow, got, c.want)
		}
	}
	if got := v1.ErrorRate(); got != 0.1 {
		t.Errorf("v1 error rate %v; want 0.1", got)
	}

	accuracy := func(l *report.Labels) []report.Accuracy {
		t.Helper()
		rep, err := report.Build(ctx, q, report.Spec{Endpoint: "fraud", From: from, To: to, Labels: l})
		if err != nil {
			t.Fatal(err)
		}
		if !rep.Labelled || len(rep.Entities) != 3 {
			t.Fatalf("labelled report %+v", rep)
		}
		var out []report.Accuracy
		for _, e := range rep.Entities {
			out = append(out, *e.Accuracy)
		}
		return out
	}
	outcomes, err := report.ParseLabels("truth.outcomes", "client_request_id", "y")
	if err != nil {
		t.Fatal(err)
	}
	// Numbers as numbers: of v1's first predictions only r6 (1) and r7 (0)
	// equal their labels; c9 has no label and c10 failed, so 8 are
	// labelled. The shadow's r1 (1) and r2 (0) match; r3 failed. v2's keys
	// are not in the table.
	if diff := diff([]report.Accuracy{{8, 2}, {0, 0}, {2, 2}}, accuracy(outcomes)); diff != "" {
		t.Errorf("accuracy (want, got):\n%s", diff)
	}
	// At threshold 0.5, v1's first predictions become 1 1 1 0 0 1 0 1 (r1..r8)
	// against labels 1 0 1 0 1 1 0 1: c2 and c5 are wrong.
	half := 0.5
	outcomes.Threshold = &half
	if diff := diff([]report.Accuracy{{8, 6}, {0, 0}, {2, 2}}, accuracy(outcomes)); diff != "" {
		t.Errorf("accuracy at threshold 0.5 (want, got):\n%s", diff)
	}
	// Class names: s1 right, s2 wrong, s4 right (commas and escaped quotes
	// compared unescaped); s3's label is NULL and s5's answer unreadable,
	// so neither counts.
	species, err := report.ParseLabels("truth.species", "request", "species")
	if err != nil {
		t.Fatal(err)
	}
	if diff := diff([]report.Accuracy{{0, 0}, {3, 2}, {0, 0}}, accuracy(species)); diff != "" {
		t.Errorf("species accuracy (want, got):\n%s", diff)
	}
	if got := (&report.Accuracy{Labelled: 3, Correct: 2}).String(); got != "66.67% (2/3)" {
		t.Errorf("accuracy string %q", got)
	}

	// A window without requests, and an endpoint name that tries to break
	// out of its string literal, find nothing.
	for _, s := range []report.Spec{
		{Endpoint: "fraud", From: to.Add(time.Hour), To: to.Add(2 * time.Hour)},
		{Endpoint: "fraud' OR '1' = '1", From: from, To: to},
		{Endpoint: `fraud\' OR 1 = 1 --`, From: from, To: to},
	} {
		if _, err := report.Build(ctx, q, s); !errors.Is(err, report.ErrNoRequests) {
			t.Errorf("%+v: %v; want ErrNoRequests", s, err)
		}
	}

	// A labels table or column that does not exist is ClickHouse's refusal,
	// naming the labels table.
	for _, l := range []*report.Labels{
		{Table: loggers.Table{Database: "truth", Name: "nope"}, Key: "client_request_id", Column: "y"},
		{Table: loggers.Table{Database: "truth", Name: "outcomes"}, Key: "client_request_id", Column: "nope"},
	} {
		_, err := report.Build(ctx, q, report.Spec{Endpoint: "fraud", From: from, To: to, Labels: l})
		var ae *api.Error
		if !errors.As(err, &ae) || ae.Code != api.ErrInvalidParameterValue || !strings.Contains(ae.Message, "labels table "+l.Table.String()) {
			t.Errorf("labels %+v: %v; want INVALID_PARAMETER_VALUE naming the table", l, err)
		}
	}
}

// TestLabelsRefuseInjection checks that names bound for SQL are refused
// before any query runs.
func TestLabelsRefuseInjection(t *testing.T) {
	for _, c := range []struct{ table, key, col, field string }{
		{"truth.outcomes; DROP TABLE ml_logs.fraud_payload", "id", "y", "labels table"},
		{"truth.`outcomes`", "id", "y", "labels table"},
		{"truth", "id", "y", "labels table"},
		{"a.b.c", "id", "y", "labels table"},
		{"truth.outcomes", "id` = '' OR 1 --", "y", "key"},
		{"truth.outcomes", "", "y", "key"},
		{"truth.outcomes", "id", "y) OR (1", "label column"},
		{"truth.outcomes", "id", "sp\u00e9cies", "label column"},
		{"truth.outcomes", "id", "1y", "label column"},
	} {
		_, err := report.ParseLabels(c.table, c.key, c.col)
		var ae *api.Error
		if !errors.As(err, &ae) || ae.Code != api.ErrInvalidParameterValue || !strings.Contains(ae.Message, c.field) {
			t.Errorf("ParseLabels(%q, %q, %q): %v; want INVALID_PARAMETER_VALUE naming %s", c.table, c.key, c.col, err, c.field)
		}
	}

	// Labels built by hand are checked by Build too; no SQL is sent.
	never := func(context.Context, string) (*api.QueryResult, error) {
		t.Fatal("a query ran")
		return nil, nil
	}
	nan := 0.0
	nan /= nan
	for _, l := range []*report.Labels{
		{Table: loggers.Table{Database: "truth", Name: "outcomes` WHERE 1"}, Key: "id", Column: "y"},
		{Table: loggers.Table{Database: "truth", Name: "outcomes"}, Key: "id`", Column: "y"},
		{Table: loggers.Table{Database: "truth", Name: "outcomes"}, Key: "id", Column: "y`"},
		{Table: loggers.Table{Database: "truth", Name: "outcomes"}, Key: "id", Column: "y", Threshold: &nan},
	} {
		_, err := report.Build(context.Background(), never, report.Spec{Endpoint: "fraud", From: from, To: to, Labels: l})
		var ae *api.Error
		if !errors.As(err, &ae) || ae.Code != api.ErrInvalidParameterValue {
			t.Errorf("labels %+v: %v; want INVALID_PARAMETER_VALUE", l, err)
		}
	}
	if _, err := report.Build(context.Background(), never, report.Spec{Endpoint: "fraud", From: to, To: from}); err == nil {
		t.Error("an empty window was accepted")
	}
}

// diff is "" when want and got are deeply equal, else both as JSON.
func diff(want, got any) string {
	if reflect.DeepEqual(want, got) {
		return ""
	}
	w, _ := json.MarshalIndent(want, "", "  ")
	g, _ := json.MarshalIndent(got, "", "  ")
	return string(w) + "\n" + string(g)
}

func TestSummary(t *testing.T) {
	for _, c := range []struct {
		p    report.Predictions
		want string
	}{
		{report.Predictions{}, "no predictions"},
		{report.Predictions{Unreadable: 3}, "no predictions (answers without a flat predictions list: 3)"},
		// Seven classes: the five shown and the two others' share.
		{report.Predictions{Count: 10, Distinct: 7, Top: []report.Value{{"a", 3}, {"b", 2}, {"c", 1}, {"d", 1}, {"e", 1}}},
			"a: 30.00%, b: 20.00%, c: 10.00%, d: 10.00%, e: 10.00%, 2 others: 20.00%"},
		// Six distinct whole numbers read as a numeric output, not classes.
		{report.Predictions{Count: 6, Numeric: true, Whole: true, Distinct: 6, Mean: 3.5, P10: 1, P50: 4, P90: 6,
			Top: []report.Value{{"1", 1}}}, "mean 3.5 p10/p50/p90 1/4/6"},
		{report.Predictions{Count: 3, Numeric: true, Distinct: 3, Mean: 1.0 / 3, P10: 0.123456, P50: 1234567, P90: 2e-9},
			"mean 0.3333 p10/p50/p90 0.1235/1.235e+06/2e-09"},
	} {
		if got := c.p.Summary(); got != c.want {
			t.Errorf("%+v: %q; want %q", c.p, got, c.want)
		}
	}
}
