package identity

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gantry/gantry/api"
)

// clock is a settable clock for token expiry.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func open(t *testing.T, path string, c *clock) *Service {
	t.Helper()
	s, err := Open(path, c.now)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func code(err error) string {
	var ae *api.Error
	if errors.As(err, &ae) {
		return ae.Code
	}
	if err == nil {
		return ""
	}
	return "not an *api.Error: " + err.Error()
}

func TestTokenLifecycle(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "identity.db")
	c := &clock{time.Unix(1_800_000_000, 0)}
	s := open(t, path, c)
	u, err := s.CreatePrincipal(User, "alice@corp.com", "Alice")
	if err != nil {
		t.Fatal(err)
	}
	value, tok, err := s.CreateToken(u.ID, u.ID, time.Hour, "laptop")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(value, "dapi") || len(value) != 36 {
		t.Errorf("token value %q: want dapi and 32 hex digits", value)
	}
	got, err := s.Authenticate("Bearer " + value)
	if err != nil {
		t.Fatal(err)
	}
	if got.Name() != "alice@corp.com" || got.ID != u.ID || got.Admin {
		t.Errorf("caller = %+v", got)
	}
	if _, err := s.Authenticate("Bearer " + value + "x"); code(err) != api.ErrUnauthenticated {
		t.Errorf("unknown token: %v", err)
	}

	// Only the hash is stored: the file never holds the value.
	s.Close()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte(value)) || bytes.Contains(raw, []byte(value[4:])) {
		t.Fatal("the store file contains the token value")
	}
	if !bytes.Contains(raw, []byte(HashToken(value))) {
		t.Fatal("the store file lacks the token's hash: the test looks in the wrong place")
	}

	// It survives a restart, and expires on time.
	s = open(t, path, c)
	if _, err := s.Authenticate("Bearer " + value); err != nil {
		t.Fatalf("after reopen: %v", err)
	}
	c.t = c.t.Add(time.Hour - time.Millisecond)
	if _, err := s.Authenticate("Bearer " + value); err != nil {
		t.Fatalf("a millisecond before expiry: %v", err)
	}
	c.t = c.t.Add(time.Millisecond)
	if _, err := s.Authenticate("Bearer " + value); code(err) != api.ErrUnauthenticated || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("at expiry: %v", err)
	}

	// Revocation is immediate and durable.
	c.t = time.Unix(1_800_000_000, 0)
	if err := s.DeleteToken(tok.ID, "someone-else"); code(err) != api.ErrResourceDoesNotExist {
		t.Errorf("deleting another's token: %v", err)
	}
	if err := s.DeleteToken(tok.ID, u.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Authenticate("Bearer " + value); code(err) != api.ErrUnauthenticated {
		t.Errorf("revoked token: %v", err)
	}
	s.Close()
	s = open(t, path, c)
	if _, err := s.Authenticate("Bearer " + value); code(err) != api.ErrUnauthenticated {
		t.Errorf("revoked token after reopen: %v", err)
	}
}

func TestDeletePrincipalRemovesAccess(t *testing.T) {
	c := &clock{time.Unix(1_800_000_000, 0)}
	s := open(t, filepath.Join(t.TempDir(), "identity.db"), c)
	u, _ := s.CreatePrincipal(User, "bob", "")
	g, _ := s.CreatePrincipal(Group, "ds", "")
	if _, err := s.SetMembers(g.ID, []string{u.ID}, nil, false); err != nil {
		t.Fatal(err)
	}
	value, _, _ := s.CreateToken(u.ID, u.ID, 0, "")
	ep := Object{Endpoints, "e1"}
	bob, _ := s.Authenticate("Bearer " + value)
	if _, err := s.Claim(ep, bob); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetACL(ep, []Grant{{Ref{User, "bob"}, CanQuery}}, false); err != nil {
		t.Fatal(err)
	}
	if l := s.Level(bob, ep); l != CanManage {
		t.Fatalf("owner's level = %q", l)
	}
	if err := s.DeletePrincipal(User, u.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Authenticate("Bearer " + value); code(err) != api.ErrUnauthenticated {
		t.Errorf("a deleted user's token still authenticates: %v", err)
	}
	// A new bob inherits nothing.
	u2, _ := s.CreatePrincipal(User, "bob", "")
	v2, _, _ := s.CreateToken(u2.ID, u2.ID, 0, "")
	bob2, _ := s.Authenticate("Bearer " + v2)
	if l := s.Level(bob2, ep); l != NoPermissions {
		t.Errorf("a re-created user inherited %q", l)
	}
	if len(bob2.Groups) != 0 {
		t.Errorf("a re-created user inherited groups %v", bob2.Groups)
	}
	if err := s.DeletePrincipal(Group, s.Principals(Group, func(p *Principal) bool { return p.Name == AdminsGroup })[0].ID); code(err) != api.ErrInvalidParameterValue {
		t.Errorf("deleting admins: %v", err)
	}
}

func TestGroupsAndAdmins(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "identity.db"), &clock{time.Unix(1_800_000_000, 0)})
	sp, err := s.CreatePrincipal(ServicePrincipal, "", "ci")
	if err != nil {
		t.Fatal(err)
	}
	if len(sp.Name) != 36 {
		t.Errorf("applicationId %q is not a UUID", sp.Name)
	}
	admins, ok := s.Lookup(Ref{Group, AdminsGroup})
	if !ok {
		t.Fatal("no admins group")
	}
	v, _, _ := s.CreateToken(sp.ID, sp.ID, 0, "")
	c, _ := s.Authenticate("Bearer " + v)
	if c.Admin {
		t.Fatal("admin before joining admins")
	}
	if _, err := s.SetMembers(admins.ID, []string{sp.ID}, nil, false); err != nil {
		t.Fatal(err)
	}
	c, _ = s.Authenticate("Bearer " + v)
	if !c.Admin || s.Level(c, Object{Models, "anything"}) != CanManage {
		t.Errorf("member of admins: %+v", c)
	}
	if _, err := s.SetMembers(admins.ID, []string{admins.ID}, nil, false); code(err) != api.ErrInvalidParameterValue {
		t.Errorf("a group in a group: %v", err)
	}
	if _, err := s.CreatePrincipal(User, "x\ny", ""); code(err) != api.ErrInvalidParameterValue {
		t.Errorf("control characters in a name: %v", err)
	}
	if _, err := s.CreatePrincipal(ServicePrincipal, sp.Name, ""); code(err) != api.ErrResourceAlreadyExists {
		t.Errorf("duplicate applicationId: %v", err)
	}
}

func TestACLReplaceAndPatch(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "identity.db"), &clock{time.Unix(1_800_000_000, 0)})
	s.CreatePrincipal(User, "a", "")
	s.CreatePrincipal(User, "b", "")
	o := Object{Endpoints, "e"}
	owner := &Caller{Ref: Ref{User, "a"}}
	if ok, _ := s.Claim(o, owner); !ok {
		t.Fatal("first claim refused")
	}
	if ok, _ := s.Claim(o, &Caller{Ref: Ref{User, "b"}}); ok {
		t.Fatal("second claim taken")
	}
	if _, err := s.SetACL(o, []Grant{{Ref{User, "b"}, CanView}}, false); err != nil {
		t.Fatal(err)
	}
	a, _ := s.SetACL(o, []Grant{{Ref{User, "b"}, CanQuery}}, false)
	if len(a.Grants) != 1 || a.Grants[0].Level != CanQuery {
		t.Errorf("PATCH of an existing grant: %+v", a.Grants)
	}
	a, _ = s.SetACL(o, nil, true)
	if len(a.Grants) != 0 || a.Owner == nil || a.Owner.Name != "a" {
		t.Errorf("PUT with none keeps the owner only: %+v", a)
	}
	if _, err := s.SetACL(o, []Grant{{Ref{User, "nobody"}, CanView}}, false); code(err) != api.ErrInvalidParameterValue {
		t.Errorf("grant to an unknown user: %v", err)
	}
	if _, err := s.SetACL(o, []Grant{{Ref{User, "b"}, CanRead}}, false); code(err) != api.ErrInvalidParameterValue {
		t.Errorf("a model level on an endpoint: %v", err)
	}
	if err := s.Forget(o); err != nil || s.ACL(o) != nil {
		t.Errorf("Forget: %v, %+v", err, s.ACL(o))
	}
}

func TestWaitWakesOnChange(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "identity.db"), &clock{time.Unix(1_800_000_000, 0)})
	idx := s.Index()
	done := make(chan uint64)
	go func() {
		n, _ := s.Wait(context.Background(), idx)
		done <- n
	}()
	s.CreatePrincipal(User, "x", "")
	select {
	case n := <-done:
		if n <= idx {
			t.Errorf("Wait returned %d, not above %d", n, idx)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Wait did not wake")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if n, err := s.Wait(ctx, s.Index()); err == nil || n != s.Index() {
		t.Errorf("Wait at the current index = %d, %v; want the index and ctx's error", n, err)
	}
}

// TestNestedGroups: a group may hold groups; a grant to the outer group
// reaches the members of inner ones, admins' included; a cycle is
// refused; deleting the inner group ends the reach.
func TestNestedGroups(t *testing.T) {
	path := filepath.Join(t.TempDir(), "identity.db")
	s := open(t, path, &clock{time.Unix(1_800_000_000, 0)})
	u, _ := s.CreatePrincipal(User, "ada@corp.com", "")
	tok, _, _ := s.CreateToken(u.ID, u.ID, 0, "")
	inner, _ := s.CreatePrincipal(Group, "inner", "")
	outer, _ := s.CreatePrincipal(Group, "outer", "")
	top, _ := s.CreatePrincipal(Group, "top", "")
	mustSet := func(g *Principal, add ...string) {
		t.Helper()
		if _, err := s.SetMembers(g.ID, add, nil, false); err != nil {
			t.Fatal(err)
		}
	}
	mustSet(inner, u.ID)
	mustSet(outer, inner.ID)
	mustSet(top, outer.ID)
	c, err := s.Authenticate("Bearer " + tok)
	if err != nil || strings.Join(c.Groups, ",") != "inner,outer,top" || c.Admin {
		t.Fatalf("caller %+v %v, want groups inner,outer,top", c, err)
	}
	acl := &ACL{Grants: []Grant{{Ref{Group, "top"}, CanQuery}}}
	if l := Effective(c, acl); l != CanQuery {
		t.Errorf("a grant to top reaches a member of inner as %q", l)
	}

	// Cycles, of one group and of three.
	for _, tc := range []struct {
		g   *Principal
		add string
	}{{inner, inner.ID}, {inner, top.ID}, {outer, top.ID}} {
		_, err := s.SetMembers(tc.g.ID, []string{tc.add}, nil, false)
		if code(err) != api.ErrInvalidParameterValue || !strings.Contains(err.Error(), "cycle") && !strings.Contains(err.Error(), "inside itself") {
			t.Errorf("add %s to %s: %v, want a 400 about the cycle", tc.add, tc.g.Name, err)
		}
	}
	if _, err := s.SetMembers(inner.ID, []string{top.ID}, nil, true); code(err) != api.ErrInvalidParameterValue {
		t.Errorf("replace inner's members with top: %v", err)
	}
	if c, _ := s.Authenticate("Bearer " + tok); strings.Join(c.Groups, ",") != "inner,outer,top" {
		t.Errorf("a refused change changed the groups: %v", c.Groups)
	}

	// A group inside admins makes its members admins; reopened, still.
	admins, _ := s.Lookup(Ref{Group, AdminsGroup})
	mustSet(admins, outer.ID)
	if c, _ := s.Authenticate("Bearer " + tok); !c.Admin {
		t.Error("a member of inner, in outer, in admins, is not an admin")
	}
	snap := s.Export(nil)
	if len(snap.Tokens) != 1 || !snap.Tokens[0].Admin || len(snap.Tokens[0].Groups) != 4 {
		t.Errorf("the access snapshot: %+v", snap.Tokens)
	}
	s.Close()
	s = open(t, path, &clock{time.Unix(1_800_000_000, 0)})
	if c, _ := s.Authenticate("Bearer " + tok); c == nil || !c.Admin {
		t.Error("after a restart the nested admin is not one")
	}
	if _, err := s.SetMembers(admins.ID, nil, []string{outer.ID}, false); err != nil {
		t.Fatal(err)
	}
	if c, _ := s.Authenticate("Bearer " + tok); c.Admin {
		t.Error("still an admin after outer left admins")
	}

	// Deleting inner drops it from outer: ada is in no group.
	if err := s.DeletePrincipal(Group, inner.ID); err != nil {
		t.Fatal(err)
	}
	if c, _ := s.Authenticate("Bearer " + tok); len(c.Groups) != 0 || Effective(c, acl) != NoPermissions {
		t.Errorf("after inner's deletion: groups %v, level %q", c.Groups, Effective(c, acl))
	}
}

// TestComponentsPrincipal: the components' token is a component's and
// not an admin's; the autoscaler's check takes it and an admin's, and
// refuses anyone else's.
func TestComponentsPrincipal(t *testing.T) {
	dir := t.TempDir()
	s := open(t, filepath.Join(dir, "identity.db"), &clock{time.Unix(1_800_000_000, 0)})
	for _, g := range []string{AdminsGroup, ComponentsGroup} {
		p, _ := s.Lookup(Ref{Group, g})
		if err := s.DeletePrincipal(Group, p.ID); code(err) != api.ErrInvalidParameterValue {
			t.Errorf("delete %s: %v", g, err)
		}
	}
	if wrote, err := s.BootstrapComponents(filepath.Join(dir, "components-token")); err != nil || !wrote {
		t.Fatal(wrote, err)
	}
	s.Bootstrap(filepath.Join(dir, "admin-token"))
	comp, _ := ReadTokenFile(filepath.Join(dir, "components-token"))
	admin, _ := ReadTokenFile(filepath.Join(dir, "admin-token"))
	c, err := s.Authenticate("Bearer " + comp)
	if err != nil || !c.Component || c.Admin || c.DisplayName != ComponentsName {
		t.Fatalf("the components' token: %+v %v", c, err)
	}
	u, _ := s.CreatePrincipal(User, "ada@corp.com", "")
	user, _, _ := s.CreateToken(u.ID, u.ID, 0, "")
	chk := NewChecker(s.Export(nil))
	now := time.Unix(1_800_000_000, 0)
	for _, tc := range []struct{ who, hdr, want string }{
		{"components", "Bearer " + comp, ""}, {"admin", "Bearer " + admin, ""},
		{"user", "Bearer " + user, api.ErrPermissionDenied}, {"unknown", "Bearer dapi0123", api.ErrUnauthenticated}, {"none", "", api.ErrUnauthenticated},
	} {
		_, err := chk.Component(tc.hdr, now)
		got := ""
		if err != nil {
			got = err.Code
		}
		if got != tc.want {
			t.Errorf("Component(%s's token): %v, want %q", tc.who, err, tc.want)
		}
	}
}
