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
	rows, err := DriftRows(ctx, r.store, m, res.From, res.To)
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

// DropScratch drops what killed refreshes of m left, holding m's token.
func (r *Refresher) DropScratch(ctx context.Context, m *Monitor) error {
	unlock, err := r.lock(ctx, m.Name)
	if err != nil {
		return err
	}
	defer unlock()
	return DropScratch(ctx, r.store, m)
}

// Runner refreshes every monitor on a schedule. A monitor is refreshed at
// a tick when one of its windows closed since its last refresh, or when
// Lookback passed since a window closed (so that rows that arrive late
// count), and each refresh covers the windows from Lookback before the
// last refresh on: a window is written as soon as it closes and again
// once Lookback has passed, not at every tick. Alerts that fail are tried
// again by the next refresh of their window (`gantry monitors run` tries
// them again later). Monitors are refreshed one after another; a tick
// that comes while the previous one still runs is dropped.
type Runner struct {
	Refresher *Refresher
	// Monitors lists the definitions, read again every tick.
	Monitors func(ctx context.Context) ([]*Monitor, error)
	// Tick is the period. Default 1 min.
	Tick time.Duration
	// Lookback is how long after it closes a window is refreshed again.
	// Default 10 min.
	Lookback time.Duration
	// Now is the clock. Default time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// Run refreshes until ctx ends. The first time it sees a monitor, it
// drops the scratch tables that a killed refresh left.
func (r *Runner) Run(ctx context.Context) error {
	tick, lookback, now, log := r.Tick, r.Lookback, r.Now, r.Logger
	if tick <= 0 {
		tick = time.Minute
	}
	if lookback <= 0 {
		lookback = 10 * time.Minute
	}
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = slog.Default()
	}
	last := map[string]time.Time{}
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		r.tick(ctx, now(), lookback, last, log)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// tick refreshes the monitors that are due. last holds the time of each
// monitor's last successful refresh; a monitor not in it is new to this
// Runner.
func (r *Runner) tick(ctx context.Context, now time.Time, lookback time.Duration, last map[string]time.Time, log *slog.Logger) {
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
		prev, ok := last[m.Name]
		if !ok {
			if err := r.Refresher.DropScratch(ctx, m); err != nil {
				log.Warn("monitors: drop scratch tables", "monitor", m.Name, "err", err)
			}
			prev = now.Add(-lookback)
		}
		g := m.Window()
		closed := floor(now, g).After(floor(prev, g))
		settled := floor(now.Add(-lookback), g).After(floor(prev.Add(-lookback), g))
		if ok && !closed && !settled {
			continue
		}
		run, err := r.Refresher.Run(ctx, m, prev.Add(-lookback), now)
		if err == nil {
			last[m.Name] = now
		}
		switch {
		case ctx.Err() != nil:
			return
		case err != nil && tables.IsMissingTable(err):
			log.Debug("monitors: no inference table yet", "monitor", m.Name)
		case err != nil:
			log.Warn("monitors: refresh", "monitor", m.Name, "err", err)
		case run.From.Before(run.To):
			log.Info("monitors: refreshed", "monitor", m.Name, "from", run.From, "to", run.To,
				"alerts", len(run.Alerts), "alert_errors", len(run.AlertErrors))
			for _, e := range run.AlertErrors {
				log.Warn("monitors: alert", "monitor", m.Name, "err", e)
			}
		}
	}
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
