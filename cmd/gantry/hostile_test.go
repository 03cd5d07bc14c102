package main

// Hostile-input tests of the front servers (issue 19): a real `gantry dev`
// on loopback, driven with raw sockets where a well-behaved client would
// not do what an attacker does. BenchmarkHostileRSS measures the process's
// memory under slow and lying clients.

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gantry/gantry/api"
)

// startLean runs `gantry dev` with inference tables off (no ClickHouse on
// its PATH), so that the process measured is Gantry alone.
func startLean(t testing.TB, bin, addr string, flags ...string) *proc {
	t.Helper()
	args := append([]string{"dev", "--listen", addr, "--data-dir", t.TempDir()}, flags...)
	p := &proc{name: "dev", cmd: exec.Command(bin, args...), log: &syncBuffer{}}
	p.cmd.Env = append(os.Environ(), "PATH=/nonexistent")
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.stop(t) })
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			learnToken(t, addr, args[4])
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("gantry dev did not come up: %v\n%s", err, p.log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// leanEndpoint starts a lean gantry dev with the binary fixture served as
// endpoint fraud-ep.
func leanEndpoint(t testing.TB, flags ...string) (bin, addr string, p *proc) {
	t.Helper()
	bin = buildGantry(t)
	addr = freeAddr(t)
	p = startLean(t, bin, addr, flags...)
	mustCLI(t, bin, addr, "models", "upload", "fraud", filepath.Join(fixtures, "binary"))
	mustCLI(t, bin, addr, "endpoints", "create", "-f", endpointFile(t, "fraud-ep", "fraud", "1", "Small"), "--wait")
	return bin, addr, p
}

// rawExchange writes req on a new connection and returns what comes back
// before the server closes it or wait passes.
func rawExchange(t testing.TB, addr, req string, wait time.Duration) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(wait))
	b, _ := io.ReadAll(c)
	return string(b)
}

// apiAnswer parses a raw HTTP answer and its body as API.md's error shape.
func apiAnswer(t testing.TB, raw string) (int, http.Header, api.Error) {
	t.Helper()
	resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(raw)), nil)
	if err != nil {
		t.Fatalf("answer %q: %v", raw, err)
	}
	body, _ := io.ReadAll(resp.Body)
	var e api.Error
	if err := json.Unmarshal(body, &e); err != nil || e.Code == "" {
		t.Fatalf("body %q is not API.md's error shape: %v", body, err)
	}
	return resp.StatusCode, resp.Header, e
}

func TestHostileFront(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs a worker process; run without -short")
	}
	_, addr, dev := leanEndpoint(t, "--max-upload-size", strconv.Itoa(8<<20))
	body, _ := oneRow(t)

	// 20 sockets claiming 1 GiB each once took the process to 8 GiB: the
	// claim is refused with 413 from the headers alone, at once.
	t.Run("claimed length over the limit", func(t *testing.T) {
		for _, tc := range []struct{ path, limit string }{
			{"/serving-endpoints/fraud-ep/invocations", "16777216"},
			{"/serving-endpoints/nope/invocations", "16777216"},
			{"/api/2.0/gantry/models/m/versions", "8388608"}, // --max-upload-size
			{"/api/2.0/serving-endpoints", "16777216"},
		} {
			start := time.Now()
			raw := rawExchange(t, addr, "POST "+tc.path+" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"+
				"Expect: 100-continue\r\nContent-Length: 1073741000\r\n\r\n", 5*time.Second)
			status, _, e := apiAnswer(t, raw)
			if status != 413 || e.Code != api.ErrPayloadTooLarge || !strings.Contains(e.Message, "the limit is "+tc.limit) {
				t.Errorf("%s: %d %+v, want 413 naming the limit %s", tc.path, status, e, tc.limit)
			}
			if took := time.Since(start); took > 2*time.Second {
				t.Errorf("%s: the 413 took %s: the server waited for the body", tc.path, took)
			}
		}
	})

	// Chunked bodies have no length to refuse up front: the activator
	// reads up to its limit and stops.
	t.Run("chunked invocation over the limit", func(t *testing.T) {
		req, _ := http.NewRequest("POST", "http://"+addr+"/serving-endpoints/fraud-ep/invocations",
			io.LimitReader(zeros{}, 16<<20+64<<10)) // over by less than what the server drains
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err) // the server answers before the body ends
		}
		defer resp.Body.Close()
		var e api.Error
		json.NewDecoder(resp.Body).Decode(&e)
		if resp.StatusCode != 413 || e.Code != api.ErrPayloadTooLarge {
			t.Errorf("%d %+v, want 413", resp.StatusCode, e)
		}
	})

	// fasthttp's own 400 quoted up to 4 KiB of the raw request, headers
	// included, into the answer and the log.
	t.Run("errors do not echo the request", func(t *testing.T) {
		const token = "dapi-SEKRIT-TOKEN"
		for _, req := range []string{
			"GET /api/2.0/serving-endpoints HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + token + "\r\nbroken header line " + token + "\r\n\r\n",
			"POST /serving-endpoints/fraud-ep/invocations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + token + "\r\nContent-Length: nine\r\n\r\n",
			"GET /\x01" + token + " HTTP/1.1\r\nHost: x\r\n\r\n",
		} {
			raw := rawExchange(t, addr, req, 5*time.Second)
			if strings.Contains(raw, token) {
				t.Errorf("the answer quotes the request: %q", raw)
			}
			status, _, e := apiAnswer(t, raw)
			if status != 400 || e.Code != api.ErrMalformedRequest {
				t.Errorf("%d %+v, want 400 MALFORMED_REQUEST", status, e)
			}
		}
		time.Sleep(100 * time.Millisecond) // the log line follows the answer
		if strings.Contains(dev.log.String(), token) {
			t.Errorf("the log quotes the request:\n%s", dev.log)
		}
	})

	// fasthttp decodes %2f and then removes dot segments, so
	// /serving-endpoints/other/..%2ffraud-ep reached fraud-ep.
	t.Run("encoded slash stays in its segment", func(t *testing.T) {
		for _, path := range []string{
			"/serving-endpoints/other/..%2ffraud-ep/invocations",
			"/serving-endpoints/other/..%2Ffraud-ep/invocations",
			"/serving-endpoints/other%2f..%2ffraud-ep/invocations",
			"/serving-endpoints/other/../fraud-ep/invocations",
			"/serving-endpoints/fraud-ep/served-models/x%2f..%2ffraud-1/invocations",
		} {
			raw := rawExchange(t, addr, fmt.Sprintf("POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"+
				"Authorization: Bearer %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", path, tokenOf(addr), len(body), body), 10*time.Second)
			status, _, e := apiAnswer(t, raw)
			if status != 404 || e.Code != api.ErrResourceDoesNotExist {
				t.Errorf("%s: %d %+v, want 404", path, status, e)
			}
		}
		// An escape of a character a name may hold is the same name.
		raw := rawExchange(t, addr, fmt.Sprintf("POST /serving-endpoints/fraud%%2Dep/invocations HTTP/1.1\r\nHost: x\r\n"+
			"Authorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", tokenOf(addr), len(body), body), 10*time.Second)
		if !strings.HasPrefix(raw, "HTTP/1.1 200") {
			t.Errorf("fraud%%2Dep: %q, want 200", raw)
		}
	})

	// NaN is a missing value; Infinity and 1e999 are a 400 (they were
	// the runtime's 500).
	t.Run("non-finite features", func(t *testing.T) {
		for v, want := range map[string]int{"Infinity": 400, "-Infinity": 400, "1e999": 400, "NaN": 200} {
			b := `{"dataframe_split": {"columns": ["mean_radius","mean_texture","mean_smoothness","mean_concavity",` +
				`"mean_concave_points","worst_texture"], "data": [[` + v + `, 14.9, 0.087, 0.021, 0.056, 16.8]]}}`
			status, _, got := invoke(t, addr, "fraud-ep", "application/json", []byte(b))
			if status != want {
				t.Errorf("%s: %d %s, want %d", v, status, got, want)
			}
		}
	})

	// An upload is streamed to disk: 96 MiB of noise does not take the
	// process's memory up by 96 MiB, and is refused as no tar.gz.
	t.Run("upload is streamed", func(t *testing.T) {
		before := rss(t, dev.cmd.Process.Pid)
		noise := make([]byte, 1<<20)
		rand.Read(noise)
		pr, pw := io.Pipe()
		go func() {
			for range 7 { // 7 MiB: under the 8 MiB --max-upload-size
				pw.Write(noise)
			}
			pw.Close()
		}()
		resp, err := http.Post("http://"+addr+"/api/2.0/gantry/models/noise/versions", "application/gzip", pr)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 400 {
			t.Errorf("noise upload: %d, want 400", resp.StatusCode)
		}
		// And a chunked upload over the limit is cut off at it.
		resp, err = http.Post("http://"+addr+"/api/2.0/gantry/models/noise/versions", "application/gzip",
			io.LimitReader(zeros{}, 96<<20))
		if err == nil {
			var e api.Error
			json.NewDecoder(resp.Body).Decode(&e)
			resp.Body.Close()
			if resp.StatusCode != 413 {
				t.Errorf("96 MiB chunked upload: %d %+v, want 413", resp.StatusCode, e)
			}
		}
		if grew := rss(t, dev.cmd.Process.Pid) - before; grew > 48<<20 {
			t.Errorf("RSS grew by %d MiB during uploads of 7 and 96 MiB", grew>>20)
		}
	})

	// A connection that sends nothing is closed after the header timeout.
	t.Run("header timeout", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "POST /serving-endpoints/fraud-ep/invocations HTTP/1.1\r\nHost: x\r\n")
		c.SetReadDeadline(time.Now().Add(headerTimeout + 10*time.Second))
		start := time.Now()
		io.ReadAll(c)
		if took := time.Since(start); took > headerTimeout+5*time.Second {
			t.Errorf("a request whose headers never end held its connection for %s", took)
		}
	})
}

// zeros is an endless reader of spaces, a body that never ends well.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = ' '
	}
	return len(p), nil
}

// rss is the resident set of process pid, in bytes.
func rss(t testing.TB, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// BenchmarkHostileRSS measures the resident memory of a lean `gantry dev`
// serving one endpoint: idle, then with GANTRY_BENCH_SLOW (default 1,000)
// clients that each claim a 16 MiB invocation body and trickle it a byte
// every 100 ms for 10 s, then with 20 clients that each claim a 1 GiB body
// and send none. It reports the peak RSS of each phase above idle (the
// goal is under 100 MB) and how the server answered. It ignores b.N (run
// it with -benchtime 1x).
func BenchmarkHostileRSS(b *testing.B) {
	_, addr, dev := leanEndpoint(b)
	pid := dev.cmd.Process.Pid
	time.Sleep(2 * time.Second) // let start-up garbage go
	idle := rss(b, pid)
	b.ResetTimer() // it drops metrics reported before it
	b.ReportMetric(float64(idle)/1e6, "idle-MB")

	slow := envInt("GANTRY_BENCH_SLOW", 1000)
	peak, answered := underLoad(b, addr, pid, slow, func(c net.Conn) {
		fmt.Fprintf(c, "POST /serving-endpoints/fraud-ep/invocations HTTP/1.1\r\nHost: x\r\n"+
			"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n", 16<<20)
		for range 100 {
			if _, err := c.Write([]byte{' '}); err != nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	b.ReportMetric(float64(peak-idle)/1e6, "slow-MB")
	b.ReportMetric(float64(answered), "slow-answered")

	peak, answered = underLoad(b, addr, pid, 20, func(c net.Conn) {
		io.WriteString(c, "POST /serving-endpoints/fraud-ep/invocations HTTP/1.1\r\nHost: x\r\n"+
			"Content-Type: application/json\r\nContent-Length: 1073741824\r\n\r\n")
		time.Sleep(5 * time.Second)
	})
	b.ReportMetric(float64(peak-idle)/1e6, "claim-1GiB-MB")
	b.ReportMetric(float64(answered), "claim-answered-413")
	b.ReportMetric(0, "ns/op")
}

// underLoad runs n clients, each on its own connection doing what client
// does, and samples the RSS of pid while they run. It returns the peak and
// how many clients got an answer (413 for the 1 GiB claims; none for the
// trickles, which stop before the body ends).
func underLoad(b *testing.B, addr string, pid, n int, client func(net.Conn)) (peak int64, answered int) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	for range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			client(c)
			c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			buf := make([]byte, 512)
			if k, _ := c.Read(buf); bytes.HasPrefix(buf[:k], []byte("HTTP/1.1 413")) {
				mu.Lock()
				answered++
				mu.Unlock()
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	for {
		if r := rss(b, pid); r > peak {
			peak = r
		}
		select {
		case <-done:
			return peak, answered
		case <-time.After(100 * time.Millisecond):
		}
	}
}
