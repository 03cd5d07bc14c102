package docker

import (
	"time"

	"github.com/gantry/gantry/scheduler/orchestrator"
	"github.com/prometheus/client_golang/prometheus"
)

// Cold-start phases of one replica, under the local driver's metric name
// and phase names, so that dashboards compare the drivers directly.
const (
	phaseSchedule     = "schedule"      // asked for until its container runs (create and start)
	phaseProcessStart = "process_start" // running until the worker first answers /ping
	phaseModelLoad    = "model_load"    // first answer until /ping says 200
)

// Metrics are the docker driver's Prometheus metrics.
type Metrics struct {
	phases *prometheus.HistogramVec
}

// NewMetrics registers the driver's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{phases: prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "gantry_cold_start_phase_seconds",
		Help:    "Time a replica spent in each start phase: schedule, process_start, model_load.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2.5, 16), // 0.5 ms .. ~7 min
	}, []string{"endpoint", "served_entity", "phase"})}
	if reg != nil {
		reg.MustRegister(m.phases)
	}
	return m
}

// observe is a no-op on a nil *Metrics.
func (m *Metrics) observe(d orchestrator.Deployment, phase string, took time.Duration) {
	if m == nil {
		return
	}
	m.phases.WithLabelValues(d.Endpoint, d.Entity, phase).Observe(took.Seconds())
}
