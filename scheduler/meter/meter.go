// Package meter turns samples of served entities' replica counts into
// provisioned time: replica-seconds per period (a minute by default), by
// endpoint, entity, workload size and type, and the replica-seconds that
// scale to zero saved.
//
// A Meter is a state machine without I/O or clock, in the manner of the
// autoscaler's decider: the caller (the scheduler's meter loop) samples
// what its driver reports, passes the time in, and writes the rows that
// Due returns. Between two samples the earlier one is taken to hold, so
// a replica that starts 3 s after a sample taken every 5 s is counted
// from that sample: the error is at most one sampling interval per
// change, and is the same in both directions.
//
// A Meter is not safe for concurrent use: one goroutine owns it.
package meter

import (
	"cmp"
	"slices"
	"time"

	"github.com/gantry/gantry/loggers"
)

// Sample is one served entity's replicas at an instant.
type Sample struct {
	Endpoint, Entity           string
	WorkloadSize, WorkloadType string
	// Replicas counts the replicas the driver runs, ready or starting:
	// both hold their resources.
	Replicas int
	// Saved is how many replicas the entity would keep without scale to
	// zero; while Replicas is 0 they count as saved. 0 for an entity that
	// does not scale to zero.
	Saved int
}

// key is a row's identity within its period.
type key struct {
	start                                time.Time
	endpoint, entity, size, workloadType string
}

// Meter integrates samples into rows per period.
type Meter struct {
	period time.Duration
	newID  func() string
	// last is the time of the last Observe; zero before the first.
	last time.Time
	prev []Sample
	// open are the rows of periods that have not been returned by Due.
	open map[key]*loggers.ProvisionedRow
}

// New returns a Meter of period-long rows (a minute if period <= 0);
// newID names each row (random, so that a row redelivered by Kafka counts
// once and every other row counts).
func New(period time.Duration, newID func() string) *Meter {
	if period <= 0 {
		period = time.Minute
	}
	return &Meter{period: period, newID: newID, open: map[key]*loggers.ProvisionedRow{}}
}

// Observe accounts the previous samples over the time from the previous
// Observe to now, split at period boundaries, and keeps samples for the
// next. The first Observe only starts the clock; a now before the last
// one (a clock stepped back) counts nothing and restarts it.
func (m *Meter) Observe(now time.Time, samples []Sample) {
	if !m.last.IsZero() && now.After(m.last) {
		for a := m.last; a.Before(now); {
			start := a.Truncate(m.period)
			b := start.Add(m.period)
			if b.After(now) {
				b = now
			}
			secs := b.Sub(a).Seconds()
			for _, s := range m.prev {
				m.add(start, s, secs)
			}
			a = b
		}
	}
	m.last = now
	m.prev = append(m.prev[:0], samples...)
}

// add counts secs of sample s in the period that starts at start.
func (m *Meter) add(start time.Time, s Sample, secs float64) {
	var used, saved float64
	switch {
	case s.Replicas > 0:
		used = float64(s.Replicas) * secs
	case s.Saved > 0:
		saved = float64(s.Saved) * secs
	default:
		return
	}
	k := key{start, s.Endpoint, s.Entity, s.WorkloadSize, s.WorkloadType}
	r := m.open[k]
	if r == nil {
		r = &loggers.ProvisionedRow{
			TimestampMs: start.UnixMilli(), PeriodMs: m.period.Milliseconds(),
			Endpoint: s.Endpoint, ServedEntity: s.Entity, WorkloadSize: s.WorkloadSize, WorkloadType: s.WorkloadType,
		}
		m.open[k] = r
	}
	r.ReplicaSeconds += used
	r.SavedReplicaSeconds += saved
}

// Due returns the rows of the periods that ended by now (as far as
// Observe has counted), in time, endpoint and entity order, and forgets
// them.
func (m *Meter) Due(now time.Time) []loggers.ProvisionedRow {
	return m.take(func(k key) bool { return !k.start.Add(m.period).After(now) })
}

// Flush returns every row counted so far, the current period's too, for
// a meter that stops.
func (m *Meter) Flush() []loggers.ProvisionedRow {
	return m.take(func(key) bool { return true })
}

func (m *Meter) take(due func(key) bool) []loggers.ProvisionedRow {
	var out []loggers.ProvisionedRow
	for k, r := range m.open {
		if due(k) {
			r.RowID = m.newID()
			out = append(out, *r)
			delete(m.open, k)
		}
	}
	slices.SortFunc(out, func(a, b loggers.ProvisionedRow) int {
		return cmp.Or(cmp.Compare(a.TimestampMs, b.TimestampMs), cmp.Compare(a.Endpoint, b.Endpoint),
			cmp.Compare(a.ServedEntity, b.ServedEntity), cmp.Compare(a.WorkloadSize, b.WorkloadSize), cmp.Compare(a.WorkloadType, b.WorkloadType))
	})
	return out
}
