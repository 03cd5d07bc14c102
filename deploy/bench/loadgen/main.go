// Command loadgen drives an invocation URL on this host with a closed loop:
// -c clients, each sending its next request when the last one is answered,
// for -d after -warmup. It prints one line:
//
//	label req/s=41234 p50=0.35ms p90=0.52ms p99=0.91ms errors=0
//
// or, with -json, the same numbers as a JSON object. It talks to loopback
// hosts only: it is a benchmark tool, not a way to load someone else's server.
//
//	loadgen -url http://127.0.0.1:8080/serving-endpoints/ep/invocations -body req.json -c 16 -d 10s
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

type options struct {
	url, bodyFile, contentType, label string
	clients                           int
	duration, warmup, timeout         time.Duration
	json                              bool
	tokenFile                         string
	header                            string
}

// result is what one run measured, after the warmup.
type result struct {
	Label     string  `json:"label"`
	Requests  int     `json:"requests"`
	Errors    int     `json:"errors"`
	Seconds   float64 `json:"seconds"`
	ReqPerSec float64 `json:"req_per_s"`
	P50ms     float64 `json:"p50_ms"`
	P90ms     float64 `json:"p90_ms"`
	P99ms     float64 `json:"p99_ms"`
}

func run(args []string, stdout io.Writer) error {
	var o options
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.StringVar(&o.url, "url", "", "URL to POST to; its host must be loopback")
	fs.StringVar(&o.bodyFile, "body", "", "file holding the request body (default: an empty body)")
	fs.StringVar(&o.contentType, "content-type", "application/json", "Content-Type of the requests")
	fs.IntVar(&o.clients, "c", 16, "concurrent clients, one connection each")
	fs.DurationVar(&o.duration, "d", 10*time.Second, "how long to measure")
	fs.DurationVar(&o.warmup, "warmup", 2*time.Second, "how long to send before measuring")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Second, "limit for one request")
	fs.StringVar(&o.label, "label", "loadgen", "name printed at the start of the line")
	fs.BoolVar(&o.json, "json", false, "print a JSON object instead of the line")
	fs.StringVar(&o.header, "header", "", `one more header to send, "Name: value" (a worker secret, for a worker reached directly)`)
	fs.StringVar(&o.tokenFile, "token-file", "", "file holding a bearer token to send (gantry dev's DATA_DIR/admin-token); a file, not a flag, so that the token is not in ps")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.clients < 1 || o.duration <= 0 || o.warmup < 0 || o.timeout <= 0 {
		return errors.New("-c must be at least 1, -d and -timeout above 0, -warmup not below 0")
	}
	addr, err := loopbackAddr(o.url)
	if err != nil {
		return err
	}
	var body []byte
	if o.bodyFile != "" {
		if body, err = os.ReadFile(o.bodyFile); err != nil {
			return err
		}
	}

	var token string
	if o.tokenFile != "" {
		b, err := os.ReadFile(o.tokenFile)
		if err != nil {
			return err
		}
		token = strings.TrimSpace(string(b))
	}

	res := measure(o, addr, body, token)
	if o.json {
		return json.NewEncoder(stdout).Encode(res)
	}
	_, err = fmt.Fprintf(stdout, "%s req/s=%.0f p50=%.3fms p90=%.3fms p99=%.3fms errors=%d\n",
		res.Label, res.ReqPerSec, res.P50ms, res.P90ms, res.P99ms, res.Errors)
	return err
}

// loopbackAddr checks that raw is an http URL of a loopback host and
// returns its host:port.
func loopbackAddr(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("-url: %w", err)
	}
	if u.Scheme != "http" {
		return "", fmt.Errorf("-url %q: want an http:// URL", raw)
	}
	host := u.Hostname()
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return "", fmt.Errorf("-url %q: host %q is not loopback; loadgen only loads this machine", raw, host)
	}
	port := u.Port()
	if port == "" {
		port = "80"
	}
	return net.JoinHostPort(host, port), nil
}

// measure runs the closed loop and reduces what the clients saw.
func measure(o options, addr string, body []byte, token string) result {
	client := &fasthttp.HostClient{Addr: addr, MaxConns: o.clients, NoDefaultUserAgentHeader: true}
	start := time.Now()
	measureFrom := start.Add(o.warmup)
	end := measureFrom.Add(o.duration)

	type tally struct {
		latencies []time.Duration
		errors    int
	}
	tallies := make([]tally, o.clients)
	var wg sync.WaitGroup
	for i := range tallies {
		t := &tallies[i]
		wg.Go(func() {
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			req.SetRequestURI(o.url)
			req.Header.SetMethod(fasthttp.MethodPost)
			req.Header.SetContentType(o.contentType)
			if token != "" {
				req.Header.Set("Authorization", "Bearer "+token)
			}
			if k, v, ok := strings.Cut(o.header, ":"); ok {
				req.Header.Set(strings.TrimSpace(k), strings.TrimSpace(v))
			}
			req.SetBodyRaw(body)
			for {
				sent := time.Now()
				if !sent.Before(end) {
					return
				}
				// A request still out when the run ends is cut off and counts
				// neither way.
				deadline := sent.Add(o.timeout)
				if deadline.After(end) {
					deadline = end
				}
				err := client.DoDeadline(req, resp, deadline)
				done := time.Now()
				switch {
				case sent.Before(measureFrom):
				case err != nil && !done.Before(end):
				case err != nil || resp.StatusCode()/100 != 2:
					t.errors++
				default:
					t.latencies = append(t.latencies, done.Sub(sent))
				}
			}
		})
	}
	wg.Wait()

	res := result{Label: o.label, Seconds: o.duration.Seconds()}
	var all []time.Duration
	for _, t := range tallies {
		all = append(all, t.latencies...)
		res.Errors += t.errors
	}
	slices.Sort(all)
	res.Requests = len(all)
	res.ReqPerSec = float64(len(all)) / o.duration.Seconds()
	res.P50ms = ms(percentile(all, 0.50))
	res.P90ms = ms(percentile(all, 0.90))
	res.P99ms = ms(percentile(all, 0.99))
	return res
}

// percentile is the nearest-rank percentile of sorted latencies; 0 if none.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
