package identity

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/gantry/gantry/api"
)

// SCIM 2.0 in the shapes Databricks' SDKs send and read
// (/api/2.0/preview/scim/v2/...).

const scimBase = "/api/2.0/preview/scim/v2/"

const (
	schemaUser     = "urn:ietf:params:scim:schemas:core:2.0:User"
	schemaSP       = "urn:ietf:params:scim:schemas:core:2.0:ServicePrincipal"
	schemaGroup    = "urn:ietf:params:scim:schemas:core:2.0:Group"
	schemaList     = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
	schemaPatchOp  = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
	maxListResults = 10000
)

// The wire shapes are the api module's (api.ScimPrincipal, api.ScimValue,
// api.ScimListResponse): the CLI and the server read one definition.
// Requests decode into them strictly.

// kindOf maps a SCIM resource path to a principal kind, with the
// attribute its name travels in.
func kindOf(res string) (Kind, string) {
	switch res {
	case "Users":
		return User, "userName"
	case "ServicePrincipals":
		return ServicePrincipal, "applicationId"
	}
	return Group, "displayName"
}

// render is p's SCIM resource.
func (h *handler) render(p *Principal) api.ScimPrincipal {
	active := p.Active
	out := api.ScimPrincipal{ID: p.ID, DisplayName: p.DisplayName}
	switch p.Kind {
	case User:
		out.Schemas = []string{schemaUser}
		out.UserName = p.Name
		out.Active = &active
		if strings.Contains(p.Name, "@") {
			out.Emails = []api.ScimValue{{Value: p.Name, Type: "work", Primary: true}}
		}
	case ServicePrincipal:
		out.Schemas = []string{schemaSP}
		out.ApplicationID = p.Name
		out.Active = &active
	case Group:
		out.Schemas = []string{schemaGroup}
		out.DisplayName = p.Name
		out.Members = []api.ScimValue{}
		for _, m := range p.Members {
			if mp, err := h.s.principalAny(m); err == nil {
				res := "Users/"
				switch mp.Kind {
				case ServicePrincipal:
					res = "ServicePrincipals/"
				case Group:
					res = "Groups/"
				}
				out.Members = append(out.Members, api.ScimValue{Value: mp.ID, Display: display(mp), Ref: res + mp.ID})
			}
		}
	}
	// Every group that holds p: "direct" when the group lists p,
	// "indirect" through a nested group, as Databricks marks them.
	out.Groups = []api.ScimValue{}
	for _, g := range h.s.GroupsOf(p.ID) {
		typ := "indirect"
		if h.s.IsDirectMember(p.ID, g.ID) {
			typ = "direct"
		}
		out.Groups = append(out.Groups, api.ScimValue{Value: g.ID, Display: g.Name, Type: typ, Ref: "Groups/" + g.ID})
	}
	return out
}

func display(p *Principal) string {
	if p.DisplayName != "" {
		return p.DisplayName
	}
	return p.Name
}

// principalAny finds a principal of any kind by id.
func (s *Service) principalAny(id string) (*Principal, error) {
	p := s.cur.Load().principals[id]
	if p == nil {
		return nil, api.Errorf(api.ErrResourceDoesNotExist, "principal %q does not exist", id)
	}
	return p, nil
}

func (h *handler) scimCreate(w http.ResponseWriter, r *http.Request, res string) {
	var in api.ScimPrincipal
	if err := decode(w, r, &in); err != nil {
		writeError(w, err)
		return
	}
	kind, attr := kindOf(res)
	name, display := in.UserName, in.DisplayName
	refuse := func(field string) {
		writeError(w, api.Errorf(api.ErrInvalidParameterValue, "%s: not a field of %s", field, res))
	}
	switch kind {
	case User:
		if in.ApplicationID != "" {
			refuse("applicationId")
			return
		}
		for i, e := range in.Emails {
			if e.Value != in.UserName {
				writeError(w, api.Errorf(api.ErrInvalidParameterValue, "emails[%d]: Gantry keeps one email, the userName; leave emails out or repeat the userName", i))
				return
			}
		}
	case ServicePrincipal:
		if in.UserName != "" || len(in.Emails) > 0 {
			refuse("userName/emails")
			return
		}
		name = in.ApplicationID // empty: a new UUID
	case Group:
		if in.UserName != "" || in.ApplicationID != "" || len(in.Emails) > 0 || in.Active != nil {
			refuse("userName/applicationId/emails/active")
			return
		}
		name, display = in.DisplayName, in.DisplayName
	}
	if len(in.Groups) > 0 {
		writeError(w, api.Errorf(api.ErrInvalidParameterValue, "groups: set memberships with PATCH %sGroups/{id}", scimBase))
		return
	}
	if kind == Group && name == "" {
		writeError(w, api.Errorf(api.ErrInvalidParameterValue, "%s: required", attr))
		return
	}
	p, err := h.s.CreatePrincipal(kind, name, display)
	if err != nil {
		writeError(w, err)
		return
	}
	if in.Active != nil && !*in.Active {
		p, err = h.s.setActive(p.ID, false)
		if err != nil {
			writeError(w, err)
			return
		}
	}
	if kind == Group && len(in.Members) > 0 {
		ids := make([]string, len(in.Members))
		for i, m := range in.Members {
			ids[i] = m.Value
		}
		if p, err = h.s.SetMembers(p.ID, ids, nil, false); err != nil {
			h.s.DeletePrincipal(Group, p.ID) // all or nothing
			writeError(w, err)
			return
		}
	}
	writeJSON(w, http.StatusCreated, h.render(p))
}

func (h *handler) scimList(w http.ResponseWriter, r *http.Request, res string) {
	if err := onlyParams(r, "filter", "startIndex", "count"); err != nil {
		writeError(w, err)
		return
	}
	kind, attr := kindOf(res)
	q := r.URL.Query()
	f, err := ParseFilter(q.Get("filter"), attr, "displayName", "id")
	if err != nil {
		writeError(w, api.Errorf(api.ErrInvalidParameterValue, "%v", err))
		return
	}
	start, count := 1, maxListResults
	for _, p := range []struct {
		name string
		v    *int
		min  int
	}{{"startIndex", &start, 1}, {"count", &count, 0}} {
		if s := q.Get(p.name); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < p.min {
				writeError(w, api.Errorf(api.ErrInvalidParameterValue, "%s: %q is not a whole number of at least %d", p.name, s, p.min))
				return
			}
			*p.v = n
		}
	}
	count = min(count, maxListResults)
	var match func(*Principal) bool
	if f != nil {
		match = func(p *Principal) bool {
			switch f.Attr {
			case "id":
				return f.Match(p.ID)
			case "displayName":
				return f.Match(display(p))
			}
			return f.Match(p.Name)
		}
	}
	all := h.s.Principals(kind, match)
	out := api.ScimListResponse{Schemas: []string{schemaList}, TotalResults: len(all), StartIndex: start, Resources: []api.ScimPrincipal{}}
	// SCIM pages are 1-based; the SDKs page until a page comes back empty.
	for i := start - 1; i < len(all) && len(out.Resources) < count; i++ {
		out.Resources = append(out.Resources, h.render(all[i]))
	}
	out.ItemsPerPage = len(out.Resources)
	writeJSON(w, http.StatusOK, out)
}

func (h *handler) scimGet(w http.ResponseWriter, r *http.Request, res string) {
	kind, _ := kindOf(res)
	p, err := h.s.Principal(kind, r.PathValue("id"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, h.render(p))
}

func (h *handler) scimMe(w http.ResponseWriter, r *http.Request, c *Caller) {
	p, err := h.s.principalAny(c.ID)
	if err != nil {
		writeError(w, err)
		return
	}
	out := h.render(p)
	if p.Kind == ServicePrincipal {
		// The SDKs read Me as a User (CurrentUser.Me): Databricks gives a
		// service principal its application id as userName there.
		out.UserName = p.Name
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *handler) scimDelete(w http.ResponseWriter, r *http.Request, res string) {
	kind, _ := kindOf(res)
	if err := h.s.DeletePrincipal(kind, r.PathValue("id")); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// scimPatch is a SCIM PatchOp body.
type scimPatch struct {
	Schemas    []string `json:"schemas,omitempty"`
	Operations []struct {
		Op    string          `json:"op"`
		Path  string          `json:"path,omitempty"`
		Value []api.ScimValue `json:"value,omitempty"`
	} `json:"Operations"`
}

// scimPatchGroup changes a group's members: op add, replace or remove
// with path "members" and a list of {"value": id}, or remove with path
// `members[value eq "id"]`, as Databricks' SDKs send.
func (h *handler) scimPatchGroup(w http.ResponseWriter, r *http.Request, _ *Caller) {
	var in scimPatch
	if err := decode(w, r, &in); err != nil {
		writeError(w, err)
		return
	}
	id := r.PathValue("id")
	if _, err := h.s.Principal(Group, id); err != nil {
		writeError(w, err)
		return
	}
	if len(in.Operations) == 0 {
		writeError(w, api.Errorf(api.ErrInvalidParameterValue, "Operations: required; send [{\"op\": \"add\", \"path\": \"members\", \"value\": [{\"value\": \"<id>\"}]}]"))
		return
	}
	var add, remove []string
	replace := false
	for i, op := range in.Operations {
		ids := make([]string, len(op.Value))
		for j, v := range op.Value {
			ids[j] = v.Value
		}
		path := op.Path
		if f, ok := strings.CutPrefix(path, "members["); ok && strings.HasSuffix(f, "]") {
			flt, err := ParseFilter(strings.TrimSuffix(f, "]"), "value")
			if err != nil || flt == nil || flt.Op != "eq" {
				writeError(w, api.Errorf(api.ErrInvalidParameterValue, "Operations[%d].path: %q: want members[value eq \"<id>\"]", i, path))
				return
			}
			path, ids = "members", append(ids, flt.Value)
		}
		if path != "members" {
			writeError(w, api.Errorf(api.ErrInvalidParameterValue, "Operations[%d].path: %q: Gantry patches members only", i, op.Path))
			return
		}
		switch strings.ToLower(op.Op) {
		case "add":
			add = append(add, ids...)
		case "remove":
			remove = append(remove, ids...)
		case "replace":
			if i != 0 {
				writeError(w, api.Errorf(api.ErrInvalidParameterValue, "Operations[%d]: replace must come first", i))
				return
			}
			replace, add = true, append(add, ids...)
		default:
			writeError(w, api.Errorf(api.ErrInvalidParameterValue, "Operations[%d].op: %q: use add, remove or replace", i, op.Op))
			return
		}
	}
	g, err := h.s.SetMembers(id, add, remove, replace)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, h.render(g))
}
