package scheduler

// Paths that the Databricks SDKs call besides endpoint CRUD: an endpoint's
// metrics (ExportMetrics), a served entity's build logs (BuildLogs) and the
// host metadata the SDK's config asks for on its first request.

import (
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/scheduler/store"
)

// hostMetadata answers GET /.well-known/databricks-config. The Databricks
// SDKs read it for an OIDC endpoint, account and workspace IDs, the cloud
// and the host type, and fall back to their own configuration when it is
// missing (they log a warning and go on). Gantry has none of these to
// give: no OIDC, no account or workspace, no cloud. A workspace host is what
// the SDK assumes without an answer, and an answer without oidc_endpoint
// warns as well, so Gantry answers a 404 in API.md's shape, as the SDK's
// own test fixtures stub this path.
func hostMetadata(w http.ResponseWriter, r *http.Request) {
	writeError(w, api.Errorf(api.ErrResourceDoesNotExist,
		"Gantry publishes no host metadata (no OIDC endpoint, account or workspace ID); clients use their own configuration"))
}

// findEntity finds served entity served of endpoint ep, in its serving
// config or in a config rolling out, and tells which. s.mu must be held.
func (w *world) findEntity(ep *store.Endpoint, served string) (entity, string, bool) {
	for _, e := range w.entities(ep.Name, &ep.Config) {
		if e.served.Name == served {
			return e, "active", true
		}
	}
	if ep.Pending != nil {
		for _, e := range w.entities(ep.Name, ep.Pending) {
			if e.served.Name == served {
				return e, "pending", true
			}
		}
	}
	return entity{}, "", false
}

// buildLogs answers GET .../served-models/{served}/build-logs with
// Databricks' BuildLogsResponse, {"logs": "..."}. Databricks builds a
// container environment per served model and these are that build's logs;
// Gantry's workers run a built-in runtime and build nothing, so the answer
// says so and where the worker's own output is.
func (s *Scheduler) buildLogs(w http.ResponseWriter, r *http.Request) {
	name, served := r.PathValue("name"), r.PathValue("served")
	s.mu.Lock()
	ep, err := s.lookup(name)
	var e entity
	if err == nil {
		var ok bool
		if e, _, ok = s.world().findEntity(ep, served); !ok {
			err = api.Errorf(api.ErrResourceDoesNotExist, "endpoint %q has no served entity %q", name, served)
		}
	}
	s.mu.Unlock()
	if err != nil {
		writeError(w, err)
		return
	}
	var b strings.Builder
	if e.err != nil {
		fmt.Fprintf(&b, "Gantry cannot prepare served entity %q: %v\n", served, e.err)
	} else {
		fmt.Fprintf(&b, "Gantry builds no environment for served entity %q: model %s version %s runs on the worker's built-in runtime, so there is nothing to build.\n",
			served, e.served.EntityName, e.served.EntityVersion)
	}
	fmt.Fprintf(&b, "The workers' output: GET /api/2.0/serving-endpoints/%s/served-models/%s/logs\n", name, served)
	writeJSON(w, http.StatusOK, map[string]string{"logs": b.String()})
}

// promContentType is the Prometheus text exposition format.
const promContentType = "text/plain; version=0.0.4; charset=utf-8"

// endpointMetrics answers GET /api/2.0/serving-endpoints/{name}/metrics
// (the SDK's ExportMetrics) with what the scheduler knows of the endpoint
// in Prometheus text: its state and, per served entity, replicas and
// deployment state. Request counts and latencies are the activator's
// (its /metrics), a process of its own outside gantry dev.
func (s *Scheduler) endpointMetrics(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	ep, err := s.lookup(r.PathValue("name"))
	var text string
	if err == nil {
		text = s.world().metricsText(ep)
	}
	s.mu.Unlock()
	if err != nil {
		writeError(w, err)
		return
	}
	w.Header().Set("Content-Type", promContentType)
	w.WriteHeader(http.StatusOK)
	w.Write([]byte(text))
}

// metricFamily is one metric's help, type and samples.
type metricFamily struct {
	name, help, typ string
	samples         []string
}

func (f *metricFamily) add(v float64, labels ...string) {
	var b strings.Builder
	b.WriteString(f.name)
	b.WriteByte('{')
	for i := 0; i+1 < len(labels); i += 2 {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(labels[i])
		b.WriteString(`="`)
		b.WriteString(escapeLabel(labels[i+1]))
		b.WriteByte('"')
	}
	b.WriteString("} ")
	b.WriteString(strconv.FormatFloat(v, 'g', -1, 64))
	f.samples = append(f.samples, b.String())
}

// escapeLabel escapes a label value for the text format.
func escapeLabel(v string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(v)
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// metricsText renders endpoint ep's metrics; the caller holds s.mu.
func (w *world) metricsText(ep *store.Endpoint) string {
	view := w.endpointView(ep, "")
	epReady := &metricFamily{name: "gantry_endpoint_ready", typ: "gauge",
		help: "1 when the endpoint is READY (every served entity ready or scaled to zero), else 0."}
	updating := &metricFamily{name: "gantry_endpoint_config_update_in_progress", typ: "gauge",
		help: "1 while a config update rolls out (config_update IN_PROGRESS), else 0."}
	version := &metricFamily{name: "gantry_endpoint_config_version", typ: "gauge",
		help: "The serving config's config_version."}
	desired := &metricFamily{name: "gantry_served_entity_replicas_desired", typ: "gauge",
		help: "Replicas the scheduler wants for the served entity (the autoscaler's count)."}
	ready := &metricFamily{name: "gantry_served_entity_replicas_ready", typ: "gauge",
		help: "Replicas of the served entity that answer their readiness probe."}
	state := &metricFamily{name: "gantry_served_entity_deployment_state", typ: "gauge",
		help: "1 for the served entity's deployment state (DEPLOYMENT_READY, DEPLOYMENT_CREATING, ...)."}
	zero := &metricFamily{name: "gantry_served_entity_scaled_to_zero", typ: "gauge",
		help: "1 when the served entity runs no replica and wakes on the next request."}
	failures := &metricFamily{name: "gantry_served_entity_failed_starts_total", typ: "counter",
		help: "Replica starts that failed, and replicas that exited, since the deployment began."}
	traffic := &metricFamily{name: "gantry_served_entity_traffic_percentage", typ: "gauge",
		help: "The served entity's traffic_percentage in the serving config (shadow=\"true\": mirrored)."}

	epLabels := []string{"endpoint", ep.Name}
	epReady.add(boolValue(view.State.Ready == api.EndpointReady), epLabels...)
	updating.add(boolValue(view.State.ConfigUpdate == api.ConfigInProgress), epLabels...)
	version.add(float64(ep.Config.ConfigVersion), epLabels...)

	entities := func(c *api.EndpointConfig, config string) {
		for _, e := range w.entities(ep.Name, c) {
			st, status := w.entityState(e)
			labels := []string{"endpoint", ep.Name, "served_entity", e.served.Name, "config", config}
			desired.add(float64(e.d.Replicas), labels...)
			ready.add(float64(status.Ready()), labels...)
			zero.add(boolValue(e.err == nil && e.d.Replicas == 0), labels...)
			state.add(1, append(labels, "state", st.Deployment)...)
			failures.add(float64(status.Failures), labels...)
		}
	}
	entities(&ep.Config, "active")
	if ep.Pending != nil {
		entities(ep.Pending, "pending")
	}
	if tc := ep.Config.TrafficConfig; tc != nil {
		for _, r := range tc.Routes {
			traffic.add(float64(r.TrafficPercentage), "endpoint", ep.Name, "served_entity", r.ServedModelName,
				"shadow", strconv.FormatBool(r.Shadow))
		}
	}

	var b strings.Builder
	for _, f := range []*metricFamily{epReady, updating, version, desired, ready, state, zero, failures, traffic} {
		if len(f.samples) == 0 {
			continue
		}
		sort.Strings(f.samples)
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n", f.name, f.help, f.name, f.typ)
		for _, s := range f.samples {
			b.WriteString(s)
			b.WriteByte('\n')
		}
	}
	return b.String()
}
