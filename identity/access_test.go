package identity

import (
	"net/http"
	"testing"
)

func TestDecide(t *testing.T) {
	alice := &Caller{Ref: Ref{User, "alice@corp.com"}}
	bob := &Caller{Ref: Ref{User, "bob@corp.com"}, Groups: []string{"ds", "risk"}}
	admin := &Caller{Ref: Ref{ServicePrincipal, "9f0c"}, Admin: true}
	// A service principal whose applicationId equals a user's name is not
	// that user.
	sp := &Caller{Ref: Ref{ServicePrincipal, "alice@corp.com"}}
	owner := Ref{User, "carol@corp.com"}
	carol := &Caller{Ref: owner}
	acl := &ACL{Owner: &owner, Grants: []Grant{
		{Ref{User, "alice@corp.com"}, CanQuery},
		{Ref{Group, "ds"}, CanView},
		{Ref{Group, "risk"}, CanManage},
	}}
	for _, tc := range []struct {
		name   string
		c      *Caller
		acl    *ACL
		need   Level
		status int
		have   Level
	}{
		{"no caller", nil, acl, CanView, http.StatusUnauthorized, NoPermissions},
		{"direct grant covers lower", alice, acl, CanView, http.StatusOK, CanQuery},
		{"direct grant covers equal", alice, acl, CanQuery, http.StatusOK, CanQuery},
		{"direct grant lacks higher", alice, acl, CanManage, http.StatusForbidden, CanQuery},
		{"highest group wins", bob, acl, CanManage, http.StatusOK, CanManage},
		{"owner manages", carol, acl, CanManage, http.StatusOK, CanManage},
		{"admin manages without grant", admin, nil, CanManage, http.StatusOK, CanManage},
		{"kind matters", sp, acl, CanView, http.StatusForbidden, NoPermissions},
		{"no ACL: nothing", alice, nil, CanView, http.StatusForbidden, NoPermissions},
		{"models: read", &Caller{Ref: Ref{User, "m"}}, &ACL{Grants: []Grant{{Ref{User, "m"}, CanRead}}}, CanRead, http.StatusOK, CanRead},
		{"models: read is not manage", &Caller{Ref: Ref{User, "m"}}, &ACL{Grants: []Grant{{Ref{User, "m"}, CanRead}}}, CanManage, http.StatusForbidden, CanRead},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := Decide(tc.c, tc.acl, tc.need)
			if d.Status != tc.status || d.Have != tc.have || d.Need != tc.need {
				t.Errorf("Decide = %+v, want status %d have %q need %q", d, tc.status, tc.have, tc.need)
			}
			if d.Allowed() != (tc.status == http.StatusOK) {
				t.Errorf("Allowed = %v with status %d", d.Allowed(), d.Status)
			}
		})
	}
}

func TestLevelOrder(t *testing.T) {
	order := []Level{NoPermissions, CanView, CanQuery, CanManage}
	for i, a := range order {
		for j, b := range order {
			if got := a.AtLeast(b); got != (i >= j) {
				t.Errorf("%q.AtLeast(%q) = %v, want %v", a, b, got, i >= j)
			}
		}
	}
	if !CanRead.AtLeast(CanView) || CanRead.AtLeast(CanManage) {
		t.Error("CAN_READ is the models' lowest level, below CAN_MANAGE")
	}
	if Endpoints.Takes(CanRead) || Models.Takes(CanQuery) || !Models.Takes(CanRead) || !Endpoints.Takes(CanQuery) {
		t.Error("each object type takes only its own levels")
	}
}

func TestDeniedNamesTheLevel(t *testing.T) {
	c := &Caller{Ref: Ref{User, "alice"}}
	d := Decide(c, &ACL{Grants: []Grant{{Ref{User, "alice"}, CanView}}}, CanManage)
	got := d.Denied(c, "serving endpoint fraud")
	want := "user alice lacks CAN_MANAGE on serving endpoint fraud (holds CAN_VIEW); ask a user with CAN_MANAGE on it or an admin to grant it"
	if got != want {
		t.Errorf("Denied = %q, want %q", got, want)
	}
}
