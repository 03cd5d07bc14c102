// Package monitors computes drift monitors over inference tables: per
// closed window, per served entity and per slice, profile metrics of the
// watched columns and drift metrics against the previous window
// (CONSECUTIVE) and against a baseline (BASELINE).
//
// Every statistic is computed in ClickHouse by INSERT … SELECT; the package
// only writes SQL and reads small answers, through a Store the caller
// passes (a *tables.DB). Time comes in as arguments: the caller (the
// logger's scheduler, or `gantry monitors run`) reads the clock.
//
// The SQL runs on Debian's ClickHouse 18.16 and on current releases. 18.16
// has no JSONExtract*, no window functions, no DateTime64 and no
// toStartOfInterval, so features are read with visitParamExtractRaw and
// extractAll, windows are intDiv on timestamp_ms, and the statistics are
// array functions over sorted per-value counts (arraySort, arrayCumSum).
package monitors

import (
	"fmt"
	"math"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/loggers"
)

// Kind says how a column's values are compared.
type Kind string

const (
	// Numeric values are JSON numbers (or strings holding one); anything
	// else counts as null.
	Numeric Kind = "numeric"
	// Categorical values are compared as text; 1 and 1.0 are one category.
	Categorical Kind = "categorical"
)

// ProblemType says what the model predicts, and so the kind of the
// prediction column.
type ProblemType string

const (
	Classification ProblemType = "classification" // predictions are categorical
	Regression     ProblemType = "regression"     // predictions are numeric
)

// PredictionColumn is the name the prediction goes by in the metric tables
// and in a baseline table. A feature may not use it.
const PredictionColumn = "prediction"

// Column is a watched request feature: a key of the logged request's
// records (dataframe_records, instances) or a name in dataframe_split's
// columns.
type Column struct {
	Name string `json:"name"`
	Kind Kind   `json:"kind"`
}

// Baseline is what BASELINE drift compares each window with: a ClickHouse
// table with one column per watched column (and "prediction" when the
// prediction is watched), or a frozen time range [From, To) of the
// inference table itself. Exactly one is set. The baseline pools every
// served entity: it is the reference each entity is held to.
type Baseline struct {
	Table *loggers.Table `json:"table,omitempty"`
	From  time.Time      `json:"from,omitzero"`
	To    time.Time      `json:"to,omitzero"`
}

// Metric names, as they appear in the metric tables and in Thresholds.
const (
	KS             = "ks_statistic"
	KSP            = "ks_pvalue"
	Wasserstein    = "wasserstein_distance"
	PSI            = "psi"
	ChiSquared     = "chi_squared_statistic"
	ChiSquaredP    = "chi_squared_pvalue"
	TotalVariation = "tv_distance"
	LInfinity      = "l_infinity_distance"
	JensenShannon  = "js_distance"
	// Deltas: this window minus the reference. Their thresholds bound the
	// size of the change, either way.
	CountDelta        = "count_delta"         // samples, nulls included
	NullFractionDelta = "null_fraction_delta" // share of null samples
	MeanDelta         = "mean_delta"          // numeric columns only
	driftMetricList   = "ks_statistic, ks_pvalue, wasserstein_distance, psi, chi_squared_statistic, chi_squared_pvalue, tv_distance, l_infinity_distance, js_distance, count_delta, null_fraction_delta, mean_delta"
)

// metricRange is the values each drift metric can take, which bounds its
// threshold. A p-value crosses when it falls below its threshold, a delta
// when its absolute value rises above; every other metric when it rises
// above.
var metricRange = map[string]struct {
	max        float64
	below, abs bool
}{
	CountDelta:        {max: math.Inf(1), abs: true},
	NullFractionDelta: {max: 1, abs: true},
	MeanDelta:         {max: math.Inf(1), abs: true},
	KS:                {max: 1},
	KSP:               {max: 1, below: true},
	Wasserstein:       {max: math.Inf(1)},
	PSI:               {max: math.Inf(1)},
	ChiSquared:        {max: math.Inf(1)},
	ChiSquaredP:       {max: 1, below: true},
	TotalVariation:    {max: 1},
	LInfinity:         {max: 1},
	JensenShannon:     {max: 1},
}

// Monitor is a drift monitor's definition: pure data, checked by Validate.
type Monitor struct {
	// Name identifies the monitor's rows in the metric tables.
	Name     string `json:"name"`
	Endpoint string `json:"endpoint"`
	// Table is the endpoint's inference table; the metric tables live next
	// to it as <table>_profile_metrics and <table>_drift_metrics.
	Table loggers.Table `json:"table"`
	// Granularity is the window length: <n>m, <n>h or <n>d, dividing a day
	// or a whole number of days. Windows are aligned to the Unix epoch (UTC
	// midnight for days).
	Granularity string   `json:"granularity"`
	Columns     []Column `json:"columns"`
	// ProblemType, when set, watches the prediction too, as PredictionColumn.
	ProblemType ProblemType `json:"problem_type,omitempty"`
	Baseline    *Baseline   `json:"baseline,omitempty"`
	// Slices are expressions whose values split each window into slices,
	// each computed next to the whole window (slice_key and slice_value
	// empty): a column name (one slice per value), or a column compared
	// with a number (col > 5) or a string (col = 'x'), giving slices
	// "true" and "false". Columns may be any request feature.
	Slices []string `json:"slices,omitempty"`
	// Thresholds map drift metric names to the value that raises an alert.
	Thresholds map[string]float64 `json:"thresholds,omitempty"`
	// AlertWebhookURL, an http or https URL, receives one POST per
	// threshold crossing (see Alerter); empty sends none.
	AlertWebhookURL string `json:"alert_webhook_url,omitempty"`
}

// Window is the monitor's granularity, once Validate has passed.
func (m *Monitor) Window() time.Duration {
	d, _ := ParseGranularity(m.Granularity)
	return d
}

// watched are the columns that get metrics, the prediction last.
func (m *Monitor) watched() []Column {
	cols := append([]Column(nil), m.Columns...)
	switch m.ProblemType {
	case Classification:
		cols = append(cols, Column{Name: PredictionColumn, Kind: Categorical})
	case Regression:
		cols = append(cols, Column{Name: PredictionColumn, Kind: Numeric})
	}
	return cols
}

// ParseGranularity reads a window length: a whole number followed by m, h
// or d. A window must divide a day or be a whole number of days (at most
// 31), so that windows line up with UTC days and hours.
func ParseGranularity(s string) (time.Duration, error) {
	if len(s) < 2 {
		return 0, fmt.Errorf("granularity %q: want <n>m, <n>h or <n>d, such as 5m, 1h, 1d", s)
	}
	n, err := strconv.Atoi(s[:len(s)-1])
	unit := map[byte]time.Duration{'m': time.Minute, 'h': time.Hour, 'd': 24 * time.Hour}[s[len(s)-1]]
	if err != nil || unit == 0 || n <= 0 || n > 31*24*60 {
		return 0, fmt.Errorf("granularity %q: want <n>m, <n>h or <n>d, such as 5m, 1h, 1d", s)
	}
	d := time.Duration(n) * unit
	const day = 24 * time.Hour
	if d < day && day%d != 0 || d > day && (d%day != 0 || d > 31*day) {
		return 0, fmt.Errorf("granularity %q: a window must divide a day (5m, 15m, 1h, 6h) or be 1d to 31d", s)
	}
	return d, nil
}

// Bounds of a monitor definition (see Validate).
const (
	MaxColumns  = 50
	MaxSlices   = 10
	maxSliceLen = 256
)

// Validate checks everything that can be checked without ClickHouse and
// returns one *api.Error (INVALID_PARAMETER_VALUE, so the API answers 400)
// listing every problem. Names that reach SQL must pass loggers.CheckIdent:
// they are refused, never escaped.
func (m *Monitor) Validate() error {
	var probs []string
	bad := func(format string, args ...any) { probs = append(probs, fmt.Sprintf(format, args...)) }
	if err := loggers.CheckIdent(m.Name); err != nil {
		bad("name: %v", err)
	}
	if m.Endpoint == "" {
		bad("endpoint: required")
	}
	if _, err := loggers.ParseTable(m.Table.String()); err != nil {
		bad("inference %v", err)
	}
	if _, err := ParseGranularity(m.Granularity); err != nil {
		bad("%v", err)
	}
	switch m.ProblemType {
	case "", Classification, Regression:
	default:
		bad("problem_type %q: want classification or regression", m.ProblemType)
	}
	if len(m.Columns) == 0 && m.ProblemType == "" {
		bad("columns: watch at least one column, or set problem_type to watch the prediction")
	}
	// Each request row becomes (slices + 1) × columns sample rows, and
	// each slice and column adds to one SQL statement: past these bounds
	// a monitor is accepted but its refresh can never finish (or exceeds
	// ClickHouse's query size), so it is refused here.
	if len(m.Columns) > MaxColumns {
		bad("columns: %d columns, at most %d are allowed; split them over several monitors", len(m.Columns), MaxColumns)
	}
	if len(m.Slices) > MaxSlices {
		bad("slices: %d slices, at most %d are allowed; split them over several monitors", len(m.Slices), MaxSlices)
	}
	seen := map[string]bool{}
	for i, c := range m.Columns {
		if err := loggers.CheckIdent(c.Name); err != nil {
			bad("columns[%d]: %v", i, err)
		}
		if c.Name == PredictionColumn {
			bad("columns[%d]: %q is the prediction's name; set problem_type to watch the prediction", i, c.Name)
		}
		if seen[c.Name] {
			bad("columns[%d]: %q is watched twice", i, c.Name)
		}
		seen[c.Name] = true
		if c.Kind != Numeric && c.Kind != Categorical {
			bad("columns[%d] %s: kind %q: want numeric or categorical", i, c.Name, c.Kind)
		}
	}
	if b := m.Baseline; b != nil {
		switch {
		case b.Table != nil && !b.From.IsZero():
			bad("baseline: give a table or a time range, not both")
		case b.Table != nil:
			if _, err := loggers.ParseTable(b.Table.String()); err != nil {
				bad("baseline %v", err)
			}
		case !b.From.Before(b.To):
			bad("baseline: time range from %s to %s is empty", b.From.UTC().Format(time.RFC3339), b.To.UTC().Format(time.RFC3339))
		}
	}
	for i, s := range m.Slices {
		if len(s) > maxSliceLen {
			bad("slices[%d]: %d characters, at most %d are allowed", i, len(s), maxSliceLen)
			continue
		}
		if _, err := parseSlice(s); err != nil {
			bad("slices[%d]: %v", i, err)
		}
	}
	names := make([]string, 0, len(m.Thresholds))
	for k := range m.Thresholds {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		v := m.Thresholds[k]
		r, ok := metricRange[k]
		switch {
		case !ok:
			bad("thresholds: unknown metric %q: want one of %s", k, driftMetricList)
		case math.IsNaN(v) || v < 0 || v > r.max || math.IsInf(v, 0):
			if math.IsInf(r.max, 1) {
				bad("thresholds.%s: %v is out of range: want a finite number >= 0", k, v)
			} else {
				bad("thresholds.%s: %v is out of range: want 0 to %v", k, v, r.max)
			}
		}
	}
	if m.AlertWebhookURL != "" {
		u, err := url.Parse(m.AlertWebhookURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("alert_webhook_url %q: want an http or https URL", m.AlertWebhookURL)
		}
	}
	if len(probs) > 0 {
		return api.Errorf(api.ErrInvalidParameterValue, "monitor %s: %s", m.Name, strings.Join(probs, "; "))
	}
	return nil
}

// Crossed reports whether value crosses the threshold set for metric, and
// the threshold. A p-value crosses below it, a delta when its absolute
// value is above it, any other metric above.
func (m *Monitor) Crossed(metric string, value float64) (bool, float64) {
	t, ok := m.Thresholds[metric]
	if !ok {
		return false, 0
	}
	switch r := metricRange[metric]; {
	case r.below:
		return value < t, t
	case r.abs:
		return math.Abs(value) > t, t
	}
	return value > t, t
}
