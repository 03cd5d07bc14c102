package monitors_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gantry/gantry/internal/chtest"
	"github.com/gantry/gantry/loggers"
	"github.com/gantry/gantry/loggers/tables"
	"github.com/gantry/gantry/monitors"
)

var (
	payload = loggers.Table{Database: "ml_logs", Name: "fraud_payload"}
	t0      = time.Date(2024, 11, 25, 0, 0, 0, 0, time.UTC)
)

// row is one row of a request: feature values (nil is JSON null, a
// missing key is left out) and the prediction.
type row struct {
	x    *float64
	c    *string
	pred string
}

// jsonValue writes v as JSON.
func jsonValue(v any) string {
	switch v := v.(type) {
	case *float64:
		if v == nil {
			return "null"
		}
		return strconv.FormatFloat(*v, 'g', -1, 64)
	case *string:
		if v == nil {
			return "null"
		}
		return strconv.Quote(*v)
	}
	panic(fmt.Sprintf("jsonValue %T", v))
}

// request writes rows as a scoring request: dataframe_split when split,
// else dataframe_records, with the spacing json.dumps uses, plus a column
// no monitor watches.
func request(rows []row, split bool) string {
	var b strings.Builder
	if split {
		b.WriteString(`{"dataframe_split": {"columns": ["other", "x", "c"], "data": [`)
		for i, r := range rows {
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "[%d, %s, %s]", i, jsonValue(r.x), jsonValue(r.c))
		}
		b.WriteString("]}}")
		return b.String()
	}
	b.WriteString(`{"dataframe_records": [`)
	for i, r := range rows {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, `{"other": "o,}", "x": %s, "c": %s}`, jsonValue(r.x), jsonValue(r.c))
	}
	b.WriteString("]}")
	return b.String()
}

func response(rows []row) string {
	var p []string
	for _, r := range rows {
		p = append(p, strconv.Quote(r.pred))
	}
	return `{"predictions": [` + strings.Join(p, ", ") + `]}`
}

// traffic accumulates inference records.
type traffic struct {
	recs []loggers.Record
}

// add logs one request of entity holding rows at t.
func (tr *traffic) add(entity string, t time.Time, rows []row, split bool) {
	id := fmt.Sprintf("r%d", len(tr.recs))
	tr.recs = append(tr.recs, loggers.Record{RequestID: id, Endpoint: "fraud", ServedEntity: entity,
		TimestampMs: t.UnixMilli(), StatusCode: 200, ExecutionTimeMs: 3,
		Request: []byte(request(rows, split)), Response: []byte(response(rows)), SamplingFraction: 1})
}

// startDB starts ClickHouse with the payload table.
func startDB(t testing.TB) *tables.DB {
	t.Helper()
	db := chtest.Open(t, chtest.Start(t))
	if err := db.Ensure(context.Background(), payload); err != nil {
		t.Fatal(err)
	}
	return db
}

func (tr *traffic) insert(t testing.TB, db *tables.DB) {
	t.Helper()
	if err := db.Insert(context.Background(), payload, tr.recs); err != nil {
		t.Fatal(err)
	}
}

func f(v float64) *float64 { return &v }
func s(v string) *string   { return &v }

// loopback allows webhooks on this host: the tests' webhooks are
// httptest servers, which Alerters refuse by default.
func loopback(t testing.TB) *monitors.WebhookAllow {
	a, err := monitors.ParseWebhookAllow([]string{"127.0.0.0/8", "::1"})
	if err != nil {
		t.Fatal(err)
	}
	return a
}
