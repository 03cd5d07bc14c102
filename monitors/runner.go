package monitors

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/loggers/tables"
)

// Refresher refreshes monitors and sends their alerts: what `gantry
// monitors run` asks the scheduler for, and what Runner does each tick.
// It runs one refresh of a monitor at a time; a second waits.
type Refresher struct {
	store   Store
	alerter *Alerter

	// mu guards locks, one channel per monitor name holding a token
	// while a refresh of that monitor runs.
	mu    sync.Mutex
	locks map[string]chan struct{}
}

// NewRefresher returns a Refresher over s; a nil alerter is the zero
// Alerter.
func NewRefresher(s Store, a *Alerter) *Refresher {
	if a == nil {
		a = &Alerter{}
	}
	return &Refresher{store: s, alerter: a, locks: map[string]chan struct{}{}}
}

// lock takes m's refresh token, or fails when ctx ends first.
func (r *Refresher) lock(ctx context.Context, name string) (unlock func(), err error) {
	r.mu.Lock()
	l, ok := r.locks[name]
	if !ok {
		l = make(chan struct{}, 1)
		r.locks[name] = l
	}
	r.mu.Unlock()
	select {
	case l <- struct{}{}:
		return func() { <-l }, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("monitor %s: wait for the refresh that runs: %w", name, ctx.Err())
	}
}

// Run refreshes m's windows closed in [since, now) (see Refresh), then
// alerts on their crossings. A refresh error is returned; alert failures
// are listed in the result's AlertErrors, since the metrics were written.
func (r *Refresher) Run(ctx context.Context, m *Monitor, since, now time.Time) (*api.MonitorRun, error) {
	unlock, err := r.lock(ctx, m.Name)
	if err != nil {
		return nil, err
	}
	defer unlock()
	res, err := Refresh(ctx, r.store, m, since, now)
	if err != nil {
		return nil, err
	}
	out := &api.MonitorRun{From: res.From, To: res.To, Alerts: []api.MonitorAlert{}}
	if !res.From.Before(res.To) || m.AlertWebhookURL == "" {
		return out, nil
	}
	rows, err := CrossingRows(ctx, r.store, m, res.From, res.To)
	if err != nil {
		return nil, err
	}
	sent, err := r.alerter.Send(ctx, r.store, m, rows)
	out.Alerts = append(out.Alerts, sent...)
	if err != nil {
		out.AlertErrors = append(out.AlertErrors, err.Error())
	}
	return out, nil
}

// Retry sends the alerts of m's crossings in the windows closed in [since,
// now) that were not sent before (the alerts table says which were), as
// Run does, without refreshing the windows.
func (r *Refresher) Retry(ctx context.Context, m *Monitor, since, now time.Time) (*api.MonitorRun, error) {
	unlock, err := r.lock(ctx, m.Name)
	if err != nil {
		return nil, err
	}
	defer unlock()
	from, to := m.Windows(since, now)
	out := &api.MonitorRun{From: from, To: to, Alerts: []api.MonitorAlert{}}
	if !from.Before(to) || m.AlertWebhookURL == "" {
		return out, nil
	}
	if err := Ensure(ctx, r.store, m); err != nil {
		return nil, fmt.Errorf("monitor %s: %w", m.Name, err)
	}
	rows, err := CrossingRows(ctx, r.store, m, from, to)
	if err != nil {
		return nil, err
	}
	sent, err := r.alerter.Send(ctx, r.store, m, rows)
	out.Alerts = append(out.Alerts, sent...)
	if err != nil {
		out.AlertErrors = append(out.AlertErrors, err.Error())
	}
	return out, nil
}

// DropScratch drops what killed refreshes of m left at least minAge ago
// (see DropScratch), holding m's token.
func (r *Refresher) DropScratch(ctx context.Context, m *Monitor, minAge time.Duration) error {
	unlock, err := r.lock(ctx, m.Name)
	if err != nil {
		return err
	}
	defer unlock()
	return DropScratch(ctx, r.store, m, minAge)
}

// Runner refreshes every monitor on a schedule. A monitor is refreshed at
// a tick when one of its windows closed since its last refresh, or when
// Lookback passed since a window closed (so that rows that arrive late
// count), and each refresh covers the windows from Lookback before the
// last refresh on: a window is written as soon as it closes and again
// once Lookback has passed, not at every tick.
//
// The first time it sees a monitor, a Runner resumes from the monitor's
// latest computed window (the metric tables say which), so that windows
// that closed while no Runner ran are computed, back to at most MaxCatchUp.
// Alerts that failed, and on first sight any crossing not yet sent, are
// sent again at the next ticks for the windows of the last RetryHorizon
// (the alerts table says what was sent), until they go through.
//
// Monitors are refreshed one after another; a tick that comes while the
// previous one still runs is dropped.
type Runner struct {
	Refresher *Refresher
	// Monitors lists the definitions, read again every tick.
	Monitors func(ctx context.Context) ([]*Monitor, error)
	// Tick is the period. Default 1 min.
	Tick time.Duration
	// Lookback is how long after it closes a window is refreshed again.
	// Default 10 min.
	Lookback time.Duration
	// MaxCatchUp bounds how far back a Runner resumes. Default 24 h.
	MaxCatchUp time.Duration
	// RetryHorizon bounds how old a window's unsent alerts may be and
	// still be sent again. Default 24 h.
	RetryHorizon time.Duration
	// ScratchAge is how old a scratch table must be for a Runner to take
	// it for a killed refresh's and drop it (see DropScratch): more than
	// the longest refresh, since another process may run one. Default 1 h.
	ScratchAge time.Duration
	// Now is the clock. Default time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// runnerState is what a Runner keeps between ticks, per monitor name.
type runnerState struct {
	// last is the time of the monitor's last successful refresh; a
	// monitor not in it is new to this Runner.
	last map[string]time.Time
	// pending marks monitors that may have unsent alerts.
	pending map[string]bool
}

// Run refreshes until ctx ends. The first time it sees a monitor, it
// drops the scratch tables older than ScratchAge that a killed refresh
// left.
func (r *Runner) Run(ctx context.Context) error {
	tick, now, log := r.Tick, r.Now, r.Logger
	if tick <= 0 {
		tick = time.Minute
	}
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = slog.Default()
	}
	st := &runnerState{last: map[string]time.Time{}, pending: map[string]bool{}}
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		// Both cases of the select below may be ready: stop first.
		if ctx.Err() != nil {
			return nil
		}
		r.tick(ctx, now(), st, log)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// resume is where a Runner that first sees m starts: the end of m's latest
// computed window, no later than now-lookback (as if refreshed then) and
// no earlier than now-MaxCatchUp.
func (r *Runner) resume(ctx context.Context, m *Monitor, now time.Time, lookback time.Duration, log *slog.Logger) time.Time {
	prev := now.Add(-lookback)
	latest, ok, err := Latest(ctx, r.Refresher.store, m)
	switch {
	case err != nil && !tables.IsMissingTable(err):
		log.Warn("monitors: latest computed window", "monitor", m.Name, "err", err)
	case ok:
		prev = minTime(prev, latest.Add(m.Window()))
	}
	return maxTime(prev, now.Add(-orDefault(r.MaxCatchUp, 24*time.Hour)))
}

// tick refreshes the monitors that are due, and sends their pending
// alerts again.
func (r *Runner) tick(ctx context.Context, now time.Time, st *runnerState, log *slog.Logger) {
	lookback := orDefault(r.Lookback, 10*time.Minute)
	ms, err := r.Monitors(ctx)
	if err != nil {
		log.Warn("monitors: read definitions", "err", err)
		return
	}
	for _, m := range ms {
		if ctx.Err() != nil {
			return
		}
		if err := m.Validate(); err != nil {
			log.Warn("monitors: skip an invalid definition", "monitor", m.Name, "err", err)
			continue
		}
		prev, ok := st.last[m.Name]
		if !ok {
			if err := r.Refresher.DropScratch(ctx, m, orDefault(r.ScratchAge, time.Hour)); err != nil {
				log.Warn("monitors: drop scratch tables", "monitor", m.Name, "err", err)
			}
			prev = r.resume(ctx, m, now, lookback, log)
			// Alerts that an earlier process failed to send.
			st.pending[m.Name] = true
		}
		retry := st.pending[m.Name]
		g := m.Window()
		closed := floor(now, g).After(floor(prev, g))
		settled := floor(now.Add(-lookback), g).After(floor(prev.Add(-lookback), g))
		if !ok || closed || settled {
			run, err := r.Refresher.Run(ctx, m, prev.Add(-lookback), now)
			if err == nil {
				st.last[m.Name] = now
			}
			if r.logRun(ctx, m, run, err, "refresh", "refreshed", log) {
				return
			}
			if err == nil && len(run.AlertErrors) > 0 {
				// Sent again next tick, not now: the webhook just failed.
				st.pending[m.Name], retry = true, false
			}
		}
		if !retry || m.AlertWebhookURL == "" {
			continue
		}
		run, err := r.Refresher.Retry(ctx, m, now.Add(-orDefault(r.RetryHorizon, 24*time.Hour)), now)
		st.pending[m.Name] = err != nil || len(run.AlertErrors) > 0
		if r.logRun(ctx, m, run, err, "send pending alerts", "sent pending alerts", log) {
			return
		}
	}
}

// logRun logs the outcome of a refresh or a retry of m, and reports
// whether ctx ended.
func (r *Runner) logRun(ctx context.Context, m *Monitor, run *api.MonitorRun, err error, do, done string, log *slog.Logger) bool {
	switch {
	case ctx.Err() != nil:
		return true
	case err != nil && tables.IsMissingTable(err):
		log.Debug("monitors: no inference table yet", "monitor", m.Name)
	case err != nil:
		log.Warn("monitors: "+do, "monitor", m.Name, "err", err)
	case run.From.Before(run.To) && (do == "refresh" || len(run.Alerts)+len(run.AlertErrors) > 0):
		log.Info("monitors: "+done, "monitor", m.Name, "from", run.From, "to", run.To,
			"alerts", len(run.Alerts), "alert_errors", len(run.AlertErrors))
		for _, e := range run.AlertErrors {
			log.Warn("monitors: alert", "monitor", m.Name, "err", e)
		}
	}
	return false
}

// Latest is the start of m's latest window with metrics, and false when
// none has any.
func Latest(ctx context.Context, s Store, m *Monitor) (time.Time, bool, error) {
	// Query answers a missing table as any refused query: create it.
	if err := Ensure(ctx, s, m); err != nil {
		return time.Time{}, false, fmt.Errorf("monitor %s: %w", m.Name, err)
	}
	res, err := s.Query(ctx, "SELECT count(), toUnixTimestamp(max(window_start)) FROM "+m.ProfileTable().Quoted()+
		" WHERE monitor = "+quote(m.Name)+" AND granularity = "+quote(m.Granularity))
	if err != nil {
		return time.Time{}, false, fmt.Errorf("monitor %s: latest window: %w", m.Name, err)
	}
	if len(res.Rows) != 1 || res.Rows[0][0] == "0" {
		return time.Time{}, false, nil
	}
	sec, err := strconv.ParseInt(res.Rows[0][1], 10, 64)
	if err != nil {
		return time.Time{}, false, fmt.Errorf("monitor %s: latest window %q: %w", m.Name, res.Rows[0][1], err)
	}
	return time.Unix(sec, 0).UTC(), true, nil
}
