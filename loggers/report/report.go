// Package report builds the A/B comparison of an endpoint's served entities
// from its inference table: per entity, requests, error rate, latency
// p50/p99, the distribution of predictions and, given a table of true
// labels, accuracy.
//
// The package only writes SQL and reads answers: the query runs wherever
// the caller sends it (the scheduler's table query API for the CLI, a
// ClickHouse connection in tests), and time comes in the Spec.
package report

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/loggers"
)

// MaxTop is how many of the most frequent prediction values a report keeps
// per entity.
const MaxTop = 5

// maxClasses is the most distinct whole numbers that read as class labels
// (0/1, or 0..4) rather than as a numeric output, so that the report shows
// their shares as well as the mean.
const maxClasses = 5

// Querier runs read-only SQL in which "{table}" stands for the endpoint's
// inference table. The CLI passes the table query API; tests pass a
// ClickHouse connection.
type Querier func(ctx context.Context, sql string) (*api.QueryResult, error)

// Spec says what to report on.
type Spec struct {
	Endpoint string
	// From and To bound the window, [From, To), on the requests' arrival
	// time. The caller reads the clock.
	From, To time.Time
	// Labels, when set, adds accuracy.
	Labels *Labels
}

// Labels name a table of true labels.
type Labels struct {
	Table loggers.Table
	// Key is the labels table's column that holds the client_request_id the
	// client sent with its request.
	Key string
	// Column holds the true label.
	Column string
	// Threshold, when set, turns a numeric prediction (a probability) into
	// class 1 at or above it and 0 below before comparing.
	Threshold *float64
}

// ParseLabels checks the names that go into SQL. A bad one is an
// *api.Error (INVALID_PARAMETER_VALUE) naming it: names are refused, never
// escaped, so no text can reach the SQL as anything but a name.
func ParseLabels(table, key, column string) (*Labels, error) {
	t, err := loggers.ParseTable(table)
	if err != nil {
		return nil, api.Errorf(api.ErrInvalidParameterValue, "labels %v", err)
	}
	l := &Labels{Table: t, Key: key, Column: column}
	if err := l.validate(); err != nil {
		return nil, err
	}
	return l, nil
}

func (l *Labels) validate() error {
	if _, err := loggers.ParseTable(l.Table.String()); err != nil {
		return api.Errorf(api.ErrInvalidParameterValue, "labels %v", err)
	}
	if err := loggers.CheckIdent(l.Key); err != nil {
		return api.Errorf(api.ErrInvalidParameterValue, "labels key column: %v", err)
	}
	if err := loggers.CheckIdent(l.Column); err != nil {
		return api.Errorf(api.ErrInvalidParameterValue, "label column: %v", err)
	}
	if t := l.Threshold; t != nil && (math.IsNaN(*t) || math.IsInf(*t, 0)) {
		return api.Errorf(api.ErrInvalidParameterValue, "threshold %v: want a finite number", *t)
	}
	return nil
}

func (s *Spec) validate() error {
	if s.Endpoint == "" {
		return api.Errorf(api.ErrInvalidParameterValue, "endpoint: required")
	}
	if !s.From.Before(s.To) {
		return api.Errorf(api.ErrInvalidParameterValue, "window from %s to %s is empty", s.From, s.To)
	}
	if s.Labels != nil {
		return s.Labels.validate()
	}
	return nil
}

// ErrNoRequests says that the window holds no request of the endpoint.
var ErrNoRequests = errors.New("no requests logged")

// Report compares the served entities of an endpoint over a window.
type Report struct {
	Endpoint string
	From, To time.Time
	// Labelled says that accuracy was asked for: each entity's Accuracy is
	// set, with zero labelled requests where no label matched.
	Labelled bool
	// Entities are sorted by name, the answers the clients got before the
	// shadow answers of the same entity.
	Entities []*Entity
}

// Entity is one served entity's share of the traffic: the answers it gave
// to clients, or (Shadow) the answers it gave to mirrored requests, which
// no client saw.
type Entity struct {
	Name   string
	Shadow bool

	Requests int64
	// Errors are the answers with status >= 400.
	Errors int64
	// P50Ms and P99Ms are exact latency quantiles over every request,
	// errors included.
	P50Ms, P99Ms int64

	Predictions Predictions
	// Accuracy is nil unless the report has labels.
	Accuracy *Accuracy
}

// ErrorRate is Errors / Requests.
func (e *Entity) ErrorRate() float64 {
	if e.Requests == 0 {
		return 0
	}
	return float64(e.Errors) / float64(e.Requests)
}

// Predictions describe the predictions of successful answers: each element
// of an answer's "predictions" list counts, so a request of many rows gives
// many.
type Predictions struct {
	Count int64
	// Unreadable counts successful answers without a flat "predictions"
	// list (nested lists, objects, bodies too large to log).
	Unreadable int64
	// Numeric says every prediction is a JSON number; then Mean and P10,
	// P50, P90 (exact quantiles) describe them.
	Numeric             bool
	Mean, P10, P50, P90 float64
	// Whole says every prediction is a whole number.
	Whole bool
	// Distinct counts the different values (1 and 1.0 are one).
	Distinct int64
	// Top are the most frequent values, most frequent first, at most MaxTop.
	Top []Value
}

// Classes says the predictions read as class labels, shown as shares:
// strings, or a few distinct whole numbers.
func (p *Predictions) Classes() bool {
	return p.Count > 0 && (!p.Numeric || p.Whole && p.Distinct <= maxClasses)
}

// Value is one prediction value and how many predictions had it.
type Value struct {
	Value string
	Count int64
}

// Accuracy compares the first prediction of each labelled successful
// answer with its label.
type Accuracy struct {
	Labelled, Correct int64
}

// Rate is Correct / Labelled.
func (a *Accuracy) Rate() float64 {
	if a.Labelled == 0 {
		return 0
	}
	return float64(a.Correct) / float64(a.Labelled)
}

type entityKey struct {
	name   string
	shadow bool
}

// Build runs the report's queries through q. A window without requests is
// ErrNoRequests. A query that fails is returned with what it was for; a
// refused labels query keeps the *api.Error shape (and its code) with the
// labels table named in its message.
func Build(ctx context.Context, q Querier, s Spec) (*Report, error) {
	if err := s.validate(); err != nil {
		return nil, err
	}
	rep := &Report{Endpoint: s.Endpoint, From: s.From, To: s.To, Labelled: s.Labels != nil}
	byKey := map[entityKey]*Entity{}

	res, err := q(ctx, s.statsSQL())
	if err != nil {
		return nil, fmt.Errorf("request counts of %s: %w", s.Endpoint, err)
	}
	err = eachRow(res, func(r *row) {
		e := &Entity{Name: r.str("served_entity"), Shadow: r.int("shadow") == 1,
			Requests: r.int("requests"), Errors: r.int("errors"),
			P50Ms: r.int("p50_ms"), P99Ms: r.int("p99_ms")}
		e.Predictions.Unreadable = r.int("unreadable")
		if rep.Labelled {
			e.Accuracy = &Accuracy{}
		}
		byKey[entityKey{e.Name, e.Shadow}] = e
		rep.Entities = append(rep.Entities, e)
	})
	if err != nil {
		return nil, fmt.Errorf("request counts of %s: %w", s.Endpoint, err)
	}
	if len(rep.Entities) == 0 {
		return nil, fmt.Errorf("endpoint %s: %w from %s to %s UTC", s.Endpoint, ErrNoRequests,
			s.From.UTC().Format(time.DateTime), s.To.UTC().Format(time.DateTime))
	}
	// Rows are sorted by ClickHouse's byte order already; sort again so
	// the order does not depend on the server's collation.
	sort.SliceStable(rep.Entities, func(i, j int) bool {
		a, b := rep.Entities[i], rep.Entities[j]
		if a.Name != b.Name {
			return a.Name < b.Name
		}
		return !a.Shadow && b.Shadow
	})

	// The later queries read the same window; an entity only they saw
	// (a row that arrived in between) is left out rather than half shown.
	lookup := func(r *row) *Entity {
		return byKey[entityKey{r.str("served_entity"), r.int("shadow") == 1}]
	}
	if res, err = q(ctx, s.predictionsSQL()); err != nil {
		return nil, fmt.Errorf("predictions of %s: %w", s.Endpoint, err)
	}
	err = eachRow(res, func(r *row) {
		e := lookup(r)
		if e == nil {
			return
		}
		p := &e.Predictions
		p.Count, p.Distinct = r.int("predictions"), r.int("distinct_values")
		numbers := r.int("numbers")
		p.Numeric = p.Count > 0 && numbers == p.Count
		p.Whole = p.Numeric && r.int("whole") == p.Count
		if p.Numeric {
			p.Mean, p.P10, p.P50, p.P90 = r.float("mean"), r.float("p10"), r.float("p50"), r.float("p90")
		}
	})
	if err != nil {
		return nil, fmt.Errorf("predictions of %s: %w", s.Endpoint, err)
	}

	if res, err = q(ctx, s.topSQL()); err != nil {
		return nil, fmt.Errorf("prediction values of %s: %w", s.Endpoint, err)
	}
	err = eachRow(res, func(r *row) {
		if e := lookup(r); e != nil {
			e.Predictions.Top = append(e.Predictions.Top, Value{Value: r.str("label"), Count: r.int("n")})
		}
	})
	if err != nil {
		return nil, fmt.Errorf("prediction values of %s: %w", s.Endpoint, err)
	}

	if s.Labels == nil {
		return rep, nil
	}
	if res, err = q(ctx, s.accuracySQL()); err != nil {
		return nil, labelsError(s.Labels, err)
	}
	err = eachRow(res, func(r *row) {
		if e := lookup(r); e != nil {
			e.Accuracy = &Accuracy{Labelled: r.int("labelled"), Correct: r.int("correct")}
		}
	})
	if err != nil {
		return nil, labelsError(s.Labels, err)
	}
	return rep, nil
}

// labelsError names the labels table in err. The CLI prints an *api.Error
// by its message alone, so the context goes into a new message with the
// same code rather than into a wrapping error.
func labelsError(l *Labels, err error) error {
	what := fmt.Sprintf("accuracy from labels table %s (key %s, label %s)", l.Table, l.Key, l.Column)
	var ae *api.Error
	if errors.As(err, &ae) {
		return api.Errorf(ae.Code, "%s: %s", what, ae.Message)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// row reads one row of a result by column name; the first problem sticks.
type row struct {
	cols map[string]int
	vals []string
	err  error
}

func eachRow(res *api.QueryResult, fn func(*row)) error {
	r := &row{cols: make(map[string]int, len(res.Columns))}
	for i, c := range res.Columns {
		r.cols[c] = i
	}
	for _, vals := range res.Rows {
		r.vals = vals
		fn(r)
		if r.err != nil {
			return r.err
		}
	}
	return nil
}

func (r *row) str(col string) string {
	i, ok := r.cols[col]
	if !ok || i >= len(r.vals) {
		if r.err == nil {
			r.err = fmt.Errorf("answer has no column %s", col)
		}
		return ""
	}
	return r.vals[i]
}

func (r *row) int(col string) int64 {
	v := r.str(col)
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil && r.err == nil {
		r.err = fmt.Errorf("column %s: %q is not an integer", col, v)
	}
	return n
}

func (r *row) float(col string) float64 {
	v := r.str(col)
	f, err := strconv.ParseFloat(v, 64)
	if err != nil && r.err == nil {
		r.err = fmt.Errorf("column %s: %q is not a number", col, v)
	}
	return f
}
