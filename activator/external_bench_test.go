package activator

import (
	"bufio"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gantry/gantry/api"
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
