package autoscaler

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/identity"
)

// ReportAuth admits load reports and pokes from Gantry's components (the
// gantry-components group) and admins only. It follows the scheduler's
// access snapshot (GET /api/2.0/gantry/access, a blocking query, with the
// autoscaler's own token) and checks each request's bearer token against
// it in memory, as activators check invocations: no call to the scheduler
// per report, and a revoked token stops reporting within one round trip
// of the blocking query.
//
// It works at its zero value except for Client, and must not change after
// Run starts.
type ReportAuth struct {
	// Client reaches the scheduler with a component's or an admin's
	// token. Required.
	Client *api.Client
	// WaitTime is how long one blocking query waits. Default 30 s.
	WaitTime time.Duration
	// Now is the clock tokens expire by. Default time.Now.
	Now func() time.Time
	// Logger gets the scheduler's outages. Default slog.Default().
	Logger *slog.Logger

	checker atomic.Pointer[identity.Checker]
}

var _ Authorizer = (*ReportAuth)(nil)

// Authorize checks an Authorization header value: nil for a component's
// or an admin's live token; UNAUTHENTICATED or PERMISSION_DENIED; and
// TEMPORARILY_UNAVAILABLE until the first snapshot arrives (a report
// refused then is the past by the next push, a second later).
func (a *ReportAuth) Authorize(authorization string) *api.Error {
	chk := a.checker.Load()
	if chk == nil {
		return api.Errorf(api.ErrTemporarilyUnavailable, "the autoscaler has not read the scheduler's access snapshot yet; retry")
	}
	now := time.Now
	if a.Now != nil {
		now = a.Now
	}
	_, err := chk.Component(authorization, now())
	return err
}

// Ready reports whether a snapshot has arrived.
func (a *ReportAuth) Ready() bool { return a.checker.Load() != nil }

// Run follows the access snapshot until ctx ends. While the scheduler
// cannot be reached the last snapshot stays: tokens revoked meanwhile
// still pass, expired ones do not.
func (a *ReportAuth) Run(ctx context.Context) {
	wait := a.WaitTime
	if wait <= 0 {
		wait = 30 * time.Second
	}
	log := a.Logger
	if log == nil {
		log = slog.Default()
	}
	var index uint64
	var backoff time.Duration
	failing := false
	for ctx.Err() == nil {
		started := time.Now()
		// The scheduler answers within wait; the margin covers the trip.
		qctx, cancel := context.WithTimeout(ctx, wait+10*time.Second)
		snap, _, err := a.Client.Access().Get((&api.QueryOptions{WaitIndex: index, WaitTime: wait}).WithContext(qctx))
		cancel()
		if ctx.Err() != nil {
			return
		}
		pause := 50*time.Millisecond - time.Since(started) // no hot loop on a scheduler that answers at once
		if err != nil {
			backoff = min(max(2*backoff, 250*time.Millisecond), 10*time.Second)
			if !failing {
				log.Warn("cannot read the scheduler's access snapshot; load reports are checked against the last one", "scheduler", a.Client.Address(), "err", err, "retry_in", backoff)
				failing = true
			}
			pause = backoff
		} else {
			if failing {
				log.Info("the scheduler's access snapshot answers again", "scheduler", a.Client.Address())
			}
			failing, backoff = false, 0
			// An index below ours means the scheduler started afresh:
			// take its snapshot and its index.
			if cur := a.checker.Load(); cur == nil || cur.Index() != snap.Index {
				a.checker.Store(identity.NewChecker(snap))
			}
			index = snap.Index
		}
		if pause > 0 {
			t := time.NewTimer(pause)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
	}
}
