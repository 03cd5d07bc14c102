package activator

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/deploy/bench/loadgen/load"
	"github.com/gantry/gantry/external/providertest"
)

// BenchmarkExternalOverhead measures what the activator adds in front of a
// provider: the same chat request, the same client and load (64
// connections), sent straight to the provider double and through the
// activator, in one run. It reports p50/p99 latency per request and, for
// a stream, the time to the first event. `make bench-external` runs it.
func BenchmarkExternalOverhead(b *testing.B) {
	base := providertest.Start(b, extKey)
	url, _ := externalActivator(b, api.EndpointRoute{Name: "chat",
		Entities: []api.EntityRoute{extEntity("o", api.ProviderOpenAI, api.TaskChat, "m", base)}})
	body := `{"model": "m", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 16}`
	stream := `{"model": "m", "messages": [{"role": "user", "content": "hello there"}], "stream": true}`
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, MaxConnsPerHost: 64}}
	direct := func(path, b string) *http.Request {
		r, _ := http.NewRequest("POST", base+"/v1/chat/completions", strings.NewReader(b))
		r.Header.Set("Authorization", "Bearer "+extKey)
		return r
	}
	proxied := func(path, b string) *http.Request {
		r, _ := http.NewRequest("POST", url+"/serving-endpoints/chat/invocations", strings.NewReader(b))
		return r
	}
	// Serial and unloaded: one client, one request at a time, each
	// iteration one direct call and one through the activator, so that
	// both see the same moment of a shared machine. added-p50 is the
	// difference of the medians.
	b.Run("serial", func(b *testing.B) {
		one := func(r *http.Request) time.Duration {
			t0 := time.Now()
			resp, err := client.Do(r)
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Fatalf("status %d", resp.StatusCode)
			}
			return time.Since(t0)
		}
		var d, g []time.Duration
		for range b.N {
			d = append(d, one(direct("", body)))
			g = append(g, one(proxied("", body)))
		}
		b.StopTimer()
		report(b, d, "direct-")
		report(b, g, "gantry-")
		slices.Sort(d)
		slices.Sort(g)
		b.ReportMetric(float64((g[len(g)/2] - d[len(d)/2]).Microseconds()), "added-p50-µs")
	})
	for _, c := range []struct {
		name string
		req  func(string, string) *http.Request
	}{{"direct", direct}, {"gantry", proxied}} {
		b.Run(c.name+"/64conns", func(b *testing.B) {
			var mu sync.Mutex
			var lat []time.Duration
			b.SetParallelism(32) // 32 × GOMAXPROCS (2 here) = 64 clients on 64 connections
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				var mine []time.Duration
				for pb.Next() {
					t0 := time.Now()
					resp, err := client.Do(c.req("", body))
					if err != nil {
						b.Error(err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						b.Errorf("status %d", resp.StatusCode)
						return
					}
					mine = append(mine, time.Since(t0))
				}
				mu.Lock()
				lat = append(lat, mine...)
				mu.Unlock()
			})
			b.StopTimer()
			report(b, lat, "")
		})
		b.Run(c.name+"/stream-ttfb", func(b *testing.B) {
			var ttfb []time.Duration
			for range b.N {
				t0 := time.Now()
				resp, err := client.Do(c.req("", stream))
				if err != nil {
					b.Fatal(err)
				}
				br := bufio.NewReader(resp.Body)
				if _, err := br.ReadString('\n'); err != nil {
					b.Fatal(err)
				}
				ttfb = append(ttfb, time.Since(t0))
				io.Copy(io.Discard, br)
				resp.Body.Close()
			}
			report(b, ttfb, "ttfb-")
		})
	}
}

func report(b *testing.B, lat []time.Duration, prefix string) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), prefix+"p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), prefix+"p99-µs")
}

// BenchmarkExternalOpenLoop compares the two paths under the same offered
// load: an open loop (package load: requests scheduled at a fixed rate on
// 64 connections, each latency timed from its scheduled send, so that
// queueing is charged and not hidden) at 5, 10, 25, 50 and 75 % of the
// direct path's capacity, and at 1,036 req/s (LiteLLM's published load),
// after that capacity (and the activator's) is measured in a closed loop.
// Every step runs direct and through Gantry back to back, in turn first,
// for several rounds (GANTRY_BENCH_ROUNDS, default 3; each step
// GANTRY_BENCH_STEP, default 2s), so both see the same moments of a
// shared machine; it reports medians over the rounds and, for the added
// latency and the throughput ratio, the median of the per-round figures.
// b.N is ignored: run it with -benchtime 1x.
func BenchmarkExternalOpenLoop(b *testing.B) {
	rounds, step := 3, 2*time.Second
	if n, err := strconv.Atoi(os.Getenv("GANTRY_BENCH_ROUNDS")); err == nil && n > 0 {
		rounds = n
	}
	if d, err := time.ParseDuration(os.Getenv("GANTRY_BENCH_STEP")); err == nil && d > 0 {
		step = d
	}
	base := providertest.Start(b, extKey)
	url, _ := externalActivator(b, api.EndpointRoute{Name: "chat",
		Entities: []api.EntityRoute{extEntity("o", api.ProviderOpenAI, api.TaskChat, "m", base)}})
	body := []byte(`{"model": "m", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 16}`)
	paths := [2]load.Options{
		{URL: base + "/v1/chat/completions", Headers: [][2]string{{"Authorization", "Bearer " + extKey}}},
		{URL: url + "/serving-endpoints/chat/invocations"},
	}
	names := [2]string{"direct", "gantry"}
	for i := range paths {
		paths[i].Addr = strings.SplitN(strings.TrimPrefix(paths[i].URL, "http://"), "/", 2)[0]
		paths[i].Body, paths[i].Conns, paths[i].Duration, paths[i].Warmup, paths[i].Timeout = body, 64, step, step/4, 10*time.Second
	}
	// both runs one step on each path, in turn first by round.
	both := func(round int, rate float64) (res [2]load.Result) {
		for k := range 2 {
			i := (round + k) % 2
			o := paths[i]
			o.Rate = rate
			res[i] = load.Run(o)
			if res[i].Errors > 0 {
				b.Logf("%s at %.0f req/s: %d errors", names[i], rate, res[i].Errors)
			}
		}
		return res
	}
	median := func(v []float64) float64 {
		v = slices.Clone(v)
		slices.Sort(v)
		if len(v)%2 == 1 {
			return v[len(v)/2]
		}
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	if la, err := os.ReadFile("/proc/loadavg"); err == nil {
		fmt.Printf("load average before: %s\n", strings.TrimSpace(string(la)))
	}
	b.ResetTimer()
	var capd, capg, ratio []float64
	for r := range rounds {
		res := both(r, 0)
		capd, capg = append(capd, res[0].ReqPerSec), append(capg, res[1].ReqPerSec)
		ratio = append(ratio, res[1].ReqPerSec/res[0].ReqPerSec)
		fmt.Printf("round %d closed loop: direct %.0f req/s p50 %.3f ms, gantry %.0f req/s p50 %.3f ms\n",
			r, res[0].ReqPerSec, res[0].P50ms, res[1].ReqPerSec, res[1].P50ms)
	}
	capacity := median(capd)
	b.ReportMetric(capacity, "direct-req/s")
	b.ReportMetric(median(capg), "gantry-req/s")
	b.ReportMetric(median(ratio), "gantry/direct")
	// offer offers rate to both paths for every round and reports the
	// medians as metrics named p + what they are.
	offer := func(p string, rate float64) {
		var p50 [2][]float64
		var p99 [2][]float64
		var add50, add99, lag, addSent []float64
		for r := range rounds {
			res := both(r, rate)
			for i := range 2 {
				p50[i], p99[i] = append(p50[i], res[i].P50ms), append(p99[i], res[i].P99ms)
				lag = append(lag, res[i].LagP50ms)
			}
			add50, add99 = append(add50, res[1].P50ms-res[0].P50ms), append(add99, res[1].P99ms-res[0].P99ms)
			addSent = append(addSent, res[1].SentP50ms-res[0].SentP50ms)
			fmt.Printf("round %d %s (%.0f req/s): direct p50 %.3f p99 %.3f ms (%.0f req/s), gantry p50 %.3f p99 %.3f ms (%.0f req/s), send lag p50 %.3f/%.3f ms, p50 from send %.3f/%.3f ms\n",
				r, strings.TrimSuffix(p, "-"), rate, res[0].P50ms, res[0].P99ms, res[0].ReqPerSec, res[1].P50ms, res[1].P99ms, res[1].ReqPerSec, res[0].LagP50ms, res[1].LagP50ms, res[0].SentP50ms, res[1].SentP50ms)
		}
		b.ReportMetric(median(p50[0])*1000, p+"direct-p50-µs")
		b.ReportMetric(median(p50[1])*1000, p+"gantry-p50-µs")
		b.ReportMetric(median(add50)*1000, p+"added-p50-µs")
		b.ReportMetric(median(p99[0])*1000, p+"direct-p99-µs")
		b.ReportMetric(median(p99[1])*1000, p+"gantry-p99-µs")
		b.ReportMetric(median(add99)*1000, p+"added-p99-µs")
		b.ReportMetric(median(lag)*1000, p+"send-lag-p50-µs")
		// The same difference from the actual sends: the client's timer lag
		// differs between the paths (a busier process wakes its timers
		// sooner), which the scheduled-time figure above includes.
		b.ReportMetric(median(addSent)*1000, p+"added-p50-from-send-µs")
	}
	for _, pct := range []int{5, 10, 25, 50, 75} {
		offer("at"+strconv.Itoa(pct)+"%-", capacity*float64(pct)/100)
	}
	// LiteLLM publishes its overhead (12 ms p50, 43 ms p99) at 1,035.7
	// req/s (PEERS.md §6.1): the same load here, to compare at its own.
	offer("at1036rps-", 1036)
	if la, err := os.ReadFile("/proc/loadavg"); err == nil {
		fmt.Printf("load average after: %s\n", strings.TrimSpace(string(la)))
	}
}
