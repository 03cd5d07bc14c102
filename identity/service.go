// Package identity is who may do what in Gantry: principals (users,
// groups, service principals), the tokens they authenticate with, and the
// access control lists of serving endpoints and registered models, in
// Databricks' shapes (SCIM, token and permissions APIs).
//
// Who does what:
//
//   - Service holds it all in memory, as an immutable snapshot swapped on
//     each change, and writes through to a bbolt file in the data dir.
//     Authenticate is a map lookup in the current snapshot (no lock, no
//     I/O), so that it can sit on every request.
//   - Decide (access.go) is the authorization decision, a pure function of
//     the caller, the object's ACL and the level the request needs.
//   - Handler serves the SCIM, token and permissions APIs; the scheduler
//     mounts it behind its authentication middleware, which puts the
//     Caller in the request's context (WithCaller).
//
// Tokens are stored as their SHA-256 only; the value is shown once, in the
// answer that creates it. Deleting a token revokes it: it leaves the
// snapshot, and Wait wakes whoever follows the snapshot (the activators)
// with the next index.
package identity

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"maps"
	"math/big"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gantry/gantry/api"
	bolt "go.etcd.io/bbolt"
)

// AdminsGroup is the group whose members hold every permission, as
// Databricks' workspace admins do. It always exists.
const AdminsGroup = "admins"

// ComponentsGroup is the group of Gantry's own components (activators,
// the autoscaler, loggers): its members may call the components' routes
// (the route table, the access snapshot, external keys, rate-limit
// coordination, deployments and scaling, monitor definitions, load
// reports) and nothing else: no endpoint, model, table, secret or
// principal. It always exists. The name is Gantry's own, so that a
// workspace's "components" group does not gain the role by accident.
const ComponentsGroup = "gantry-components"

// builtinGroups always exist and cannot be deleted.
var builtinGroups = []string{AdminsGroup, ComponentsGroup}

// DefaultTokenLifetime is a token's lifetime when create names none:
// Databricks' two years.
const DefaultTokenLifetime = 2 * 365 * 24 * time.Hour

var (
	principalsBucket = []byte("principals")
	tokensBucket     = []byte("tokens")
	aclsBucket       = []byte("acls")
)

// Principal is a user, service principal or group as stored.
type Principal struct {
	ID   string `json:"id"`
	Kind Kind   `json:"kind"`
	// Name is a user's userName, a service principal's applicationId, a
	// group's displayName: what ACL entries and filters use.
	Name        string `json:"name"`
	DisplayName string `json:"display_name,omitempty"`
	Active      bool   `json:"active"`
	// Members are the ids of a group's users, service principals and
	// groups: a member group's members hold what the group holds.
	Members []string `json:"members,omitempty"`
	// Created is milliseconds since the epoch.
	Created int64 `json:"created"`
}

func (p *Principal) ref() Ref { return Ref{Kind: p.Kind, Name: p.Name} }

// Token is what is stored about a token: never its value.
type Token struct {
	ID   string `json:"token_id"`
	Hash string `json:"hash"`
	// Owner is the id of the principal the token authenticates;
	// CreatedBy of the one that made it (an admin, on behalf of a
	// service principal).
	Owner     string `json:"owner_id"`
	CreatedBy string `json:"created_by_id"`
	// Created and Expiry are milliseconds since the epoch; Expiry is -1
	// for a token that never expires.
	Created int64  `json:"creation_time"`
	Expiry  int64  `json:"expiry_time"`
	Comment string `json:"comment,omitempty"`
}

// Expired reports whether t no longer authenticates at now.
func (t *Token) Expired(now time.Time) bool {
	return t.Expiry >= 0 && now.UnixMilli() >= t.Expiry
}

// snapshot is one immutable state of the service. Writers build the next
// one from a copy; nothing in a published snapshot changes, pointers
// included.
type snapshot struct {
	index      uint64
	principals map[string]*Principal // by id
	names      map[Ref]string        // principal's Ref → id
	tokens     map[string]*Token     // by hash
	tokenIDs   map[string]string     // token id → hash
	acls       map[string]*ACL       // by Object.key
	// Derived by derive: direct is member id → the ids of the groups
	// that list it; memberOf is principal id → the names of every group
	// that holds it, through nested groups too, sorted; adminIDs and
	// componentIDs are the members, direct or nested, of the built-in
	// groups.
	direct       map[string][]string
	memberOf     map[string][]string
	adminIDs     map[string]bool
	componentIDs map[string]bool
}

func (s *snapshot) clone() *snapshot {
	return &snapshot{
		index:      s.index,
		principals: maps.Clone(s.principals),
		names:      maps.Clone(s.names),
		tokens:     maps.Clone(s.tokens),
		tokenIDs:   maps.Clone(s.tokenIDs),
		acls:       maps.Clone(s.acls),
	}
}

// derive rebuilds the derived maps after a change. Membership is
// transitive: a member of group inner, itself a member of outer, is in
// outer too, so grants to outer reach it. SetMembers refuses cycles; the
// walk stops at groups it has seen all the same, so a cycle in an old
// file cannot hang it.
func (s *snapshot) derive() {
	s.direct = map[string][]string{}
	for _, p := range s.principals {
		if p.Kind != Group {
			continue
		}
		for _, m := range p.Members {
			s.direct[m] = append(s.direct[m], p.ID)
		}
	}
	s.memberOf = map[string][]string{}
	s.adminIDs = map[string]bool{}
	s.componentIDs = map[string]bool{}
	for id := range s.principals {
		seen := s.ancestors(id)
		if len(seen) == 0 {
			continue
		}
		names := make([]string, 0, len(seen))
		for gid := range seen {
			name := s.principals[gid].Name
			names = append(names, name)
			switch name {
			case AdminsGroup:
				s.adminIDs[id] = true
			case ComponentsGroup:
				s.componentIDs[id] = true
			}
		}
		slices.Sort(names)
		s.memberOf[id] = names
	}
}

// ancestors is the set of ids of the groups that hold id, directly or
// through groups, from s.direct.
func (s *snapshot) ancestors(id string) map[string]bool {
	seen := map[string]bool{}
	queue := slices.Clone(s.direct[id])
	for len(queue) > 0 {
		g := queue[0]
		queue = queue[1:]
		if seen[g] || s.principals[g] == nil {
			continue
		}
		seen[g] = true
		queue = append(queue, s.direct[g]...)
	}
	return seen
}

// Service is Gantry's identity and access state. It is safe for
// concurrent use.
type Service struct {
	db  *bolt.DB
	now func() time.Time

	// cur is the published snapshot; readers load it without a lock.
	cur atomic.Pointer[snapshot]
	// wmu serializes writers: each copies cur, writes the file, publishes.
	wmu sync.Mutex
	// cmu guards changed, which is closed and replaced on each publish,
	// waking Wait.
	cmu     sync.Mutex
	changed chan struct{}
}

// Open opens or creates the identity store at path and makes sure the
// admins group exists. now is the clock tokens expire by (nil: time.Now).
func Open(path string, now func() time.Time) (*Service, error) {
	if now == nil {
		now = time.Now
	}
	// The timeout turns "another gantry holds this data dir" into an error.
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open identity store %s: %w", path, err)
	}
	s := &Service{db: db, now: now, changed: make(chan struct{})}
	snap := &snapshot{index: 1, principals: map[string]*Principal{}, names: map[Ref]string{},
		tokens: map[string]*Token{}, tokenIDs: map[string]string{}, acls: map[string]*ACL{}}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{principalsBucket, tokensBucket, aclsBucket} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		if err := tx.Bucket(principalsBucket).ForEach(func(k, v []byte) error {
			p := new(Principal)
			if err := json.Unmarshal(v, p); err != nil {
				return fmt.Errorf("decode principal %s: %w", k, err)
			}
			snap.principals[p.ID] = p
			snap.names[p.ref()] = p.ID
			return nil
		}); err != nil {
			return err
		}
		if err := tx.Bucket(tokensBucket).ForEach(func(k, v []byte) error {
			t := new(Token)
			if err := json.Unmarshal(v, t); err != nil {
				return fmt.Errorf("decode token %s: %w", t.ID, err)
			}
			snap.tokens[t.Hash] = t
			snap.tokenIDs[t.ID] = t.Hash
			return nil
		}); err != nil {
			return err
		}
		if err := tx.Bucket(aclsBucket).ForEach(func(k, v []byte) error {
			a := new(ACL)
			if err := json.Unmarshal(v, a); err != nil {
				return fmt.Errorf("decode ACL of %s: %w", k, err)
			}
			snap.acls[string(k)] = a
			return nil
		}); err != nil {
			return err
		}
		for _, name := range builtinGroups {
			if _, ok := snap.names[Ref{Group, name}]; ok {
				continue
			}
			g := &Principal{ID: newPrincipalID(), Kind: Group, Name: name, DisplayName: name, Active: true, Created: now().UnixMilli()}
			if err := putJSON(tx, principalsBucket, g.ID, g); err != nil {
				return err
			}
			snap.principals[g.ID] = g
			snap.names[g.ref()] = g.ID
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("init identity store %s: %w", path, err)
	}
	snap.derive()
	s.cur.Store(snap)
	return s, nil
}

// Close closes the file.
func (s *Service) Close() error { return s.db.Close() }

// Index is the current snapshot's index; it grows with every change.
func (s *Service) Index() uint64 { return s.cur.Load().index }

// Wait returns the first index above index, or the current one with
// ctx's error when ctx ends first: the blocking query that followers of
// the tokens (activators) use to learn of a revocation at once.
func (s *Service) Wait(ctx context.Context, index uint64) (uint64, error) {
	for {
		s.cmu.Lock()
		ch := s.changed
		s.cmu.Unlock()
		if cur := s.cur.Load().index; cur > index {
			return cur, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return s.cur.Load().index, ctx.Err()
		}
	}
}

// update runs fn on a copy of the current snapshot inside one bbolt
// transaction and publishes the copy if both succeed. fn may replace
// entries of next's maps but must not change what they point to.
func (s *Service) update(fn func(tx *bolt.Tx, next *snapshot) error) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	next := s.cur.Load().clone()
	if err := s.db.Update(func(tx *bolt.Tx) error { return fn(tx, next) }); err != nil {
		return err
	}
	next.index++
	next.derive()
	s.cur.Store(next)
	s.cmu.Lock()
	close(s.changed)
	s.changed = make(chan struct{})
	s.cmu.Unlock()
	return nil
}

func putJSON(tx *bolt.Tx, bucket []byte, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return tx.Bucket(bucket).Put([]byte(key), b)
}

// Authenticate returns the caller an Authorization header value names, or
// an UNAUTHENTICATED *api.Error saying why: no header, not a bearer
// token, unknown or revoked, expired, or the principal is inactive.
func (s *Service) Authenticate(header string) (*Caller, error) {
	v, err := ParseBearer(header)
	if err != nil {
		return nil, api.Errorf(api.ErrUnauthenticated, "%v", err)
	}
	snap := s.cur.Load()
	t, ok := snap.tokens[HashToken(v)]
	if !ok {
		return nil, api.Errorf(api.ErrUnauthenticated, "%v", ErrUnknown)
	}
	if t.Expired(s.now()) {
		return nil, api.Errorf(api.ErrUnauthenticated, "the token expired at %s; create a new one", time.UnixMilli(t.Expiry).UTC().Format(time.RFC3339))
	}
	p := snap.principals[t.Owner]
	if p == nil || !p.Active {
		return nil, api.Errorf(api.ErrUnauthenticated, "the token's principal is deleted or inactive")
	}
	return snap.caller(p), nil
}

// caller builds the Caller of principal p.
func (snap *snapshot) caller(p *Principal) *Caller {
	return &Caller{ID: p.ID, Ref: p.ref(), DisplayName: p.DisplayName,
		Groups: snap.memberOf[p.ID], Admin: snap.adminIDs[p.ID], Component: snap.componentIDs[p.ID]}
}

// Level is what c holds on o (Effective over o's ACL).
func (s *Service) Level(c *Caller, o Object) Level {
	return Effective(c, s.cur.Load().acls[o.key()])
}

// ACL returns o's ACL; nil when it has none.
func (s *Service) ACL(o Object) *ACL { return s.cur.Load().acls[o.key()] }

// Claim makes owner the owner of o if o has no ACL yet (a new endpoint or
// a model's first upload) and reports whether it did. Two first uploads
// racing: one claims, the other finds the claim and must then hold
// CAN_MANAGE.
func (s *Service) Claim(o Object, owner *Caller) (bool, error) {
	claimed := false
	err := s.update(func(tx *bolt.Tx, next *snapshot) error {
		if _, ok := next.acls[o.key()]; ok {
			return nil
		}
		r := owner.Ref
		a := &ACL{Owner: &r}
		if err := putJSON(tx, aclsBucket, o.key(), a); err != nil {
			return err
		}
		next.acls[o.key()] = a
		claimed = true
		return nil
	})
	return claimed, err
}

// Forget drops o's ACL: o was deleted, and a new object with its id must
// not inherit grants.
func (s *Service) Forget(o Object) error {
	if s.ACL(o) == nil {
		return nil
	}
	return s.update(func(tx *bolt.Tx, next *snapshot) error {
		delete(next.acls, o.key())
		return tx.Bucket(aclsBucket).Delete([]byte(o.key()))
	})
}

// SetACL replaces o's grants (replace, PUT) or adds to and changes them
// (PATCH): a grant to a principal that has one replaces its level. Each
// grant's principal must exist and its level must be one o's type takes.
func (s *Service) SetACL(o Object, grants []Grant, replace bool) (*ACL, error) {
	var out *ACL
	err := s.update(func(tx *bolt.Tx, next *snapshot) error {
		for i, g := range grants {
			if _, ok := next.names[g.Principal]; !ok {
				return api.Errorf(api.ErrInvalidParameterValue, "access_control_list[%d]: %s does not exist", i, g.Principal)
			}
			if !o.Type.Takes(g.Level) {
				return api.Errorf(api.ErrInvalidParameterValue, "access_control_list[%d].permission_level: %q is not a level of %s; use one of %s", i, g.Level, o.Type, levelNames(o.Type))
			}
		}
		a := &ACL{}
		if old := next.acls[o.key()]; old != nil {
			a.Owner = old.Owner
			if !replace {
				a.Grants = slices.Clone(old.Grants)
			}
		}
		for _, g := range grants {
			i := slices.IndexFunc(a.Grants, func(h Grant) bool { return h.Principal == g.Principal })
			if i >= 0 {
				a.Grants[i] = g
			} else {
				a.Grants = append(a.Grants, g)
			}
		}
		if err := putJSON(tx, aclsBucket, o.key(), a); err != nil {
			return err
		}
		next.acls[o.key()] = a
		out = a
		return nil
	})
	return out, err
}

func levelNames(t ObjectType) string {
	var ns []string
	for _, l := range t.Levels() {
		ns = append(ns, string(l.Level))
	}
	return strings.Join(ns, ", ")
}

// CreatePrincipal adds a user (name: userName), service principal (name:
// applicationId; a new UUID when empty) or group (name: displayName).
// Names are unique per kind.
func (s *Service) CreatePrincipal(kind Kind, name, display string) (*Principal, error) {
	if kind == ServicePrincipal && name == "" {
		name = newUUID()
	}
	if err := checkName(kind, name); err != nil {
		return nil, err
	}
	p := &Principal{ID: newPrincipalID(), Kind: kind, Name: name, DisplayName: display, Active: true, Created: s.now().UnixMilli()}
	err := s.update(func(tx *bolt.Tx, next *snapshot) error {
		if _, ok := next.names[p.ref()]; ok {
			return api.Errorf(api.ErrResourceAlreadyExists, "%s already exists", p.ref())
		}
		if err := putJSON(tx, principalsBucket, p.ID, p); err != nil {
			return err
		}
		next.principals[p.ID] = p
		next.names[p.ref()] = p.ID
		return nil
	})
	if err != nil {
		return nil, err
	}
	return p, nil
}

// checkName refuses names that cannot be a principal's: empty, too long,
// or with control characters (they end up in logs and inference tables).
func checkName(kind Kind, name string) error {
	field := map[Kind]string{User: "userName", ServicePrincipal: "applicationId", Group: "displayName"}[kind]
	if strings.TrimSpace(name) == "" {
		return api.Errorf(api.ErrInvalidParameterValue, "%s: required", field)
	}
	if len(name) > 256 {
		return api.Errorf(api.ErrInvalidParameterValue, "%s: longer than 256 bytes", field)
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f {
			return api.Errorf(api.ErrInvalidParameterValue, "%s: control characters are not allowed", field)
		}
	}
	return nil
}

// Principal returns the principal with SCIM id id of kind kind.
func (s *Service) Principal(kind Kind, id string) (*Principal, error) {
	p := s.cur.Load().principals[id]
	if p == nil || p.Kind != kind {
		return nil, api.Errorf(api.ErrResourceDoesNotExist, "%s %q does not exist", kindWord(kind), id)
	}
	return p, nil
}

// Lookup returns the principal r names.
func (s *Service) Lookup(r Ref) (*Principal, bool) {
	snap := s.cur.Load()
	id, ok := snap.names[r]
	if !ok {
		return nil, false
	}
	return snap.principals[id], true
}

func kindWord(k Kind) string {
	switch k {
	case User:
		return "user"
	case ServicePrincipal:
		return "service principal"
	}
	return "group"
}

// Principals lists the principals of kind kind that pass f (nil: all),
// sorted by name.
func (s *Service) Principals(kind Kind, match func(*Principal) bool) []*Principal {
	var out []*Principal
	for _, p := range s.cur.Load().principals {
		if p.Kind == kind && (match == nil || match(p)) {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b *Principal) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// GroupsOf returns the groups (principals) that hold id, directly or
// through nested groups, sorted by name.
func (s *Service) GroupsOf(id string) []*Principal {
	snap := s.cur.Load()
	var out []*Principal
	for _, name := range snap.memberOf[id] {
		out = append(out, snap.principals[snap.names[Ref{Group, name}]])
	}
	return out
}

// IsDirectMember reports whether group groupID lists id itself (SCIM's
// "direct" membership, against one through a nested group).
func (s *Service) IsDirectMember(id, groupID string) bool {
	return slices.Contains(s.cur.Load().direct[id], groupID)
}

// DeletePrincipal deletes a principal and everything that would let it
// back in: its tokens, its memberships, the grants to it and its
// ownerships (a new principal of the same name must not inherit them).
// The admins group cannot be deleted.
func (s *Service) DeletePrincipal(kind Kind, id string) error {
	return s.update(func(tx *bolt.Tx, next *snapshot) error {
		p := next.principals[id]
		if p == nil || p.Kind != kind {
			return api.Errorf(api.ErrResourceDoesNotExist, "%s %q does not exist", kindWord(kind), id)
		}
		if p.Kind == Group && slices.Contains(builtinGroups, p.Name) {
			return api.Errorf(api.ErrInvalidParameterValue, "the %s group cannot be deleted: Gantry needs it", p.Name)
		}
		if err := tx.Bucket(principalsBucket).Delete([]byte(id)); err != nil {
			return err
		}
		delete(next.principals, id)
		delete(next.names, p.ref())
		for h, t := range next.tokens {
			if t.Owner == id {
				if err := tx.Bucket(tokensBucket).Delete([]byte(h)); err != nil {
					return err
				}
				delete(next.tokens, h)
				delete(next.tokenIDs, t.ID)
			}
		}
		for gid, g := range next.principals {
			if g.Kind == Group && slices.Contains(g.Members, id) {
				ng := *g
				ng.Members = slices.DeleteFunc(slices.Clone(g.Members), func(m string) bool { return m == id })
				if err := putJSON(tx, principalsBucket, gid, &ng); err != nil {
					return err
				}
				next.principals[gid] = &ng
			}
		}
		ref := p.ref()
		for k, a := range next.acls {
			owned := a.Owner != nil && *a.Owner == ref
			granted := slices.ContainsFunc(a.Grants, func(g Grant) bool { return g.Principal == ref })
			if !owned && !granted {
				continue
			}
			na := &ACL{Owner: a.Owner, Grants: slices.DeleteFunc(slices.Clone(a.Grants), func(g Grant) bool { return g.Principal == ref })}
			if owned {
				na.Owner = nil
			}
			if err := putJSON(tx, aclsBucket, k, na); err != nil {
				return err
			}
			next.acls[k] = na
		}
		return nil
	})
}

// SetMembers changes a group's members: replace sets them, else add are
// added and remove removed. Members are users, service principals and
// groups by SCIM id. A group may not end up inside itself, directly or
// through others: membership would then mean nothing.
func (s *Service) SetMembers(groupID string, add, remove []string, replace bool) (*Principal, error) {
	var out *Principal
	err := s.update(func(tx *bolt.Tx, next *snapshot) error {
		g := next.principals[groupID]
		if g == nil || g.Kind != Group {
			return api.Errorf(api.ErrResourceDoesNotExist, "group %q does not exist", groupID)
		}
		for _, m := range add {
			if next.principals[m] == nil {
				return api.Errorf(api.ErrInvalidParameterValue, "members: principal %q does not exist", m)
			}
		}
		ng := *g
		ng.Members = slices.Clone(g.Members)
		if replace {
			ng.Members = nil
		}
		ng.Members = slices.DeleteFunc(ng.Members, func(m string) bool { return slices.Contains(remove, m) })
		for _, m := range add {
			if !slices.Contains(ng.Members, m) {
				ng.Members = append(ng.Members, m)
			}
		}
		next.principals[ng.ID] = &ng
		next.derive()
		// A cycle: g would hold itself, through the groups just added.
		if next.ancestors(ng.ID)[ng.ID] {
			for _, m := range add {
				if mp := next.principals[m]; mp.Kind == Group && (m == ng.ID || next.ancestors(ng.ID)[m]) {
					return api.Errorf(api.ErrInvalidParameterValue, "members: group %s holds group %s already (directly or through other groups); adding %s to %s would make a cycle", mp.Name, g.Name, mp.Name, g.Name)
				}
			}
			return api.Errorf(api.ErrInvalidParameterValue, "members: the change would put group %s inside itself", g.Name)
		}
		if err := putJSON(tx, principalsBucket, ng.ID, &ng); err != nil {
			return err
		}
		out = &ng
		return nil
	})
	return out, err
}

// CreateToken makes a token for principal owner (a user or service
// principal), made by createdBy, living lifetime (0: DefaultTokenLifetime).
// It returns the value, which is not stored and cannot be read again.
func (s *Service) CreateToken(owner, createdBy string, lifetime time.Duration, comment string) (string, *Token, error) {
	if lifetime < 0 {
		return "", nil, api.Errorf(api.ErrInvalidParameterValue, "lifetime_seconds: %d is negative; leave it out for %d days", int64(lifetime/time.Second), int(DefaultTokenLifetime/(24*time.Hour)))
	}
	if lifetime == 0 {
		lifetime = DefaultTokenLifetime
	}
	if len(comment) > 1024 {
		return "", nil, api.Errorf(api.ErrInvalidParameterValue, "comment: longer than 1024 bytes")
	}
	value := newTokenValue()
	now := s.now()
	t := &Token{ID: newTokenID(), Hash: HashToken(value), Owner: owner, CreatedBy: createdBy,
		Created: now.UnixMilli(), Expiry: now.Add(lifetime).UnixMilli(), Comment: comment}
	err := s.update(func(tx *bolt.Tx, next *snapshot) error {
		p := next.principals[owner]
		if p == nil || p.Kind == Group {
			return api.Errorf(api.ErrResourceDoesNotExist, "principal %q does not exist or cannot hold tokens", owner)
		}
		if err := putJSON(tx, tokensBucket, t.Hash, t); err != nil {
			return err
		}
		next.tokens[t.Hash] = t
		next.tokenIDs[t.ID] = t.Hash
		return nil
	})
	if err != nil {
		return "", nil, err
	}
	return value, t, nil
}

// Tokens lists the tokens of principal owner ("" for all), oldest first.
func (s *Service) Tokens(owner string) []*Token {
	var out []*Token
	for _, t := range s.cur.Load().tokens {
		if owner == "" || t.Owner == owner {
			out = append(out, t)
		}
	}
	slices.SortFunc(out, func(a, b *Token) int {
		if a.Created != b.Created {
			return int(a.Created - b.Created)
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out
}

// TokenByID finds a token by its id; owner "" finds any principal's.
func (s *Service) TokenByID(id, owner string) (*Token, error) {
	snap := s.cur.Load()
	t := snap.tokens[snap.tokenIDs[id]]
	if t == nil || (owner != "" && t.Owner != owner) {
		return nil, api.Errorf(api.ErrResourceDoesNotExist, "token %q does not exist", id)
	}
	return t, nil
}

// DeleteToken revokes a token by id; with owner set, only that
// principal's (a user deletes only its own tokens).
func (s *Service) DeleteToken(id, owner string) error {
	return s.update(func(tx *bolt.Tx, next *snapshot) error {
		h, ok := next.tokenIDs[id]
		if !ok || (owner != "" && next.tokens[h].Owner != owner) {
			return api.Errorf(api.ErrResourceDoesNotExist, "token %q does not exist", id)
		}
		delete(next.tokens, h)
		delete(next.tokenIDs, id)
		return tx.Bucket(tokensBucket).Delete([]byte(h))
	})
}

// newPrincipalID makes a SCIM id: decimal digits, as Databricks' are.
func newPrincipalID() string {
	n, _ := rand.Int(rand.Reader, big.NewInt(1<<53))
	return fmt.Sprintf("%d", n.Int64()+1<<53) // 16 digits, never a leading zero
}

func newTokenID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return fmt.Sprintf("%x", b)
}

// newUUID makes a version 4 UUID, a service principal's applicationId.
func newUUID() string {
	b := make([]byte, 16)
	rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// setActive sets a user's or service principal's active flag; an
// inactive principal's tokens do not authenticate.
func (s *Service) setActive(id string, active bool) (*Principal, error) {
	var out *Principal
	err := s.update(func(tx *bolt.Tx, next *snapshot) error {
		p := next.principals[id]
		if p == nil {
			return api.Errorf(api.ErrResourceDoesNotExist, "principal %q does not exist", id)
		}
		np := *p
		np.Active = active
		if err := putJSON(tx, principalsBucket, id, &np); err != nil {
			return err
		}
		next.principals[id] = &np
		out = &np
		return nil
	})
	return out, err
}
