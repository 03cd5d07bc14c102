package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/worker/llm"
	"golang.org/x/sys/unix"
)

// BenchmarkLLMOverhead measures what the activator costs a GGUF model's
// streams: tokens per second and time to first token of the same greedy
// requests (stories260K, 128 tokens each) sent three ways in the same
// run, interleaved round by round (each round starting with the next way)
// so that the machine's other load falls on all three alike:
//
//   - runtime: llm.Model.Generate in this process, no HTTP;
//   - worker: the worker process's /invocations, straight (the runtime
//     behind its own HTTP server);
//   - activator: /serving-endpoints/{name}/invocations through gantry dev
//     to that same worker.
//
// Each round runs 1 and then 8 concurrent streams per way, in two
// placements:
//
//   - shared: every process may run on every core, as on a laptop (its
//     rounds first, before anything was pinned). The
//     kernel wakes a task near the task that woke it, so the activator's
//     wakeups (one per token) often land on the core that generates and
//     the generation waits for them;
//   - own core: the worker alone on the last core, everything else on the
//     others, as a Nomad client runs a replica that reserves its cores
//     (`resources { cores = N }`, what GGUF jobs ask for).
//
// It prints the medians over GANTRY_BENCH_ROUNDS rounds (default 7) and
// the ratios activator/worker; it ignores b.N (run it with -benchtime 1x).
func BenchmarkLLMOverhead(b *testing.B) {
	rounds := envInt("GANTRY_BENCH_ROUNDS", 7)
	const maxTokens = 128
	libs := llamaLibDir(b)
	direct, err := llm.Open(filepath.Join(storiesDir, "model.gguf"), llm.Config{LibDir: libs, Threads: 1})
	if err != nil {
		b.Fatal(err)
	}
	defer direct.Close()

	bin, addr, dataDir := buildGantry(b), freeAddr(b), b.TempDir()
	dev := startDev(b, bin, addr, dataDir, "--llama-lib-dir", libs, "--logger=false")
	mustCLI(b, bin, addr, "models", "upload", "stories", storiesDir)
	p := filepath.Join(b.TempDir(), "ep.json")
	writeFile(b, p, `{"name": "llm", "config": {"served_entities": [{"entity_name": "stories", "entity_version": "1",
		"min_provisioned_concurrency": 8, "max_provisioned_concurrency": 8, "replica_concurrency": 8}]}}`)
	mustCLI(b, bin, addr, "endpoints", "create", "-f", p, "--wait")
	c, _ := api.NewClient(&api.Config{Address: "http://" + addr})
	rt, _, err := c.Routes().Get(nil)
	if err != nil {
		b.Fatal(err)
	}
	var worker, secret string
	for _, ep := range rt.Endpoints {
		if ep.Name == "llm" && len(ep.Entities[0].Replicas) == 1 {
			worker, secret = ep.Entities[0].Replicas[0].Addr, ep.Entities[0].Secret
		}
	}
	if worker == "" {
		b.Fatal("no replica")
	}
	// The CPUs this process may use (taskset or a cpuset may have left it
	// fewer than the machine's), and so may its children.
	var all unix.CPUSet
	if err := unix.SchedGetaffinity(0, &all); err != nil {
		b.Fatal(err)
	}
	var cpus []int
	for c := range len(all) * 64 {
		if all.IsSet(c) {
			cpus = append(cpus, c)
		}
	}
	placements := []placement{{name: "shared"}}
	if len(cpus) >= 2 {
		workerPID := childListening(b, dev.cmd.Process.Pid, worker)
		own, rest := cpuSet(cpus[len(cpus)-1:]), cpuSet(cpus[:len(cpus)-1])
		placements = append(placements, placement{name: "own core", pins: map[int]*unix.CPUSet{
			workerPID: own, dev.cmd.Process.Pid: rest, os.Getpid(): rest}})
		for _, pid := range children(dev.cmd.Process.Pid) {
			if pid != workerPID {
				placements[1].pins[pid] = rest // ClickHouse, when dev runs one
			}
		}
	}
	defer placements[0].apply(b, placements[1:], &all)

	prompt, err := direct.FormatChat([]llm.Message{{Role: "user", Content: "Once upon"}})
	if err != nil {
		b.Fatal(err)
	}
	body := chatBody("Once upon", maxTokens, true)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}, Timeout: time.Minute}
	type way struct {
		name string
		one  func() (ttft time.Duration, tokens int, err error)
	}
	overHTTP := func(url string, secret string) func() (time.Duration, int, error) {
		return func() (time.Duration, int, error) {
			req, _ := http.NewRequest("POST", url, strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			if secret != "" {
				req.Header.Set("X-Gantry-Worker-Secret", secret)
			} else if tok := tokenOf(addr); tok != "" {
				req.Header.Set("Authorization", "Bearer "+tok)
			}
			start := time.Now()
			resp, err := client.Do(req)
			if err != nil {
				return 0, 0, err
			}
			defer resp.Body.Close()
			if resp.StatusCode != 200 {
				return 0, 0, fmt.Errorf("status %d", resp.StatusCode)
			}
			var ttft time.Duration
			tokens := 0
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				line := sc.Text()
				if ttft == 0 && strings.Contains(line, `"content":"`) && !strings.Contains(line, `"content":""`) {
					ttft = time.Since(start)
				}
				if i := strings.Index(line, `"completion_tokens":`); i >= 0 {
					fmt.Sscanf(line[i+len(`"completion_tokens":`):], "%d", &tokens)
				}
				if line == "data: [DONE]" {
					return ttft, tokens, nil
				}
			}
			return 0, 0, fmt.Errorf("stream ended without [DONE]: %v", sc.Err())
		}
	}
	ways := []way{
		{"runtime", func() (time.Duration, int, error) {
			start := time.Now()
			var ttft time.Duration
			res, err := direct.Generate(context.Background(), llm.Request{Prompt: prompt, MaxTokens: maxTokens}, func(string) error {
				if ttft == 0 {
					ttft = time.Since(start)
				}
				return nil
			})
			return ttft, res.CompletionTokens, err
		}},
		{"worker", overHTTP("http://"+worker+"/invocations", secret)},
		{"activator", overHTTP("http://"+addr+"/serving-endpoints/llm/invocations", "")},
	}
	// run sends n streams at once and returns the tokens per second of
	// all of them together and their median time to first token. It adds
	// the CPU time gantry dev's process (the activator, with the
	// scheduler idle; not the worker, a process of its own) spent meanwhile
	// to devCPU, and the tokens to devTokens.
	devCPU, devTokens := map[key]time.Duration{}, map[key]int{}
	run := func(w way, n int, at string) (float64, time.Duration) {
		cpu0 := processCPU(b, dev.cmd.Process.Pid)
		var wg sync.WaitGroup
		ttfts := make([]time.Duration, n)
		tokens := make([]int, n)
		start := time.Now()
		for i := range n {
			wg.Go(func() {
				var err error
				if ttfts[i], tokens[i], err = w.one(); err != nil {
					b.Error(w.name, err)
				}
			})
		}
		wg.Wait()
		total := 0
		for _, t := range tokens {
			total += t
		}
		k := key{at, w.name, 0}
		devCPU[k] += processCPU(b, dev.cmd.Process.Pid) - cpu0
		devTokens[k] += total
		return float64(total) / time.Since(start).Seconds(), median(ttfts)
	}
	tps := map[key][]float64{}
	ttft := map[key][]time.Duration{}
	for _, w := range ways { // warm each way's connections and caches
		run(w, 8, "")
	}
	clear(devCPU)
	clear(devTokens)
	// The placements take their rounds one after the other: a thread
	// unpinned stays on the core it was pinned to until the kernel has a
	// reason to move it, so "shared" after "own core" would not be shared.
	for i, p := range placements {
		p.apply(b, placements[:i], &all)
		for r := range rounds {
			for _, n := range []int{1, 8} {
				// Each round starts with the next way: the one that follows
				// an idle spell of the worker's core pays its wakeup.
				for j := range ways {
					w := ways[(r+j)%len(ways)]
					k := key{p.name, w.name, n}
					rate, first := run(w, n, p.name)
					tps[k], ttft[k] = append(tps[k], rate), append(ttft[k], first)
				}
			}
		}
	}
	out := &strings.Builder{}
	fmt.Fprintf(out, "stories260K, %d tokens per stream, greedy, medians of %d rounds\n", maxTokens, rounds)
	for _, p := range placements {
		fmt.Fprintf(out, "\nplacement: %s\n%-10s %8s %14s %14s\n", p.name, "way", "streams", "tokens/s", "TTFT")
		// The metrics of the shared placement keep their first names.
		prefix := strings.ReplaceAll(p.name, " ", "-") + "-"
		if p.name == "shared" {
			prefix = ""
		}
		for _, n := range []int{1, 8} {
			for _, w := range ways {
				k := key{p.name, w.name, n}
				fmt.Fprintf(out, "%-10s %8d %14.0f %14s\n", w.name, n, median(tps[k]), median(ttft[k]).Round(time.Microsecond))
			}
			a, wk := key{p.name, "activator", n}, key{p.name, "worker", n}
			fmt.Fprintf(out, "activator vs worker, %d streams: throughput %+.1f %%, TTFT %+s\n", n,
				100*(median(tps[a])/median(tps[wk])-1), (median(ttft[a]) - median(ttft[wk])).Round(time.Microsecond))
			b.ReportMetric(100*(median(tps[a])/median(tps[wk])-1), fmt.Sprintf("%sthroughput-%%-%d", prefix, n))
			b.ReportMetric(float64((median(ttft[a]) - median(ttft[wk])).Microseconds()), fmt.Sprintf("%sttft-added-us-%d", prefix, n))
		}
		perToken := func(way string) time.Duration {
			return devCPU[key{p.name, way, 0}] / time.Duration(max(1, devTokens[key{p.name, way, 0}]))
		}
		fmt.Fprintf(out, "gantry dev's CPU per token: %s while the worker answered straight, %s through the activator\n",
			perToken("worker"), perToken("activator"))
		b.ReportMetric(float64((perToken("activator")-perToken("worker")).Nanoseconds())/1e3, prefix+"activator-cpu-us/token")
	}
	fmt.Fprint(os.Stdout, out.String())
	dev.stop(b)
}

// key names a series: a placement, a way and a number of streams (0 for
// the CPU time and tokens of all of them).
type key struct {
	at, way string
	n       int
}

// placement pins processes to CPUs (pins: pid to its CPUs); none means
// each may run anywhere.
type placement struct {
	name string
	pins map[int]*unix.CPUSet
}

// apply sets p's placement after any of before: it unpins what they
// pinned (onto all), then pins p's.
func (p placement) apply(b *testing.B, before []placement, all *unix.CPUSet) {
	for _, q := range before {
		for pid := range q.pins {
			pinProcess(b, pid, all)
		}
	}
	for pid, set := range p.pins {
		pinProcess(b, pid, set)
	}
}

// pinProcess sets the CPUs of every thread of pid, listing them again
// until a listing shows none new: a thread started meanwhile inherits its
// creator's CPUs, which may not be set yet.
func pinProcess(b *testing.B, pid int, set *unix.CPUSet) {
	pinned := map[string]bool{}
	for {
		tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		if errors.Is(err, fs.ErrNotExist) {
			return // it ended: ClickHouse and the worker end with gantry dev
		} else if err != nil {
			b.Fatal(err)
		}
		fresh := false
		for _, t := range tasks {
			if pinned[t.Name()] {
				continue
			}
			pinned[t.Name()], fresh = true, true
			tid, _ := strconv.Atoi(t.Name())
			// A thread may have ended since the listing.
			if err := unix.SchedSetaffinity(tid, set); err != nil && !errors.Is(err, unix.ESRCH) {
				b.Fatalf("pin thread %d of %d: %v", tid, pid, err)
			}
		}
		if !fresh {
			return
		}
	}
}

// cpuSet is the set of cpus.
func cpuSet(cpus []int) *unix.CPUSet {
	var s unix.CPUSet
	for _, c := range cpus {
		s.Set(c)
	}
	return &s
}

// children are the processes whose parent is pid.
func children(pid int) []int {
	var out []int
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		child, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", child))
		if err != nil {
			continue
		}
		// After the command's name (in parentheses): state, then the parent.
		f := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			out = append(out, child)
		}
	}
	return out
}

// childListening is the child of pid started with --listen addr: a
// replica's worker.
func childListening(b *testing.B, pid int, addr string) int {
	for _, c := range children(pid) {
		raw, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", c))
		args := strings.Split(string(raw), "\x00")
		if i := slices.Index(args, "--listen"); i >= 0 && i+1 < len(args) && args[i+1] == addr {
			return c
		}
	}
	b.Fatalf("no child of %d listens on %s", pid, addr)
	return 0
}

func median[T time.Duration | float64](v []T) T {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// processCPU is the user and system CPU time the process pid has used
// (/proc/PID/stat, in clock ticks of 10 ms).
func processCPU(b *testing.B, pid int) time.Duration {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// The fields after the command's name, which is in parentheses and
	// may hold spaces: state is the first, utime the 12th, stime the 13th.
	f := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+1:]))
	var utime, stime int64
	fmt.Sscan(f[11], &utime)
	fmt.Sscan(f[12], &stime)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}
