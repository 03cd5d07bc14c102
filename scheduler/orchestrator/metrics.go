package orchestrator

import (
	"time"

	"github.com/gantry/gantry/api"

	"github.com/prometheus/client_golang/prometheus"
)

// Cold-start phases of one replica, the same for every driver so that
// dashboards compare them; with the activator's gantry_cold_start_seconds
// (arrival to response) they show where a cold start spends its time.
const (
	PhaseSchedule     = "schedule"      // asked for until the process (container, allocation) starts
	PhaseDownload     = "download"      // the model artifact's download (Nomad's, in replicas.starts only) until the process starts
	PhaseProcessStart = "process_start" // started until the worker first answers /ping
	PhaseModelLoad    = "model_load"    // first answer until /ping says 200
	// The last phase, the replica's first answered request from its
	// arrival to the answer's first byte: the worker measures it and
	// names it (api.PhaseFirstResponse, or api.PhaseFirstToken for a
	// stream of tokens), and its /ping reports it once ready.
	PhaseFirstResponse = api.PhaseFirstResponse
	PhaseFirstToken    = api.PhaseFirstToken
)

// Metrics are the drivers' Prometheus metrics.
type Metrics struct {
	phases *prometheus.HistogramVec
}

// NewMetrics registers the drivers' metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{phases: prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "gantry_cold_start_phase_seconds",
		Help:    "Time a replica spent in each start phase: schedule, process_start, model_load, and its first request's first_response (first_token for a stream of tokens).",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2.5, 16), // 0.5 ms .. ~7 min
	}, []string{"endpoint", "served_entity", "phase"})}
	if reg != nil {
		reg.MustRegister(m.phases)
	}
	return m
}

// Observe records that a replica of d took took in phase; a no-op on a
// nil *Metrics.
func (m *Metrics) Observe(d Deployment, phase string, took time.Duration) {
	if m == nil {
		return
	}
	m.phases.WithLabelValues(d.Endpoint, d.Entity, phase).Observe(took.Seconds())
}
