package main

import (
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/gantry/gantry/api"
)

// minimalWindows are the shortest the decider accepts, so that an idle
// entity is back at zero within seconds between trials.
var minimalWindows = []string{"--stable-window", "1s", "--panic-window", "1s", "--scale-to-zero-grace", "0s"}

// BenchmarkColdStart measures zero to first response with the local
// driver: for each trial it waits until the entity has scaled to zero, then
// times one request. It ignores b.N (run it with -benchtime 1x); trials
// come from GANTRY_BENCH_TRIALS (default 20).
func BenchmarkColdStart(b *testing.B) {
	trials := envInt("GANTRY_BENCH_TRIALS", 20)
	addr, c := benchEndpoint(b, "cold-ep")
	coldStarts(b, addr, c, "cold-ep", trials)
}

// coldStarts times trials requests to endpoint at addr, each after the
// endpoint's entity has scaled to zero, and reports the percentiles.
func coldStarts(b *testing.B, addr string, c *api.Client, endpoint string, trials int) {
	body, want := oneRow(b)
	var took []time.Duration
	for i := 0; i < trials; i++ {
		waitEntity(b, c, endpoint, "scaled to zero", time.Minute, scaledToZero)
		a := burst(b, "http://"+addr+"/serving-endpoints/"+endpoint+"/invocations", body, 1)[0]
		if a.status != 200 {
			b.Fatalf("trial %d: %d %s", i, a.status, a.body)
		}
		comparePredictions(b, "cold start", []any{want}, a.body)
		took = append(took, a.took)
	}
	reportPercentiles(b, took)
}

// BenchmarkColdBurst sends GANTRY_BENCH_BURST (default 1,000) concurrent
// requests to an entity at zero and reports how many succeeded and the
// latency percentiles.
func BenchmarkColdBurst(b *testing.B) {
	n := envInt("GANTRY_BENCH_BURST", 1000)
	addr, c := benchEndpoint(b, "burst-ep")
	body, _ := oneRow(b)
	waitEntity(b, c, "burst-ep", "scaled to zero", time.Minute, scaledToZero)
	answers := burst(b, "http://"+addr+"/serving-endpoints/burst-ep/invocations", body, n)
	var took []time.Duration
	ok := 0
	for _, a := range answers {
		if a.status == 200 {
			ok++
		}
		took = append(took, a.took)
	}
	b.ReportMetric(float64(ok), "succeeded")
	b.ReportMetric(float64(n-ok), "failed")
	reportPercentiles(b, took)
}

func benchEndpoint(b *testing.B, name string) (string, *api.Client) {
	bin := buildGantry(b)
	addr := freeAddr(b)
	startDev(b, bin, addr, b.TempDir(), minimalWindows...)
	c, _ := api.NewClient(&api.Config{Address: "http://" + addr})
	mustCLI(b, bin, addr, "models", "upload", "binary", filepath.Join(fixtures, "binary"))
	mustCLI(b, bin, addr, "endpoints", "create", "-f", endpointFile(b, name, "binary", "1", "Small"), "--wait")
	b.ResetTimer()
	return addr, c
}

// reportPercentiles replaces ns/op, which means nothing here, with the
// latency percentiles of the trials.
func reportPercentiles(b *testing.B, took []time.Duration) {
	sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
	at := func(p float64) float64 { // nearest rank: p99 of 20 trials is the slowest
		i := int(math.Ceil(p*float64(len(took)))) - 1
		return float64(took[max(0, i)].Microseconds()) / 1000
	}
	b.ReportMetric(at(0.5), "p50-ms")
	b.ReportMetric(at(0.99), "p99-ms")
	b.ReportMetric(float64(len(took)), "trials")
	b.ReportMetric(0, "ns/op")
}

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}
