package autoscaler

import (
	"github.com/gantry/gantry/autoscaler/decider"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the autoscaler's Prometheus metrics, by deployment (one
// served entity's config).
type Metrics struct {
	desired  *prometheus.GaugeVec
	ready    *prometheus.GaugeVec
	panic    *prometheus.GaugeVec
	observed *prometheus.GaugeVec
	tokens   *prometheus.GaugeVec
	queued   *prometheus.GaugeVec
	capacity *prometheus.GaugeVec
}

// NewMetrics registers the autoscaler's metrics with reg (nil: nowhere).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	gauge := func(name, help string, labels ...string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, append([]string{"deployment"}, labels...))
	}
	m := &Metrics{
		desired:  gauge("gantry_autoscaler_desired_replicas", "Replicas the autoscaler asks for."),
		ready:    gauge("gantry_autoscaler_ready_replicas", "Replicas that answer, as the scheduler reports them."),
		panic:    gauge("gantry_autoscaler_panic", "1 while the deployment is in panic mode."),
		observed: gauge("gantry_autoscaler_observed_concurrency", "Average in-flight plus queued requests over each window (tokens per second of demand for entities that scale on tokens).", "window"),
		tokens:   gauge("gantry_autoscaler_observed_tokens_per_second", "Tokens per second the replicas of an entity that scales on tokens generated at the last tick."),
		queued:   gauge("gantry_autoscaler_queued_sequences", "Sequences waiting in the replicas of an entity that scales on tokens, at the last tick."),
		capacity: gauge("gantry_autoscaler_saturated_tokens_per_second", "The highest tokens per second of a replica that had sequences waiting, over the last minute that had one: what one replica sustains, the measurement for the model's tokens_per_second."),
	}
	if reg != nil {
		reg.MustRegister(m.desired, m.ready, m.panic, m.observed, m.tokens, m.queued, m.capacity)
	}
	return m
}

// record is a no-op on a nil *Metrics.
func (m *Metrics) record(t Target, dec decider.Decision) {
	if m == nil {
		return
	}
	desired := t.Current
	if dec.Valid {
		desired = dec.Desired
	}
	panicking := 0.0
	if dec.Panic {
		panicking = 1
	}
	m.desired.WithLabelValues(t.Deployment).Set(float64(desired))
	m.ready.WithLabelValues(t.Deployment).Set(float64(t.Ready))
	m.panic.WithLabelValues(t.Deployment).Set(panicking)
	m.observed.WithLabelValues(t.Deployment, "stable").Set(dec.StableConcurrency)
	m.observed.WithLabelValues(t.Deployment, "panic").Set(dec.PanicConcurrency)
}

// forget drops a deployment's series once it is gone.
func (m *Metrics) forget(deployment string) {
	if m == nil {
		return
	}
	for _, g := range []*prometheus.GaugeVec{m.desired, m.ready, m.panic, m.observed, m.tokens, m.queued, m.capacity} {
		g.DeletePartialMatch(prometheus.Labels{"deployment": deployment})
	}
}

// recordTokens is a no-op on a nil *Metrics.
// capacity 0 (nothing measured yet) exports nothing.
func (m *Metrics) recordTokens(deployment string, tps float64, queued int, capacity float64) {
	if m == nil {
		return
	}
	m.tokens.WithLabelValues(deployment).Set(tps)
	m.queued.WithLabelValues(deployment).Set(float64(queued))
	if capacity > 0 {
		m.capacity.WithLabelValues(deployment).Set(capacity)
	}
}
