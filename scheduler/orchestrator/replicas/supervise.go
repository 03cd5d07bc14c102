package replicas

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/gantry/gantry/scheduler/orchestrator"
	"github.com/gantry/gantry/scheduler/orchestrator/probe"
)

// supervise runs one replica's worker until the replica is stopped,
// starting a new one with exponential backoff when it fails or exits.
func (s *Set) supervise(dep *deployment, r *replica) {
	defer s.running.Done()
	backoff := s.cfg.MinBackoff
	for {
		started := time.Now()
		err := s.run(dep, r)
		if err == nil {
			return // stopped on request
		}
		s.cfg.Logger.Warn("worker failed", "replica", r.id, "err", err)
		s.mu.Lock()
		dep.failure = hideModelDir(err.Error(), dep.spec.ModelDir)
		dep.failures++
		id := dep.spec.ID
		s.mu.Unlock()
		s.notify(id)
		if time.Since(started) > time.Minute {
			backoff = s.cfg.MinBackoff // it ran a good while: not a crash loop
		}
		select {
		case <-r.ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, s.cfg.MaxBackoff)
	}
}

// run starts the worker once and returns nil when it was stopped on
// request, or an error saying why it failed or exited. The worker is gone
// when run returns.
func (s *Set) run(dep *deployment, r *replica) error {
	addr, err := freeAddr(s.cfg.Host)
	if err != nil {
		return err
	}
	s.mu.Lock()
	spec := dep.spec
	s.mu.Unlock()

	out := orchestrator.NewTailBuffer(4 << 10) // this run's output, for the failure message
	w, err := s.start(spec, r.id, addr, orchestrator.MultiWriter{dep.logs, out})
	if err != nil {
		return err
	}
	startedAt := time.Now()
	s.mu.Lock()
	r.start = orchestrator.Start{ID: r.id, Started: startedAt}
	if !r.created.IsZero() {
		s.cfg.Metrics.Observe(spec, orchestrator.PhaseSchedule, startedAt.Sub(r.created))
		r.start.Requested = r.created
		r.created = time.Time{} // restarts are not scheduling
	}
	s.mu.Unlock()
	// exited is closed once the worker is gone; exitErr is then safe to read.
	exited := make(chan struct{})
	var exitErr error
	go func() { exitErr = w.Wait(); close(exited) }()

	s.mu.Lock()
	r.addr = addr
	s.mu.Unlock()
	s.notify(spec.ID)
	defer func() {
		s.mu.Lock()
		r.addr, r.ready, r.notice = "", false, ""
		s.mu.Unlock()
		s.notify(spec.ID)
	}()

	ready, answeredAt, notice, err := s.awaitReady(r.ctx, addr, exited, func(at time.Time) {
		s.mu.Lock()
		r.start.Answered = at
		s.mu.Unlock()
		s.notify(spec.ID)
	})
	if !answeredAt.IsZero() {
		s.cfg.Metrics.Observe(spec, orchestrator.PhaseProcessStart, answeredAt.Sub(startedAt))
		if ready {
			s.cfg.Metrics.Observe(spec, orchestrator.PhaseModelLoad, time.Since(answeredAt))
		}
	}
	if err != nil {
		w.Kill()
		<-exited
		return fmt.Errorf("%w (%v)%s", err, exitErr, out.LastLines(5))
	}
	if ready {
		s.mu.Lock()
		r.notice = notice // before it is ready: Status reads it with Ready
		s.mu.Unlock()
		s.setReady(dep, r, true)
		if !s.serve(dep, r, addr, exited) {
			return fmt.Errorf("worker exited (%v)%s", exitErr, out.LastLines(5))
		}
		s.setReady(dep, r, false)
		select {
		case <-time.After(s.cfg.DrainDelay):
		case <-exited:
		}
	} // else stopped while starting
	w.Stop(s.cfg.StopTimeout)
	<-exited
	return nil
}

// awaitReady probes /ping until it answers 200 (true), ctx ends (false), or
// the worker exits or times out (error). It also says when the worker first
// answered at all (its process was up; the model was loading), zero if it
// never did. The pace is package probe's start-up policy.
func (s *Set) awaitReady(ctx context.Context, addr string, exited <-chan struct{}, answered func(time.Time)) (ready bool, answeredAt time.Time, notice string, err error) {
	pctx, cancel := untilExit(ctx, exited)
	defer cancel()
	pctx, cancelDeadline := context.WithTimeout(pctx, s.cfg.ReadyTimeout)
	defer cancelDeadline()
	p := s.prober()
	p.Answered = answered
	ready, answeredAt, notice = p.AwaitReady(pctx, addr)
	switch {
	case ready:
		return true, answeredAt, notice, nil
	case ctx.Err() != nil:
		return false, answeredAt, "", nil // stopped while starting
	case isClosed(exited):
		return false, answeredAt, "", errors.New("worker exited before it was ready")
	default:
		return false, answeredAt, "", fmt.Errorf("worker did not answer /ping within %s", s.cfg.ReadyTimeout)
	}
}

// serve probes a ready worker's /ping until the replica is stopped (true)
// or the worker exits (false). A worker that hangs keeps running but must
// not get requests: package probe's policy reports it not ready after
// probe.Misses failed probes in a row, and ready again at its next answer.
func (s *Set) serve(dep *deployment, r *replica, addr string, exited <-chan struct{}) (stopped bool) {
	ctx, cancel := untilExit(r.ctx, exited)
	defer cancel()
	p := s.prober()
	p.FirstResponse = func(f probe.First) {
		s.mu.Lock()
		r.start.FirstPhase, r.start.FirstRequest, r.start.FirstResponse = f.Phase, f.Arrived, f.Answered
		spec := dep.spec
		s.mu.Unlock()
		s.cfg.Metrics.Observe(spec, f.Phase, f.Answered.Sub(f.Arrived))
		s.notify(spec.ID)
	}
	p.Watch(ctx, addr, func(ready bool) {
		if !ready {
			s.cfg.Logger.Warn("worker stopped answering /ping", "replica", r.id, "addr", addr, "misses", probe.Misses)
		}
		s.setReady(dep, r, ready)
	})
	return r.ctx.Err() != nil
}

// prober is the set's readiness check: s.probe's pings, paced by
// ProbeInterval.
func (s *Set) prober() *probe.Prober {
	return &probe.Prober{Interval: s.cfg.ProbeInterval, Client: s.probe}
}

// untilExit is ctx, also ended when the worker exits, so that a probe
// loop stops for either.
func untilExit(ctx context.Context, exited <-chan struct{}) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		select {
		case <-exited:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// setReady marks the replica ready or not and notifies when that changed.
// A replica that becomes ready clears the deployment's failure: older
// failures are history.
func (s *Set) setReady(dep *deployment, r *replica, ready bool) {
	s.mu.Lock()
	changed := r.ready != ready
	r.ready = ready
	if ready && r.start.Ready.IsZero() {
		r.start.Ready = time.Now()
	}
	if ready && changed {
		dep.failure = ""
	}
	id := dep.spec.ID
	s.mu.Unlock()
	if changed {
		s.notify(id)
	}
}

// freeAddr finds a free TCP port. Another process could take it before the
// worker binds it; the worker then exits and is restarted on a new port.
func freeAddr(host string) (string, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// hideModelDir replaces the model directory's server path in a failure
// message, which users see in deployment_state_message: where a model's
// files lie on the server is what an attacker needs to point a loader
// variable at a file of their upload (issue 19). The logs API keeps the
// worker's output as it is.
func hideModelDir(msg, dir string) string {
	if dir == "" || dir == "/" {
		return msg
	}
	return strings.ReplaceAll(msg, dir, "<model dir>")
}
