package main

import (
	"bytes"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/gantry/gantry/deploy/bench/loadgen/load"
	"github.com/valyala/fasthttp"
)

func TestLoopbackOnly(t *testing.T) {
	for _, tc := range []struct {
		url, addr string
		ok        bool
	}{
		{"http://127.0.0.1:8080/x", "127.0.0.1:8080", true},
		{"http://localhost/x", "localhost:80", true},
		{"http://[::1]:9/x", "[::1]:9", true},
		{"http://127.9.9.9:1/", "127.9.9.9:1", true},
		{"http://10.0.0.1:8080/x", "", false},
		{"http://example.com/x", "", false},
		{"https://127.0.0.1/x", "", false},
		{"127.0.0.1:8080", "", false},
	} {
		addr, err := loopbackAddr(tc.url)
		if (err == nil) != tc.ok || addr != tc.addr {
			t.Errorf("loopbackAddr(%q) = %q, %v; want %q, ok %v", tc.url, addr, err, tc.addr, tc.ok)
		}
	}
}

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i))
	}
	for p, want := range map[float64]time.Duration{0.5: 50, 0.9: 90, 0.99: 99, 1: 100} {
		if got := load.Percentile(d, p); got != want {
			t.Errorf("load.Percentile(1..100, %v) = %v, want %v", p, got, want)
		}
	}
	if got := load.Percentile(nil, 0.5); got != 0 {
		t.Errorf("load.Percentile(nil) = %v", got)
	}
}

func TestRun(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		if !bytes.Equal(ctx.PostBody(), []byte(`{"inputs":[1]}`)) || string(ctx.Request.Header.ContentType()) != "application/json" {
			ctx.SetStatusCode(400)
		}
	}}
	go func() { _ = srv.Serve(ln) }()
	defer func() { _ = srv.Shutdown() }()
	body := filepath.Join(t.TempDir(), "body.json")
	if err := os.WriteFile(body, []byte(`{"inputs":[1]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String() + "/invocations"

	var out bytes.Buffer
	if err := run([]string{"-url", url, "-body", body, "-c", "2", "-d", "200ms", "-warmup", "50ms", "-label", "t"}, &out); err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^t req/s=[1-9]\d* p50=\d+\.\d+ms p90=\d+\.\d+ms p99=\d+\.\d+ms errors=0\n$`).Match(out.Bytes()) {
		t.Errorf("line = %q", out.String())
	}

	out.Reset()
	if err := run([]string{"-url", url, "-body", body, "-c", "2", "-d", "100ms", "-warmup", "0s", "-json"}, &out); err != nil {
		t.Fatal(err)
	}
	var r load.Result
	if err := json.Unmarshal(out.Bytes(), &r); err != nil || r.Requests == 0 || r.Errors != 0 || r.P99ms < r.P50ms {
		t.Errorf("json = %s (%v)", out.Bytes(), err)
	}

	// The open loop: 200 req/s for 200 ms is about 40 requests, each timed
	// from its schedule.
	out.Reset()
	if err := run([]string{"-url", url, "-body", body, "-c", "4", "-rate", "200", "-d", "200ms", "-warmup", "0s", "-json"}, &out); err != nil {
		t.Fatal(err)
	}
	r = load.Result{}
	if err := json.Unmarshal(out.Bytes(), &r); err != nil || r.Requests < 30 || r.Requests > 41 || r.Errors != 0 || r.Rate != 200 {
		t.Errorf("open loop json = %s (%v)", out.Bytes(), err)
	}

	if err := run([]string{"-url", "http://192.0.2.1/invocations", "-d", "10ms"}, &out); err == nil {
		t.Error("a non-loopback URL was accepted")
	}
}
