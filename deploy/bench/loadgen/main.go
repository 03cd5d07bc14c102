// Command loadgen drives an invocation URL on this host over -c
// connections for -d after -warmup. By default it runs a closed loop: each
// connection sends its next request when the last one is answered (the
// server's capacity). With -rate it runs an open loop: requests scheduled
// 1/rate apart whatever the server does, each one's latency measured from
// its scheduled send time, so that waits are not hidden (coordinated
// omission; see package load). It prints one line:
//
//	label req/s=41234 p50=0.35ms p90=0.52ms p99=0.91ms errors=0
//
// (with -rate, also lag=, how late the client itself sent, p50/p99)
//
// or, with -json, the same numbers as a JSON object. It talks to loopback
// hosts only: it is a benchmark tool, not a way to load someone else's server.
//
//	loadgen -url http://127.0.0.1:8080/serving-endpoints/ep/invocations -body req.json -c 16 -d 10s
//	loadgen -url ... -body req.json -c 64 -rate 5000 -d 10s
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
	"strings"
	"time"

	"github.com/gantry/gantry/deploy/bench/loadgen/load"
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
	rate                              float64
	duration, warmup, timeout         time.Duration
	json                              bool
	tokenFile                         string
	header                            string
}

func run(args []string, stdout io.Writer) error {
	var o options
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.StringVar(&o.url, "url", "", "URL to POST to; its host must be loopback")
	fs.StringVar(&o.bodyFile, "body", "", "file holding the request body (default: an empty body)")
	fs.StringVar(&o.contentType, "content-type", "application/json", "Content-Type of the requests")
	fs.IntVar(&o.clients, "c", 16, "concurrent clients, one connection each")
	fs.Float64Var(&o.rate, "rate", 0, "requests per second, an open loop timed from each request's scheduled send (default 0: a closed loop)")
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
	if o.clients < 1 || o.duration <= 0 || o.warmup < 0 || o.timeout <= 0 || o.rate < 0 {
		return errors.New("-c must be at least 1, -d and -timeout above 0, -warmup and -rate not below 0")
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

	lo := load.Options{URL: o.url, Addr: addr, Body: body, ContentType: o.contentType, Conns: o.clients,
		Rate: o.rate, Duration: o.duration, Warmup: o.warmup, Timeout: o.timeout}
	if token != "" {
		lo.Headers = append(lo.Headers, [2]string{"Authorization", "Bearer " + token})
	}
	if k, v, ok := strings.Cut(o.header, ":"); ok {
		lo.Headers = append(lo.Headers, [2]string{strings.TrimSpace(k), strings.TrimSpace(v)})
	}
	res := load.Run(lo)
	res.Label = o.label
	if o.json {
		return json.NewEncoder(stdout).Encode(res)
	}
	lag := ""
	if o.rate > 0 {
		lag = fmt.Sprintf(" lag=%.3f/%.3fms", res.LagP50ms, res.LagP99ms)
	}
	_, err = fmt.Fprintf(stdout, "%s req/s=%.0f p50=%.3fms p90=%.3fms p99=%.3fms errors=%d%s\n",
		res.Label, res.ReqPerSec, res.P50ms, res.P90ms, res.P99ms, res.Errors, lag)
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
