// Package load sends POST requests to one HTTP/1.1 server over a fixed
// number of connections and reduces the latencies it saw. It has two modes:
//
//   - closed loop (Rate 0): each connection sends its next request when the
//     last one is answered, so the offered load is whatever the server
//     sustains: this measures capacity, and latency at saturation;
//   - open loop (Rate > 0): requests are scheduled at fixed intervals,
//     1/Rate apart, whatever the server does; a request's latency runs from
//     its scheduled send time, not from when a connection was free to send
//     it, so a server that falls behind is charged for the wait
//     (coordinated omission: a closed loop, or an open loop timed from the
//     actual send, hides exactly those waits).
//
// loadgen (the command) and the activator's external benchmark use it.
package load

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// Options describe one run.
type Options struct {
	URL         string // full URL to POST to
	Addr        string // host:port to dial
	Body        []byte
	ContentType string      // default application/json
	Headers     [][2]string // more headers to send
	Conns       int         // connections (and senders); at least 1
	Rate        float64     // requests per second; 0: closed loop
	Duration    time.Duration
	Warmup      time.Duration // sent before measuring, not counted
	Timeout     time.Duration // limit for one request
}

// Result is what one run measured, after the warmup.
type Result struct {
	Label     string  `json:"label"`
	Rate      float64 `json:"rate,omitempty"` // offered req/s; 0 in a closed loop
	Requests  int     `json:"requests"`
	Errors    int     `json:"errors"`
	Seconds   float64 `json:"seconds"`
	ReqPerSec float64 `json:"req_per_s"`
	P50ms     float64 `json:"p50_ms"`
	P90ms     float64 `json:"p90_ms"`
	P99ms     float64 `json:"p99_ms"`
	// LagP50ms and LagP99ms (open loop): how late requests left against
	// their schedule, the client's own delay (timer wakeups, a busy CPU, all
	// connections busy). It is part of the latencies above, for both paths
	// compared alike.
	LagP50ms float64 `json:"lag_p50_ms,omitempty"`
	LagP99ms float64 `json:"lag_p99_ms,omitempty"`
	// SentP50ms and SentP99ms (open loop): latency from the actual send,
	// the server's answer time without the client's lag. Not
	// coordinated-omission safe on its own; it separates the server's part
	// when two paths' lags differ.
	SentP50ms float64 `json:"sent_p50_ms,omitempty"`
	SentP99ms float64 `json:"sent_p99_ms,omitempty"`
}

// Run sends for o.Warmup, then measures for o.Duration. In a closed loop a
// request still out when the run ends is cut off and counts neither way; in
// an open loop every request scheduled before the end is waited for (up to
// o.Timeout), so that the slowest ones are not the ones dropped.
func Run(o Options) Result {
	if o.Conns < 1 {
		o.Conns = 1
	}
	if o.ContentType == "" {
		o.ContentType = "application/json"
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	client := &fasthttp.HostClient{Addr: o.Addr, MaxConns: o.Conns, NoDefaultUserAgentHeader: true,
		MaxConnWaitTimeout: o.Timeout}
	start := time.Now()
	measureFrom := start.Add(o.Warmup)
	end := measureFrom.Add(o.Duration)
	var interval time.Duration
	if o.Rate > 0 {
		interval = time.Duration(float64(time.Second) / o.Rate)
		if interval <= 0 {
			interval = 1
		}
	}
	var next atomic.Int64

	type tally struct {
		latencies, lags, fromSend []time.Duration
		errors                    int
	}
	tallies := make([]tally, o.Conns)
	var wg sync.WaitGroup
	for i := range tallies {
		t := &tallies[i]
		wg.Go(func() {
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			req.SetRequestURI(o.URL)
			req.Header.SetMethod(fasthttp.MethodPost)
			req.Header.SetContentType(o.ContentType)
			for _, h := range o.Headers {
				req.Header.Set(h[0], h[1])
			}
			req.SetBodyRaw(o.Body)
			for {
				var sched, sent, deadline time.Time
				if interval > 0 {
					sched = start.Add(time.Duration(next.Add(1)-1) * interval)
					if !sched.Before(end) {
						return
					}
					if d := time.Until(sched); d > 0 {
						time.Sleep(d)
					}
					sent = time.Now()
					deadline = sched.Add(o.Timeout)
				} else {
					sent = time.Now()
					sched = sent
					if !sent.Before(end) {
						return
					}
					deadline = sent.Add(o.Timeout)
					if deadline.After(end) {
						deadline = end
					}
				}
				err := client.DoDeadline(req, resp, deadline)
				done := time.Now()
				switch {
				case sched.Before(measureFrom):
				case interval == 0 && err != nil && !done.Before(end):
				case err != nil || resp.StatusCode()/100 != 2:
					t.errors++
				default:
					t.latencies = append(t.latencies, done.Sub(sched))
					if interval > 0 {
						t.lags = append(t.lags, sent.Sub(sched))
						t.fromSend = append(t.fromSend, done.Sub(sent))
					}
				}
			}
		})
	}
	wg.Wait()

	res := Result{Rate: o.Rate, Seconds: o.Duration.Seconds()}
	var all, lags, fromSend []time.Duration
	for _, t := range tallies {
		all = append(all, t.latencies...)
		lags = append(lags, t.lags...)
		fromSend = append(fromSend, t.fromSend...)
		res.Errors += t.errors
	}
	slices.Sort(all)
	slices.Sort(lags)
	slices.Sort(fromSend)
	res.Requests = len(all)
	res.ReqPerSec = float64(len(all)) / o.Duration.Seconds()
	res.P50ms = ms(Percentile(all, 0.50))
	res.P90ms = ms(Percentile(all, 0.90))
	res.P99ms = ms(Percentile(all, 0.99))
	if interval > 0 {
		res.LagP50ms = ms(Percentile(lags, 0.50))
		res.LagP99ms = ms(Percentile(lags, 0.99))
		res.SentP50ms = ms(Percentile(fromSend, 0.50))
		res.SentP99ms = ms(Percentile(fromSend, 0.99))
	}
	return res
}

// Percentile is the nearest-rank percentile of sorted latencies; 0 if none.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
