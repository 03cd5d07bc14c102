package replicas

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/gantry/gantry/scheduler/orchestrator"
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
	if !r.created.IsZero() {
		s.cfg.Metrics.Observe(spec, orchestrator.PhaseSchedule, startedAt.Sub(r.created))
		r.created = time.Time{} // restarts are not scheduling
	}
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
		r.addr, r.ready = "", false
		s.mu.Unlock()
		s.notify(spec.ID)
	}()

	ready, answeredAt, err := s.awaitReady(r.ctx, addr, exited)
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
// never did. It probes every few milliseconds at first, because a native
// model loads in milliseconds and cold-start time is what the user waits
// for.
func (s *Set) awaitReady(ctx context.Context, addr string, exited <-chan struct{}) (ready bool, answeredAt time.Time, err error) {
	deadline := time.NewTimer(s.cfg.ReadyTimeout)
	defer deadline.Stop()
	interval := 2 * time.Millisecond
	for {
		answered, ok := s.ping(ctx, addr)
		if answered && answeredAt.IsZero() {
			answeredAt = time.Now()
		}
		if ok {
			return true, answeredAt, nil
		}
		select {
		case <-ctx.Done():
			return false, answeredAt, nil
		case <-exited:
			return false, answeredAt, errors.New("worker exited before it was ready")
		case <-deadline.C:
			return false, answeredAt, fmt.Errorf("worker did not answer /ping within %s", s.cfg.ReadyTimeout)
		case <-time.After(interval):
		}
		interval = min(2*interval, 200*time.Millisecond)
	}
}

// serve probes a ready worker's /ping every ProbeInterval until the replica
// is stopped (true) or the worker exits (false). A worker that hangs keeps
// running but must not get requests: probeMisses failed probes in a row
// report it not ready, and its next answer ready again.
func (s *Set) serve(dep *deployment, r *replica, addr string, exited <-chan struct{}) (stopped bool) {
	tick := time.NewTicker(s.cfg.ProbeInterval)
	defer tick.Stop()
	misses := 0
	for {
		select {
		case <-r.ctx.Done():
			return true
		case <-exited:
			return false
		case <-tick.C:
		}
		_, ok := s.ping(r.ctx, addr)
		switch {
		case r.ctx.Err() != nil:
			// The probe was cut short by the stop, not by the worker.
		case ok:
			misses = 0
			s.setReady(dep, r, true)
		default:
			misses++
			if misses == probeMisses {
				s.cfg.Logger.Warn("worker stopped answering /ping", "replica", r.id, "addr", addr, "misses", misses)
				s.setReady(dep, r, false)
			}
		}
	}
}

// setReady marks the replica ready or not and notifies when that changed.
// A replica that becomes ready clears the deployment's failure: older
// failures are history.
func (s *Set) setReady(dep *deployment, r *replica, ready bool) {
	s.mu.Lock()
	changed := r.ready != ready
	r.ready = ready
	if ready && changed {
		dep.failure = ""
	}
	id := dep.spec.ID
	s.mu.Unlock()
	if changed {
		s.notify(id)
	}
}

// ping asks the worker at addr for /ping: answered is true when it
// answered at all, ok when it answered 200.
func (s *Set) ping(ctx context.Context, addr string) (answered, ok bool) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/ping", nil)
	if err != nil {
		return false, false
	}
	resp, err := s.probe.Do(req)
	if err != nil {
		return false, false
	}
	io.Copy(io.Discard, resp.Body) // so that the next probe reuses the connection
	resp.Body.Close()
	return true, resp.StatusCode == http.StatusOK
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
