package activator

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// Held-request benchmark parameters: the target is 10,000 held
// requests of 1 KiB under 200 MB of activator RSS.
const (
	heldRequests = 10_000
	heldBodySize = 1 << 10
)

// BenchmarkHeldRequests measures what holding requests during a cold start
// costs the activator's process: heldRequests requests with heldBodySize
// bodies, each on its own connection, wait in one entity's queue behind a
// real fasthttp server. The clients live in a child process (this test
// binary, running TestHeldClient), so that their sockets and buffers are
// not counted, and so that the two ends of 10,000 connections do not share
// one file descriptor limit.
//
// Reported, as growth from before the requests arrived to while they are
// all held (after a GC): heap-MB (HeapInuse), stack-MB (StackInuse: one
// parked server goroutine per request), rss-MB (VmRSS from
// /proc/self/status), and B/held (RSS growth per request). The cases
// differ in the fasthttp server's settings:
//   - default: fasthttp's defaults (4 KiB read buffer per connection, kept
//     while the handler runs).
//   - reduce-memory: Server.ReduceMemoryUsage, which hands the read buffer
//     back to its pool once the request is read, before the handler runs.
func BenchmarkHeldRequests(b *testing.B) {
	for _, c := range []struct {
		name   string
		reduce bool
	}{{"default", false}, {"reduce-memory", true}} {
		b.Run(c.name, func(b *testing.B) {
			for range b.N {
				heldOnce(b, c.reduce)
			}
		})
	}
}

func heldOnce(b *testing.B, reduce bool) {
	worker := serve(b, func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("application/json")
		ctx.SetBodyString(`{"predictions":[0]}`)
	})
	a := New(Config{Logger: slog.New(slog.DiscardHandler), QueueTimeout: 5 * time.Minute}, newFakeRoutes())
	a.apply(oneEndpoint(1, "ep", nil, coldEntity("m")))

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &fasthttp.Server{
		Handler: a.Handler,
		// Room for every held request plus those being served; fasthttp's
		// default (256 Ki) would do too, it only bounds.
		Concurrency:        2 * heldRequests,
		MaxRequestBodySize: DefaultMaxRequestBodySize + 1,
		ReduceMemoryUsage:  reduce,
	}
	go func() { _ = srv.Serve(ln) }()
	defer func() { _ = srv.Shutdown() }()

	before := measure()
	child := exec.Command(os.Args[0], "-test.run=^TestHeldClient$", "-test.count=1")
	child.Env = append(os.Environ(),
		"GANTRY_HELD_ADDR="+ln.Addr().String(),
		"GANTRY_HELD_N="+strconv.Itoa(heldRequests),
		"GANTRY_HELD_SIZE="+strconv.Itoa(heldBodySize))
	child.Stderr = os.Stderr
	out, err := child.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := child.Start(); err != nil {
		b.Fatal(err)
	}
	lines := bufio.NewScanner(out)
	var report string
	defer func() {
		if err := child.Wait(); err != nil {
			b.Errorf("client process: %v (%s)", err, report)
		}
	}()

	deadline := time.Now().Add(2 * time.Minute)
	for queued(a) < heldRequests {
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d requests held after 2 minutes", queued(a), heldRequests)
		}
		time.Sleep(10 * time.Millisecond)
	}
	held := measure()
	b.ReportMetric(float64(held.heap-before.heap)/1e6, "heap-MB")
	b.ReportMetric(float64(held.stack-before.stack)/1e6, "stack-MB")
	b.ReportMetric(float64(held.rss-before.rss)/1e6, "rss-MB")
	b.ReportMetric(float64(held.rss)/1e6, "rss-total-MB")
	b.ReportMetric(float64(held.rss-before.rss)/heldRequests, "B/held")

	e := readyEntity("m", worker)
	e.Concurrency = 64
	a.apply(oneEndpoint(2, "ep", nil, e))
	for lines.Scan() {
		if r, ok := strings.CutPrefix(lines.Text(), "held-client: "); ok {
			report = r
		}
	}
	if report != fmt.Sprintf("%d ok", heldRequests) {
		b.Errorf("client process reported %q, want %d ok", report, heldRequests)
	}
}

func queued(a *Activator) int {
	n := 0
	for _, s := range a.Stats() {
		n += s.Queued
	}
	return n
}

type memory struct{ heap, stack, rss uint64 }

// measure collects garbage, returns free pages to the OS (so that RSS
// falls back between cases), and reads the process's memory.
func measure() memory {
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return memory{heap: ms.HeapInuse, stack: ms.StackInuse, rss: vmRSS()}
}

// vmRSS is VmRSS of /proc/self/status in bytes; 0 where there is none.
func vmRSS() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// TestHeldClient is BenchmarkHeldRequests' client process; run alone, it
// skips. It opens GANTRY_HELD_N connections to GANTRY_HELD_ADDR, sends one
// invocation with a GANTRY_HELD_SIZE-byte body on each, then reads every
// answer and prints "held-client: N ok" with the number of 200s.
func TestHeldClient(t *testing.T) {
	addr := os.Getenv("GANTRY_HELD_ADDR")
	if addr == "" {
		t.Skip("BenchmarkHeldRequests' client process")
	}
	n, _ := strconv.Atoi(os.Getenv("GANTRY_HELD_N"))
	size, _ := strconv.Atoi(os.Getenv("GANTRY_HELD_SIZE"))
	req := []byte(fmt.Sprintf("POST /serving-endpoints/ep/invocations HTTP/1.1\r\nHost: activator\r\n"+
		"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", size, bytes.Repeat([]byte("1"), size)))

	conns := make([]net.Conn, n)
	var dials sync.WaitGroup
	next := make(chan int)
	for range 32 {
		dials.Go(func() {
			for i := range next {
				c, err := net.DialTimeout("tcp", addr, time.Minute)
				if err != nil {
					t.Errorf("dial %d: %v", i, err)
					continue
				}
				if _, err := c.Write(req); err != nil {
					t.Errorf("send %d: %v", i, err)
				}
				conns[i] = c
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	dials.Wait()

	ok := 0
	for _, c := range conns {
		if c == nil {
			continue
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Minute))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			if resp.StatusCode == http.StatusOK {
				ok++
			} else {
				t.Logf("status %d", resp.StatusCode)
			}
		} else {
			t.Errorf("read: %v", err)
		}
		c.Close()
	}
	fmt.Printf("held-client: %d ok\n", ok)
}
