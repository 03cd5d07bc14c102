package identity

import (
	"net/http"
	"slices"
	"strings"

	"github.com/gantry/gantry/api"
)

// The permissions API (/api/2.0/permissions/{type}/{id}) in Databricks'
// shapes.

type aclRequestEntry struct {
	UserName             string `json:"user_name,omitempty"`
	GroupName            string `json:"group_name,omitempty"`
	ServicePrincipalName string `json:"service_principal_name,omitempty"`
	PermissionLevel      Level  `json:"permission_level"`
}

type permission struct {
	PermissionLevel     Level    `json:"permission_level"`
	Inherited           bool     `json:"inherited"`
	InheritedFromObject []string `json:"inherited_from_object,omitempty"`
}

type aclResponseEntry struct {
	UserName             string       `json:"user_name,omitempty"`
	GroupName            string       `json:"group_name,omitempty"`
	ServicePrincipalName string       `json:"service_principal_name,omitempty"`
	DisplayName          string       `json:"display_name,omitempty"`
	AllPermissions       []permission `json:"all_permissions"`
}

type permissionsResponse struct {
	ObjectID          string             `json:"object_id"`
	ObjectType        string             `json:"object_type"`
	AccessControlList []aclResponseEntry `json:"access_control_list"`
}

func objectOf(r *http.Request) Object {
	o, _ := r.Context().Value(objectKey{}).(Object)
	return o
}

// view renders o's ACL: the owner's CAN_MANAGE, the direct grants, and
// the admins group's CAN_MANAGE, inherited from the workspace as
// Databricks shows it.
func (h *handler) view(o Object) permissionsResponse {
	out := permissionsResponse{ObjectID: "/" + string(o.Type) + "/" + o.ID, ObjectType: o.Type.singular()}
	byRef := map[Ref]int{}
	add := func(r Ref, p permission) {
		i, ok := byRef[r]
		if !ok {
			e := aclResponseEntry{}
			switch r.Kind {
			case User:
				e.UserName = r.Name
			case ServicePrincipal:
				e.ServicePrincipalName = r.Name
			case Group:
				e.GroupName = r.Name
			}
			if pr, ok := h.s.Lookup(r); ok && r.Kind != Group {
				e.DisplayName = pr.DisplayName
			}
			i = len(out.AccessControlList)
			byRef[r] = i
			out.AccessControlList = append(out.AccessControlList, e)
		}
		out.AccessControlList[i].AllPermissions = append(out.AccessControlList[i].AllPermissions, p)
	}
	if a := h.s.ACL(o); a != nil {
		if a.Owner != nil {
			add(*a.Owner, permission{PermissionLevel: CanManage})
		}
		for _, g := range a.Grants {
			add(g.Principal, permission{PermissionLevel: g.Level})
		}
	}
	add(Ref{Group, AdminsGroup}, permission{PermissionLevel: CanManage, Inherited: true, InheritedFromObject: []string{"/" + string(o.Type) + "/"}})
	return out
}

func (h *handler) permGet(w http.ResponseWriter, r *http.Request, _ *Caller) {
	writeJSON(w, http.StatusOK, h.view(objectOf(r)))
}

func (h *handler) permPut(w http.ResponseWriter, r *http.Request, _ *Caller) {
	h.permSet(w, r, true)
}

func (h *handler) permPatch(w http.ResponseWriter, r *http.Request, _ *Caller) {
	h.permSet(w, r, false)
}

func (h *handler) permSet(w http.ResponseWriter, r *http.Request, replace bool) {
	var in struct {
		AccessControlList []aclRequestEntry `json:"access_control_list"`
	}
	if err := decode(w, r, &in); err != nil {
		writeError(w, err)
		return
	}
	o := objectOf(r)
	grants := make([]Grant, 0, len(in.AccessControlList))
	for i, e := range in.AccessControlList {
		var refs []Ref
		if e.UserName != "" {
			refs = append(refs, Ref{User, e.UserName})
		}
		if e.GroupName != "" {
			refs = append(refs, Ref{Group, e.GroupName})
		}
		if e.ServicePrincipalName != "" {
			refs = append(refs, Ref{ServicePrincipal, e.ServicePrincipalName})
		}
		if len(refs) != 1 {
			writeError(w, api.Errorf(api.ErrInvalidParameterValue, "access_control_list[%d]: name exactly one of user_name, group_name, service_principal_name", i))
			return
		}
		if refs[0] == (Ref{Group, AdminsGroup}) {
			writeError(w, api.Errorf(api.ErrInvalidParameterValue, "access_control_list[%d]: the admins group manages everything already; its permission cannot be changed", i))
			return
		}
		if e.PermissionLevel == "" {
			writeError(w, api.Errorf(api.ErrInvalidParameterValue, "access_control_list[%d].permission_level: required; one of %s", i, levelNames(o.Type)))
			return
		}
		if slices.ContainsFunc(grants, func(g Grant) bool { return g.Principal == refs[0] }) {
			writeError(w, api.Errorf(api.ErrInvalidParameterValue, "access_control_list[%d]: %s is named twice", i, refs[0]))
			return
		}
		grants = append(grants, Grant{Principal: refs[0], Level: Level(strings.ToUpper(string(e.PermissionLevel)))})
	}
	if _, err := h.s.SetACL(o, grants, replace); err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, h.view(o))
}

func (h *handler) permLevels(w http.ResponseWriter, r *http.Request, _ *Caller) {
	writeJSON(w, http.StatusOK, map[string]any{"permission_levels": objectOf(r).Type.Levels()})
}
