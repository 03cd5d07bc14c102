package monitors

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/loggers"
	"github.com/gantry/gantry/loggers/tables"
)

// Store runs SQL in ClickHouse: statements that write, and read-only
// queries whose answers come back as text. *tables.DB is one.
type Store interface {
	Exec(ctx context.Context, sql string, args ...any) error
	Query(ctx context.Context, sql string, args ...any) (*api.QueryResult, error)
}

var _ Store = (*tables.DB)(nil)

// ProfileTable and DriftTable are where m's metrics go, next to its
// inference table.
func (m *Monitor) ProfileTable() loggers.Table {
	return loggers.Table{Database: m.Table.Database, Name: m.Table.Name + profileSuffix}
}

func (m *Monitor) DriftTable() loggers.Table {
	return loggers.Table{Database: m.Table.Database, Name: m.Table.Name + driftSuffix}
}

// Ensure creates m's metric tables if they do not exist.
func Ensure(ctx context.Context, s Store, m *Monitor) error {
	for _, t := range []struct {
		t   loggers.Table
		ddl string
	}{{m.ProfileTable(), profileDDL}, {m.DriftTable(), driftDDL}} {
		if err := s.Exec(ctx, "CREATE TABLE IF NOT EXISTS "+t.t.Quoted()+" "+t.ddl); err != nil {
			return fmt.Errorf("create table %s: %w", t.t, err)
		}
	}
	return nil
}

// Windows are the closed windows of m that start at or after since and end
// by now: [From, To), both on window boundaries. Empty (From == To) when
// no window has closed since since.
func (m *Monitor) Windows(since, now time.Time) (from, to time.Time) {
	g := m.Window()
	from, to = floor(since, g), floor(now, g)
	if to.Before(from) {
		to = from
	}
	return from, to
}

// floor rounds t down to a multiple of g since the Unix epoch, in UTC, the
// same alignment as the SQL's intDiv(timestamp_ms, g) * g.
func floor(t time.Time, g time.Duration) time.Time {
	ms, gm := t.UnixMilli(), g.Milliseconds()
	w := ms / gm * gm
	if ms < 0 && ms%gm != 0 {
		w -= gm
	}
	return time.UnixMilli(w).UTC()
}

// Result says what a refresh computed.
type Result struct {
	// From and To bound the windows written, [From, To).
	From, To time.Time
}

// Refresh computes m's metrics for the closed windows in [since, now) (see
// Windows) and writes them to m's metric tables, which it creates if
// needed. Writing a window again replaces its rows, so a caller may cover
// a window more than once, to take in late rows for instance: the version
// of the rows written is now in ms, and the latest refresh wins.
//
// A window gets profile rows for every column, entity and slice that has
// samples in it, CONSECUTIVE drift rows when the window before it has
// samples too, and BASELINE drift rows when m has a baseline with samples
// of that column and slice.
//
// A refresh that fails midway may have written some of the metrics; run
// it again to complete them (writes replace, so nothing doubles).
//
// Reading features out of the logged JSON is the costly part, so Refresh
// does it once: it writes the samples to a scratch table (the baseline's
// to another, and each kind's distributions to another), computes every
// metric from those, and drops them. Each refresh has scratch tables of
// its own, named after the monitor, its version and a random number; a
// refresh killed midway leaves them behind, and DropScratch removes them.
func Refresh(ctx context.Context, s Store, m *Monitor, since, now time.Time) (Result, error) {
	if err := m.Validate(); err != nil {
		return Result{}, err
	}
	from, to := m.Windows(since, now)
	res := Result{From: from, To: to}
	if !from.Before(to) {
		return res, nil
	}
	if err := Ensure(ctx, s, m); err != nil {
		return res, err
	}
	fail := func(what string, err error) error {
		return fmt.Errorf("monitor %s: %s for %s to %s: %w", m.Name, what,
			from.Format(time.RFC3339), to.Format(time.RFC3339), err)
	}
	g := m.Window()
	fromMs, version := from.UnixMilli(), uint64(now.UnixMilli())
	prefix := scratchPrefix(m) + strconv.FormatUint(version, 10) + "_" + strconv.FormatUint(rand.Uint64()%1e9, 10)
	cur := loggers.Table{Database: m.Table.Database, Name: prefix + "_cur"}
	defer dropScratch(ctx, s, cur)
	// The window before From is read too: it is the CONSECUTIVE reference
	// of the first window.
	if err := materialize(ctx, s, cur, m.samples(m.payloadRows(from.Add(-g), to, true))); err != nil {
		return res, fail("samples", err)
	}
	curSamples := "SELECT * FROM " + cur.Quoted()
	var baseSamples string
	if b := m.Baseline; b != nil {
		src := m.payloadRows(b.From, b.To, false)
		if b.Table != nil {
			src = m.tableRows(*b.Table)
		}
		base := loggers.Table{Database: m.Table.Database, Name: prefix + "_base"}
		defer dropScratch(ctx, s, base)
		if err := materialize(ctx, s, base, m.samples(src)); err != nil {
			return res, fail("baseline samples", err)
		}
		baseSamples = "SELECT * FROM " + base.Quoted()
	}

	prof, drift := m.ProfileTable().Quoted(), m.DriftTable().Quoted()
	if err := s.Exec(ctx, m.profileSQL(prof, curSamples, fromMs, version)); err != nil {
		return res, fail("profile metrics", err)
	}
	cols := m.watched()
	for _, k := range []Kind{Numeric, Categorical} {
		if inList(cols, k) == "('')" {
			continue
		}
		metrics, tuples := numericMetrics, numericTuples
		if k == Categorical {
			metrics, tuples = categoricalMetrics, categoricalTuples
		}
		// The distributions are written down too: CONSECUTIVE reads each
		// window's twice, as a window and as the next one's reference.
		d := loggers.Table{Database: m.Table.Database, Name: prefix + "_" + string(k)}
		defer dropScratch(ctx, s, d)
		if err := materialize(ctx, s, d, dist(curSamples, cols, k)); err != nil {
			return res, fail(string(k)+" distributions", err)
		}
		stmts := []struct{ what, sql string }{{
			string(k) + " " + Consecutive + " drift",
			m.driftInsert(drift, Consecutive, m.pairs("SELECT * FROM "+d.Quoted(), "SELECT * FROM "+d.Quoted(), fromMs, Consecutive), metrics, tuples, version),
		}}
		if baseSamples != "" {
			stmts = append(stmts, struct{ what, sql string }{
				string(k) + " " + BaselineRef + " drift",
				m.driftInsert(drift, BaselineRef, m.pairs("SELECT * FROM "+d.Quoted(), dist(baseSamples, cols, k), fromMs, BaselineRef), metrics, tuples, version),
			})
		}
		for _, st := range stmts {
			if err := s.Exec(ctx, st.sql); err != nil {
				return res, fail(st.what, err)
			}
		}
	}
	return res, nil
}

// scratchRE is what follows scratchPrefix in a scratch table's name.
var scratchRE = regexp.MustCompile(`^[0-9]+_[0-9]+_(cur|base|numeric|categorical)$`)

// scratchPrefix starts the names of m's scratch tables.
func scratchPrefix(m *Monitor) string { return m.Table.Name + "_scratch_" + m.Name + "_" }

// materialize writes the rows of samples to a new table t. MergeTree
// rather than Memory: a long window of a busy endpoint can hold more
// samples than ClickHouse should keep in memory.
func materialize(ctx context.Context, s Store, t loggers.Table, samples string) error {
	return s.Exec(ctx, "CREATE TABLE "+t.Quoted()+" ENGINE = MergeTree ORDER BY tuple() AS "+samples)
}

// dropScratch drops a scratch table, even when ctx is done: it must not
// outlive the refresh. A failure is left for DropScratch to clean up.
func dropScratch(ctx context.Context, s Store, t loggers.Table) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	s.Exec(ctx, "DROP TABLE IF EXISTS "+t.Quoted())
}

// DropScratch drops the scratch tables that refreshes of m killed midway
// left behind: those created at least minAge ago (by ClickHouse's clock,
// system.tables' metadata_modification_time), so that the tables of a
// refresh another process runs now are left alone. minAge must exceed the
// longest refresh; 0 drops them all, for when no refresh of m can run.
func DropScratch(ctx context.Context, s Store, m *Monitor, minAge time.Duration) error {
	if err := m.Validate(); err != nil {
		return err
	}
	res, err := s.Query(ctx, "SELECT name FROM system.tables WHERE database = "+quote(m.Table.Database)+
		" AND startsWith(name, "+quote(scratchPrefix(m))+")"+
		" AND metadata_modification_time <= now() - "+strconv.FormatInt(int64(minAge/time.Second), 10))
	if err != nil {
		return fmt.Errorf("monitor %s: scratch tables: %w", m.Name, err)
	}
	for _, r := range res.Rows {
		// Monitor a's prefix also starts monitor a_b's names.
		if !scratchRE.MatchString(strings.TrimPrefix(r[0], scratchPrefix(m))) {
			continue
		}
		t := loggers.Table{Database: m.Table.Database, Name: r[0]}
		if err := s.Exec(ctx, "DROP TABLE IF EXISTS "+t.Quoted()); err != nil {
			return fmt.Errorf("monitor %s: drop %s: %w", m.Name, t, err)
		}
	}
	return nil
}

// ErrUnknownColumn says that a watched or slice column is not in the data.
var ErrUnknownColumn = errors.New("unknown column")

// Check verifies m's columns against ClickHouse, as the API does before it
// accepts a monitor: a baseline table must have every watched and slice
// column, and the inference table's requests of the last week before now
// (the latest 1,000) must mention each feature by name, when there are
// any (a new endpoint has none, and then any name is accepted). Problems
// are one *api.Error (INVALID_PARAMETER_VALUE) that wraps ErrUnknownColumn.
func Check(ctx context.Context, s Store, m *Monitor, now time.Time) error {
	if err := m.Validate(); err != nil {
		return err
	}
	cols, _ := m.referenced()
	var probs []string
	if b := m.Baseline; b != nil && b.Table != nil {
		res, err := s.Query(ctx, "SELECT name FROM system.columns WHERE database = "+quote(b.Table.Database)+" AND table = "+quote(b.Table.Name))
		if err != nil {
			return fmt.Errorf("monitor %s: columns of baseline %s: %w", m.Name, b.Table, err)
		}
		have := map[string]bool{}
		for _, r := range res.Rows {
			have[r[0]] = true
		}
		if len(have) == 0 {
			probs = append(probs, fmt.Sprintf("baseline table %s does not exist", b.Table))
		} else {
			for _, c := range cols {
				if !have[c] {
					probs = append(probs, fmt.Sprintf("baseline table %s has no column %q", b.Table, c))
				}
			}
		}
	}
	var features []string
	for _, c := range cols {
		if c != PredictionColumn {
			features = append(features, c)
		}
	}
	if len(features) > 0 {
		var counts []string
		for _, c := range features {
			counts = append(counts, `countIf(position(request, '"`+c+`"') > 0)`)
		}
		week := now.Add(-7 * 24 * time.Hour).UTC()
		res, err := s.Query(ctx, `SELECT count(), `+strings.Join(counts, ", ")+`
FROM (SELECT request FROM `+m.Table.Quoted()+`
	WHERE date >= toDate('`+week.Format(time.DateOnly)+`') AND timestamp_ms >= `+strconv.FormatInt(week.UnixMilli(), 10)+`
		AND status_code < 400 AND endpoint = `+quote(m.Endpoint)+`
	ORDER BY timestamp_ms DESC LIMIT 1000)`)
		if err != nil && !tables.IsMissingTable(err) {
			return fmt.Errorf("monitor %s: recent requests: %w", m.Name, err)
		}
		if err == nil && len(res.Rows) == 1 && res.Rows[0][0] != "0" {
			for i, c := range features {
				if res.Rows[0][i+1] == "0" {
					probs = append(probs, fmt.Sprintf("no request of endpoint %s in the last week has a column %q", m.Endpoint, c))
				}
			}
		}
	}
	if len(probs) > 0 {
		return &definitionError{api.Errorf(api.ErrInvalidParameterValue, "monitor %s: %v: %s", m.Name, ErrUnknownColumn, strings.Join(probs, "; "))}
	}
	return nil
}

// definitionError is an *api.Error that also matches ErrUnknownColumn, so
// the API can answer it as is and callers can still test for the cause.
type definitionError struct{ err *api.Error }

func (e *definitionError) Error() string   { return e.err.Error() }
func (e *definitionError) Unwrap() []error { return []error{e.err, ErrUnknownColumn} }
