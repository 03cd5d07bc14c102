package activator

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the activator's Prometheus metrics. Build them with NewMetrics.
type Metrics struct {
	requests   *prometheus.CounterVec
	duration   *prometheus.HistogramVec
	inFlight   *prometheus.GaugeVec
	queueDepth *prometheus.GaugeVec
	coldStart  *prometheus.HistogramVec
	// shadowSkipped counts mirrors not sent: too many in flight.
	shadowSkipped prometheus.Counter
}

// NewMetrics builds the activator's metrics and registers them with reg
// (nil: registered nowhere).
//
// Answers for unknown paths and endpoints count under empty endpoint and
// served_entity labels; answers refused before a served entity is chosen
// count under an empty served_entity.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gantry_activator_requests_total",
			Help: "Invocations answered, by endpoint, served entity and HTTP status.",
		}, []string{"endpoint", "served_entity", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "gantry_activator_request_duration_seconds",
			Help: "Time from an invocation's arrival to its answer, by endpoint.",
			// From the activator's own overhead (well under a millisecond)
			// up to the 297 s execution limit.
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300},
		}, []string{"endpoint"}),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gantry_activator_in_flight",
			Help: "Invocations being proxied to a worker now.",
		}, []string{"endpoint", "served_entity"}),
		queueDepth: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gantry_activator_queue_depth",
			Help: "Invocations waiting for a free replica slot now.",
		}, []string{"endpoint", "served_entity"}),
		coldStart: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "gantry_cold_start_seconds",
			Help: "Time from the arrival of an invocation that found no ready replica and waited, to its answer.",
			// A native model starts in milliseconds, a Python one in tens
			// of seconds; 120 s is the queue timeout.
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 20, 30, 60, 90, 120},
		}, []string{"endpoint", "served_entity"}),
		shadowSkipped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gantry_activator_shadow_skipped_total",
			Help: "Requests a shadow route drew but did not mirror, because too many mirrors were in flight.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.duration, m.inFlight, m.queueDepth, m.coldStart, m.shadowSkipped)
	}
	return m
}

// curried is requests_total of one endpoint and served entity, left with
// the code label.
func (m *Metrics) curried(endpoint, entity string) *prometheus.CounterVec {
	return m.requests.MustCurryWith(prometheus.Labels{"endpoint": endpoint, "served_entity": entity})
}

// counters resolves the request counters of one served entity.
func (m *Metrics) counters(endpoint, entity string) counters {
	vec := m.curried(endpoint, entity)
	return counters{vec: vec, ok: vec.WithLabelValues("200")}
}

// forget deletes the series of the endpoints and served entities that old
// names and cur does not, so that entity names that churn with every config
// version do not pile up series. Run's goroutine only.
func (m *Metrics) forget(old, cur *table) {
	for name, ep := range old.endpoints {
		next := cur.endpoints[name]
		if next == nil {
			l := prometheus.Labels{"endpoint": name}
			m.requests.DeletePartialMatch(l)
			m.duration.DeletePartialMatch(l)
			m.inFlight.DeletePartialMatch(l)
			m.queueDepth.DeletePartialMatch(l)
			m.coldStart.DeletePartialMatch(l)
			continue
		}
		for entity := range ep.entities {
			if next.entities[entity] == nil {
				l := prometheus.Labels{"endpoint": name, "served_entity": entity}
				m.requests.DeletePartialMatch(l)
				m.inFlight.DeletePartialMatch(l)
				m.queueDepth.DeletePartialMatch(l)
				m.coldStart.DeletePartialMatch(l)
			}
		}
	}
}

// statusText is the code label of an HTTP status.
func statusText(code int) string { return strconv.Itoa(code) }
