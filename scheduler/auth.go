package scheduler

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strconv"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/identity"
	"github.com/gantry/gantry/scheduler/store"
)

// Auth authenticates callers and keeps the ACLs of endpoints and models;
// *identity.Service implements it. Config.Auth nil turns authentication
// and authorization off: every caller may do everything, as before
// Gantry had them (gantry dev --auth=false).
//
// It has more methods than a seam usually does because the scheduler is
// where endpoints and models are born and die: it must claim them for
// their creator and forget their ACLs, besides asking levels.
type Auth interface {
	// Authenticate returns the caller an Authorization header value
	// names, or an UNAUTHENTICATED *api.Error.
	Authenticate(authorization string) (*identity.Caller, error)
	// Level is what c holds on o.
	Level(c *identity.Caller, o identity.Object) identity.Level
	// Claim makes owner the owner of o if o has no ACL yet and reports
	// whether it did.
	Claim(o identity.Object, owner *identity.Caller) (bool, error)
	// Forget drops o's ACL once o is deleted.
	Forget(o identity.Object) error
	// Handler serves the SCIM, token and permissions APIs, resolving
	// the objects of permission paths with objects.
	Handler(objects identity.Objects) http.Handler
	// Export is the access snapshot of the endpoints (name → id), and
	// Wait blocks until its index passes index: the activators' blocking
	// query (GET /api/2.0/gantry/access).
	Export(endpoints map[string]string) *api.AccessSnapshot
	Wait(ctx context.Context, index uint64) (uint64, error)
}

var _ Auth = (*identity.Service)(nil)

// rule says who may call a route. The authorization matrix test reads
// every route's rule, so a route cannot be added without one.
type rule struct {
	// public: no token needed.
	public bool
	// admin: members of the admins group only.
	admin bool
	// on names the object of the route's {name} path value ("endpoint",
	// "model", "monitor"; a monitor follows its endpoint); need is the
	// level wanted on it. Neither: any authenticated caller, the handler
	// checking objects named in the body itself.
	on   string
	need identity.Level
	// artifact: a request with a valid artifact token for the path's
	// model version passes without a bearer token (credentials.go).
	artifact bool
	// component: the components' service principals (the
	// gantry-components group) may call the route too. They may call no
	// route without it: a component's token reads what the components
	// need and can change no endpoint, model, secret or principal.
	component bool
}

var (
	// anyCaller is a route any authenticated caller may call; the
	// handler checks what it touches.
	anyCaller = rule{}
	adminOnly = rule{admin: true}
	public    = rule{public: true}
	// components is a route of the components' view of every endpoint:
	// admins and the components' service principals.
	components = rule{admin: true, component: true}
)

func onEndpoint(l identity.Level) rule { return rule{on: "endpoint", need: l} }
func onModel(l identity.Level) rule    { return rule{on: "model", need: l} }
func onMonitor(l identity.Level) rule  { return rule{on: "monitor", need: l} }

// artifactRule is the model artifact's: CAN_READ on the model, or the
// artifact token of a deployment that serves it.
var artifactRule = rule{on: "model", need: identity.CanRead, artifact: true}

// apiRoute is one route of the control plane with its rule.
type apiRoute struct {
	pattern string
	rule    rule
	serve   http.HandlerFunc
}

// authenticate is the middleware in front of every route but public
// ones: with Auth set, a request without a valid token ends here with
// 401; one with a token goes on with its caller in the context.
func (s *Scheduler) authenticate(next http.Handler) http.Handler {
	if s.cfg.Auth == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := s.cfg.Auth.Authenticate(r.Header.Get("Authorization"))
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="gantry"`)
			writeError(w, err)
			return
		}
		next.ServeHTTP(w, r.WithContext(identity.WithCaller(r.Context(), c)))
	})
}

// confined is the refusal of a component's service principal on a route
// that is not the components': nil for any other caller or route.
func confined(c *identity.Caller, r *http.Request, rl rule) error {
	if c == nil || !c.Component || c.Admin || rl.component {
		return nil
	}
	return api.Errorf(api.ErrPermissionDenied, "%s is one of Gantry's components (group %s); it may call only the components' routes, not %s %s", c.Ref, identity.ComponentsGroup, r.Method, r.URL.Path)
}

// guard wraps a route's handler with authentication and its rule;
// without Auth it is the handler itself. Changes are audited (audit.go)
// after authentication, so that refusals by the rule are recorded with
// their caller too.
func (s *Scheduler) guard(rt apiRoute) http.Handler {
	if s.cfg.Auth == nil || rt.rule.public {
		return s.audited(rt.pattern, rt.serve)
	}
	if rt.rule.artifact {
		withToken := s.audited(rt.pattern, rt.serve)
		rt.rule.artifact = false
		withBearer := s.guard(rt)
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if (credentials{s.cfg.DeploymentKey}).artifactAllowed(r) {
				withToken.ServeHTTP(w, r)
				return
			}
			withBearer.ServeHTTP(w, r)
		})
	}
	return s.authenticate(s.audited(rt.pattern, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := identity.CallerFrom(r.Context())
		err := confined(c, r, rt.rule)
		switch {
		case err != nil:
		case rt.rule.admin && rt.rule.component:
			if !c.Admin && !c.Component {
				err = api.Errorf(api.ErrPermissionDenied, "%s is neither an admin nor one of Gantry's components (group %s); only they may %s %s", c.Ref, identity.ComponentsGroup, r.Method, r.URL.Path)
			}
		case rt.rule.admin:
			if !c.Admin {
				err = api.Errorf(api.ErrPermissionDenied, "%s is not in the admins group; only admins may %s %s", c.Ref, r.Method, r.URL.Path)
			}
		case rt.rule.on == "endpoint":
			_, err = s.needEndpoint(r, r.PathValue("name"), rt.rule.need)
		case rt.rule.on == "model":
			err = s.needModel(r, r.PathValue("name"), r.PathValue("version"), rt.rule.need)
		case rt.rule.on == "monitor":
			err = s.needMonitor(r, r.PathValue("name"), rt.rule.need)
		}
		if err != nil {
			writeError(w, err)
			return
		}
		rt.serve(w, r)
	})))
}

// caller is the request's caller; nil with authentication off.
func (s *Scheduler) caller(r *http.Request) *identity.Caller {
	if s.cfg.Auth == nil {
		return nil
	}
	return identity.CallerFrom(r.Context())
}

// endpointLevel is what the request's caller holds on ep: CAN_MANAGE
// with authentication off. s.mu need not be held: ep.ID never changes.
func (s *Scheduler) endpointLevel(r *http.Request, id string) identity.Level {
	if s.cfg.Auth == nil {
		return identity.CanManage
	}
	return s.cfg.Auth.Level(identity.CallerFrom(r.Context()), identity.Object{Type: identity.Endpoints, ID: id})
}

// needEndpoint checks that the caller holds need on endpoint name and
// returns what it holds. An endpoint the caller may not view answers
// exactly as a missing one (lookup's 404), so that 404 and 403 tell
// nothing about endpoints one may not see.
func (s *Scheduler) needEndpoint(r *http.Request, name string, need identity.Level) (identity.Level, error) {
	s.mu.Lock()
	ep, err := s.lookup(name)
	var id string
	if err == nil {
		id = ep.ID
	}
	s.mu.Unlock()
	if err != nil {
		return "", err
	}
	if s.cfg.Auth == nil {
		return identity.CanManage, nil
	}
	c := identity.CallerFrom(r.Context())
	have := s.endpointLevel(r, id)
	if !have.AtLeast(identity.CanView) {
		return "", api.Errorf(api.ErrResourceDoesNotExist, "endpoint %q does not exist", name)
	}
	if d := (identity.Decision{Status: http.StatusForbidden, Have: have, Need: need}); !have.AtLeast(need) {
		return have, api.Errorf(api.ErrPermissionDenied, "%s", d.Denied(c, "serving endpoint "+name))
	}
	return have, nil
}

// modelLevel is what the request's caller holds on model name.
func (s *Scheduler) modelLevel(r *http.Request, name string) identity.Level {
	if s.cfg.Auth == nil {
		return identity.CanManage
	}
	return s.cfg.Auth.Level(identity.CallerFrom(r.Context()), identity.Object{Type: identity.Models, ID: name})
}

// needModel checks that the caller holds need on model name. A model
// the caller may not read answers as the registry does for a missing
// version (version is the path's, for that message).
func (s *Scheduler) needModel(r *http.Request, name, version string, need identity.Level) error {
	have := s.modelLevel(r, name)
	if !have.AtLeast(identity.CanRead) {
		return api.Errorf(api.ErrResourceDoesNotExist, "model %s version %s does not exist", name, version)
	}
	if !have.AtLeast(need) {
		d := identity.Decision{Status: http.StatusForbidden, Have: have, Need: need}
		return api.Errorf(api.ErrPermissionDenied, "%s", d.Denied(identity.CallerFrom(r.Context()), "registered model "+name))
	}
	return nil
}

// needMonitor checks need on the endpoint of monitor name; a monitor of
// an endpoint the caller may not view does not exist for it.
func (s *Scheduler) needMonitor(r *http.Request, name string, need identity.Level) error {
	a, err := s.monitor(name)
	if err != nil {
		return err
	}
	if _, err := s.needEndpoint(r, a.Endpoint, need); err != nil {
		var ae *api.Error
		if errors.As(err, &ae) && ae.Code == api.ErrResourceDoesNotExist {
			return api.Errorf(api.ErrResourceDoesNotExist, "monitor %q does not exist", name)
		}
		return err
	}
	return nil
}

// needModels checks that the caller may read every model config serves:
// creating or updating an endpoint serves them to whoever may query it.
// An unreadable model answers as a missing one does in checkConfig.
func (s *Scheduler) needModels(r *http.Request, c *api.EndpointConfig) error {
	if s.cfg.Auth == nil {
		return nil
	}
	for i, e := range c.ServedEntities {
		if !deploys(&e) {
			continue // no model to read (feature specs are any caller's to read)
		}
		if !s.modelLevel(r, e.EntityName).AtLeast(identity.CanRead) {
			return api.Errorf(api.ErrResourceDoesNotExist, "config.served_entities[%d]: model %s version %s does not exist; upload it with `gantry models upload %s DIR`", i, e.EntityName, e.EntityVersion, e.EntityName)
		}
	}
	return nil
}

// modelExists reports whether the registry holds any version of name.
func (s *Scheduler) modelExists(name string) (bool, error) {
	ms, err := s.cfg.Registry.List()
	if err != nil {
		return false, err
	}
	return slices.ContainsFunc(ms, func(m api.ModelVersion) bool { return m.Name == name }), nil
}

// authObjects resolves the objects of permissions paths for the identity
// API: endpoints by id or name, models by name.
type authObjects struct{ s *Scheduler }

var _ identity.Objects = authObjects{}

func (o authObjects) Resolve(t identity.ObjectType, id string) (identity.Object, bool) {
	switch t {
	case identity.Endpoints:
		o.s.mu.Lock()
		defer o.s.mu.Unlock()
		if ep, ok := o.s.eps[id]; ok {
			return identity.Object{Type: t, ID: ep.ID}, true
		}
		for _, ep := range o.s.eps {
			if ep.ID == id {
				return identity.Object{Type: t, ID: ep.ID}, true
			}
		}
	case identity.Models:
		if ok, err := o.s.modelExists(id); err == nil && ok {
			return identity.Object{Type: t, ID: id}, true
		}
	}
	return identity.Object{}, false
}

// forget drops o's ACL; a failure only logs: o is gone, and its random
// id is never reused, so a left-over ACL grants nothing.
func (s *Scheduler) forget(o identity.Object) {
	if s.cfg.Auth == nil {
		return
	}
	if err := s.cfg.Auth.Forget(o); err != nil {
		s.cfg.Logger.Warn("forget the ACL of a deleted object", "object", string(o.Type)+"/"+o.ID, "err", err)
	}
}

// mayUpload checks that the caller may upload a version of model name:
// anyone may start a new model, and owns it; a model that exists takes
// CAN_MANAGE. A model uploaded before authentication has no owner, so
// admins only.
func (s *Scheduler) mayUpload(r *http.Request, name string) error {
	if s.cfg.Auth == nil {
		return nil
	}
	c := s.caller(r)
	obj := identity.Object{Type: identity.Models, ID: name}
	exists, err := s.modelExists(name)
	if err != nil {
		return err
	}
	if !exists {
		// Two first uploads race: one claims, the other needs CAN_MANAGE
		// below like any upload to someone else's model.
		if _, err := s.cfg.Auth.Claim(obj, c); err != nil {
			return err
		}
	}
	// A 403 even for a model the caller may not read: names are one
	// namespace, so an upload learns that the name is taken anyway (as
	// creating an endpoint under a taken name answers 409).
	if have := s.modelLevel(r, name); !have.AtLeast(identity.CanManage) {
		d := identity.Decision{Status: http.StatusForbidden, Have: have, Need: identity.CanManage}
		return api.Errorf(api.ErrPermissionDenied, "%s", d.Denied(c, "registered model "+name))
	}
	return nil
}

// access serves the access snapshot as a blocking query: with ?index=N it
// waits (up to ?wait=, default 30 s) for a snapshot whose index passes N.
// The index is the identity service's: an endpoint's grants enter it when
// its creator claims it (after the endpoint exists) and leave it when its
// ACL is forgotten (after the endpoint is gone), both changes of that
// index, so a follower never keeps a stale name.
func (s *Scheduler) access(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Auth == nil {
		writeError(w, api.Errorf(api.ErrResourceDoesNotExist, "authentication is off in this Gantry: there is no access snapshot to follow"))
		return
	}
	index, wait, err := blockingParams(r)
	if err != nil {
		writeError(w, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), wait)
	defer cancel()
	snap, _ := s.AccessWait(ctx, index) // on timeout: the current snapshot
	w.Header().Set("X-Gantry-Index", strconv.FormatUint(snap.Index, 10))
	writeJSON(w, http.StatusOK, snap)
}

// AccessWait is GET /api/2.0/gantry/access in process, for an activator
// in the scheduler's process (gantry dev): the first access snapshot whose
// index passes index, or the current one with ctx's error when ctx ends
// first. With authentication off it answers nil and an error at once.
func (s *Scheduler) AccessWait(ctx context.Context, index uint64) (*api.AccessSnapshot, error) {
	if s.cfg.Auth == nil {
		return nil, errors.New("authentication is off: there is no access snapshot")
	}
	_, err := s.cfg.Auth.Wait(ctx, index)
	s.mu.Lock()
	names := make(map[string]string, len(s.eps))
	for n, ep := range s.eps {
		names[n] = ep.ID
	}
	s.mu.Unlock()
	return s.cfg.Auth.Export(names), err
}

// dropNew removes endpoint ep that create stored but could not claim for
// its creator: an endpoint nobody but admins could see is worse than a
// failed create.
func (s *Scheduler) dropNew(ep *store.Endpoint) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur, ok := s.eps[ep.Name]; ok && cur.ID == ep.ID {
		if err := s.cfg.Store.Delete(ep.Name); err != nil {
			s.cfg.Logger.Warn("drop an endpoint whose owner could not be recorded", "endpoint", ep.Name, "err", err)
			return
		}
		delete(s.eps, ep.Name)
		s.Notify(ep.Name)
	}
}
