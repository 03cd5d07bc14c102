package main

// The soak test: every component a process of its own (scheduler on the
// Nomad API double, two activators, autoscaler, logger, broker, ClickHouse),
// clients on three endpoints, and faults in turn while they run. `make soak`
// runs it for 10 minutes with 32 clients; `make test` runs a short version
// (GANTRY_SOAK_DURATION, GANTRY_SOAK_CLIENTS change both).

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/internal/nomadtest"
	"github.com/gantry/gantry/loggers/tables"
	nomadapi "github.com/hashicorp/nomad/api"
)

// nomadDoubleEnv makes the test binary, started again as a child, run the
// Nomad API double instead of the tests, so that the soak test can SIGSTOP
// it the way a Nomad leader pauses.
const nomadDoubleEnv = "GANTRY_TEST_NOMAD_DOUBLE"

// runNomadDouble serves the Nomad API double until SIGTERM, printing its
// URL on the first line of stdout. TestMain calls it in the child.
func runNomadDouble() {
	srv, err := nomadtest.New(nomadtest.Config{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(srv.URL)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	srv.Close() // stops the allocations' worker processes
	os.Exit(0)
}

// startNomadDouble starts the double as a child process.
func startNomadDouble(t *testing.T) (*exec.Cmd, string) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), nomadDoubleEnv+"=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGCONT)
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	})
	line := make([]byte, 0, 64)
	buf := make([]byte, 1)
	for len(line) == 0 || line[len(line)-1] != '\n' {
		if _, err := out.Read(buf); err != nil {
			t.Fatalf("nomad double: %v", err)
		}
		line = append(line, buf[0])
	}
	go io.Copy(io.Discard, out)
	return cmd, strings.TrimSpace(string(line))
}

// soakOutcome is what one client request ended as.
type soakOutcome struct {
	id       string // client_request_id
	endpoint string
	status   int // 0: a transport error
	retry    bool
	via      int // activator index
	at       time.Time
	err      string
}

type soak struct {
	bin, dataDir, schedAddr string
	nomadURL                string
	acts                    [2]string
	sched                   *proc
	act                     [2]*proc
	mu                      sync.Mutex
	// kills[i] are the times activator i was killed.
	kills     [2][]time.Time
	brokerOff [2]time.Time // when the broker was down: from, to
	outcomes  []soakOutcome
	reads     []time.Duration
}

func soakSettings() (time.Duration, int) {
	d, clients := 60*time.Second, 8
	if v := os.Getenv("GANTRY_SOAK_DURATION"); v != "" {
		if p, err := time.ParseDuration(v); err == nil {
			d = p
		}
	}
	if v := os.Getenv("GANTRY_SOAK_CLIENTS"); v != "" {
		if n, err := strconv.Atoi(v); err == nil {
			clients = n
		}
	}
	return d, clients
}

func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("runs every component as a process with faults; run without -short")
	}
	duration, clients := soakSettings()
	cycle := min(time.Minute, duration/3) // scale to zero and back, split moves
	r := startStores(t)
	nomad, nomadURL := startNomadDouble(t)
	s := &soak{bin: r.bin, dataDir: t.TempDir(), schedAddr: freeAddr(t), nomadURL: nomadURL}
	s.startScheduler(t, r)
	asc := freeAddr(t)
	startProc(t, s.bin, asc, append([]string{"autoscaler", "--listen", asc, "--scheduler", "http://" + s.schedAddr, "--token", tokenOf(s.schedAddr)}, shortWindows...)...)
	for i := range s.acts {
		s.acts[i] = freeAddr(t)
		s.startActivator(t, i, r, asc)
	}
	logger := freeAddr(t)
	startProc(t, s.bin, logger, "logger", "--listen", logger, "--kafka-brokers", r.brokerAddr, "--clickhouse", r.ch.Addr(), "--kafka-session-timeout", "2s")

	mustCLI(t, s.bin, s.schedAddr, "models", "upload", "binary", filepath.Join(fixtures, "binary"))
	for _, ep := range []string{
		`{"name": "steady", "config": {"served_entities": [{"entity_name": "binary", "entity_version": "1", "workload_size": "Small"}], ` + soakCapture("steady") + `}}`,
		`{"name": "zero", "config": {"served_entities": [{"entity_name": "binary", "entity_version": "1", "workload_size": "Small", "scale_to_zero_enabled": true}], ` + soakCapture("zero") + `}}`,
		`{"name": "split", "config": {"served_entities": [{"name": "a", "entity_name": "binary", "entity_version": "1", "workload_size": "Small"}, {"name": "b", "entity_name": "binary", "entity_version": "1", "workload_size": "Small"}], ` +
			`"traffic_config": {"routes": [{"served_model_name": "a", "traffic_percentage": 80}, {"served_model_name": "b", "traffic_percentage": 20}]}, ` + soakCapture("split") + `}}`,
	} {
		f := filepath.Join(t.TempDir(), "ep.json")
		writeFile(t, f, ep)
		mustCLI(t, s.bin, s.schedAddr, "endpoints", "create", "-f", f, "--wait", "--timeout", "2m")
	}

	ctx, stop := context.WithTimeout(context.Background(), duration)
	defer stop()
	start := time.Now()
	var wg sync.WaitGroup
	body, _ := oneRow(t)
	for c := range clients {
		wg.Add(1)
		go func() { defer wg.Done(); s.client(ctx, c, body, start, cycle) }()
	}
	wg.Add(2)
	go func() { defer wg.Done(); s.readAPI(ctx) }()
	go func() { defer wg.Done(); s.moveSplit(ctx, t, cycle) }()

	// The faults, in turn, spread over the run.
	step := duration / 6
	pause := min(30*time.Second, step/2)
	fault := func(k int, what string, do func()) {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(start.Add(time.Duration(k) * step))):
		}
		t.Logf("%s: %s", time.Since(start).Round(time.Second), what)
		do()
	}
	fault(1, "kill -9 activator 0", func() {
		s.mu.Lock()
		s.kills[0] = append(s.kills[0], time.Now())
		s.mu.Unlock()
		s.act[0].cmd.Process.Kill()
		s.act[0].cmd.Wait()
		time.Sleep(3 * time.Second)
		s.startActivator(t, 0, r, asc)
	})
	fault(2, "kill -9 the scheduler, start it again", func() {
		s.sched.cmd.Process.Kill()
		s.sched.cmd.Wait()
		time.Sleep(time.Second)
		s.startScheduler(t, r)
	})
	fault(3, fmt.Sprintf("SIGSTOP the Nomad API for %s", pause), func() {
		nomad.Process.Signal(syscall.SIGSTOP)
		time.Sleep(pause)
		nomad.Process.Signal(syscall.SIGCONT)
	})
	fault(4, "restart ClickHouse", func() {
		r.ch.Stop()
		if err := r.ch.Start(context.Background()); err != nil {
			t.Error(err)
		}
	})
	fault(5, "restart the broker", func() {
		s.mu.Lock()
		s.brokerOff[0] = time.Now()
		s.mu.Unlock()
		r.killBroker()
		time.Sleep(time.Second)
		r.startBroker(t)
		s.mu.Lock()
		s.brokerOff[1] = time.Now()
		s.mu.Unlock()
	})
	wg.Wait()
	s.report(t, r)
	s.checkOrphans(t)
}

func soakCapture(prefix string) string {
	return fmt.Sprintf(`"auto_capture_config": {"catalog_name": "soak", "schema_name": "t", "table_name_prefix": %q, "enabled": true}`, prefix)
}

func (s *soak) startScheduler(t *testing.T, r *rig) {
	s.sched = startProc(t, s.bin, s.schedAddr, "scheduler", "--listen", s.schedAddr, "--data-dir", s.dataDir,
		"--clickhouse", r.ch.Addr(), "--driver", "nomad", "--nomad-addr", s.nomadURL,
		"--task-driver", "raw_exec", "--worker-binary", s.bin)
}

func (s *soak) startActivator(t *testing.T, i int, r *rig, asc string) {
	p := startProc(t, s.bin, s.acts[i], "activator", "--listen", s.acts[i], "--scheduler", "http://"+s.schedAddr,
		"--autoscaler", "http://"+asc, "--kafka-brokers", r.brokerAddr, "--token", tokenOf(s.schedAddr))
	s.mu.Lock()
	s.act[i] = p
	s.mu.Unlock()
}

// client sends requests until ctx ends: to the endpoint c picks, on the
// activator c picks, trying the other activator when that one is down.
// The zero endpoint rests in the second half of each cycle, so that it
// scales to zero and back every cycle.
func (s *soak) client(ctx context.Context, c int, body []byte, start time.Time, cycle time.Duration) {
	hc := &http.Client{Timeout: 150 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 2}}
	defer hc.CloseIdleConnections()
	ep := []string{"steady", "zero", "split"}[c%3]
	for n := 0; ctx.Err() == nil; n++ {
		if ep == "zero" && time.Since(start)%cycle > cycle/2 {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		id := fmt.Sprintf("c%d-%d", c, n)
		var req map[string]any
		json.Unmarshal(body, &req)
		req["client_request_id"] = id
		b, _ := json.Marshal(req)
		for try, via := 0, (c+n)%2; try < 2; try, via = try+1, 1-via {
			o := soakOutcome{id: id, endpoint: ep, via: via, at: time.Now()}
			hr, _ := http.NewRequest("POST", "http://"+s.acts[via]+"/serving-endpoints/"+ep+"/invocations", bytes.NewReader(b))
			hr.Header.Set("Content-Type", "application/json")
			hr.Header.Set("Authorization", "Bearer "+tokenOf(s.schedAddr))
			resp, err := hc.Do(hr)
			if err != nil {
				o.err = err.Error()
			} else {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				o.status, o.retry = resp.StatusCode, resp.Header.Get("Retry-After") != ""
			}
			s.mu.Lock()
			s.outcomes = append(s.outcomes, o)
			s.mu.Unlock()
			if err == nil {
				break
			}
			id += "-retry" // a new request: the first may have been captured
			req["client_request_id"] = id
			b, _ = json.Marshal(req)
		}
		time.Sleep(20 * time.Millisecond) // 2 cores: leave room for the servers
	}
}

// readAPI times API reads while the scheduler runs.
func (s *soak) readAPI(ctx context.Context) {
	hc := &http.Client{Timeout: 10 * time.Second}
	for ctx.Err() == nil {
		t0 := time.Now()
		resp, err := hc.Get("http://" + s.schedAddr + "/api/2.0/serving-endpoints")
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				s.mu.Lock()
				s.reads = append(s.reads, time.Since(t0))
				s.mu.Unlock()
			}
		} // refused: the scheduler is being restarted
		time.Sleep(100 * time.Millisecond)
	}
}

// moveSplit flips the split endpoint's percentages every cycle.
func (s *soak) moveSplit(ctx context.Context, t *testing.T, cycle time.Duration) {
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-time.After(cycle):
		}
		a := []int{20, 80}[i%2]
		cfg := fmt.Sprintf(`{"served_entities": [{"name": "a", "entity_name": "binary", "entity_version": "1", "workload_size": "Small"}, {"name": "b", "entity_name": "binary", "entity_version": "1", "workload_size": "Small"}], `+
			`"traffic_config": {"routes": [{"served_model_name": "a", "traffic_percentage": %d}, {"served_model_name": "b", "traffic_percentage": %d}]}, %s}`, a, 100-a, soakCapture("split"))
		f := filepath.Join(t.TempDir(), "split.json")
		writeFile(t, f, cfg)
		if out, err := cli(t, s.bin, s.schedAddr, "endpoints", "update-config", "split", "-f", f); err != nil {
			t.Logf("move the split (the scheduler may be restarting): %v %s", err, out)
		}
	}
}

// report checks every outcome and prints the figures.
func (s *soak) report(t *testing.T, r *rig) {
	s.mu.Lock()
	defer s.mu.Unlock()
	byStatus := map[string]int{}
	var bad []soakOutcome
	ok := map[string]soakOutcome{}
	for _, o := range s.outcomes {
		switch {
		case o.status == 200:
			byStatus["200"]++
			ok[o.id] = o
		case (o.status == 503 || o.status == 504) && o.retry:
			byStatus[fmt.Sprintf("%d with Retry-After", o.status)]++
		case o.status == 0 && s.killedNear(o):
			byStatus["connection error from the killed activator"]++
		default:
			byStatus[fmt.Sprintf("other: %d %s", o.status, o.err)]++
			bad = append(bad, o)
		}
	}
	for k, v := range byStatus {
		t.Logf("answers %s: %d", k, v)
	}
	if len(bad) > 0 {
		t.Errorf("%d answers were neither 200 nor a documented retryable error; first: %+v", len(bad), bad[0])
	}
	if len(ok) == 0 {
		t.Fatal("no request succeeded")
	}

	// Every 200 has exactly one row, once the pipeline has caught up.
	rows := map[string]int{}
	// read counts rows per client_request_id, a page of tables.MaxRows at
	// a time (a query answers no more): 10 minutes of load is ~700k ids.
	read := func() {
		clear(rows)
		for _, ep := range []string{"steady", "zero", "split"} {
			after := ""
			for {
				res, err := r.db.Query(context.Background(), fmt.Sprintf("SELECT client_request_id, count() FROM `soak_t`.`%s_payload` FINAL "+
					"WHERE client_request_id > ? GROUP BY client_request_id ORDER BY client_request_id LIMIT %d", ep, tables.MaxRows), after)
				if err != nil {
					t.Logf("read %s: %v", ep, err)
					break
				}
				for _, row := range res.Rows {
					n, _ := strconv.Atoi(row[1])
					rows[row[0]] += n
					after = row[0]
				}
				if len(res.Rows) < tables.MaxRows {
					break
				}
			}
		}
	}
	// Wait until nothing is missing, or nothing more arrived for 15 s.
	var missing []string
	last, lastChange := -1, time.Now()
	for {
		read()
		missing = missing[:0]
		for id := range ok {
			if rows[id] == 0 {
				missing = append(missing, id)
			}
		}
		if len(missing) != last {
			last, lastChange = len(missing), time.Now()
		}
		if len(missing) == 0 || time.Since(lastChange) > 15*time.Second {
			break
		}
		time.Sleep(time.Second)
	}
	var lost, unexplained []string
	for _, id := range missing {
		// Records an activator holds when it is killed, or that it drops
		// while the broker is down (counted in gantry_capture_dropped_total),
		// are lost by design: capture never makes a client wait.
		if o := ok[id]; s.killedNear(o) || s.brokerNear(o) {
			lost = append(lost, id)
		} else {
			unexplained = append(unexplained, id)
		}
	}
	var dup []string
	for id, n := range rows {
		if n > 1 {
			dup = append(dup, id)
		}
	}
	t.Logf("200s: %d; with exactly one row: %d; lost around a kill or the broker restart: %d", len(ok), len(ok)-len(missing), len(lost))
	if len(unexplained) > 0 {
		sort.Strings(unexplained)
		t.Errorf("%d answered requests have no row in the inference tables; first: %+v", len(unexplained), ok[unexplained[0]])
	}
	if len(dup) > 0 {
		t.Errorf("%d requests have more than one row (read with FINAL); first: %s", len(dup), dup[0])
	}

	slices.Sort(s.reads)
	if len(s.reads) == 0 {
		t.Fatal("no API read succeeded")
	}
	p50, p99 := s.reads[len(s.reads)/2], s.reads[len(s.reads)*99/100]
	t.Logf("API reads: %d, p50 %s, p99 %s, max %s", len(s.reads), p50, p99, s.reads[len(s.reads)-1])
	// What the test is for: no read waits on the orchestrator, whose calls
	// hang for the whole SIGSTOP (before the planner split, reads waited
	// on the scheduler's lock for as long). The 100 ms p99 target is
	// asserted by make soak, which runs alone; the short version shares 2
	// cores with every other package's tests, so it asserts only that no
	// read stalled.
	if max := s.reads[len(s.reads)-1]; max > 2*time.Second {
		t.Errorf("the slowest API read took %s: a read waited on something", max)
	}
	if os.Getenv("GANTRY_SOAK_DURATION") != "" && p99 > 100*time.Millisecond {
		t.Errorf("API reads p99 = %s, want under 100 ms throughout", p99)
	}
}

// killedNear reports whether o went to an activator within 2 s before it
// was killed or while it was down.
func (s *soak) killedNear(o soakOutcome) bool {
	for _, k := range s.kills[o.via] {
		if o.at.After(k.Add(-2*time.Second)) && o.at.Before(k.Add(5*time.Second)) {
			return true
		}
	}
	return false
}

// brokerNear reports whether o was answered while the broker was down,
// or in the second before.
func (s *soak) brokerNear(o soakOutcome) bool {
	from, to := s.brokerOff[0], s.brokerOff[1]
	return !from.IsZero() && o.at.After(from.Add(-time.Second)) && o.at.Before(to.Add(5*time.Second))
}

// checkOrphans asks Nomad for its jobs: each must be the deployment of a
// stored endpoint (a deployment's ID is its job's ID).
func (s *soak) checkOrphans(t *testing.T) {
	nc, err := nomadapi.NewClient(&nomadapi.Config{Address: s.nomadURL})
	if err != nil {
		t.Fatal(err)
	}
	c, _ := api.NewClient(&api.Config{Address: "http://" + s.schedAddr})
	var orphans []string
	ok := func() bool {
		owned := map[string]bool{}
		eps, _, err := c.Endpoints().List(nil)
		if err != nil {
			return false
		}
		for _, ep := range eps {
			specs, err := c.Endpoints().DeploymentSpecs(ep.Name, nil)
			if err != nil {
				return false
			}
			for _, d := range specs {
				owned[d.ID] = true
			}
		}
		jobs, _, err := nc.Jobs().List(nil)
		if err != nil {
			return false
		}
		orphans = orphans[:0]
		for _, j := range jobs {
			if !owned[j.ID] && j.Status != "dead" {
				orphans = append(orphans, j.ID)
			}
		}
		return len(orphans) == 0
	}
	deadline := time.Now().Add(60 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("Nomad jobs that no endpoint owns: %v", orphans)
		}
		time.Sleep(time.Second)
	}
}
