package monitors_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/loggers"
	"github.com/gantry/gantry/monitors"
)

func good() *monitors.Monitor {
	return &monitors.Monitor{Name: "drift", Endpoint: "fraud", Table: payload, Granularity: "1h",
		Columns:     []monitors.Column{{Name: "x", Kind: monitors.Numeric}, {Name: "c", Kind: monitors.Categorical}},
		ProblemType: monitors.Regression, Slices: []string{"c", "x >= 2.5", "c != 'a'"},
		Thresholds: map[string]float64{monitors.KS: 0.2, monitors.PSI: 0.25, monitors.ChiSquaredP: 0.01, monitors.NullFractionDelta: 0.1}}
}

func TestParseGranularity(t *testing.T) {
	for in, want := range map[string]time.Duration{"1m": time.Minute, "5m": 5 * time.Minute, "15m": 15 * time.Minute,
		"1h": time.Hour, "6h": 6 * time.Hour, "1d": 24 * time.Hour, "7d": 7 * 24 * time.Hour} {
		if got, err := monitors.ParseGranularity(in); err != nil || got != want {
			t.Errorf("ParseGranularity(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "m", "0m", "-5m", "7m", "5s", "1w", "1.5h", "25h", "32d", "5 minutes"} {
		if got, err := monitors.ParseGranularity(in); err == nil {
			t.Errorf("ParseGranularity(%q) = %v, want an error", in, got)
		}
	}
}

// TestValidate: each bad definition is one INVALID_PARAMETER_VALUE error
// (the API's 400) whose message names the problem.
func TestValidate(t *testing.T) {
	if err := good().Validate(); err != nil {
		t.Fatalf("good monitor: %v", err)
	}
	for _, tc := range []struct {
		name string
		edit func(m *monitors.Monitor)
		want string
	}{
		{"bad granularity", func(m *monitors.Monitor) { m.Granularity = "7m" }, `granularity "7m": a window must divide a day`},
		{"granularity unit", func(m *monitors.Monitor) { m.Granularity = "1w" }, `granularity "1w": want <n>m, <n>h or <n>d`},
		{"threshold above 1", func(m *monitors.Monitor) { m.Thresholds[monitors.KS] = 1.5 }, "thresholds.ks_statistic: 1.5 is out of range: want 0 to 1"},
		{"negative threshold", func(m *monitors.Monitor) { m.Thresholds[monitors.PSI] = -0.1 }, "thresholds.psi: -0.1 is out of range: want a finite number >= 0"},
		{"ks p-value threshold", func(m *monitors.Monitor) { m.Thresholds[monitors.KSP] = 1.5 }, "thresholds.ks_pvalue: 1.5 is out of range: want 0 to 1"},
		{"delta threshold", func(m *monitors.Monitor) { m.Thresholds[monitors.NullFractionDelta] = 2 }, "thresholds.null_fraction_delta: 2 is out of range: want 0 to 1"},
		{"unknown metric", func(m *monitors.Monitor) { m.Thresholds["accuracy"] = 0.5 }, `thresholds: unknown metric "accuracy"`},
		{"column name", func(m *monitors.Monitor) { m.Columns[0].Name = "x'; DROP TABLE t --" }, `columns[0]: "x'; DROP TABLE t --" must be`},
		{"column kind", func(m *monitors.Monitor) { m.Columns[1].Kind = "text" }, `columns[1] c: kind "text": want numeric or categorical`},
		{"duplicate column", func(m *monitors.Monitor) { m.Columns[1].Name = "x" }, `columns[1]: "x" is watched twice`},
		{"prediction as feature", func(m *monitors.Monitor) { m.Columns[1].Name = "prediction" }, `"prediction" is the prediction's name`},
		{"nothing watched", func(m *monitors.Monitor) { m.Columns, m.ProblemType = nil, "" }, "watch at least one column"},
		{"problem type", func(m *monitors.Monitor) { m.ProblemType = "ranking" }, `problem_type "ranking"`},
		{"slice", func(m *monitors.Monitor) { m.Slices = []string{"x > 1 OR 1=1"} }, `slices[0]: slice "x > 1 OR 1=1"`},
		{"slice string order", func(m *monitors.Monitor) { m.Slices = []string{"c < 'b'"} }, "a string compares with = or != only"},
		{"empty baseline range", func(m *monitors.Monitor) { m.Baseline = &monitors.Baseline{From: t0, To: t0} }, "baseline: time range"},
		{"name", func(m *monitors.Monitor) { m.Name = "my monitor" }, `name: "my monitor" must be`},
		{"webhook scheme", func(m *monitors.Monitor) { m.AlertWebhookURL = "ftp://hooks.example/x" }, `alert_webhook_url "ftp://hooks.example/x": want an http or https URL`},
		{"webhook host", func(m *monitors.Monitor) { m.AlertWebhookURL = "https:///x" }, "alert_webhook_url"},
		// Issue 19: 2,000 slices were accepted and the monitor never ran.
		{"too many slices", func(m *monitors.Monitor) {
			m.Slices = nil
			for i := range 2000 {
				m.Slices = append(m.Slices, fmt.Sprintf("x > %d", i))
			}
		}, fmt.Sprintf("slices: 2000 slices, at most %d", monitors.MaxSlices)},
		{"too many columns", func(m *monitors.Monitor) {
			m.Columns = nil
			for i := range monitors.MaxColumns + 1 {
				m.Columns = append(m.Columns, monitors.Column{Name: fmt.Sprintf("c%d", i), Kind: monitors.Numeric})
			}
		}, fmt.Sprintf("columns: %d columns, at most %d", monitors.MaxColumns+1, monitors.MaxColumns)},
		{"long slice", func(m *monitors.Monitor) { m.Slices = []string{"c = '" + strings.Repeat("a", 1000) + "'"} }, "slices[0]: 1006 characters"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := good()
			tc.edit(m)
			err := m.Validate()
			var ae *api.Error
			if !errors.As(err, &ae) || ae.Code != api.ErrInvalidParameterValue {
				t.Fatalf("Validate() = %v, want an *api.Error %s", err, api.ErrInvalidParameterValue)
			}
			if !strings.Contains(ae.Message, tc.want) {
				t.Errorf("message %q does not contain %q", ae.Message, tc.want)
			}
			// Refresh refuses the definition before it writes any SQL.
			if _, err := monitors.Refresh(context.Background(), nil, m, t0, t0.Add(time.Hour)); !errors.As(err, &ae) {
				t.Errorf("Refresh = %v, want the same error", err)
			}
		})
	}
}

func TestCrossed(t *testing.T) {
	m := good()
	// ks_pvalue is a valid threshold, and crosses below it.
	m.Thresholds[monitors.KSP] = 0.01
	if err := m.Validate(); err != nil {
		t.Fatalf("threshold on %s: %v", monitors.KSP, err)
	}
	for _, tc := range []struct {
		metric string
		value  float64
		want   bool
	}{
		{monitors.KS, 0.25, true}, {monitors.KS, 0.2, false}, {monitors.ChiSquaredP, 0.001, true},
		{monitors.ChiSquaredP, 0.5, false}, {monitors.KSP, 0.001, true}, {monitors.KSP, 0.5, false},
		{monitors.JensenShannon, 1, false},                                                  // no threshold set
		{monitors.NullFractionDelta, -0.2, true}, {monitors.NullFractionDelta, 0.05, false}, // |delta| against 0.1
	} {
		if got, _ := m.Crossed(tc.metric, tc.value); got != tc.want {
			t.Errorf("Crossed(%s, %v) = %v, want %v", tc.metric, tc.value, got, tc.want)
		}
	}
}

// TestCheck: a column that the logged requests or the baseline table do
// not have is refused with INVALID_PARAMETER_VALUE naming it; the same
// monitor on columns they have passes.
func TestCheck(t *testing.T) {
	db := startDB(t)
	ctx := context.Background()
	now := t0.Add(time.Hour)
	m := good()
	m.Baseline = nil
	// No request logged yet: any name is accepted.
	if err := monitors.Check(ctx, db, m, now); err != nil {
		t.Fatalf("Check on an empty table: %v", err)
	}
	var tr traffic
	tr.add("v1", t0, []row{{x: f(1), c: s("a"), pred: "1"}}, true)
	tr.add("v1", t0.Add(time.Minute), []row{{x: f(2), c: s("b"), pred: "0"}}, false)
	tr.insert(t, db)
	if err := monitors.Check(ctx, db, m, now); err != nil {
		t.Fatalf("Check with known columns: %v", err)
	}

	bt := loggers.Table{Database: "ml_logs", Name: "base"}
	if err := db.Exec(ctx, "CREATE TABLE "+bt.Quoted()+" (x Float64, prediction Float64) ENGINE = MergeTree ORDER BY tuple()"); err != nil {
		t.Fatal(err)
	}
	m.Columns = append(m.Columns, monitors.Column{Name: "amount", Kind: monitors.Numeric})
	m.Baseline = &monitors.Baseline{Table: &bt}
	err := monitors.Check(ctx, db, m, now)
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != api.ErrInvalidParameterValue || !errors.Is(err, monitors.ErrUnknownColumn) {
		t.Fatalf("Check = %v, want an *api.Error %s wrapping ErrUnknownColumn", err, api.ErrInvalidParameterValue)
	}
	for _, want := range []string{`baseline table ml_logs.base has no column "c"`, `baseline table ml_logs.base has no column "amount"`,
		`no request of endpoint fraud in the last week has a column "amount"`} {
		if !strings.Contains(ae.Message, want) {
			t.Errorf("message %q does not contain %q", ae.Message, want)
		}
	}
	if strings.Contains(ae.Message, `has a column "x"`) || strings.Contains(ae.Message, `no column "x"`) {
		t.Errorf("message %q names x, which exists", ae.Message)
	}
	m.Baseline.Table = &loggers.Table{Database: "ml_logs", Name: "gone"}
	if err := monitors.Check(ctx, db, m, now); err == nil || !strings.Contains(err.Error(), "baseline table ml_logs.gone does not exist") {
		t.Errorf("Check with a missing baseline table = %v", err)
	}
}
