package identity

import (
	"fmt"
	"net/http"
)

// Level is a permission level on an object. The zero value is no
// permission at all (Databricks shows "No Permissions").
type Level string

// Permission levels. Serving endpoints take CAN_VIEW < CAN_QUERY <
// CAN_MANAGE; registered models take CAN_READ < CAN_MANAGE.
const (
	NoPermissions Level = ""
	CanView       Level = "CAN_VIEW"
	CanQuery      Level = "CAN_QUERY"
	CanRead       Level = "CAN_READ"
	CanManage     Level = "CAN_MANAGE"
)

// rank orders levels. CAN_VIEW and CAN_READ share a rank: they never meet
// on one object, and each is the least that lets a caller see it.
func (l Level) rank() int {
	switch l {
	case CanView, CanRead:
		return 1
	case CanQuery:
		return 2
	case CanManage:
		return 3
	}
	return 0
}

// AtLeast reports whether l grants everything need grants.
func (l Level) AtLeast(need Level) bool { return l.rank() >= need.rank() }

// ObjectType is the kind of object an ACL guards, spelled as in the
// permissions API's paths.
type ObjectType string

// Object types.
const (
	Endpoints ObjectType = "serving-endpoints"
	Models    ObjectType = "registered-models"
)

// levelInfo is one level an object type takes, with the description
// GET …/permissionLevels answers.
type levelInfo struct {
	Level       Level  `json:"permission_level"`
	Description string `json:"description"`
}

// Levels lists the levels t takes, lowest first.
func (t ObjectType) Levels() []levelInfo {
	switch t {
	case Endpoints:
		return []levelInfo{
			{CanView, "Can view the endpoint: get, list, metrics and logs"},
			{CanQuery, "Can view and query (invoke) the endpoint"},
			{CanManage, "Can query, update, delete the endpoint, change its permissions and query its inference table"},
		}
	case Models:
		return []levelInfo{
			{CanRead, "Can read the model's versions and serve them from an endpoint"},
			{CanManage, "Can read, upload versions and change the model's permissions"},
		}
	}
	return nil
}

// Takes reports whether l is one of t's levels.
func (t ObjectType) Takes(l Level) bool {
	for _, li := range t.Levels() {
		if li.Level == l {
			return true
		}
	}
	return false
}

// singular is the object_type the permissions API answers.
func (t ObjectType) singular() string {
	switch t {
	case Endpoints:
		return "serving-endpoint"
	case Models:
		return "registered-model"
	}
	return string(t)
}

// Object is one guarded object: an endpoint by its id (stable across
// renames, and a re-created endpoint of the same name starts with no
// grants), a model by its name.
type Object struct {
	Type ObjectType
	ID   string
}

func (o Object) key() string { return string(o.Type) + "/" + o.ID }

// Kind is the kind of a principal.
type Kind string

// Principal kinds. Users and service principals hold tokens; groups hold
// users and service principals.
const (
	User             Kind = "user"
	ServicePrincipal Kind = "service_principal"
	Group            Kind = "group"
)

// Ref names a principal the way ACL entries do: a user by userName, a
// service principal by applicationId, a group by displayName.
type Ref struct {
	Kind Kind   `json:"kind"`
	Name string `json:"name"`
}

func (r Ref) String() string {
	switch r.Kind {
	case User:
		return "user " + r.Name
	case ServicePrincipal:
		return "service principal " + r.Name
	case Group:
		return "group " + r.Name
	}
	return r.Name
}

// Grant is one ACL entry.
type Grant struct {
	Principal Ref   `json:"principal"`
	Level     Level `json:"level"`
}

// ACL is the access control list of one object. Owner is its creator, who
// keeps CAN_MANAGE whatever PUT does to the grants (as Databricks' owner
// does), so that a manager cannot lock the creator out by accident; nil
// for objects that predate authentication, which only admins manage.
type ACL struct {
	Owner  *Ref    `json:"owner,omitempty"`
	Grants []Grant `json:"grants,omitempty"`
}

// Caller is an authenticated principal, as a request carries it.
type Caller struct {
	// ID is the principal's SCIM id.
	ID string
	// Ref is the user or service principal; Ref.Name is what Gantry
	// records as creator and requester.
	Ref         Ref
	DisplayName string
	// Groups are the display names of the groups that hold the principal.
	Groups []string
	// Admin is membership of the admins group: every permission on
	// every object.
	Admin bool
	// Component is membership of the gantry-components group: the
	// components' routes and nothing else, unless Admin too.
	Component bool
}

// Name is the principal's name: a user's userName, a service principal's
// applicationId.
func (c *Caller) Name() string { return c.Ref.Name }

// Effective is the level c holds on an object with acl: CAN_MANAGE for
// admins and the owner, else the highest of the grants to c and to c's
// groups. nil c holds nothing.
func Effective(c *Caller, acl *ACL) Level {
	if c == nil {
		return NoPermissions
	}
	if c.Admin {
		return CanManage
	}
	if acl == nil {
		return NoPermissions
	}
	if acl.Owner != nil && *acl.Owner == c.Ref {
		return CanManage
	}
	best := NoPermissions
	for _, g := range acl.Grants {
		if !matches(c, g.Principal) {
			continue
		}
		if g.Level.rank() > best.rank() {
			best = g.Level
		}
	}
	return best
}

func matches(c *Caller, r Ref) bool {
	if r.Kind == Group {
		for _, g := range c.Groups {
			if g == r.Name {
				return true
			}
		}
		return false
	}
	return r == c.Ref
}

// Decision is the answer to "may this caller do this?". Status is
// http.StatusOK when allowed, 401 without a caller, 403 when the caller
// holds less than Need; Have is what it holds.
type Decision struct {
	Status     int
	Have, Need Level
}

// Allowed reports whether the decision lets the request through.
func (d Decision) Allowed() bool { return d.Status == http.StatusOK }

// Decide is the authorization decision: c (nil when the request carried
// no valid token) wants need on an object guarded by acl.
func Decide(c *Caller, acl *ACL, need Level) Decision {
	if c == nil {
		return Decision{Status: http.StatusUnauthorized, Need: need}
	}
	have := Effective(c, acl)
	if !have.AtLeast(need) {
		return Decision{Status: http.StatusForbidden, Have: have, Need: need}
	}
	return Decision{Status: http.StatusOK, Have: have, Need: need}
}

// Denied is the message of a 403: who lacks what on which object, and
// what it holds. what names the object ("serving endpoint fraud").
func (d Decision) Denied(c *Caller, what string) string {
	have := string(d.Have)
	if have == "" {
		have = "no permission"
	}
	return fmt.Sprintf("%s lacks %s on %s (holds %s); ask a user with CAN_MANAGE on it or an admin to grant it", c.Ref, d.Need, what, have)
}
