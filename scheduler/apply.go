package scheduler

import (
	"context"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/gantry/gantry/scheduler/orchestrator"
)

// pruneKey is the key of the driver's Prune call in the ledger's calls, next to the
// deployment IDs (which are never empty).
const pruneKey = ""

// Driver call names, as the views show them.
const (
	opEnsure = "ensure"
	opRemove = "remove"
	opPrune  = "prune"
)

// call is a driver call that has not returned, or the last one that failed,
// for one deployment. There is at most one running call per deployment, so
// a driver never sees an Ensure and a Remove of one deployment race.
type call struct {
	op      string
	started time.Time
	// done is set when the call returned an error; a call that succeeds
	// is forgotten.
	done bool
	// err is the last failure of a call for this key, kept while the next
	// one runs so that the views still show why.
	err error
}

// commit stores a plan's records, publishes its route table and enters
// its driver calls in the ledger. s.mu must be held.
func (s *Scheduler) commit(p Plan, now time.Time) {
	for _, next := range p.Records {
		if err := s.cfg.Store.Put(next); err != nil {
			s.cfg.Logger.Error("persist endpoint", "endpoint", next.Name, "err", err)
			continue // the next pass makes the same move again
		}
		*s.eps[next.Name] = *next
	}
	s.keyRoutes(p.Routes)
	if !reflect.DeepEqual(p.Routes, s.published) {
		s.cfg.Routes.Publish(p.Routes)
		s.published = p.Routes
	}
	s.led.begin(p, now)
}

// begin enters a plan's driver calls as running, and what it saw ready.
func (l *ledger) begin(p Plan, now time.Time) {
	for _, id := range p.Ready {
		l.everReady[id] = true
	}
	// A failure that no call of this plan retries is history: forget it.
	retried := map[string]bool{pruneKey: p.Prune != nil}
	for _, a := range slices.Concat(p.Ensure, p.Remove) {
		retried[a.Deployment.ID] = true
	}
	for k, c := range l.calls {
		if c.done && !retried[k] {
			delete(l.calls, k)
		}
	}
	start := func(key, op string) {
		var prev error
		if c := l.calls[key]; c != nil {
			prev = c.err
		}
		l.calls[key] = &call{op: op, started: now, err: prev}
	}
	for _, a := range p.Ensure {
		start(a.Deployment.ID, opEnsure)
	}
	for _, a := range p.Remove {
		start(a.Deployment.ID, opRemove)
	}
	if p.Prune != nil {
		start(pruneKey, opPrune)
	}
}

// end records how a call that begin entered returned, and reports whether
// the error is new (worth a log line: a driver that keeps failing the
// same way logs once, not once a pass).
func (l *ledger) end(key, op string, d orchestrator.Deployment, err error) (newErr bool) {
	if err == nil {
		delete(l.calls, key)
		switch op {
		case opEnsure:
			l.applied[key] = d
		case opRemove:
			delete(l.applied, key)
			delete(l.everReady, key)
			delete(l.scale, key)
		case opPrune:
			l.pruned = true
		}
		return false
	}
	c := l.calls[key]
	if c == nil { // begin made it; be safe all the same
		c = &call{op: op}
		l.calls[key] = c
	}
	newErr = c.err == nil || c.err.Error() != err.Error()
	c.done, c.err = true, err
	return newErr
}

// apply starts a committed plan's driver calls, concurrently, each with a
// deadline of CallTimeout, and returns a channel closed when all have
// returned. Each call's end is entered in the ledger and asks for a pass
// (Notify). A driver that ignores its context keeps the call's goroutine,
// and its deployment keeps its running call (plan leaves it alone, the
// views say the orchestrator is not answering) until it returns.
// s.mu must not be held.
func (s *Scheduler) apply(ctx context.Context, p Plan) <-chan struct{} {
	var wg sync.WaitGroup
	do := func(key, op string, d orchestrator.Deployment, fn func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, s.cfg.CallTimeout)
			err := fn(cctx)
			cancel()
			s.mu.Lock()
			if s.led.end(key, op, d, err) {
				s.cfg.Logger.Error("orchestrator: "+op, "deployment", key, "err", err)
			}
			s.mu.Unlock()
			s.Notify("")
		}()
	}
	orch := s.cfg.Orchestrator
	for _, a := range p.Ensure {
		d := a.Deployment
		s.cfg.Logger.Debug("orchestrator: ensure", "deployment", d.ID, "replicas", d.Replicas, "reason", a.Reason)
		do(d.ID, opEnsure, d, func(ctx context.Context) error {
			// Secrets are resolved into a copy for this call alone: the
			// ledger keeps d, with its references, as the views do.
			rd, err := s.resolveEnv(d)
			if err != nil {
				return err
			}
			return orch.Ensure(ctx, rd)
		})
	}
	for _, a := range p.Remove {
		d := a.Deployment
		s.cfg.Logger.Debug("orchestrator: remove", "deployment", d.ID, "reason", a.Reason)
		do(d.ID, opRemove, d, func(ctx context.Context) error { return orch.Remove(ctx, d.ID) })
	}
	if pr, ok := orch.(pruner); ok && p.Prune != nil {
		keep := p.Prune
		do(pruneKey, opPrune, orchestrator.Deployment{}, func(ctx context.Context) error { return pr.Prune(ctx, keep) })
	}

	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	return done
}
