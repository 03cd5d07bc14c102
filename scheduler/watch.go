package scheduler

import (
	"encoding/json"
	"hash/fnv"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/gantry/gantry/identity"
)

// Blocking queries on the endpoints list and on one endpoint
// (GET /api/2.0/serving-endpoints[/{name}]?index=N&wait=30s), for any
// caller: the console's live pages and clients that follow an endpoint
// without polling. The route table's blocking query is the components'
// and admins' only, as it names every endpoint.
//
// The index is a fingerprint of the answer as this caller sees it (its
// JSON, hashed), not a counter shared by every caller: a shared counter
// would move when an endpoint the caller may not see changed, and so
// tell it that one exists and when it changes. A call with the index of
// its last answer waits until its own answer differs, or wait ends, and
// then answers with the new index in X-Gantry-Index. Clients must treat
// it as opaque (it is not monotonic), as Nomad advises for its index.

// changes wakes blocked queries. Every reconcile pass fires it (at least
// once a second, so changed grants and revoked tokens count within a
// second), and so does Notify (API writes, drivers' status changes), so
// that a replica becoming ready shows within a round trip.
type changes struct {
	mu sync.Mutex
	ch chan struct{}
}

// next is closed at the next fire.
func (c *changes) next() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ch == nil {
		c.ch = make(chan struct{})
	}
	return c.ch
}

func (c *changes) fire() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ch != nil {
		close(c.ch)
		c.ch = nil
	}
}

// fingerprint is the index of answer b: 53 bits of its FNV-1a, so that
// it survives a JavaScript number, and never 0 (index 0 never blocks).
func fingerprint(b []byte) uint64 {
	h := fnv.New64a()
	h.Write(b)
	if v := h.Sum64() & (1<<53 - 1); v != 0 {
		return v
	}
	return 1
}

// blocking answers a GET with render's answer for the caller. With
// ?index=N it first waits, up to ?wait (default 30 s), until that answer's
// fingerprint is no longer N. Each render checks the caller's access
// again, so an answer never shows what the caller may no longer see (an
// endpoint whose grant went answers 404); a token revoked during the wait
// ends it with 401.
func (s *Scheduler) blocking(w http.ResponseWriter, r *http.Request, render func(*http.Request) (any, error)) {
	index, wait, err := blockingParams(r)
	if err != nil {
		writeError(w, err)
		return
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	header := r.Header.Get("Authorization")
	for first := true; ; first = false {
		next := s.changed.next() // before rendering, so no change is missed
		if !first && s.cfg.Auth != nil {
			c, err := s.cfg.Auth.Authenticate(header)
			if err != nil {
				w.Header().Set("WWW-Authenticate", `Bearer realm="gantry"`)
				writeError(w, err)
				return
			}
			r = r.WithContext(identity.WithCaller(r.Context(), c))
		}
		v, err := render(r)
		if err != nil {
			writeError(w, err)
			return
		}
		b, err := json.Marshal(v)
		if err != nil {
			writeError(w, err)
			return
		}
		fp := fingerprint(b)
		done := index == 0 || fp != index
		if !done {
			select {
			case <-next:
				continue
			case <-timer.C:
				done = true
			case <-r.Context().Done():
				return
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Gantry-Index", strconv.FormatUint(fp, 10))
		w.WriteHeader(http.StatusOK)
		w.Write(append(b, '\n'))
		return
	}
}
