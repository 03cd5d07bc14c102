package scheduler

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/loggers"
)

// Usage tracking (ai_gateway.usage_tracking_config): the activators write
// a loggers.UsageRow per invocation of an endpoint that enables it, through
// the inference records' Kafka path, into loggers.UsageTable; the
// scheduler creates the table when an endpoint enables tracking and sums
// it for GET /api/2.0/gantry/usage (admins only, as Databricks lets only
// account admins read system.serving.endpoint_usage).

// usageEnsurer is the Tables that can create the usage table
// (*tables.DB).
type usageEnsurer interface {
	EnsureUsage(ctx context.Context) error
}

// ensureUsage creates the usage table, or says why it cannot.
func (s *Scheduler) ensureUsage(ctx context.Context) error {
	const field = "usage_tracking_config"
	if s.cfg.Tables == nil {
		return invalid("%s: usage tables are off in this Gantry: %s", field, s.cfg.TablesOff)
	}
	e, ok := s.cfg.Tables.(usageEnsurer)
	if !ok {
		return invalid("%s: this Gantry's tables cannot hold the usage table", field)
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.TablesTimeout)
	defer cancel()
	if err := e.EnsureUsage(ctx); err != nil {
		return api.Errorf(api.ErrTemporarilyUnavailable, "%s: create usage table %s: %v", field, loggers.UsageTable, err)
	}
	return nil
}

// usageBy maps ?by= to the usage table's column.
var usageBy = map[string]string{"endpoint": "endpoint", "entity": "served_entity", "requester": "requester"}

// parseSince reads "7d", "24h", "30m" (a count and a unit of days, hours
// or minutes).
func parseSince(s string) (time.Duration, bool) {
	if len(s) < 2 {
		return 0, false
	}
	n, err := strconv.Atoi(s[:len(s)-1])
	if err != nil || n <= 0 || n > 3660 {
		return 0, false
	}
	switch s[len(s)-1] {
	case 'd':
		return time.Duration(n) * 24 * time.Hour, true
	case 'h':
		return time.Duration(n) * time.Hour, true
	case 'm':
		return time.Duration(n) * time.Minute, true
	}
	return 0, false
}

// usage answers GET /api/2.0/gantry/usage?since=7d&by=endpoint.
func (s *Scheduler) usage(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	since, by := q.Get("since"), q.Get("by")
	if since == "" {
		since = "7d"
	}
	if by == "" {
		by = "endpoint"
	}
	d, ok := parseSince(since)
	if !ok {
		writeError(w, invalid("since: %q is not a duration such as 7d, 24h or 30m", clipQ(since)))
		return
	}
	col, ok := usageBy[by]
	if !ok {
		writeError(w, invalid("by: %q is not one of endpoint, entity, requester", clipQ(by)))
		return
	}
	if s.cfg.Tables == nil {
		writeError(w, invalid("usage tables are off in this Gantry: %s", s.cfg.TablesOff))
		return
	}
	from := s.cfg.Now().Add(-d).UnixMilli()
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.TablesTimeout)
	defer cancel()
	// col comes from usageBy, never from the caller.
	res, err := s.cfg.Tables.Query(ctx, "SELECT "+col+", count(), countIf(status_code >= 400), sum(input_tokens), sum(output_tokens) FROM "+
		loggers.UsageTable.Quoted()+" FINAL WHERE timestamp_ms >= ? GROUP BY "+col+" ORDER BY count() DESC, "+col, from)
	out := api.UsageResponse{Since: since, By: by, Rows: []api.UsageRow{}}
	if err != nil {
		if strings.Contains(err.Error(), "UNKNOWN_TABLE") || strings.Contains(err.Error(), "doesn't exist") {
			writeJSON(w, http.StatusOK, out) // no endpoint has tracked usage yet
			return
		}
		writeError(w, api.Errorf(api.ErrTemporarilyUnavailable, "usage: %v", err))
		return
	}
	for _, row := range res.Rows {
		if len(row) != 5 {
			continue
		}
		u := api.UsageRow{Key: row[0]}
		u.Requests, u.Errors, u.InputTokens, u.OutputTokens = toInt(row[1]), toInt(row[2]), toInt(row[3]), toInt(row[4])
		out.Rows = append(out.Rows, u)
	}
	writeJSON(w, http.StatusOK, out)
}

func clipQ(s string) string {
	if len(s) > 32 {
		return s[:32] + "..."
	}
	return s
}

// toInt reads a count or sum as the query result formats it.
func toInt(s string) int64 {
	n, _ := strconv.ParseInt(s, 10, 64)
	return n
}
