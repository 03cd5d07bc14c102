package api

// Secrets API shapes, as Databricks' /api/2.0/secrets. A secret's value is
// only ever sent (put); no answer carries one.

// CreateScopeRequest is POST /api/2.0/secrets/scopes/create.
type CreateScopeRequest struct {
	Scope string `json:"scope"`
	// InitialManagePrincipal, when set, must be "users": every user then
	// manages the scope (Databricks' only choice outside its premium
	// tier). Left out, only the creator (and admins) do.
	InitialManagePrincipal string `json:"initial_manage_principal,omitempty"`
	// ScopeBackendType is DATABRICKS or empty; Gantry has no other.
	ScopeBackendType string `json:"scope_backend_type,omitempty"`
}

// SecretScope is one scope in a list.
type SecretScope struct {
	Name        string `json:"name"`
	BackendType string `json:"backend_type"`
}

// ListScopesResponse is GET /api/2.0/secrets/scopes/list.
type ListScopesResponse struct {
	Scopes []SecretScope `json:"scopes"`
}

// DeleteScopeRequest is POST /api/2.0/secrets/scopes/delete.
type DeleteScopeRequest struct {
	Scope string `json:"scope"`
}

// PutSecretRequest is POST /api/2.0/secrets/put: exactly one of
// StringValue and BytesValue (base64).
type PutSecretRequest struct {
	Scope       string `json:"scope"`
	Key         string `json:"key"`
	StringValue string `json:"string_value,omitempty"`
	BytesValue  []byte `json:"bytes_value,omitempty"`
}

// SecretMetadata is one secret in a list: never its value.
type SecretMetadata struct {
	Key string `json:"key"`
	// LastUpdatedTimestamp is milliseconds since the epoch.
	LastUpdatedTimestamp int64 `json:"last_updated_timestamp"`
}

// ListSecretsResponse is GET /api/2.0/secrets/list?scope=.
type ListSecretsResponse struct {
	Secrets []SecretMetadata `json:"secrets"`
}

// DeleteSecretRequest is POST /api/2.0/secrets/delete.
type DeleteSecretRequest struct {
	Scope string `json:"scope"`
	Key   string `json:"key"`
}

// Secret scope permissions: READ < WRITE < MANAGE.
const (
	SecretRead   = "READ"
	SecretWrite  = "WRITE"
	SecretManage = "MANAGE"
)

// AclItem is one entry of a scope's ACL. Principal is a user's userName,
// a service principal's applicationId, a group's displayName, or "users"
// (every principal).
type AclItem struct {
	Principal  string `json:"principal"`
	Permission string `json:"permission"`
}

// PutAclRequest is POST /api/2.0/secrets/acls/put.
type PutAclRequest struct {
	Scope      string `json:"scope"`
	Principal  string `json:"principal"`
	Permission string `json:"permission"`
}

// DeleteAclRequest is POST /api/2.0/secrets/acls/delete.
type DeleteAclRequest struct {
	Scope     string `json:"scope"`
	Principal string `json:"principal"`
}

// ListAclsResponse is GET /api/2.0/secrets/acls/list?scope=.
type ListAclsResponse struct {
	Items []AclItem `json:"items"`
}
