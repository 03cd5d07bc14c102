package identity

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"slices"
	"time"

	"github.com/gantry/gantry/api"
)

// Export is the access snapshot activators follow (api.AccessSnapshot):
// every token with its principal, and the ACL of each endpoint in
// endpoints (name → id), all from one state of the service.
func (s *Service) Export(endpoints map[string]string) *api.AccessSnapshot {
	snap := s.cur.Load()
	out := &api.AccessSnapshot{Index: snap.index, Tokens: []api.AccessToken{}, Endpoints: []api.EndpointAccess{}}
	for _, t := range snap.tokens {
		p := snap.principals[t.Owner]
		if p == nil || !p.Active {
			continue
		}
		out.Tokens = append(out.Tokens, api.AccessToken{Hash: t.Hash, Principal: p.Name, Kind: string(p.Kind),
			Groups: snap.memberOf[p.ID], Admin: snap.adminIDs[p.ID], Component: snap.componentIDs[p.ID], ExpiryTime: t.Expiry})
	}
	slices.SortFunc(out.Tokens, func(a, b api.AccessToken) int { return compare(a.Hash, b.Hash) })
	for name, id := range endpoints {
		a := snap.acls[Object{Endpoints, id}.key()]
		if a == nil {
			continue // admins only
		}
		ea := api.EndpointAccess{Name: name}
		if a.Owner != nil {
			ea.Owner = &api.AccessGrant{Kind: string(a.Owner.Kind), Name: a.Owner.Name}
		}
		for _, g := range a.Grants {
			ea.Grants = append(ea.Grants, api.AccessGrant{Kind: string(g.Principal.Kind), Name: g.Principal.Name, Level: string(g.Level)})
		}
		out.Endpoints = append(out.Endpoints, ea)
	}
	slices.SortFunc(out.Endpoints, func(a, b api.EndpointAccess) int { return compare(a.Name, b.Name) })
	return out
}

func compare(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Checker answers "may this token invoke this endpoint?" from an access
// snapshot, in memory: a hash and two map lookups, no call to the
// scheduler. It is immutable; an activator swaps in a new one when the
// snapshot changes.
type Checker struct {
	index   uint64
	callers map[string]checkedToken // by token hash
	acls    map[string]*ACL         // by endpoint name
}

type checkedToken struct {
	caller *Caller
	expiry int64
}

// NewChecker builds a Checker from a snapshot.
func NewChecker(snap *api.AccessSnapshot) *Checker {
	c := &Checker{index: snap.Index, callers: make(map[string]checkedToken, len(snap.Tokens)), acls: make(map[string]*ACL, len(snap.Endpoints))}
	for _, t := range snap.Tokens {
		c.callers[t.Hash] = checkedToken{expiry: t.ExpiryTime, caller: &Caller{
			Ref: Ref{Kind(t.Kind), t.Principal}, Groups: t.Groups, Admin: t.Admin, Component: t.Component}}
	}
	for _, e := range snap.Endpoints {
		a := &ACL{}
		if e.Owner != nil {
			a.Owner = &Ref{Kind(e.Owner.Kind), e.Owner.Name}
		}
		for _, g := range e.Grants {
			a.Grants = append(a.Grants, Grant{Ref{Kind(g.Kind), g.Name}, Level(g.Level)})
		}
		c.acls[e.Name] = a
	}
	return c
}

// Index is the snapshot's index.
func (c *Checker) Index() uint64 { return c.index }

// token finds the live token an Authorization header value names, or
// says why there is none (UNAUTHENTICATED).
func (c *Checker) token(authorization string, now time.Time) (checkedToken, *api.Error) {
	v, err := ParseBearer(authorization)
	if err != nil {
		return checkedToken{}, api.Errorf(api.ErrUnauthenticated, "%v", err)
	}
	// HashToken's lookup without its allocations: the token's bytes and
	// the hex digest stay on the stack (Gantry's tokens are 36 bytes),
	// and a map index by string(bytes) copies nothing. This runs on
	// every invocation.
	var buf [64]byte
	sum := sha256.Sum256(append(buf[:0], v...))
	var key [2 * sha256.Size]byte
	hex.Encode(key[:], sum[:])
	t, ok := c.callers[string(key[:])]
	if !ok {
		return checkedToken{}, api.Errorf(api.ErrUnauthenticated, "%v", ErrUnknown)
	}
	if t.expiry >= 0 && now.UnixMilli() >= t.expiry {
		return checkedToken{}, api.Errorf(api.ErrUnauthenticated, "the token expired at %s; create a new one", time.UnixMilli(t.expiry).UTC().Format(time.RFC3339))
	}
	return t, nil
}

// Component checks that the caller an Authorization header value names
// is one of Gantry's components (or an admin) at now: the autoscaler's
// check of load reports and pokes. The error is UNAUTHENTICATED or
// PERMISSION_DENIED.
func (c *Checker) Component(authorization string, now time.Time) (*Caller, *api.Error) {
	t, e := c.token(authorization, now)
	if e != nil {
		return nil, e
	}
	if !t.caller.Admin && !t.caller.Component {
		return t.caller, api.Errorf(api.ErrPermissionDenied, "%s is neither in the %s group nor an admin; only Gantry's components report load", t.caller.Ref, ComponentsGroup)
	}
	return t.caller, nil
}

// Invoke checks that the caller an Authorization header value names may
// invoke endpoint (CAN_QUERY) at now, and returns the caller (its Name
// is the requester). The error is an *api.Error: UNAUTHENTICATED,
// PERMISSION_DENIED naming CAN_QUERY, or, for an endpoint the caller may
// not view, the activator's own 404 for an unknown endpoint (notFound),
// so that invocations are no oracle either. It keeps neither
// authorization nor endpoint once it returns: the activator passes views
// of a request's buffers.
func (c *Checker) Invoke(authorization, endpoint string, now time.Time, notFound *api.Error) (*Caller, *api.Error) {
	t, e := c.token(authorization, now)
	if e != nil {
		return nil, e
	}
	d := Decide(t.caller, c.acls[endpoint], CanQuery)
	switch {
	case d.Allowed():
		return t.caller, nil
	case d.Status == http.StatusForbidden && d.Have.AtLeast(CanView):
		return t.caller, api.Errorf(api.ErrPermissionDenied, "%s", d.Denied(t.caller, "serving endpoint "+endpoint))
	}
	return t.caller, notFound
}
