package autoscaler

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/autoscaler/decider"
)

// Deployments with Target.TokensPerReplica scale on tokens. A tokenPoller
// asks each of their ready replicas for its load (the worker's GET /load,
// api.TokenLoad: what its LLM runtime reports through
// worker.TokenReporter) once a tick, on its own goroutine so that a slow
// replica delays no decision; the loop reads the latest reports and turns
// them into the decider's sample (tokenSample).

// tokenPoller polls the replicas the loop names.
type tokenPoller struct {
	client *http.Client
	now    func() time.Time
	// want is deployment → replica addresses, set by the loop each tick.
	want atomic.Pointer[map[string][]string]

	// mu guards got: deployment → replica address → its latest report.
	mu  sync.Mutex
	got map[string]map[string]decider.TokenObservation
}

func newTokenPoller(timeout time.Duration, now func() time.Time) *tokenPoller {
	return &tokenPoller{
		client: &http.Client{Timeout: timeout},
		now:    now,
		got:    map[string]map[string]decider.TokenObservation{},
	}
}

// set names the replicas to poll from the loop's targets.
func (p *tokenPoller) set(targets []Target) {
	want := map[string][]string{}
	for _, t := range targets {
		if t.TokensPerReplica > 0 && len(t.Replicas) > 0 {
			want[t.Deployment] = t.Replicas
		}
	}
	p.want.Store(&want)
}

// latest returns the latest report of each replica that has answered, by
// deployment. The maps are the caller's.
func (p *tokenPoller) latest() map[string]map[string]decider.TokenObservation {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]map[string]decider.TokenObservation, len(p.got))
	for dep, m := range p.got {
		c := make(map[string]decider.TokenObservation, len(m))
		for a, o := range m {
			c[a] = o
		}
		out[dep] = c
	}
	return out
}

// run polls every interval until ctx ends.
func (p *tokenPoller) run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			p.poll(ctx)
		}
	}
}

// poll asks every wanted replica at once and keeps what answered. The
// calls run with no lock held; the results replace got in one step.
func (p *tokenPoller) poll(ctx context.Context) {
	w := p.want.Load()
	if w == nil {
		return
	}
	type result struct {
		dep, addr string
		obs       decider.TokenObservation
	}
	var wg sync.WaitGroup
	results := make(chan result, 64)
	for dep, addrs := range *w {
		for _, addr := range addrs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				l, err := p.fetch(ctx, addr)
				if err != nil {
					return // the replica is skipped this tick; an old report ages out
				}
				results <- result{dep, addr, decider.TokenObservation{At: p.now(), Generated: l.GeneratedTokens, Queued: l.Queued, Running: l.Running}}
			}()
		}
	}
	go func() { wg.Wait(); close(results) }()
	fresh := map[string]map[string]decider.TokenObservation{}
	for r := range results {
		if fresh[r.dep] == nil {
			fresh[r.dep] = map[string]decider.TokenObservation{}
		}
		fresh[r.dep][r.addr] = r.obs
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	// A replica that did not answer keeps its last report, which
	// tokenSample ignores once it is stale; one no longer wanted goes.
	for dep, addrs := range *w {
		m := fresh[dep]
		if m == nil {
			m = map[string]decider.TokenObservation{}
		}
		for _, a := range addrs {
			if _, ok := m[a]; !ok {
				if o, had := p.got[dep][a]; had {
					m[a] = o
				}
			}
		}
		fresh[dep] = m
	}
	p.got = fresh
}

// fetch is one GET /load, bounded by the client's timeout.
func (p *tokenPoller) fetch(ctx context.Context, addr string) (api.TokenLoad, error) {
	var l api.TokenLoad
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/load", nil)
	if err != nil {
		return l, err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return l, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return l, fmt.Errorf("%s/load answered %d", addr, resp.StatusCode)
	}
	err = json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&l)
	return l, err
}

// replicaTokens is what the loop keeps of one replica between ticks.
type replicaTokens struct {
	obs  decider.TokenObservation
	rate float64
}

// tokenSample is the sample of a deployment that scales on tokens, in
// tokens per second, with the observed rate, the queued sequences, and the
// highest rate of a replica that had sequences waiting (0 when none had): the token demand of its replicas' reports, or the
// activators' concurrency in replica-equivalents when that is more (a
// request held at zero replicas, a runtime that reports nothing), so that
// either signal can wake or grow the entity. prev holds the replicas'
// previous reports and rates, and is updated; it is the loop's. A report
// older than stale is not counted.
func tokenSample(now time.Time, t Target, reports map[string]decider.TokenObservation,
	prev map[string]replicaTokens, concurrency, perReplicaConcurrency float64, stale time.Duration) (sample, tps float64, queued int, saturated float64) {
	running := 0
	for _, addr := range t.Replicas {
		o, ok := reports[addr]
		if !ok || now.Sub(o.At) > stale {
			delete(prev, addr)
			continue
		}
		p, had := prev[addr]
		rt := p.rate
		if !had || o.At != p.obs.At {
			// A new report: its rate against the previous one (none for
			// the first report of a replica, or across a restart).
			rt = 0
			if had {
				if r, ok := decider.TokenRate(p.obs, o); ok {
					rt = r
				}
			}
			prev[addr] = replicaTokens{obs: o, rate: rt}
		}
		tps += rt
		if o.Queued > 0 && o.Running > 0 {
			// Sequences wait while it generates: the replica is at its
			// limit, so its rate is what one replica sustains, the
			// measurement tokens_per_second should hold.
			saturated = max(saturated, rt)
		}
		queued += o.Queued
		running += o.Running
	}
	for addr := range prev {
		if _, ok := reports[addr]; !ok {
			delete(prev, addr)
		}
	}
	sample = decider.TokenDemand(tps, queued, running, t.TokensPerReplica)
	if perReplicaConcurrency > 0 {
		sample = max(sample, concurrency/perReplicaConcurrency*t.TokensPerReplica)
	}
	return sample, tps, queued, saturated
}
