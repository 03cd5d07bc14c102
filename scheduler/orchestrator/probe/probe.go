// Package probe is the readiness check that every driver runs against its
// workers: GET /ping, where 200 means the model is loaded and requests may
// come. The local and docker drivers (through package replicas) and the
// Nomad driver share it, so a worker is ready or not by one policy
// whichever runs it.
//
// # Policy
//
// Starting: a worker is pinged 2 ms after it starts, then at waits that
// double up to 200 ms (2, 4, 8 … 128, 200, 200 ms), until its first 200.
// A native model loads in milliseconds and cold-start time is what users
// wait for, so the first pings come fast; the cap keeps a model that loads
// for minutes at five pings a second.
//
// Ready: the worker is pinged every Interval (the drivers' ProbeInterval,
// 5 s by default). A ping that does not answer 200 within Timeout (1 s) is
// a miss; Misses (3) misses in a row take the worker out, and its next 200
// puts it back. One slow answer from a busy worker must not cost it its
// traffic, while a hung worker is out within Misses × (Interval + Timeout)
// (18 s by default). A worker that was ready and dropped out stays on the
// Interval pace: it is loaded, and pinging a hung process faster brings it
// back no sooner.
//
// First response: until a ready worker's /ping reports that it answered
// its first request (the cold start's last phase, api.FirstResponseHeader),
// it is also pinged every FirstResponseWait; those pings count for nothing
// else.
//
// # Use
//
// [Decide] is the policy as a pure function of the ping results, tested as
// scripts. [Prober] runs it: [Prober.AwaitReady] for a starting worker,
// [Prober.Watch] for a ready one, [Prober.Run] for both in turn.
package probe

import (
	"context"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/gantry/gantry/api"
)

const (
	// DefaultInterval is how often a ready worker is pinged when a Prober's
	// Interval is zero; the drivers' ProbeInterval defaults agree.
	DefaultInterval = 5 * time.Second
	// Timeout bounds one ping: /ping answers from memory, so a worker that
	// takes longer is overloaded or hung.
	Timeout = time.Second
	// Misses is how many failed pings in a row take a ready worker out.
	Misses = 3
	// FirstWait and MaxStartWait pace the pings of a starting worker.
	FirstWait    = 2 * time.Millisecond
	MaxStartWait = 200 * time.Millisecond
	// FirstResponseWait paces the pings of a ready worker that has not
	// reported its first response yet (Prober.FirstResponse): as fast as
	// a loading one, since /ping answers from memory.
	FirstResponseWait = MaxStartWait
)

// State is what the policy remembers of one worker between pings. Its zero
// value is a worker that has not answered 200 yet.
type State struct {
	// Ready is whether the worker gets requests.
	Ready bool
	// Misses counts failed pings in a row since the worker was last ready.
	Misses int
	// loaded is true once the worker has answered 200; it is then paced by
	// the interval whether or not it is ready.
	loaded bool
	// wait is the pause after the last ping of a starting worker.
	wait time.Duration
}

// Decision is what to do after one ping.
type Decision struct {
	// Changed is true when the ping changed State.Ready: the driver reports
	// the worker (not) ready.
	Changed bool
	// Wait is how long to wait before the next ping.
	Wait time.Duration
}

// Decide applies one ping result (ok: it answered 200 within Timeout) to s
// and says what follows. interval is the ready pace (DefaultInterval when
// zero). It does no I/O and reads no clock.
func Decide(s State, ok bool, interval time.Duration) (State, Decision) {
	if interval <= 0 {
		interval = DefaultInterval
	}
	was := s.Ready
	switch {
	case ok:
		s.Ready, s.Misses, s.loaded = true, 0, true
	case s.Ready:
		s.Misses++
		if s.Misses >= Misses {
			s.Ready = false
		}
	case s.loaded:
		s.Misses++ // dropped out: still missing
	}
	d := Decision{Changed: s.Ready != was, Wait: interval}
	if !s.loaded {
		s.wait = min(max(2*s.wait, FirstWait), MaxStartWait)
		d.Wait = s.wait
	}
	return s, d
}

// Result is the outcome of one ping.
type Result struct {
	// Answered is true when the worker answered HTTP at all: its process is
	// up, though its model may still be loading.
	Answered bool
	// OK is true when it answered 200.
	OK bool
	// Notice is the worker's api.NoticeHeader on a 200: what its model
	// loaded with that the deployment's owner should know.
	Notice string
	// First is the worker's api.FirstResponseHeader on a 200, once it has
	// answered a request; the zero value (no Phase) until then.
	First api.FirstResponse
}

// First is a worker's first answered request, on the prober's clock: the
// last phase of its cold start (api.PhaseFirstResponse, or
// api.PhaseFirstToken for a stream of tokens), from Arrived to Answered.
type First struct {
	Phase             string
	Arrived, Answered time.Time
}

// Clock is the time a Prober reads and waits on; *fakeclock.Clock is one.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type wallClock struct{}

func (wallClock) Now() time.Time                         { return time.Now() }
func (wallClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Prober pings workers by the package's policy. Its zero value works; its
// fields must not change after first use. It is safe for concurrent use.
type Prober struct {
	// Interval is how often a ready worker is pinged; default
	// DefaultInterval.
	Interval time.Duration
	// Client sends the pings; nil: a client with Timeout. A client's own
	// Timeout is kept; Ping bounds each ping by Timeout anyway.
	Client *http.Client
	// Clock paces the pings; nil: the wall clock.
	Clock Clock
	// Ping replaces the HTTP ping, for tests; nil: Ping.
	Ping func(ctx context.Context, addr string) Result
	// Answered, when set, is called by AwaitReady at the worker's first
	// answer, so that the cold-start phase it begins (model_load) shows
	// while it lasts, not only once the worker is ready.
	Answered func(at time.Time)
	// FirstResponse, when set, is called by Watch once, at the first ping
	// that says the worker has answered a request, so that the cold
	// start's last phase shows within an Interval of it.
	FirstResponse func(First)
}

var defaultClient = &http.Client{Timeout: Timeout}

func (p *Prober) clock() Clock {
	if p.Clock == nil {
		return wallClock{}
	}
	return p.Clock
}

func (p *Prober) ping(ctx context.Context, addr string) Result {
	if p.Ping != nil {
		return p.Ping(ctx, addr)
	}
	c := p.Client
	if c == nil {
		c = defaultClient
	}
	return Ping(ctx, c, addr)
}

// Ping asks the worker at addr (host:port) for /ping, giving it Timeout.
func Ping(ctx context.Context, c *http.Client, addr string) Result {
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/ping", nil)
	if err != nil {
		return Result{}
	}
	resp, err := c.Do(req)
	if err != nil {
		return Result{}
	}
	io.Copy(io.Discard, resp.Body) // so that the next ping reuses the connection
	resp.Body.Close()
	r := Result{Answered: true, OK: resp.StatusCode == http.StatusOK}
	if r.OK {
		r.Notice = resp.Header.Get(api.NoticeHeader)
		if len(r.Notice) > api.MaxNotice {
			r.Notice = strings.ToValidUTF8(r.Notice[:api.MaxNotice], "")
		}
		if h := resp.Header.Get(api.FirstResponseHeader); h != "" {
			r.First, _ = api.ParseFirstResponse(h) // nonsense counts as none
		}
	}
	return r
}

// AwaitReady pings a starting worker until it answers 200 (ready true) or
// ctx ends (false); the caller ends ctx when the worker exits or has taken
// too long. answeredAt is when the worker first answered at all (its
// process was up; the model was loading), zero if it never did. notice is
// the Notice of the answer that made it ready.
func (p *Prober) AwaitReady(ctx context.Context, addr string) (ready bool, answeredAt time.Time, notice string) {
	clock := p.clock()
	var s State
	for {
		r := p.ping(ctx, addr)
		if ctx.Err() != nil {
			return false, answeredAt, ""
		}
		if r.Answered && answeredAt.IsZero() {
			answeredAt = clock.Now()
			if p.Answered != nil {
				p.Answered(answeredAt)
			}
		}
		var d Decision
		s, d = Decide(s, r.OK, p.Interval)
		if s.Ready {
			return true, answeredAt, r.Notice
		}
		select {
		case <-ctx.Done():
			return false, answeredAt, ""
		case <-clock.After(d.Wait):
		}
	}
}

// Watch pings a worker that has just answered 200 every Interval until ctx
// ends, calling set(false) when it misses Misses pings in a row and
// set(true) when it answers 200 again. A ping that ctx cut short counts for
// nothing: the caller stopped the worker, the worker did not fail.
//
// With FirstResponse set, Watch also pings every FirstResponseWait until a
// ping reports the worker's first response, and then calls FirstResponse
// once, with the times placed on the prober's clock. Those pings decide
// nothing of readiness, which keeps the Interval pace: they are there so
// that the phase shows while it is news, and before a replica that
// answered one request is scaled back to zero (gone from the endpoint's
// state with its phases).
func (p *Prober) Watch(ctx context.Context, addr string, set func(ready bool)) {
	clock := p.clock()
	s, d := Decide(State{}, true, p.Interval)
	reported := p.FirstResponse == nil
	next := d.Wait // until the next ping that counts for readiness
	for {
		wait := next
		if !reported {
			wait = min(wait, FirstResponseWait)
		}
		select {
		case <-ctx.Done():
			return
		case <-clock.After(wait):
		}
		next -= wait
		r := p.ping(ctx, addr)
		if ctx.Err() != nil {
			return
		}
		if !reported && r.OK && r.First.Phase != "" {
			reported = true
			// Ago is from the worker's answer to /ping; the time its
			// answer took to come back is the error, well under Timeout.
			answered := clock.Now().Add(-r.First.Ago)
			p.FirstResponse(First{Phase: r.First.Phase, Arrived: answered.Add(-r.First.Took), Answered: answered})
		}
		if next > 0 {
			continue // a ping for the first response only
		}
		s, d = Decide(s, r.OK, p.Interval)
		next = d.Wait
		if d.Changed {
			set(s.Ready)
		}
	}
}

// Run awaits a worker's first 200, reports it with set(true) and the
// answer's notice, then watches it until ctx ends; for a driver that
// leaves restarts to someone else (as the Nomad driver leaves them to
// Nomad). A worker's notice comes from its model's load, so later calls
// repeat the first one's.
func (p *Prober) Run(ctx context.Context, addr string, set func(ready bool, notice string)) {
	ready, _, notice := p.AwaitReady(ctx, addr)
	if !ready {
		return
	}
	set(true, notice)
	p.Watch(ctx, addr, func(ready bool) { set(ready, notice) })
}
