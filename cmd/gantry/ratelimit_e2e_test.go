package main

// End to end: the AI gateway's rate limits hold across three `gantry
// activator` processes that share one `gantry scheduler` (the coordinator,
// scheduler/ratelimits.go).

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gantry/gantry/api"
)

func TestRateLimitsThreeActivators(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a scheduler, three activators and a worker as processes; run without -short")
	}
	bin := buildGantry(t)
	schedAddr := freeAddr(t)
	dataDir := t.TempDir()
	startProc(t, bin, schedAddr, "scheduler", "--listen", schedAddr, "--data-dir", dataDir)
	// The activators coordinate with the components' token; the test's
	// calls carry the admin's.
	token := componentsToken(t, dataDir)
	var acts []string
	for i := 0; i < 3; i++ {
		a := freeAddr(t)
		adminTokens.Store(a, tokenOf(schedAddr))
		startProc(t, bin, a, "activator", "--listen", a, "--scheduler", "http://"+schedAddr, "--token", token)
		acts = append(acts, a)
	}
	mustCLI(t, bin, schedAddr, "models", "upload", "binary", filepath.Join(fixtures, "binary"))
	ep := filepath.Join(t.TempDir(), "ep.json")
	writeFile(t, ep, `{"name": "limited", "config": {"served_entities": [{"entity_name": "binary", "entity_version": "1", "workload_size": "Small", "scale_to_zero_enabled": false}]}}`)
	mustCLI(t, bin, schedAddr, "endpoints", "create", "-f", ep, "--wait")

	const limit = 300
	c, _ := api.NewClient(&api.Config{Address: "http://" + schedAddr})
	if _, err := c.Endpoints().PutAIGateway("limited", &api.AIGateway{RateLimits: []api.RateLimit{
		{Calls: limit, Key: "endpoint", RenewalPeriod: "minute"},
	}}, nil); err != nil {
		t.Fatal(err)
	}
	body, _ := oneRow(t)
	client := &http.Client{Transport: tokenTransport{base: &http.Transport{MaxIdleConnsPerHost: 64}}, Timeout: 30 * time.Second}
	call := func(act string) answer {
		resp, err := client.Post("http://"+act+"/serving-endpoints/limited/invocations", "application/json", bytes.NewReader(body))
		if err != nil {
			return answer{status: -1, body: []byte(err.Error())}
		}
		var b bytes.Buffer
		b.ReadFrom(resp.Body)
		resp.Body.Close()
		return answer{status: resp.StatusCode, body: b.Bytes(), header: resp.Header}
	}
	// The limits reach every activator with the route table; until then
	// a call passes unlimited, and the burst must not start before.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var rt api.RouteTable
		if r, err := client.Get("http://" + schedAddr + "/api/2.0/gantry/routes"); err == nil {
			json.NewDecoder(r.Body).Decode(&rt)
			r.Body.Close()
		}
		if len(rt.Endpoints) == 1 && len(rt.Endpoints[0].RateLimits) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the route table never carried the limit")
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // the activators follow the table in milliseconds

	// One burst inside one window: start after a minute boundary when the
	// current window has under 25 s left.
	if left := time.Until(time.Now().Truncate(time.Minute).Add(time.Minute)); left < 25*time.Second {
		time.Sleep(left + 100*time.Millisecond)
	}
	const clients, each = 24, 25 // 600 calls, twice the limit
	var ok, limited atomic.Int64
	var mu sync.Mutex
	var others []string
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < each; j++ {
				a := call(acts[(i+j)%3])
				switch a.status {
				case 200:
					ok.Add(1)
				case 429:
					limited.Add(1)
					var e api.Error
					json.Unmarshal(a.body, &e)
					ra, _ := strconv.Atoi(a.header.Get("Retry-After"))
					if e.Code != api.ErrRequestLimitExceeded || !strings.Contains(e.Message, "the endpoint's rate limit of 300 calls per minute") || ra < 1 || ra > 60 {
						mu.Lock()
						others = append(others, fmt.Sprintf("429 %s Retry-After %q", a.body, a.header.Get("Retry-After")))
						mu.Unlock()
					}
				default:
					mu.Lock()
					others = append(others, fmt.Sprintf("%d %s", a.status, a.body))
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	t.Logf("3 activators, %d calls in %s, limit %d per minute: %d let through (overshoot %d, usable %.1f%%), %d refused with 429",
		clients*each, took.Round(time.Millisecond), limit, ok.Load(), max(ok.Load()-limit, 0), 100*float64(min(ok.Load(), limit))/limit, limited.Load())
	if len(others) > 0 {
		t.Fatalf("%d unexpected answers, first: %s", len(others), others[0])
	}
	if ok.Load() > limit {
		t.Fatalf("overshoot: %d calls over the limit of %d", ok.Load()-limit, limit)
	}
	if float64(ok.Load()) < 0.95*limit {
		t.Fatalf("only %d of the limit's %d calls were usable", ok.Load(), limit)
	}
}
