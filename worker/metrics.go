package worker

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the worker's Prometheus metrics.
type Metrics struct {
	requests *prometheus.CounterVec
	ok       prometheus.Counter // requests{code="200"}, looked up once for the hot path
	duration prometheus.Histogram
	loadSecs prometheus.Gauge
	ready    prometheus.Gauge
}

// NewMetrics creates the worker's metrics and registers them with reg.
// It panics if reg already has them, as prometheus.MustRegister does.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gantry_worker_requests_total",
			Help: "Invocations answered, by HTTP status code.",
		}, []string{"code"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "gantry_worker_request_duration_seconds",
			Help: "Time to answer an invocation: read, parse, predict and write.",
			// Native runtimes answer in well under a millisecond; process
			// runtimes and big batches take seconds.
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}),
		loadSecs: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gantry_worker_model_load_seconds",
			Help: "How long the model took to load.",
		}),
		ready: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gantry_worker_ready",
			Help: "1 once the model is loaded and the worker answers invocations, else 0.",
		}),
	}
	m.ok = m.requests.WithLabelValues("200")
	reg.MustRegister(m.requests, m.duration, m.loadSecs, m.ready)
	return m
}

func (m *Metrics) observe(code int, elapsed time.Duration) {
	if code == 200 {
		m.ok.Inc()
	} else {
		m.requests.WithLabelValues(strconv.Itoa(code)).Inc()
	}
	m.duration.Observe(elapsed.Seconds())
}

func (m *Metrics) loaded(elapsed time.Duration) {
	m.loadSecs.Set(elapsed.Seconds())
	m.ready.Set(1)
}
