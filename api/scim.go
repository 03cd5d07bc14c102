package api

import (
	"net/url"
	"strconv"
	"strings"
)

// Principals through SCIM 2.0 (/api/2.0/preview/scim/v2/...), in the
// shapes Databricks' SDKs send and read.

const scimBase = "/api/2.0/preview/scim/v2/"

// ScimValue is an item of a SCIM multi-valued attribute: a group's
// members, a principal's groups, a user's emails.
type ScimValue struct {
	Value   string `json:"value"`
	Display string `json:"display,omitempty"`
	Ref     string `json:"$ref,omitempty"`
	Type    string `json:"type,omitempty"`
	Primary bool   `json:"primary,omitempty"`
}

// ScimPrincipal is a User, ServicePrincipal or Group; each sets the
// fields of its kind. ID is the SCIM id, digits, that paths name.
type ScimPrincipal struct {
	Schemas []string `json:"schemas,omitempty"`
	ID      string   `json:"id,omitempty"`
	// UserName is a user's name (its email).
	UserName string `json:"userName,omitempty"`
	// ApplicationID is a service principal's name, a UUID unless given.
	ApplicationID string `json:"applicationId,omitempty"`
	// DisplayName is a group's name; a user's or service principal's
	// human-readable name.
	DisplayName string      `json:"displayName,omitempty"`
	Active      *bool       `json:"active,omitempty"`
	Emails      []ScimValue `json:"emails,omitempty"`
	Groups      []ScimValue `json:"groups,omitempty"`
	Members     []ScimValue `json:"members,omitempty"`
}

// ScimListResponse is a SCIM list's page.
type ScimListResponse struct {
	Schemas      []string        `json:"schemas"`
	TotalResults int             `json:"totalResults"`
	StartIndex   int             `json:"startIndex"`
	ItemsPerPage int             `json:"itemsPerPage"`
	Resources    []ScimPrincipal `json:"Resources"`
}

// ScimPatchOp is one operation of a group PATCH: op add, remove or
// replace on path "members".
type ScimPatchOp struct {
	Op    string      `json:"op"`
	Path  string      `json:"path,omitempty"`
	Value []ScimValue `json:"value,omitempty"`
}

// ScimPatchRequest is the body of PATCH .../Groups/{id}.
type ScimPatchRequest struct {
	Schemas    []string      `json:"schemas"`
	Operations []ScimPatchOp `json:"Operations"`
}

// SCIM resource paths, for Principals.
const (
	ScimUsers             = "Users"
	ScimServicePrincipals = "ServicePrincipals"
	ScimGroups            = "Groups"
)

// Principals returns a handle on one SCIM resource: ScimUsers,
// ScimServicePrincipals or ScimGroups.
func (c *Client) Principals(resource string) *Principals {
	return &Principals{client: c, resource: resource}
}

// Principals is one SCIM resource's API.
type Principals struct {
	client   *Client
	resource string
}

// ScimQuote quotes v as a SCIM filter's string value.
func ScimQuote(v string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(v) + `"`
}

// List reads every principal that filter passes (a SCIM filter such as
// `userName eq "ada@corp.com"`; empty: all), page by page.
func (p *Principals) List(filter string, q *QueryOptions) ([]ScimPrincipal, error) {
	var out []ScimPrincipal
	for {
		v := url.Values{}
		if filter != "" {
			v.Set("filter", filter)
		}
		v.Set("startIndex", strconv.Itoa(len(out)+1))
		var page ScimListResponse
		// Not q: its wait options make a blocking query, which SCIM
		// lists are not; only its context carries over.
		if _, err := p.client.query(scimBase+p.resource+"?"+v.Encode(), (&QueryOptions{}).WithContext(q.context()), &page); err != nil {
			return nil, err
		}
		out = append(out, page.Resources...)
		if len(page.Resources) == 0 || len(out) >= page.TotalResults {
			return out, nil
		}
	}
}

// Get reads the principal with SCIM id id.
func (p *Principals) Get(id string, q *QueryOptions) (*ScimPrincipal, error) {
	var out ScimPrincipal
	if _, err := p.client.query(scimBase+p.resource+"/"+url.PathEscape(id), q, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Create adds a principal (admins only).
func (p *Principals) Create(in *ScimPrincipal, w *WriteOptions) (*ScimPrincipal, error) {
	var out ScimPrincipal
	if _, err := p.client.write("POST", scimBase+p.resource, in, w, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Delete deletes the principal with SCIM id id, with its tokens,
// memberships and grants (admins only).
func (p *Principals) Delete(id string, w *WriteOptions) error {
	_, err := p.client.write("DELETE", scimBase+p.resource+"/"+url.PathEscape(id), nil, w, nil)
	return err
}

// PatchMembers adds (op "add") or removes (op "remove") the principals
// with SCIM ids ids to or from group id (admins only).
func (p *Principals) PatchMembers(id, op string, ids []string, w *WriteOptions) (*ScimPrincipal, error) {
	in := ScimPatchRequest{Schemas: []string{"urn:ietf:params:scim:api:messages:2.0:PatchOp"},
		Operations: []ScimPatchOp{{Op: op, Path: "members"}}}
	for _, m := range ids {
		in.Operations[0].Value = append(in.Operations[0].Value, ScimValue{Value: m})
	}
	var out ScimPrincipal
	if _, err := p.client.write("PATCH", scimBase+p.resource+"/"+url.PathEscape(id), &in, w, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
