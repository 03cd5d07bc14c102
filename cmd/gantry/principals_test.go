package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/identity"
	"github.com/spf13/cobra"
)

// scimServer serves the identity API behind the scheduler's kind of
// authentication, and returns the service with an admin's token and a
// plain user's.
func scimServer(t *testing.T) (srv *httptest.Server, s *identity.Service, admin, user string) {
	t.Helper()
	s, err := identity.Open(filepath.Join(t.TempDir(), "identity.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	h := s.Handler(nil)
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := s.Authenticate(r.Header.Get("Authorization"))
		if err != nil {
			w.WriteHeader(http.StatusUnauthorized)
			json.NewEncoder(w).Encode(err)
			return
		}
		h.ServeHTTP(w, r.WithContext(identity.WithCaller(r.Context(), c)))
	}))
	t.Cleanup(srv.Close)
	tokenPath := filepath.Join(t.TempDir(), "admin-token")
	if _, err := s.Bootstrap(tokenPath); err != nil {
		t.Fatal(err)
	}
	admin, err = identity.ReadTokenFile(tokenPath)
	if err != nil {
		t.Fatal(err)
	}
	p, err := s.CreatePrincipal(identity.User, "plain@corp.com", "")
	if err != nil {
		t.Fatal(err)
	}
	user, _, err = s.CreateToken(p.ID, p.ID, 0, "")
	if err != nil {
		t.Fatal(err)
	}
	return srv, s, admin, user
}

// runCLI runs one client command in process, as token, and returns what
// it printed and its error as the CLI would show it.
func runCLI(t *testing.T, addr, token string, args ...string) (string, error) {
	t.Helper()
	t.Setenv("GANTRY_TOKEN", token)
	root := &cobra.Command{Use: "gantry", SilenceUsage: true, SilenceErrors: true}
	root.AddCommand(usersCmd(), groupsCmd(), servicePrincipalsCmd())
	var out, stderr bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&stderr)
	root.SetArgs(append(args, "--addr", addr))
	err := root.ExecuteContext(context.Background())
	if err != nil {
		return out.String() + stderr.String(), &cliError{describe(err)}
	}
	return out.String(), nil
}

type cliError struct{ msg string }

func (e *cliError) Error() string { return e.msg }

func TestPrincipalsCLI(t *testing.T) {
	srv, s, admin, user := scimServer(t)
	run := func(args ...string) string {
		t.Helper()
		out, err := runCLI(t, srv.URL, admin, args...)
		if err != nil {
			t.Fatalf("gantry %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	created := regexp.MustCompile(`^created (user|service principal|group) (\S+) \(id ([0-9]+)\)\n$`)

	out := run("users", "create", "ada@corp.com", "--display-name", "Ada Lovelace")
	m := created.FindStringSubmatch(out)
	if m == nil || m[2] != "ada@corp.com" {
		t.Fatalf("users create: %q", out)
	}
	adaID := m[3]
	if p, ok := s.Lookup(identity.Ref{Kind: identity.User, Name: "ada@corp.com"}); !ok || p.ID != adaID || p.DisplayName != "Ada Lovelace" {
		t.Fatalf("the service holds %+v", p)
	}

	m = created.FindStringSubmatch(run("service-principals", "create", "--display-name", "ci"))
	if m == nil || !regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4`).MatchString(m[2]) {
		t.Fatalf("service-principals create: %q", m)
	}
	ciApp := m[2]

	// A group made with members named as people know them.
	run("groups", "create", "ds", "--member", "ada@corp.com,ci")
	g, _ := s.Lookup(identity.Ref{Kind: identity.Group, Name: "ds"})
	if g == nil || len(g.Members) != 2 {
		t.Fatalf("group ds: %+v", g)
	}

	// get by name, by id, and a service principal by its display name.
	var u api.ScimPrincipal
	for _, ref := range []string{"ada@corp.com", adaID} {
		if err := json.Unmarshal([]byte(run("users", "get", ref)), &u); err != nil || u.ID != adaID || u.UserName != "ada@corp.com" ||
			len(u.Groups) != 1 || u.Groups[0].Display != "ds" {
			t.Errorf("users get %s: %+v %v", ref, u, err)
		}
	}
	var sp api.ScimPrincipal
	if err := json.Unmarshal([]byte(run("service-principals", "get", "ci")), &sp); err != nil || sp.ApplicationID != ciApp {
		t.Errorf("service-principals get ci: %+v %v", sp, err)
	}

	// Tables name members and groups.
	out = run("users", "list")
	if !regexp.MustCompile(`(?m)^ID +USERNAME +DISPLAY NAME +ACTIVE +GROUPS$`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^`+adaID+` +ada@corp.com +Ada Lovelace +yes +ds$`).MatchString(out) ||
		!strings.Contains(out, "plain@corp.com") {
		t.Errorf("users list:\n%s", out)
	}
	out = run("groups", "list")
	if !regexp.MustCompile(`(?m)^\d+ +ds +(Ada Lovelace,ci|ci,Ada Lovelace) `).MatchString(out) || !regexp.MustCompile(`(?m)^\d+ +admins +gantry-admin `).MatchString(out) {
		t.Errorf("groups list:\n%s", out)
	}
	var listed []api.ScimPrincipal
	if err := json.Unmarshal([]byte(run("users", "list", "--json", "--filter", `userName sw "ada"`)), &listed); err != nil || len(listed) != 1 || listed[0].ID != adaID {
		t.Errorf("users list --json --filter: %+v %v", listed, err)
	}

	// Members leave and come back.
	if out := run("groups", "remove-member", "ds", "ada@corp.com"); out != "user ada@corp.com removed from group ds\n" {
		t.Errorf("remove-member: %q", out)
	}
	if gs := s.GroupsOf(adaID); len(gs) != 0 {
		t.Errorf("ada is still in %v", gs)
	}
	run("groups", "add-member", "ds", adaID)
	if gs := s.GroupsOf(adaID); len(gs) != 1 {
		t.Errorf("ada is in %v after add-member", gs)
	}

	// Nested groups: ds inside outer; ada is in outer through ds; outer
	// cannot go inside ds.
	run("groups", "create", "outer")
	if out := run("groups", "add-member", "outer", "ds"); out != "group ds added to group outer\n" {
		t.Errorf("add a group to a group: %q", out)
	}
	if err := json.Unmarshal([]byte(run("users", "get", "ada@corp.com")), &u); err != nil || len(u.Groups) != 2 ||
		u.Groups[0].Display != "ds" || u.Groups[0].Type != "direct" || u.Groups[1].Display != "outer" || u.Groups[1].Type != "indirect" {
		t.Errorf("ada's groups: %+v %v", u.Groups, err)
	}
	var og api.ScimPrincipal
	if err := json.Unmarshal([]byte(run("groups", "get", "outer")), &og); err != nil || len(og.Members) != 1 || og.Members[0].Display != "ds" ||
		!strings.HasPrefix(og.Members[0].Ref, "Groups/") {
		t.Errorf("outer's members: %+v %v", og.Members, err)
	}
	if _, err := runCLI(t, srv.URL, admin, "groups", "add-member", "ds", "outer"); err == nil || !strings.Contains(err.Error(), "would make a cycle (INVALID_PARAMETER_VALUE)") {
		t.Errorf("a cycle: %v", err)
	}

	// A component of its own: a service principal in gantry-components
	// with a token made for it, printed alone on stdout.
	run("service-principals", "create", "--display-name", "activator-1")
	run("groups", "add-member", identity.ComponentsGroup, "activator-1")
	tok := strings.TrimSpace(run("service-principals", "token", "activator-1", "--comment", "activator 1", "--lifetime", "720h"))
	if c, err := s.Authenticate("Bearer " + tok); err != nil || !c.Component || c.Admin || c.DisplayName != "activator-1" {
		t.Errorf("the new token: %+v %v", c, err)
	}
	if _, err := runCLI(t, srv.URL, user, "service-principals", "token", "activator-1"); err == nil || !strings.Contains(err.Error(), "PERMISSION_DENIED") {
		t.Errorf("a plain user makes a token for another: %v", err)
	}

	// Refusals say why.
	for _, tc := range []struct {
		token string
		args  []string
		want  string
	}{
		{admin, []string{"groups", "add-member", "ds", "nobody@corp.com"}, `no user, service principal or group is named "nobody@corp.com"`},
		{admin, []string{"users", "get", "nobody@corp.com"}, `user "nobody@corp.com" does not exist; ` + "`gantry users list`"},
		{admin, []string{"users", "create", "ada@corp.com"}, "RESOURCE_ALREADY_EXISTS"},
		{admin, []string{"groups", "delete", "admins"}, "the admins group cannot be deleted: Gantry needs it (INVALID_PARAMETER_VALUE)"},
		{admin, []string{"users", "list", "--filter", "userName gt \"a\""}, `operator "gt" is not supported`},
		{user, []string{"users", "create", "eve@corp.com"}, "only admins may POST /api/2.0/preview/scim/v2/Users (PERMISSION_DENIED)"},
		{user, []string{"users", "delete", "ada@corp.com"}, "only admins may DELETE"},
		{"dapi-not-a-token", []string{"users", "list"}, "UNAUTHENTICATED"},
	} {
		out, err := runCLI(t, srv.URL, tc.token, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("gantry %s: %v, want an error with %q\n%s", strings.Join(tc.args, " "), err, tc.want, out)
		}
	}
	if _, ok := s.Lookup(identity.Ref{Kind: identity.User, Name: "eve@corp.com"}); ok {
		t.Error("a plain user created a user")
	}

	// A name that two kinds hold must be given by id.
	run("groups", "create", "ci")
	if _, err := runCLI(t, srv.URL, admin, "groups", "add-member", "ds", "ci"); err == nil || !strings.Contains(err.Error(), "names more than one principal") {
		t.Errorf("add an ambiguous member: %v", err)
	}

	// Plain users may read; deletes take the principal's tokens along.
	if out, err := runCLI(t, srv.URL, user, "groups", "get", "ds"); err != nil || !strings.Contains(out, `"displayName": "ds"`) {
		t.Errorf("a user reads a group: %v\n%s", err, out)
	}
	if out := run("users", "delete", "plain@corp.com"); !strings.HasPrefix(out, "deleted user plain@corp.com (id ") {
		t.Errorf("users delete: %q", out)
	}
	if _, err := s.Authenticate("Bearer " + user); err == nil {
		t.Error("the deleted user's token still authenticates")
	}
	run("service-principals", "delete", ciApp)
	run("groups", "delete", "ds")
	if _, ok := s.Lookup(identity.Ref{Kind: identity.Group, Name: "ds"}); ok {
		t.Error("groups delete left ds")
	}
}
