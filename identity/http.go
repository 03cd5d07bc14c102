package identity

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/internal/jsonbody"
)

// maxBody bounds the JSON bodies of the identity APIs: names and ACLs.
const maxBody = 1 << 20

type callerKey struct{}

// WithCaller returns ctx carrying the authenticated caller; the
// scheduler's middleware calls it before Handler's routes run.
func WithCaller(ctx context.Context, c *Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// CallerFrom returns the caller WithCaller put in ctx, or nil.
func CallerFrom(ctx context.Context) *Caller {
	c, _ := ctx.Value(callerKey{}).(*Caller)
	return c
}

// Objects resolves the objects whose permissions Handler serves; the
// scheduler implements it, since it owns endpoints and models.
type Objects interface {
	// Resolve finds the object that a permissions path names: an
	// endpoint by id (or name), a model by name. ok is false when there
	// is none.
	Resolve(t ObjectType, id string) (o Object, ok bool)
}

// access says who may call a route: any authenticated caller, admins,
// or callers holding a level on the object the path names.
type access struct {
	admin bool
	// need is the level on the {id} object of typ; "" for none.
	typ  ObjectType
	need Level
}

type route struct {
	pattern string
	access  access
	serve   func(h *handler, w http.ResponseWriter, r *http.Request, c *Caller)
}

var (
	anyCaller = access{}
	adminOnly = access{admin: true}
)

// routes is every route Handler serves, with who may call it. Tests list
// them with Patterns, so a new route without a rule in the scheduler's
// authorization matrix fails there.
var routes = func() []route {
	var rs []route
	for _, res := range []string{"Users", "ServicePrincipals", "Groups"} {
		res := res
		base := scimBase + res
		rs = append(rs,
			route{"POST " + base, adminOnly, func(h *handler, w http.ResponseWriter, r *http.Request, c *Caller) { h.scimCreate(w, r, res) }},
			route{"GET " + base, anyCaller, func(h *handler, w http.ResponseWriter, r *http.Request, c *Caller) { h.scimList(w, r, res) }},
			route{"GET " + base + "/{id}", anyCaller, func(h *handler, w http.ResponseWriter, r *http.Request, c *Caller) { h.scimGet(w, r, res) }},
			route{"DELETE " + base + "/{id}", adminOnly, func(h *handler, w http.ResponseWriter, r *http.Request, c *Caller) { h.scimDelete(w, r, res) }},
		)
	}
	rs = append(rs,
		route{"PATCH " + scimBase + "Groups/{id}", adminOnly, (*handler).scimPatchGroup},
		route{"GET " + scimBase + "Me", anyCaller, (*handler).scimMe},

		route{"POST /api/2.0/token/create", anyCaller, (*handler).tokenCreate},
		route{"GET /api/2.0/token/list", anyCaller, (*handler).tokenList},
		route{"POST /api/2.0/token/delete", anyCaller, (*handler).tokenDelete},
		route{"GET /api/2.0/token-management/tokens", adminOnly, (*handler).tmList},
		route{"GET /api/2.0/token-management/tokens/{token_id}", adminOnly, (*handler).tmGet},
		route{"DELETE /api/2.0/token-management/tokens/{token_id}", adminOnly, (*handler).tmDelete},
		route{"POST /api/2.0/token-management/on-behalf-of/tokens", adminOnly, (*handler).tmOnBehalfOf},
	)
	for _, t := range []struct {
		typ        ObjectType
		view, edit Level
	}{{Endpoints, CanView, CanManage}, {Models, CanRead, CanManage}} {
		base := "/api/2.0/permissions/" + string(t.typ) + "/{id}"
		rs = append(rs,
			route{"GET " + base, access{typ: t.typ, need: t.edit}, (*handler).permGet},
			route{"PUT " + base, access{typ: t.typ, need: t.edit}, (*handler).permPut},
			route{"PATCH " + base, access{typ: t.typ, need: t.edit}, (*handler).permPatch},
			route{"GET " + base + "/permissionLevels", access{typ: t.typ, need: t.view}, (*handler).permLevels},
		)
	}
	return rs
}()

// Patterns lists the ServeMux patterns Handler serves; the scheduler
// mounts Handler at each.
func Patterns() []string {
	out := make([]string, len(routes))
	for i, r := range routes {
		out[i] = r.pattern
	}
	return out
}

type handler struct {
	s       *Service
	objects Objects
}

// objectKey is the context key of the object a route's access resolved.
type objectKey struct{}

// Handler serves the SCIM, token and permissions APIs. It expects the
// caller in the request's context (WithCaller): the scheduler's
// middleware authenticates before it.
func (s *Service) Handler(objects Objects) http.Handler {
	h := &handler{s: s, objects: objects}
	mux := http.NewServeMux()
	for _, rt := range routes {
		rt := rt
		mux.HandleFunc(rt.pattern, func(w http.ResponseWriter, r *http.Request) {
			c := CallerFrom(r.Context())
			if c == nil { // mounted without authentication: refuse, never serve
				writeError(w, api.Errorf(api.ErrUnauthenticated, "%v", ErrNoToken))
				return
			}
			switch {
			case rt.access.admin && !c.Admin:
				writeError(w, api.Errorf(api.ErrPermissionDenied, "%s is not in the admins group; only admins may %s", c.Ref, r.Method+" "+r.URL.Path))
				return
			case rt.access.need != "":
				o, err := h.authorize(c, rt.access.typ, r.PathValue("id"), rt.access.need)
				if err != nil {
					writeError(w, err)
					return
				}
				r = r.WithContext(context.WithValue(r.Context(), objectKey{}, o))
			}
			rt.serve(h, w, r, c)
		})
	}
	return mux
}

// authorize resolves the object at id and checks that c holds need on
// it. An object c may not even see answers exactly as a missing one
// does, so that the answer is no oracle of what exists.
func (h *handler) authorize(c *Caller, t ObjectType, id string, need Level) (Object, error) {
	o, ok := h.objects.Resolve(t, id)
	missing := api.Errorf(api.ErrResourceDoesNotExist, "%s %q does not exist", what(t), id)
	if !ok {
		return Object{}, missing
	}
	lowest := t.Levels()[0].Level
	d := Decide(c, h.s.ACL(o), need)
	if !d.Have.AtLeast(lowest) {
		return Object{}, missing
	}
	if !d.Allowed() {
		return Object{}, api.Errorf(api.ErrPermissionDenied, "%s", d.Denied(c, what(t)+" "+id))
	}
	return o, nil
}

func what(t ObjectType) string {
	if t == Models {
		return "registered model"
	}
	return "serving endpoint"
}

// decode reads a JSON body strictly (jsonbody.Decode).
func decode(w http.ResponseWriter, r *http.Request, v any) error {
	_, err := jsonbody.Decode(w, r, v, maxBody)
	return err
}

// onlyParams refuses query parameters other than allowed.
func onlyParams(r *http.Request, allowed ...string) error {
	for k := range r.URL.Query() {
		ok := false
		for _, a := range allowed {
			ok = ok || k == a
		}
		if !ok {
			if len(allowed) == 0 {
				return api.Errorf(api.ErrInvalidParameterValue, "%s: Gantry does not support this parameter here", k)
			}
			return api.Errorf(api.ErrInvalidParameterValue, "%s: Gantry does not support this parameter; it takes %s", k, strings.Join(allowed, ", "))
		}
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// writeError answers in API.md's error shape; errors that are not
// *api.Error are internal.
func writeError(w http.ResponseWriter, err error) {
	var ae *api.Error
	if !errors.As(err, &ae) {
		ae = api.Errorf(api.ErrInternal, "%v", err)
	}
	if ae.Code == api.ErrUnauthenticated {
		w.Header().Set("WWW-Authenticate", `Bearer realm="gantry"`)
	}
	writeJSON(w, api.HTTPStatus(ae.Code), ae)
}
