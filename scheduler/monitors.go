package scheduler

import (
	"context"
	"errors"
	"net/http"
	"sort"
	"strconv"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/identity"
	"github.com/gantry/gantry/monitors"
	"github.com/gantry/gantry/scheduler/store"
)

// Drift monitors: definitions live in the store; the metrics, and the
// record of sent alerts, in ClickHouse next to the endpoint's inference
// table. A monitor belongs to its endpoint: deleting the endpoint deletes
// its monitors.

const (
	// defaultRunWindows is how many windows back POST …/run refreshes
	// without ?lookback.
	defaultRunWindows = 24
	// defaultReportWindows and maxReportWindows bound GET …/report.
	defaultReportWindows = 12
	maxReportWindows     = 1000
	// maxRunWindows bounds ?lookback of POST …/run.
	maxRunWindows = 1000
	// monitorTimeout bounds a run or a report: windows of busy endpoints
	// take a while to compute.
	monitorTimeout = 5 * time.Minute
	// webhookCheckTimeout bounds the DNS lookup of a new monitor's webhook.
	webhookCheckTimeout = 5 * time.Second
)

func (s *Scheduler) createMonitor(w http.ResponseWriter, r *http.Request) {
	var a api.Monitor
	if err := decode(w, r, &a); err != nil {
		writeError(w, err)
		return
	}
	if a.Table != "" {
		writeError(w, invalid("table: Gantry sets it to the endpoint's inference table; leave it out"))
		return
	}
	if a.Endpoint != "" {
		// A monitor reads the endpoint's inference table: CAN_MANAGE.
		if _, err := s.needEndpoint(r, a.Endpoint, identity.CanManage); err != nil {
			writeError(w, err)
			return
		}
	}
	s.mu.Lock()
	ep, err := s.lookup(a.Endpoint)
	var table string
	if err == nil {
		t, ok := payloadTable(ep.Name, captureConfig(ep.AIGateway, &ep.Config))
		if !ok {
			err = invalid("endpoint %s has no inference table to monitor; enable config.auto_capture_config", ep.Name)
		}
		table = t.String()
	}
	s.mu.Unlock()
	if a.Endpoint == "" {
		err = invalid("endpoint: required")
	}
	if err != nil {
		writeError(w, err)
		return
	}
	a.Table = table
	m := monitors.FromAPI(&a)
	if err := m.Validate(); err != nil {
		writeError(w, err)
		return
	}
	if m.AlertWebhookURL != "" {
		// Checked again on every connection (DNS can change); here the
		// user learns at once that the address is not allowed.
		ctx, cancel := context.WithTimeout(r.Context(), webhookCheckTimeout)
		err := s.cfg.WebhookAllow.CheckWebhook(ctx, m.AlertWebhookURL)
		cancel()
		if err != nil {
			writeError(w, invalid("monitor %s: %v", m.Name, err))
			return
		}
	}
	if s.cfg.Tables == nil {
		writeError(w, api.Errorf(api.ErrTemporarilyUnavailable, "inference tables are off in this Gantry: %s", s.cfg.TablesOff))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), queryTimeout)
	defer cancel()
	if err := monitors.Check(ctx, s.cfg.Tables, m, s.cfg.Now()); err != nil {
		writeError(w, queryError(err))
		return
	}
	out := m.API()
	out.CreationTimestamp = s.cfg.Now().UnixMilli()

	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.lookup(a.Endpoint); err != nil { // deleted meanwhile
		writeError(w, err)
		return
	}
	if _, err := s.cfg.Store.GetMonitor(a.Name); err == nil {
		writeError(w, api.Errorf(api.ErrResourceAlreadyExists, "monitor %q already exists; delete it first to redefine it", a.Name))
		return
	} else if !errors.Is(err, store.ErrNotFound) {
		writeError(w, err)
		return
	}
	if err := s.cfg.Store.PutMonitor(out); err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// monitor reads a monitor whose endpoint exists, or returns a 404.
func (s *Scheduler) monitor(name string) (*api.Monitor, error) {
	a, err := s.cfg.Store.GetMonitor(name)
	if errors.Is(err, store.ErrNotFound) {
		return nil, api.Errorf(api.ErrResourceDoesNotExist, "monitor %q does not exist", name)
	}
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	_, ok := s.eps[a.Endpoint]
	s.mu.Unlock()
	if !ok {
		return nil, api.Errorf(api.ErrResourceDoesNotExist, "monitor %q watched endpoint %q, which does not exist any more", name, a.Endpoint)
	}
	return a, nil
}

// Monitors lists the definitions of the monitors whose endpoints exist,
// sorted by name: what a monitors.Runner in the same process refreshes.
func (s *Scheduler) Monitors(context.Context) ([]*monitors.Monitor, error) {
	all, err := s.cfg.Store.ListMonitors()
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*monitors.Monitor
	for _, a := range all {
		if _, ok := s.eps[a.Endpoint]; ok {
			out = append(out, monitors.FromAPI(a))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (s *Scheduler) listMonitors(w http.ResponseWriter, r *http.Request) {
	all, err := s.cfg.Store.ListMonitors()
	if err != nil {
		writeError(w, err)
		return
	}
	out := api.ListMonitorsResponse{Monitors: []api.Monitor{}}
	// A logger run apart refreshes every monitor with the components'
	// token; the definitions hold no rows.
	c := s.caller(r)
	every := c != nil && c.Component
	s.mu.Lock()
	for _, a := range all {
		// Only monitors of endpoints the caller may view.
		if ep, ok := s.eps[a.Endpoint]; ok && (every || s.endpointLevel(r, ep.ID).AtLeast(identity.CanView)) {
			out.Monitors = append(out.Monitors, *a)
		}
	}
	s.mu.Unlock()
	sort.Slice(out.Monitors, func(i, j int) bool { return out.Monitors[i].Name < out.Monitors[j].Name })
	writeJSON(w, http.StatusOK, out)
}

func (s *Scheduler) getMonitor(w http.ResponseWriter, r *http.Request) {
	a, err := s.monitor(r.PathValue("name"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, a)
}

func (s *Scheduler) deleteMonitor(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := s.cfg.Store.DeleteMonitor(name); errors.Is(err, store.ErrNotFound) {
		writeError(w, api.Errorf(api.ErrResourceDoesNotExist, "monitor %q does not exist", name))
		return
	} else if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, struct{}{})
}

// deleteMonitorsOf deletes the monitors of endpoint ep. A failure leaves
// them stored, but hidden: GET answers 404 and nothing refreshes them.
func (s *Scheduler) deleteMonitorsOf(ep string) {
	all, err := s.cfg.Store.ListMonitors()
	for _, a := range all {
		if a.Endpoint == ep {
			if e := s.cfg.Store.DeleteMonitor(a.Name); e != nil && err == nil {
				err = e
			}
		}
	}
	if err != nil {
		s.cfg.Logger.Warn("delete the monitors of a deleted endpoint", "endpoint", ep, "err", err)
	}
}

// runMonitor refreshes a monitor's windows that closed in the last
// ?lookback (default 24 windows, at most 1000) and sends their alerts, synchronously.
func (s *Scheduler) runMonitor(w http.ResponseWriter, r *http.Request) {
	a, err := s.monitor(r.PathValue("name"))
	if err != nil {
		writeError(w, err)
		return
	}
	m := monitors.FromAPI(a)
	lookback := defaultRunWindows * m.Window()
	if v := r.URL.Query().Get("lookback"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			writeError(w, invalid("lookback: %q is not a positive duration such as 6h", v))
			return
		}
		if max := maxRunWindows * m.Window(); d > max {
			writeError(w, invalid("lookback: %s is more than %d windows of %s (%s)", v, maxRunWindows, m.Granularity, max))
			return
		}
		lookback = d
	}
	// New sets Monitors whenever Tables is set.
	rf := s.cfg.Monitors
	if s.cfg.Tables == nil || rf == nil {
		writeError(w, api.Errorf(api.ErrTemporarilyUnavailable, "inference tables are off in this Gantry: %s", s.cfg.TablesOff))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), monitorTimeout)
	defer cancel()
	now := s.cfg.Now()
	run, err := rf.Run(ctx, m, now.Add(-lookback), now)
	if err != nil {
		writeError(w, queryError(err))
		return
	}
	writeJSON(w, http.StatusOK, run)
}

// reportMonitor answers the metrics of the monitor's latest ?windows
// windows that have any (default 12).
func (s *Scheduler) reportMonitor(w http.ResponseWriter, r *http.Request) {
	a, err := s.monitor(r.PathValue("name"))
	if err != nil {
		writeError(w, err)
		return
	}
	n := defaultReportWindows
	if v := r.URL.Query().Get("windows"); v != "" {
		n, err = strconv.Atoi(v)
		if err != nil || n < 1 || n > maxReportWindows {
			writeError(w, invalid("windows: %q: want a whole number from 1 to %d", v, maxReportWindows))
			return
		}
	}
	if s.cfg.Tables == nil {
		writeError(w, api.Errorf(api.ErrTemporarilyUnavailable, "inference tables are off in this Gantry: %s", s.cfg.TablesOff))
		return
	}
	m := monitors.FromAPI(a)
	ctx, cancel := context.WithTimeout(r.Context(), monitorTimeout)
	defer cancel()
	out := api.MonitorReport{Monitor: m.Name, Granularity: m.Granularity, Profile: []api.MonitorMetric{}, Drift: []api.MonitorMetric{}}
	last, ok, err := monitors.Latest(ctx, s.cfg.Tables, m)
	if err != nil {
		writeError(w, queryError(err))
		return
	}
	if ok {
		from, to := last.Add(-time.Duration(n-1)*m.Window()), last.Add(m.Window())
		prof, err := monitors.ProfileRows(ctx, s.cfg.Tables, m, from, to)
		if err != nil {
			writeError(w, queryError(err))
			return
		}
		drift, err := monitors.DriftRows(ctx, s.cfg.Tables, m, from, to)
		if err != nil {
			writeError(w, queryError(err))
			return
		}
		for _, r := range prof {
			out.Profile = append(out.Profile, m.Metric(r))
		}
		for _, r := range drift {
			out.Drift = append(out.Drift, m.Metric(r))
		}
	}
	writeJSON(w, http.StatusOK, out)
}
