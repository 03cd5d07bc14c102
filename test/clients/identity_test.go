package clients

// The Databricks Go SDK's identity calls against `gantry dev`: SCIM users,
// groups and service principals, serving-endpoint permissions, tokens
// (the caller's own and on behalf of a service principal) and secrets.
// TestDatabricksSDK runs them on its endpoint, one subtest per call.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/databricks/databricks-sdk-go"
	"github.com/databricks/databricks-sdk-go/apierr"
	"github.com/databricks/databricks-sdk-go/service/iam"
	"github.com/databricks/databricks-sdk-go/service/serving"
	"github.com/databricks/databricks-sdk-go/service/settings"
	"github.com/databricks/databricks-sdk-go/service/workspace"
)

// clientWith is a workspace client of base that sends token.
func clientWith(t *testing.T, base, token string) *databricks.WorkspaceClient {
	t.Helper()
	w, err := databricks.NewWorkspaceClient(&databricks.Config{
		Host: base, Token: token, AuthType: "pat",
		HTTPTimeoutSeconds: 60, RetryTimeoutSeconds: 60, RateLimitPerSecond: 1000,
	})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// within retries f until it returns nil or d passes, and returns its last
// error.
func within(d time.Duration, f func() error) error {
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// identityCalls runs every identity call of the SDK that Gantry serves.
// ep is a ready endpoint; query queries it through a client.
func identityCalls(t *testing.T, w *databricks.WorkspaceClient, base, ep string, query func(*databricks.WorkspaceClient) error) {
	ctx := context.Background()
	const (
		userName = "ada@example.com"
		spApp    = "sdk-robot"
		group    = "sdk-analysts"
		scope    = "sdk-scope"
	)
	var user *iam.User
	var sp *iam.ServicePrincipal
	var grp *iam.Group

	// SCIM.
	t.Run("Users.Create", func(t *testing.T) {
		var err error
		user, err = w.Users.Create(ctx, iam.User{UserName: userName, DisplayName: "Ada"})
		if err != nil {
			t.Fatal(err)
		}
		if user.Id == "" || user.UserName != userName || user.DisplayName != "Ada" || !user.Active {
			t.Errorf("created user = %+v", user)
		}
	})
	if user == nil || user.Id == "" {
		t.Fatal("no user to go on with")
	}
	t.Run("Users.Create/409", func(t *testing.T) {
		_, err := w.Users.Create(ctx, iam.User{UserName: userName})
		if !errors.Is(err, apierr.ErrResourceAlreadyExists) {
			t.Errorf("second create: %v, want RESOURCE_ALREADY_EXISTS", err)
		}
	})
	t.Run("Users.GetById", func(t *testing.T) {
		got, err := w.Users.GetById(ctx, user.Id)
		if err != nil {
			t.Fatal(err)
		}
		if got.Id != user.Id || got.UserName != userName || len(got.Emails) != 1 || got.Emails[0].Value != userName {
			t.Errorf("user = %+v", got)
		}
	})
	t.Run("Users.ListAll/filter", func(t *testing.T) {
		all, err := w.Users.ListAll(ctx, iam.ListUsersRequest{Filter: `userName eq "` + userName + `"`})
		if err != nil {
			t.Fatal(err)
		}
		if len(all) != 1 || all[0].Id != user.Id {
			t.Errorf("filtered list = %+v", all)
		}
		got, err := w.Users.GetByUserName(ctx, userName)
		if err != nil || got.Id != user.Id {
			t.Errorf("GetByUserName: %+v %v", got, err)
		}
	})
	t.Run("ServicePrincipals.Create", func(t *testing.T) {
		var err error
		sp, err = w.ServicePrincipals.Create(ctx, iam.ServicePrincipal{ApplicationId: spApp, DisplayName: "SDK robot"})
		if err != nil {
			t.Fatal(err)
		}
		if sp.Id == "" || sp.ApplicationId != spApp || sp.DisplayName != "SDK robot" {
			t.Errorf("created service principal = %+v", sp)
		}
	})
	if sp == nil || sp.Id == "" {
		t.Fatal("no service principal to go on with")
	}
	t.Run("ServicePrincipals.GetById", func(t *testing.T) {
		got, err := w.ServicePrincipals.GetById(ctx, sp.Id)
		if err != nil || got.ApplicationId != spApp {
			t.Errorf("service principal = %+v, %v", got, err)
		}
	})
	t.Run("ServicePrincipals.ListAll/filter", func(t *testing.T) {
		all, err := w.ServicePrincipals.ListAll(ctx, iam.ListServicePrincipalsRequest{Filter: `applicationId eq "` + spApp + `"`})
		if err != nil {
			t.Fatal(err)
		}
		if len(all) != 1 || all[0].Id != sp.Id {
			t.Errorf("filtered list = %+v", all)
		}
	})
	t.Run("Groups.Create", func(t *testing.T) {
		var err error
		grp, err = w.Groups.Create(ctx, iam.Group{DisplayName: group, Members: []iam.ComplexValue{{Value: user.Id}}})
		if err != nil {
			t.Fatal(err)
		}
		if grp.Id == "" || grp.DisplayName != group || len(grp.Members) != 1 || grp.Members[0].Value != user.Id {
			t.Errorf("created group = %+v", grp)
		}
	})
	if grp == nil || grp.Id == "" {
		t.Fatal("no group to go on with")
	}
	t.Run("Groups.Patch/members", func(t *testing.T) {
		err := w.Groups.Patch(ctx, iam.PartialUpdate{
			Id:      grp.Id,
			Schemas: []iam.PatchSchema{iam.PatchSchemaUrnIetfParamsScimApiMessages20PatchOp},
			Operations: []iam.Patch{
				{Op: iam.PatchOpAdd, Path: "members", Value: []iam.ComplexValue{{Value: sp.Id}}},
				{Op: iam.PatchOpRemove, Path: `members[value eq "` + user.Id + `"]`},
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		got, err := w.Groups.GetById(ctx, grp.Id)
		if err != nil {
			t.Fatal(err)
		}
		if len(got.Members) != 1 || got.Members[0].Value != sp.Id {
			t.Errorf("members after patch = %+v", got.Members)
		}
		robot, err := w.ServicePrincipals.GetById(ctx, sp.Id)
		if err != nil || len(robot.Groups) != 1 || robot.Groups[0].Value != grp.Id {
			t.Errorf("the service principal's groups = %+v, %v", robot, err)
		}
	})
	t.Run("Groups.ListAll/filter", func(t *testing.T) {
		all, err := w.Groups.ListAll(ctx, iam.ListGroupsRequest{Filter: `displayName eq "` + group + `"`})
		if err != nil {
			t.Fatal(err)
		}
		if len(all) != 1 || all[0].Id != grp.Id {
			t.Errorf("filtered list = %+v", all)
		}
	})
	t.Run("CurrentUser.Me", func(t *testing.T) {
		me, err := w.CurrentUser.Me(ctx, iam.MeRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if me.Id == "" || me.UserName == "" {
			t.Errorf("me = %+v", me)
		}
	})

	// Serving-endpoint permissions, by the endpoint's id as the SDK sends it.
	got, err := w.ServingEndpoints.GetByName(ctx, ep)
	if err != nil {
		t.Fatal(err)
	}
	id := got.Id
	levelOf := func(p *serving.ServingEndpointPermissions, match func(serving.ServingEndpointAccessControlResponse) bool) serving.ServingEndpointPermissionLevel {
		for _, a := range p.AccessControlList {
			if match(a) {
				for _, l := range a.AllPermissions {
					if !l.Inherited {
						return l.PermissionLevel
					}
				}
			}
		}
		return ""
	}
	isGroup := func(a serving.ServingEndpointAccessControlResponse) bool { return a.GroupName == group }
	isUser := func(a serving.ServingEndpointAccessControlResponse) bool { return a.UserName == userName }
	t.Run("GetPermissionLevels", func(t *testing.T) {
		resp, err := w.ServingEndpoints.GetPermissionLevels(ctx, serving.GetServingEndpointPermissionLevelsRequest{ServingEndpointId: id})
		if err != nil {
			t.Fatal(err)
		}
		var levels []serving.ServingEndpointPermissionLevel
		for _, l := range resp.PermissionLevels {
			levels = append(levels, l.PermissionLevel)
			if l.Description == "" {
				t.Errorf("level %s has no description", l.PermissionLevel)
			}
		}
		want := []serving.ServingEndpointPermissionLevel{serving.ServingEndpointPermissionLevelCanView,
			serving.ServingEndpointPermissionLevelCanQuery, serving.ServingEndpointPermissionLevelCanManage}
		if !slices.Equal(levels, want) {
			t.Errorf("levels = %v, want %v", levels, want)
		}
	})
	t.Run("GetPermissions", func(t *testing.T) {
		p, err := w.ServingEndpoints.GetPermissions(ctx, serving.GetServingEndpointPermissionsRequest{ServingEndpointId: id})
		if err != nil {
			t.Fatal(err)
		}
		if p.ObjectType != "serving-endpoint" || p.ObjectId != "/serving-endpoints/"+id || len(p.AccessControlList) == 0 {
			t.Errorf("permissions = %+v", p)
		}
	})
	t.Run("GetPermissions/NotFound", func(t *testing.T) {
		_, err := w.ServingEndpoints.GetPermissions(ctx, serving.GetServingEndpointPermissionsRequest{ServingEndpointId: "no-such-id"})
		if !errors.Is(err, apierr.ErrResourceDoesNotExist) {
			t.Errorf("permissions of a missing endpoint: %v", err)
		}
	})
	t.Run("SetPermissions", func(t *testing.T) {
		p, err := w.ServingEndpoints.SetPermissions(ctx, serving.ServingEndpointPermissionsRequest{ServingEndpointId: id,
			AccessControlList: []serving.ServingEndpointAccessControlRequest{
				{GroupName: group, PermissionLevel: serving.ServingEndpointPermissionLevelCanQuery},
				{UserName: userName, PermissionLevel: serving.ServingEndpointPermissionLevelCanView},
			}})
		if err != nil {
			t.Fatal(err)
		}
		if l := levelOf(p, isGroup); l != serving.ServingEndpointPermissionLevelCanQuery {
			t.Errorf("group's level = %q in %+v", l, p.AccessControlList)
		}
		if l := levelOf(p, isUser); l != serving.ServingEndpointPermissionLevelCanView {
			t.Errorf("user's level = %q in %+v", l, p.AccessControlList)
		}
	})
	t.Run("UpdatePermissions", func(t *testing.T) {
		p, err := w.ServingEndpoints.UpdatePermissions(ctx, serving.ServingEndpointPermissionsRequest{ServingEndpointId: id,
			AccessControlList: []serving.ServingEndpointAccessControlRequest{
				{UserName: userName, PermissionLevel: serving.ServingEndpointPermissionLevelCanManage},
			}})
		if err != nil {
			t.Fatal(err)
		}
		if l := levelOf(p, isUser); l != serving.ServingEndpointPermissionLevelCanManage {
			t.Errorf("user's level = %q in %+v", l, p.AccessControlList)
		}
		if l := levelOf(p, isGroup); l != serving.ServingEndpointPermissionLevelCanQuery {
			t.Errorf("an update dropped the group's grant: %q in %+v", l, p.AccessControlList)
		}
	})

	// Tokens.
	var own *settings.CreateTokenResponse
	t.Run("Tokens.Create", func(t *testing.T) {
		var err error
		own, err = w.Tokens.Create(ctx, settings.CreateTokenRequest{Comment: "sdk", LifetimeSeconds: 3600})
		if err != nil {
			t.Fatal(err)
		}
		if own.TokenValue == "" || own.TokenInfo == nil || own.TokenInfo.TokenId == "" || own.TokenInfo.Comment != "sdk" ||
			own.TokenInfo.ExpiryTime <= own.TokenInfo.CreationTime {
			t.Fatalf("created token = %+v", own.TokenInfo)
		}
		if _, err := clientWith(t, base, own.TokenValue).CurrentUser.Me(ctx, iam.MeRequest{}); err != nil {
			t.Errorf("the new token does not authenticate: %v", err)
		}
	})
	t.Run("Tokens.ListAll", func(t *testing.T) {
		all, err := w.Tokens.ListAll(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if own == nil || !slices.ContainsFunc(all, func(i settings.PublicTokenInfo) bool { return i.TokenId == own.TokenInfo.TokenId }) {
			t.Errorf("list = %+v", all)
		}
	})
	t.Run("Tokens.Delete", func(t *testing.T) {
		if own == nil {
			t.Skip("no token")
		}
		if err := w.Tokens.DeleteByTokenId(ctx, own.TokenInfo.TokenId); err != nil {
			t.Fatal(err)
		}
		if _, err := clientWith(t, base, own.TokenValue).CurrentUser.Me(ctx, iam.MeRequest{}); !errors.Is(err, apierr.ErrUnauthenticated) {
			t.Errorf("a revoked token: %v, want UNAUTHENTICATED", err)
		}
		if err := w.Tokens.DeleteByTokenId(ctx, own.TokenInfo.TokenId); !errors.Is(err, apierr.ErrResourceDoesNotExist) {
			t.Errorf("delete again: %v", err)
		}
	})
	var obo *settings.CreateOboTokenResponse
	t.Run("TokenManagement.CreateOboToken", func(t *testing.T) {
		var err error
		obo, err = w.TokenManagement.CreateOboToken(ctx, settings.CreateOboTokenRequest{ApplicationId: spApp, Comment: "sdk obo", LifetimeSeconds: 3600})
		if err != nil {
			t.Fatal(err)
		}
		if obo.TokenValue == "" || obo.TokenInfo == nil || obo.TokenInfo.TokenId == "" {
			t.Fatalf("obo token = %+v", obo)
		}
		robot := clientWith(t, base, obo.TokenValue)
		// The group the robot is in may query the endpoint, once the
		// activator's access snapshot holds the new token (README:
		// within one round trip of its blocking query, promised in 2 s).
		if err := within(2*time.Second, func() error { return query(robot) }); err != nil {
			t.Errorf("query with the robot's token: %v", err)
		}
		if _, err := robot.Users.Create(ctx, iam.User{UserName: "eve@example.com"}); !errors.Is(err, apierr.ErrPermissionDenied) {
			t.Errorf("the robot creates a user: %v, want PERMISSION_DENIED", err)
		}
	})
	t.Run("TokenManagement.ListAll+GetByTokenId+DeleteByTokenId", func(t *testing.T) {
		if obo == nil {
			t.Skip("no obo token")
		}
		all, err := w.TokenManagement.ListAll(ctx, settings.ListTokenManagementRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(all, func(i settings.TokenInfo) bool { return i.TokenId == obo.TokenInfo.TokenId }) {
			t.Errorf("list = %+v", all)
		}
		info, err := w.TokenManagement.GetByTokenId(ctx, obo.TokenInfo.TokenId)
		if err != nil || info.TokenInfo == nil || info.TokenInfo.Comment != "sdk obo" {
			t.Errorf("get = %+v, %v", info, err)
		}
		if err := w.TokenManagement.DeleteByTokenId(ctx, obo.TokenInfo.TokenId); err != nil {
			t.Fatal(err)
		}
		revoked := clientWith(t, base, obo.TokenValue)
		err = within(2*time.Second, func() error {
			if err := query(revoked); !errors.Is(err, apierr.ErrUnauthenticated) {
				return fmt.Errorf("query with a revoked token: %v, want UNAUTHENTICATED", err)
			}
			return nil
		})
		if err != nil {
			t.Error(err)
		}
	})

	// Secrets.
	t.Run("Secrets.CreateScope", func(t *testing.T) {
		if err := w.Secrets.CreateScope(ctx, workspace.CreateScope{Scope: scope}); err != nil {
			t.Fatal(err)
		}
		if err := w.Secrets.CreateScope(ctx, workspace.CreateScope{Scope: scope}); !errors.Is(err, apierr.ErrResourceAlreadyExists) {
			t.Errorf("second create: %v, want RESOURCE_ALREADY_EXISTS", err)
		}
	})
	t.Run("Secrets.ListScopesAll", func(t *testing.T) {
		all, err := w.Secrets.ListScopesAll(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(all, func(s workspace.SecretScope) bool { return s.Name == scope }) {
			t.Errorf("scopes = %+v", all)
		}
	})
	t.Run("Secrets.PutSecret", func(t *testing.T) {
		if err := w.Secrets.PutSecret(ctx, workspace.PutSecret{Scope: scope, Key: "db-password", StringValue: "hunter2"}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("Secrets.ListSecretsAll", func(t *testing.T) {
		all, err := w.Secrets.ListSecretsAll(ctx, workspace.ListSecretsRequest{Scope: scope})
		if err != nil {
			t.Fatal(err)
		}
		if len(all) != 1 || all[0].Key != "db-password" || all[0].LastUpdatedTimestamp == 0 {
			t.Errorf("secrets = %+v", all)
		}
	})
	t.Run("Secrets.PutAcl", func(t *testing.T) {
		if err := w.Secrets.PutAcl(ctx, workspace.PutAcl{Scope: scope, Principal: group, Permission: workspace.AclPermissionRead}); err != nil {
			t.Fatal(err)
		}
		if err := w.Secrets.PutAcl(ctx, workspace.PutAcl{Scope: scope, Principal: "nobody-here", Permission: workspace.AclPermissionRead}); err == nil {
			t.Error("an ACL for a principal that does not exist was accepted")
		}
	})
	t.Run("Secrets.GetAcl", func(t *testing.T) {
		acl, err := w.Secrets.GetAcl(ctx, workspace.GetAclRequest{Scope: scope, Principal: group})
		if err != nil || acl.Permission != workspace.AclPermissionRead {
			t.Errorf("acl = %+v, %v", acl, err)
		}
	})
	t.Run("Secrets.ListAclsAll", func(t *testing.T) {
		all, err := w.Secrets.ListAclsAll(ctx, workspace.ListAclsRequest{Scope: scope})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(all, workspace.AclItem{Principal: group, Permission: workspace.AclPermissionRead}) {
			t.Errorf("acls = %+v", all)
		}
	})
	t.Run("Secrets.DeleteAcl", func(t *testing.T) {
		if err := w.Secrets.DeleteAcl(ctx, workspace.DeleteAcl{Scope: scope, Principal: group}); err != nil {
			t.Fatal(err)
		}
		if _, err := w.Secrets.GetAcl(ctx, workspace.GetAclRequest{Scope: scope, Principal: group}); !errors.Is(err, apierr.ErrResourceDoesNotExist) {
			t.Errorf("get a deleted acl: %v", err)
		}
	})
	t.Run("Secrets.DeleteSecret", func(t *testing.T) {
		if err := w.Secrets.DeleteSecret(ctx, workspace.DeleteSecret{Scope: scope, Key: "db-password"}); err != nil {
			t.Fatal(err)
		}
		all, err := w.Secrets.ListSecretsAll(ctx, workspace.ListSecretsRequest{Scope: scope})
		if err != nil || len(all) != 0 {
			t.Errorf("secrets after delete = %+v, %v", all, err)
		}
	})
	t.Run("Secrets.DeleteScope", func(t *testing.T) {
		if err := w.Secrets.DeleteScope(ctx, workspace.DeleteScope{Scope: scope}); err != nil {
			t.Fatal(err)
		}
		if err := w.Secrets.DeleteScope(ctx, workspace.DeleteScope{Scope: scope}); !errors.Is(err, apierr.ErrResourceDoesNotExist) {
			t.Errorf("delete again: %v", err)
		}
	})

	// SCIM deletes last: the grants above name these principals.
	t.Run("Groups.Delete", func(t *testing.T) {
		if err := w.Groups.DeleteById(ctx, grp.Id); err != nil {
			t.Fatal(err)
		}
		if _, err := w.Groups.GetById(ctx, grp.Id); !errors.Is(err, apierr.ErrResourceDoesNotExist) {
			t.Errorf("get after delete: %v", err)
		}
	})
	t.Run("ServicePrincipals.Delete", func(t *testing.T) {
		if err := w.ServicePrincipals.DeleteById(ctx, sp.Id); err != nil {
			t.Fatal(err)
		}
		if _, err := w.ServicePrincipals.GetById(ctx, sp.Id); !errors.Is(err, apierr.ErrResourceDoesNotExist) {
			t.Errorf("get after delete: %v", err)
		}
	})
	t.Run("Users.Delete", func(t *testing.T) {
		if err := w.Users.DeleteById(ctx, user.Id); err != nil {
			t.Fatal(err)
		}
		if _, err := w.Users.GetById(ctx, user.Id); !errors.Is(err, apierr.ErrResourceDoesNotExist) {
			t.Errorf("get after delete: %v", err)
		}
	})
}
