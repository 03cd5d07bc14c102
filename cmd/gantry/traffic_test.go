package main

// Traffic split under load while the config changes: no request fails, and
// every answer comes from a served entity that a live route named.

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gantry/gantry/api"
)

// answered is one invocation as a client saw it.
type answered struct {
	sent, got time.Time
	status    int
	entity    string
	body      string
}

// steadyLoad runs conns clients invoking endpoint back to back until stop
// is closed, and returns every answer.
func steadyLoad(t *testing.T, addr, endpoint string, body []byte, conns int, stop <-chan struct{}) func() []answered {
	client := &http.Client{Timeout: 60 * time.Second, Transport: tokenTransport{base: &http.Transport{MaxIdleConnsPerHost: conns}}}
	var wg sync.WaitGroup
	results := make([][]answered, conns)
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				a := answered{sent: time.Now()}
				resp, err := client.Post("http://"+addr+"/serving-endpoints/"+endpoint+"/invocations", "application/json", bytes.NewReader(body))
				if err != nil {
					a.status, a.body = -1, err.Error()
				} else {
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					a.status, a.entity, a.body = resp.StatusCode, resp.Header.Get("served-model-name"), string(b)
				}
				a.got = time.Now()
				results[i] = append(results[i], a)
			}
		}()
	}
	return func() []answered {
		wg.Wait()
		client.CloseIdleConnections()
		var all []answered
		for _, r := range results {
			all = append(all, r...)
		}
		return all
	}
}

// switchConfig puts c and waits until the endpoint serves it (or gives up
// with the update's state). It returns when the PUT was sent and when the
// switch was seen, the bounds of the moment the route table changed.
func switchConfig(t *testing.T, c *api.Client, name string, cfg *api.EndpointConfig) (put, seen time.Time) {
	t.Helper()
	before, _, err := c.Endpoints().Get(name, nil)
	if err != nil {
		t.Fatal(err)
	}
	put = time.Now()
	if _, _, err := c.Endpoints().UpdateConfig(name, cfg, nil); err != nil {
		t.Fatalf("update config: %v", err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; {
		ep, _, err := c.Endpoints().Get(name, nil)
		if err != nil {
			t.Fatal(err)
		}
		if ep.Config.ConfigVersion > before.Config.ConfigVersion && ep.State.ConfigUpdate == api.ConfigNotUpdating {
			return put, time.Now()
		}
		if time.Now().After(deadline) || ep.State.ConfigUpdate == api.ConfigUpdateFailed {
			t.Fatalf("config did not switch: state %+v", ep.State)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func entityConfig(names []string, percents []int) *api.EndpointConfig {
	c := &api.EndpointConfig{TrafficConfig: &api.TrafficConfig{}}
	for i, n := range names {
		c.ServedEntities = append(c.ServedEntities, api.ServedEntity{Name: n, EntityName: "fraud", EntityVersion: strings.TrimPrefix(n, "v")})
		c.TrafficConfig.Routes = append(c.TrafficConfig.Routes, api.Route{ServedModelName: n, TrafficPercentage: percents[i]})
	}
	return c
}

func TestTrafficMovesWithoutErrors(t *testing.T) {
	if testing.Short() {
		t.Skip("runs gantry dev and workers under 30 s of load; run without -short")
	}
	bin, addr := buildGantry(t), freeAddr(t)
	startDev(t, bin, addr, t.TempDir())
	// Versions 1, 2 and 3 of one model: entity vN serves version N.
	for range 3 {
		mustCLI(t, bin, addr, "models", "upload", "fraud", filepath.Join(fixtures, "binary"))
	}
	c, _ := api.NewClient(&api.Config{Address: "http://" + addr})
	create := &api.CreateEndpointRequest{Name: "ab", Config: entityConfig([]string{"v2"}, []int{100})}
	if _, _, err := c.Endpoints().Create(create, nil); err != nil {
		t.Fatal(err)
	}
	mustCLI(t, bin, addr, "endpoints", "wait", "ab")

	body, want := oneRow(t)
	stop := make(chan struct{})
	collect := steadyLoad(t, addr, "ab", body, 50, stop)
	start := time.Now()

	// Each step: the routes that are live after it, and when it happened.
	type step struct {
		put, seen time.Time
		live      []string
	}
	steps := []step{{live: []string{"v2"}}}
	for _, s := range []struct {
		names    []string
		percents []int
	}{
		{[]string{"v2", "v3"}, []int{80, 20}},
		{[]string{"v3"}, []int{100}},
		{[]string{"v2"}, []int{100}},
	} {
		time.Sleep(6 * time.Second)
		put, seen := switchConfig(t, c, "ab", entityConfig(s.names, s.percents))
		steps = append(steps, step{put, seen, s.names})
	}
	time.Sleep(time.Until(start.Add(30 * time.Second)))
	close(stop)
	answers := collect()

	bad, wrong := 0, 0
	for _, a := range answers {
		if a.status != http.StatusOK {
			if bad++; bad <= 5 {
				t.Errorf("answer %d after %s: %s", a.status, a.sent.Sub(start), a.body)
			}
			continue
		}
		comparePredictions(t, "answer", []any{want}, []byte(a.body))
		// Live during [sent, got]: every step whose span could overlap it.
		// Step i spans from its PUT to the moment step i+1 was seen.
		allowed := map[string]bool{}
		for i, s := range steps {
			end := time.Now().Add(time.Hour)
			if i+1 < len(steps) {
				end = steps[i+1].seen
			}
			if !s.put.After(a.got) && !a.sent.After(end) {
				for _, n := range s.live {
					allowed[n] = true
				}
			}
		}
		if !allowed[a.entity] {
			if wrong++; wrong <= 5 {
				t.Errorf("answer from %q after %s; live routes then: %v", a.entity, a.sent.Sub(start), allowed)
			}
		}
	}
	if bad > 0 || wrong > 0 {
		t.Fatalf("%d of %d answers were not 200, %d came from an entity no live route named", bad, len(answers), wrong)
	}
	counts := map[string]int{}
	for _, a := range answers {
		counts[a.entity]++
	}
	t.Logf("%d answers in 30 s from 50 clients: %v", len(answers), counts)
	if counts["v3"] == 0 || counts["v2"] == 0 {
		t.Fatalf("answers by entity %v; both v2 and v3 should have served", counts)
	}
}

func TestFailedUpdateKeepsServing(t *testing.T) {
	if testing.Short() {
		t.Skip("runs gantry dev and workers under load; run without -short")
	}
	bin, addr := buildGantry(t), freeAddr(t)
	startDev(t, bin, addr, t.TempDir())
	mustCLI(t, bin, addr, "models", "upload", "fraud", filepath.Join(fixtures, "binary"))
	mustCLI(t, bin, addr, "models", "upload", "fraud", corruptModel(t))
	c, _ := api.NewClient(&api.Config{Address: "http://" + addr})
	if _, _, err := c.Endpoints().Create(&api.CreateEndpointRequest{Name: "ab", Config: entityConfig([]string{"v1"}, []int{100})}, nil); err != nil {
		t.Fatal(err)
	}
	mustCLI(t, bin, addr, "endpoints", "wait", "ab")

	body, _ := oneRow(t)
	stop := make(chan struct{})
	collect := steadyLoad(t, addr, "ab", body, 10, stop)
	time.Sleep(time.Second)
	if _, _, err := c.Endpoints().UpdateConfig("ab", entityConfig([]string{"v1", "v2"}, []int{50, 50}), nil); err != nil {
		t.Fatal(err)
	}
	var ep *api.Endpoint
	for deadline := time.Now().Add(30 * time.Second); ; {
		var err error
		if ep, _, err = c.Endpoints().Get("ab", nil); err != nil {
			t.Fatal(err)
		}
		if ep.State.ConfigUpdate == api.ConfigUpdateFailed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("update state %+v; want UPDATE_FAILED", ep.State)
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(time.Second)
	close(stop)
	answers := collect()
	if !strings.Contains(ep.State.Message, "model.json") || ep.Config.ConfigVersion != 1 || ep.PendingConfig != nil {
		t.Errorf("after the failed update: state %+v, config_version %d, pending %v", ep.State, ep.Config.ConfigVersion, ep.PendingConfig != nil)
	}
	for _, a := range answers {
		if a.status != http.StatusOK || a.entity != "v1" {
			t.Fatalf("answer %d from %q: %s; want every answer 200 from v1", a.status, a.entity, a.body)
		}
	}
	t.Logf("%d answers, all 200 from v1", len(answers))
	// A second update while one is in progress gets 409.
	if _, _, err := c.Endpoints().UpdateConfig("ab", entityConfig([]string{"v1", "v2"}, []int{50, 50}), nil); err != nil {
		t.Fatal(err)
	}
	_, _, err := c.Endpoints().UpdateConfig("ab", entityConfig([]string{"v1"}, []int{100}), nil)
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != api.ErrResourceConflict {
		t.Fatalf("second update during one in progress: %v; want RESOURCE_CONFLICT", err)
	}
}
