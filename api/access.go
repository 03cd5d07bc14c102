package api

// AccessSnapshot is what an activator needs to authenticate invocations
// and check CAN_QUERY without a call per request: every live token (by
// its SHA-256, never its value) with its principal, and every endpoint's
// grants. The scheduler serves it to admins as a blocking query
// (GET /api/2.0/gantry/access?index=N&wait=30s, X-Gantry-Index), whose
// index moves with every change of principals, tokens or grants, so a
// revoked token leaves the activators' copy within one round trip.
type AccessSnapshot struct {
	Index     uint64           `json:"index"`
	Tokens    []AccessToken    `json:"tokens"`
	Endpoints []EndpointAccess `json:"endpoints"`
}

// AccessToken is one live token.
type AccessToken struct {
	// Hash is the hex SHA-256 of the token's value.
	Hash string `json:"hash"`
	// Principal is a user's userName or a service principal's
	// applicationId: the requester of what the token does.
	Principal string `json:"principal"`
	// Kind is "user" or "service_principal".
	Kind   string   `json:"kind"`
	Groups []string `json:"groups,omitempty"`
	Admin  bool     `json:"admin,omitempty"`
	// Component: the principal is one of Gantry's components (the
	// gantry-components group), which may report load to the autoscaler.
	Component bool `json:"component,omitempty"`
	// ExpiryTime is milliseconds since the epoch; -1 never.
	ExpiryTime int64 `json:"expiry_time"`
}

// EndpointAccess is one endpoint's owner and grants.
type EndpointAccess struct {
	Name   string        `json:"name"`
	Owner  *AccessGrant  `json:"owner,omitempty"`
	Grants []AccessGrant `json:"grants,omitempty"`
}

// AccessGrant is one grant: a principal or group (Kind "user",
// "service_principal" or "group") and its level (CAN_VIEW, CAN_QUERY,
// CAN_MANAGE; empty for an owner, who manages).
type AccessGrant struct {
	Kind  string `json:"kind"`
	Name  string `json:"name"`
	Level string `json:"level,omitempty"`
}

// Access returns a handle on the access snapshot.
func (c *Client) Access() *Access { return &Access{client: c} }

// Access is the access snapshot that activators follow (admins only).
type Access struct{ client *Client }

// Get reads the snapshot; set q.WaitIndex to the last LastIndex to block
// until it changes.
func (a *Access) Get(q *QueryOptions) (*AccessSnapshot, *QueryMeta, error) {
	var out AccessSnapshot
	meta, err := a.client.query("/api/2.0/gantry/access", q, &out)
	if err != nil {
		return nil, nil, err
	}
	return &out, meta, nil
}
