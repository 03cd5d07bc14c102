package scheduler

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/identity"
	"github.com/gantry/gantry/scheduler/orchestrator"
	"github.com/gantry/gantry/secrets"
)

// The secrets API (Databricks' /api/2.0/secrets) and secret references in
// endpoint configs.
//
// A reference, {{secrets/scope/key}}, is what an endpoint config stores,
// shows and hands to renderers; the value exists only in the copy of a
// deployment handed to the driver's Ensure (resolveEnv), and from there
// only in the worker's environment. It is resolved as the endpoint's
// creator, who must hold READ on the scope at create, at every update and
// at every deployment.

// secretPrincipal is the request's caller as the secret store sees it.
// With authentication off everyone is an admin, as everyone may do
// everything else.
func (s *Scheduler) secretPrincipal(r *http.Request) secrets.Principal {
	c := s.caller(r)
	if c == nil {
		return secrets.Principal{Name: requester(r), Admin: true}
	}
	return secrets.Principal{Name: c.Name(), Groups: c.Groups, Admin: c.Admin}
}

// secretStore is the store, or the error to answer without one.
func (s *Scheduler) secretStore() (*secrets.Store, error) {
	if s.cfg.Secrets == nil {
		return nil, invalid("secrets are off in this Gantry: it was started without a secret store")
	}
	return s.cfg.Secrets, nil
}

// secretCall decodes a JSON body into req (when not nil), runs fn with the
// store and the caller, and answers {} or fn's error.
func secretCall[T any](s *Scheduler, w http.ResponseWriter, r *http.Request, fn func(st *secrets.Store, p secrets.Principal, req *T) error) {
	st, err := s.secretStore()
	if err != nil {
		writeError(w, err)
		return
	}
	req := new(T)
	if err := decode(w, r, req); err != nil {
		writeError(w, err)
		return
	}
	if err := fn(st, s.secretPrincipal(r), req); err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, struct{}{})
}

func (s *Scheduler) createScope(w http.ResponseWriter, r *http.Request) {
	secretCall(s, w, r, func(st *secrets.Store, p secrets.Principal, req *api.CreateScopeRequest) error {
		if req.ScopeBackendType != "" && req.ScopeBackendType != "DATABRICKS" {
			return invalid("scope_backend_type: %q is not supported; Gantry keeps secrets itself (DATABRICKS)", req.ScopeBackendType)
		}
		auditTarget(r, "secret-scope "+req.Scope)
		return st.CreateScope(p, req.Scope, req.InitialManagePrincipal)
	})
}

func (s *Scheduler) deleteScope(w http.ResponseWriter, r *http.Request) {
	secretCall(s, w, r, func(st *secrets.Store, p secrets.Principal, req *api.DeleteScopeRequest) error {
		auditTarget(r, "secret-scope "+req.Scope)
		return st.DeleteScope(p, req.Scope)
	})
}

func (s *Scheduler) putSecret(w http.ResponseWriter, r *http.Request) {
	secretCall(s, w, r, func(st *secrets.Store, p secrets.Principal, req *api.PutSecretRequest) error {
		auditTarget(r, "secret "+req.Scope+"/"+req.Key)
		value := []byte(req.StringValue)
		switch {
		case req.StringValue != "" && req.BytesValue != nil:
			return invalid("string_value, bytes_value: give exactly one of the two")
		case req.BytesValue != nil:
			value = req.BytesValue
		case req.StringValue == "":
			return invalid("string_value: required (or bytes_value, base64)")
		}
		return st.Put(p, req.Scope, req.Key, value)
	})
}

func (s *Scheduler) deleteSecret(w http.ResponseWriter, r *http.Request) {
	secretCall(s, w, r, func(st *secrets.Store, p secrets.Principal, req *api.DeleteSecretRequest) error {
		auditTarget(r, "secret "+req.Scope+"/"+req.Key)
		return st.Delete(p, req.Scope, req.Key)
	})
}

func (s *Scheduler) putSecretACL(w http.ResponseWriter, r *http.Request) {
	secretCall(s, w, r, func(st *secrets.Store, p secrets.Principal, req *api.PutAclRequest) error {
		auditTarget(r, "secret-scope "+req.Scope+" acl "+req.Principal)
		perm, ok := secrets.ParsePermission(req.Permission)
		if !ok {
			return invalid("permission: %q is not one of READ, WRITE, MANAGE", req.Permission)
		}
		// A grant to a name that is no principal would wait for whoever
		// takes the name later. (SCIM lists tell any caller who exists.)
		if exists := SecretPrincipals(s.cfg.Auth); exists != nil && req.Principal != secrets.AllUsers && req.Principal != "" && !exists(req.Principal) {
			return api.Errorf(api.ErrResourceDoesNotExist, "principal: %q is no user, service principal or group", req.Principal)
		}
		return st.PutACL(p, req.Scope, req.Principal, perm)
	})
}

func (s *Scheduler) deleteSecretACL(w http.ResponseWriter, r *http.Request) {
	secretCall(s, w, r, func(st *secrets.Store, p secrets.Principal, req *api.DeleteAclRequest) error {
		auditTarget(r, "secret-scope "+req.Scope+" acl "+req.Principal)
		return st.DeleteACL(p, req.Scope, req.Principal)
	})
}

func (s *Scheduler) listScopes(w http.ResponseWriter, r *http.Request) {
	st, err := s.secretStore()
	if err != nil {
		writeError(w, err)
		return
	}
	scopes, err := st.Scopes(s.secretPrincipal(r))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, api.ListScopesResponse{Scopes: scopes})
}

// queryScope reads ?scope=, which the GET routes need.
func queryScope(r *http.Request) (string, error) {
	sc := r.URL.Query().Get("scope")
	if sc == "" {
		return "", invalid("scope: required, as ?scope=NAME")
	}
	return sc, nil
}

// secretRead answers a GET on the scope ?scope= names with what fn reads
// there as the caller.
func secretRead[T any](s *Scheduler, w http.ResponseWriter, r *http.Request, fn func(st *secrets.Store, p secrets.Principal, scope string) (T, error)) {
	st, err := s.secretStore()
	if err != nil {
		writeError(w, err)
		return
	}
	sc, err := queryScope(r)
	if err != nil {
		writeError(w, err)
		return
	}
	out, err := fn(st, s.secretPrincipal(r), sc)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Scheduler) listSecrets(w http.ResponseWriter, r *http.Request) {
	secretRead(s, w, r, func(st *secrets.Store, p secrets.Principal, scope string) (api.ListSecretsResponse, error) {
		out, err := st.List(p, scope)
		return api.ListSecretsResponse{Secrets: out}, err
	})
}

func (s *Scheduler) listSecretACLs(w http.ResponseWriter, r *http.Request) {
	secretRead(s, w, r, func(st *secrets.Store, p secrets.Principal, scope string) (api.ListAclsResponse, error) {
		out, err := st.ACLs(p, scope)
		return api.ListAclsResponse{Items: out}, err
	})
}

func (s *Scheduler) getSecretACL(w http.ResponseWriter, r *http.Request) {
	secretRead(s, w, r, func(st *secrets.Store, p secrets.Principal, scope string) (api.AclItem, error) {
		return st.ACL(p, scope, r.URL.Query().Get("principal"))
	})
}

// directory is what resolving as an endpoint's creator needs of the
// identity service beyond Auth: its owner, and the principal's groups.
// *identity.Service implements it.
type directory interface {
	ACL(o identity.Object) *identity.ACL
	Lookup(r identity.Ref) (*identity.Principal, bool)
	GroupsOf(id string) []*identity.Principal
}

var _ directory = (*identity.Service)(nil)

// principalOf is the secret store's principal for endpoint epID's
// creator, named creator: the endpoint's owner as its ACL records it, or
// else the user or service principal of that name. With authentication
// off it is an admin. ok is false when the creator is gone or inactive: a
// deleted creator's endpoint reads no secrets.
func (s *Scheduler) principalOf(creator, epID string) (secrets.Principal, bool) {
	if s.cfg.Auth == nil {
		return secrets.Principal{Name: creator, Admin: true}, true
	}
	dir, ok := s.cfg.Auth.(directory)
	if !ok {
		return secrets.Principal{}, false
	}
	var refs []identity.Ref
	if epID != "" {
		if acl := dir.ACL(identity.Object{Type: identity.Endpoints, ID: epID}); acl != nil && acl.Owner != nil {
			refs = append(refs, *acl.Owner)
		}
	}
	refs = append(refs, identity.Ref{Kind: identity.User, Name: creator}, identity.Ref{Kind: identity.ServicePrincipal, Name: creator})
	for _, ref := range refs {
		p, ok := dir.Lookup(ref)
		if !ok || p.Name != creator {
			continue
		}
		if !p.Active {
			return secrets.Principal{}, false
		}
		out := secrets.Principal{Name: p.Name}
		for _, g := range dir.GroupsOf(p.ID) {
			out.Groups = append(out.Groups, g.Name)
			out.Admin = out.Admin || g.Name == identity.AdminsGroup
		}
		return out, true
	}
	return secrets.Principal{}, false
}

// envRefs lists the secret references of a config's environment_vars, by
// entity index and variable name (normalizeEntity checked their form).
func envRefs(c *api.EndpointConfig) []envRef {
	var out []envRef
	for i := range c.ServedEntities {
		e := &c.ServedEntities[i]
		for _, k := range envNames(e.EnvironmentVars) {
			if ref, ok, _ := secrets.ParseRef(e.EnvironmentVars[k]); ok {
				out = append(out, envRef{entity: i, name: k, ref: ref})
			}
		}
	}
	return out
}

type envRef struct {
	entity int
	name   string
	// path, when set, is the field relative to the entity instead of
	// environment_vars.NAME (an external model's key).
	path string
	ref  secrets.Ref
}

func (e envRef) field() string {
	if e.path != "" {
		return "config.served_entities[" + strconv.Itoa(e.entity) + "]." + e.path
	}
	return "config.served_entities[" + strconv.Itoa(e.entity) + "].environment_vars." + e.name
}

// checkSecretRefs checks that every secret reference in c (its
// environment_vars and its external models' keys) may be read:
// by the caller creating the endpoint, or, for endpoint name's update, by
// its creator and by the caller too. The creator's READ is what the
// deployment uses (Databricks' rule); the caller's keeps a CAN_MANAGE
// holder from serving the creator's secrets to a model of their own.
func (s *Scheduler) checkSecretRefs(r *http.Request, c *api.EndpointConfig, update string) error {
	refs, keys := envRefs(c), externalRefs(c)
	if len(refs)+len(keys) == 0 {
		return nil
	}
	st, err := s.secretStore()
	if err != nil {
		return invalid("%s: %s", append(refs, keys...)[0].field(), apiMessage(err))
	}
	refs = append(refs, keys...)
	caller := s.secretPrincipal(r)
	who := []secrets.Principal{caller}
	if update != "" {
		s.mu.Lock()
		ep, err := s.lookup(update)
		var creator, id string
		if err == nil {
			creator, id = ep.Creator, ep.ID
		}
		s.mu.Unlock()
		if err != nil {
			return err
		}
		p, ok := s.principalOf(creator, id)
		if !ok {
			return invalid("%s: %s references a secret, and the endpoint's creator %s no longer exists to read it; create the endpoint anew", refs[0].field(), refs[0].ref, creator)
		}
		if p.Name != caller.Name {
			who = append(who, p)
		}
	}
	for _, e := range refs {
		for _, p := range who {
			if err := st.CanRead(p, e.ref.Scope); err != nil {
				// The store's 404 and 403 both become a 400 naming the
				// reference; the message says which, as the caller could
				// learn from the secrets API itself.
				return invalid("%s: %s cannot be read by %s: %s", e.field(), e.ref, p.Name, apiMessage(err))
			}
		}
	}
	return nil
}

// resolveEnv returns d with its secret references resolved as its
// endpoint's creator, for the driver's Ensure: a copy, with a new Env map,
// so that the stored config, the ledger and the views keep references.
// SecretEnv names the variables that hold secrets now.
func (s *Scheduler) resolveEnv(d orchestrator.Deployment) (orchestrator.Deployment, error) {
	var names []string
	for k, v := range d.Env {
		if _, ok, _ := secrets.ParseRef(v); ok {
			names = append(names, k)
		}
	}
	if len(names) == 0 {
		return d, nil
	}
	sort.Strings(names)
	s.mu.Lock()
	var creator, id string
	if ep, ok := s.eps[d.Endpoint]; ok {
		creator, id = ep.Creator, ep.ID
	}
	s.mu.Unlock()
	if s.cfg.Secrets == nil {
		return d, fmt.Errorf("environment_vars.%s references a secret, and this Gantry has no secret store", names[0])
	}
	p, ok := s.principalOf(creator, id)
	if !ok {
		return d, fmt.Errorf("environment_vars.%s references a secret, and the endpoint's creator %q no longer exists to read it", names[0], creator)
	}
	env := make(map[string]string, len(d.Env))
	for k, v := range d.Env {
		env[k] = v
	}
	for _, k := range names {
		ref, _, _ := secrets.ParseRef(d.Env[k])
		v, err := s.cfg.Secrets.Resolve(p, ref.Scope, ref.Key)
		if err != nil {
			return d, fmt.Errorf("environment_vars.%s: %s as %s: %s", k, ref, p.Name, apiMessage(err))
		}
		env[k] = v
	}
	d.Env, d.SecretEnv = env, names
	return d, nil
}

// ResolveSecret resolves reference ref (a whole {{secrets/scope/key}}) as
// the creator of endpoint name: what other parts (external models' API
// keys) call to read a secret on an endpoint's behalf. It never logs the
// value, and its errors name the reference only.
func (s *Scheduler) ResolveSecret(ctx context.Context, endpoint, ref string) (string, error) {
	r, ok, _ := secrets.ParseRef(ref)
	if !ok {
		// Never quoted: a value that is not a reference may be a key.
		return "", invalid("the value is not a secret reference {{secrets/scope/key}}")
	}
	st, err := s.secretStore()
	if err != nil {
		return "", err
	}
	s.mu.Lock()
	ep, err := s.lookup(endpoint)
	var creator, id string
	if err == nil {
		creator, id = ep.Creator, ep.ID
	}
	s.mu.Unlock()
	if err != nil {
		return "", err
	}
	p, ok := s.principalOf(creator, id)
	if !ok {
		return "", api.Errorf(api.ErrPermissionDenied, "%s: the endpoint's creator %q no longer exists to read it", r, creator)
	}
	return st.Resolve(p, r.Scope, r.Key)
}

// resolveAs resolves ref as the creator of the endpoint with ID epID,
// named creator, without taking s.mu: for the route table and the
// external-keys answer. Its error names the reference and the principal,
// never a value.
func (s *Scheduler) resolveAs(creator, epID string, ref secrets.Ref) (string, error) {
	if s.cfg.Secrets == nil {
		return "", fmt.Errorf("%s: this Gantry has no secret store", ref)
	}
	p, ok := s.principalOf(creator, epID)
	if !ok {
		return "", fmt.Errorf("%s: the endpoint's creator %q no longer exists to read it", ref, creator)
	}
	v, err := s.cfg.Secrets.Resolve(p, ref.Scope, ref.Key)
	if err != nil {
		return "", fmt.Errorf("%s cannot be read as %s: %s", ref, p.Name, apiMessage(err))
	}
	return v, nil
}

// SecretResolverAs resolves ref as principal as (nil: with authentication
// off, anyone): for parts that hold a caller rather than an endpoint.
func (s *Scheduler) SecretResolverAs(as *identity.Caller, ref string) (string, error) {
	r, ok, _ := secrets.ParseRef(ref)
	if !ok {
		// Never quoted: a value that is not a reference may be a key.
		return "", invalid("the value is not a secret reference {{secrets/scope/key}}")
	}
	st, err := s.secretStore()
	if err != nil {
		return "", err
	}
	p := secrets.Principal{Admin: true}
	if s.cfg.Auth != nil {
		if as == nil {
			return "", api.Errorf(api.ErrUnauthenticated, "no principal to read %s as", r)
		}
		p = secrets.Principal{Name: as.Name(), Groups: as.Groups, Admin: as.Admin}
	}
	return st.Resolve(p, r.Scope, r.Key)
}

// apiMessage is an error's message without its code.
func apiMessage(err error) string {
	var ae *api.Error
	if errors.As(err, &ae) {
		return ae.Message
	}
	return strings.TrimSpace(err.Error())
}

// SecretPrincipals is secrets.Options.Exists for a Gantry with auth: a
// scope's ACL may name users, service principals and groups that exist.
// nil (any name) without authentication.
func SecretPrincipals(auth Auth) func(string) bool {
	dir, ok := auth.(directory)
	if auth == nil || !ok {
		return nil
	}
	return func(name string) bool {
		for _, k := range []identity.Kind{identity.User, identity.ServicePrincipal, identity.Group} {
			if _, ok := dir.Lookup(identity.Ref{Kind: k, Name: name}); ok {
				return true
			}
		}
		return false
	}
}
