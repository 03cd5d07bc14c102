package pyfunc

import "github.com/prometheus/client_golang/prometheus"

// metrics are the runtime's own. Runtime is a prometheus.Collector over
// them, which the worker registers on its registry once the model loaded,
// so nothing is registered globally.
type metrics struct {
	restarts *prometheus.CounterVec
	batch    prometheus.Histogram
	rows     prometheus.Histogram
}

func newMetrics() *metrics {
	return &metrics{
		restarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gantry_worker_model_host_restarts_total",
			Help: "Python model hosts replaced, by why: exited (died, killed) or timeout (stuck past the execution timeout).",
		}, []string{"reason"}),
		batch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "gantry_worker_batch_requests",
			Help:    "Requests merged into one predict call of the Python model host.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 10), // 1 to 512
		}),
		rows: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "gantry_worker_batch_rows",
			Help:    "Rows in one predict call of the Python model host.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 9), // 1 to 65,536
		}),
	}
}

var _ prometheus.Collector = (*Runtime)(nil)

// Describe implements prometheus.Collector.
func (r *Runtime) Describe(ch chan<- *prometheus.Desc) {
	r.metrics.restarts.Describe(ch)
	r.metrics.batch.Describe(ch)
	r.metrics.rows.Describe(ch)
}

// Collect implements prometheus.Collector.
func (r *Runtime) Collect(ch chan<- prometheus.Metric) {
	r.metrics.restarts.Collect(ch)
	r.metrics.batch.Collect(ch)
	r.metrics.rows.Collect(ch)
}
