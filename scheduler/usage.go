package scheduler

import (
	"context"
	"net/http"
	"regexp"
	"sort"
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

// contextKeyRE is a usage_context key that by=usage_context.KEY may name:
// it goes into the SQL as a quoted literal, so no quote or backslash.
var contextKeyRE = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,64}$`)

// usageColumn is what ?by= groups by: a column of the usage table, or for
// usage_context.KEY the value of that key in each row's usage_context
// ("" where a request sent none); replicas says whether provisioned time
// has it (replicas serve every requester and context).
func usageColumn(by string) (col string, replicas, ok bool) {
	if key, found := strings.CutPrefix(by, "usage_context."); found {
		if !contextKeyRE.MatchString(key) {
			return "", false, false
		}
		return "visitParamExtractString(usage_context, '" + key + "')", false, true
	}
	col, ok = usageBy[by]
	return col, ok && by != "requester", ok
}

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

// usageSteps are the lengths a usage series' buckets may have, with
// their names; usageStep picks the first that keeps a series within
// maxUsagePoints points.
var usageSteps = []struct {
	d    time.Duration
	name string
}{{time.Minute, "1m"}, {time.Hour, "1h"}, {24 * time.Hour, "1d"}, {7 * 24 * time.Hour, "7d"}, {30 * 24 * time.Hour, "30d"}}

// maxUsagePoints bounds a series (and so the rows a series query reads:
// maxUsageSeries keys times this, times their workloads, stays under the
// tables' 10,000 rows).
const maxUsagePoints = 200

// maxUsageSeries is how many keys, the busiest, get a series.
const maxUsageSeries = 10

// usageStep is the bucket of a usage series over the last since: 1m up to
// 3h, 1h up to 8d, 1d up to 200d, then 7d, then 30d.
func usageStep(since time.Duration) (time.Duration, string) {
	for _, st := range usageSteps {
		if since/st.d <= maxUsagePoints {
			return st.d, st.name
		}
	}
	last := usageSteps[len(usageSteps)-1]
	return last.d, last.name
}

// usage answers GET /api/2.0/gantry/usage?since=7d&by=endpoint: the
// invocations (usage tracking) and provisioned time (the meter) of each
// key since a time, the busiest first, and the busiest keys' series.
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
	col, hasReplicas, ok := usageColumn(by)
	if !ok {
		writeError(w, invalid("by: %q is not one of endpoint, entity, requester, usage_context.KEY (a key of letters, digits and _.:-)", clipQ(by)))
		return
	}
	if s.cfg.Tables == nil {
		// As the inference tables' query answers: the service is missing
		// here, the request is fine.
		writeError(w, api.Errorf(api.ErrTemporarilyUnavailable, "usage tables are off in this Gantry: %s", s.cfg.TablesOff))
		return
	}
	step, stepName := usageStep(d)
	from := s.cfg.Now().Add(-d).UnixMilli()
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.TablesTimeout)
	defer cancel()
	// col comes from usageColumn (a fixed column, or a checked key), never
	// from the caller as it is; every query sums with FINAL, so that a row
	// the logger delivered twice counts once.
	usage, prov := loggers.UsageTable.Quoted()+" FINAL", loggers.ProvisionedTable.Quoted()+" FINAL"
	const calls = "count(), countIf(status_code >= 400), sum(input_tokens), sum(output_tokens)"
	const replicas = "workload_size, workload_type, sum(replica_seconds), sum(saved_replica_seconds)"
	inv, err := s.usageQuery(ctx, "SELECT "+col+", "+calls+" FROM "+usage+" WHERE timestamp_ms >= ? GROUP BY "+col, from)
	var provisioned [][]string
	if err == nil && hasReplicas {
		provisioned, err = s.usageQuery(ctx, "SELECT "+col+", "+replicas+" FROM "+prov+" WHERE timestamp_ms >= ? GROUP BY "+col+", workload_size, workload_type", from)
	}
	out := api.UsageResponse{Since: since, By: by, Step: stepName, Rows: usageRows(inv, provisioned, s.cfg.UnitCosts), Series: []api.UsageSeries{}}
	var keys []string
	for _, row := range out.Rows[:min(len(out.Rows), maxUsageSeries)] {
		keys = append(keys, row.Key)
	}
	if err == nil && len(keys) > 0 {
		bucket := "intDiv(timestamp_ms, " + strconv.FormatInt(step.Milliseconds(), 10) + ") * " + strconv.FormatInt(step.Milliseconds(), 10)
		inv, err = s.usageQuery(ctx, "SELECT "+col+", "+bucket+" AS t, "+calls+" FROM "+usage+" WHERE timestamp_ms >= ? AND has(?, "+col+") GROUP BY "+col+", t", from, keys)
		provisioned = nil
		if err == nil && hasReplicas {
			provisioned, err = s.usageQuery(ctx, "SELECT "+col+", "+bucket+" AS t, "+replicas+" FROM "+prov+" WHERE timestamp_ms >= ? AND has(?, "+col+") GROUP BY "+col+", t, workload_size, workload_type", from, keys)
		}
		out.Series = usageSeries(keys, inv, provisioned, s.cfg.UnitCosts)
	}
	if err != nil {
		writeError(w, api.Errorf(api.ErrTemporarilyUnavailable, "usage: %v", err))
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// usageQuery runs a usage query; a table that does not exist yet (no
// endpoint tracked usage, no row was metered) has no rows.
func (s *Scheduler) usageQuery(ctx context.Context, sql string, args ...any) ([][]string, error) {
	res, err := s.cfg.Tables.Query(ctx, sql, args...)
	if err != nil {
		if strings.Contains(err.Error(), "UNKNOWN_TABLE") || strings.Contains(err.Error(), "doesn't exist") {
			return nil, nil
		}
		return nil, err
	}
	return res.Rows, nil
}

// usageRows merges the invocation totals (key, requests, errors, input
// and output tokens) and the provisioned ones (key, workload size and
// type, replica-seconds, saved replica-seconds) into one row per key,
// priced with costs: the most requests first, then the costliest, then
// by key.
func usageRows(inv, prov [][]string, costs map[string]float64) []api.UsageRow {
	byKey := map[string]*api.UsageRow{}
	get := func(k string) *api.UsageRow {
		r := byKey[k]
		if r == nil {
			r = &api.UsageRow{Key: k}
			byKey[k] = r
		}
		return r
	}
	for _, row := range inv {
		if len(row) == 5 {
			r := get(row[0])
			r.Requests, r.Errors, r.InputTokens, r.OutputTokens = toInt(row[1]), toInt(row[2]), toInt(row[3]), toInt(row[4])
		}
	}
	for _, row := range prov {
		if len(row) == 5 {
			r := get(row[0])
			c := priced(costs, row[1], row[2], api.UsageCost{ReplicaSeconds: toFloat(row[3]), SavedReplicaSeconds: toFloat(row[4])})
			r.Workloads = append(r.Workloads, api.WorkloadUsage{WorkloadSize: row[1], WorkloadType: row[2], UsageCost: c})
			r.UsageCost = addCost(r.UsageCost, c)
		}
	}
	out := make([]api.UsageRow, 0, len(byKey))
	for _, r := range byKey {
		sort.Slice(r.Workloads, func(i, j int) bool {
			a, b := r.Workloads[i], r.Workloads[j]
			return a.WorkloadType < b.WorkloadType || a.WorkloadType == b.WorkloadType && a.WorkloadSize < b.WorkloadSize
		})
		out = append(out, *r)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Requests != b.Requests {
			return a.Requests > b.Requests
		}
		if a.Cost != b.Cost {
			return a.Cost > b.Cost
		}
		return a.Key < b.Key
	})
	return out
}

// usageSeries builds the series of keys, in their order, from the
// bucketed invocation rows (key, time, requests, errors, tokens in and
// out) and provisioned rows (key, time, workload size and type,
// replica-seconds, saved), points in time order.
func usageSeries(keys []string, inv, prov [][]string, costs map[string]float64) []api.UsageSeries {
	pts := map[string]map[int64]*api.UsagePoint{}
	get := func(k, t string) *api.UsagePoint {
		m := pts[k]
		if m == nil {
			m = map[int64]*api.UsagePoint{}
			pts[k] = m
		}
		ms := toInt(t)
		p := m[ms]
		if p == nil {
			p = &api.UsagePoint{TimeMs: ms}
			m[ms] = p
		}
		return p
	}
	for _, row := range inv {
		if len(row) == 6 {
			p := get(row[0], row[1])
			p.Requests, p.Errors, p.InputTokens, p.OutputTokens = toInt(row[2]), toInt(row[3]), toInt(row[4]), toInt(row[5])
		}
	}
	for _, row := range prov {
		if len(row) == 6 {
			p := get(row[0], row[1])
			p.UsageCost = addCost(p.UsageCost, priced(costs, row[2], row[3], api.UsageCost{ReplicaSeconds: toFloat(row[4]), SavedReplicaSeconds: toFloat(row[5])}))
		}
	}
	out := make([]api.UsageSeries, 0, len(keys))
	for _, k := range keys {
		se := api.UsageSeries{Key: k, Points: []api.UsagePoint{}}
		for _, p := range pts[k] {
			se.Points = append(se.Points, *p)
		}
		sort.Slice(se.Points, func(i, j int) bool { return se.Points[i].TimeMs < se.Points[j].TimeMs })
		out = append(out, se)
	}
	return out
}

func addCost(a, b api.UsageCost) api.UsageCost {
	return api.UsageCost{ReplicaSeconds: a.ReplicaSeconds + b.ReplicaSeconds, Cost: a.Cost + b.Cost,
		SavedReplicaSeconds: a.SavedReplicaSeconds + b.SavedReplicaSeconds, SavedCost: a.SavedCost + b.SavedCost}
}

func clipQ(s string) string {
	if len(s) > 32 {
		return s[:32] + "..."
	}
	return s
}

// toFloat reads a Float64 sum as the query result formats it.
func toFloat(s string) float64 {
	f, _ := strconv.ParseFloat(s, 64)
	return f
}

// toInt reads a count or sum as the query result formats it.
func toInt(s string) int64 {
	n, _ := strconv.ParseInt(s, 10, 64)
	return n
}
