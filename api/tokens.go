package api

// Tokens in Databricks' shapes (/api/2.0/token/..., /api/2.0/token-management/...).

// TokenInfo is a token as lists show it: never its value.
type TokenInfo struct {
	TokenID string `json:"token_id"`
	// CreationTime and ExpiryTime are milliseconds since the epoch;
	// ExpiryTime -1 never expires.
	CreationTime int64  `json:"creation_time"`
	ExpiryTime   int64  `json:"expiry_time"`
	Comment      string `json:"comment,omitempty"`
}

// OnBehalfOfRequest is POST /api/2.0/token-management/on-behalf-of/tokens
// (admins): a token for a service principal (ApplicationID) or, as a
// Gantry extension, a user (UserName). LifetimeSeconds 0 is the default
// lifetime.
type OnBehalfOfRequest struct {
	ApplicationID   string `json:"application_id,omitempty"`
	UserName        string `json:"user_name,omitempty"`
	LifetimeSeconds int64  `json:"lifetime_seconds,omitempty"`
	Comment         string `json:"comment,omitempty"`
}

// CreateTokenResponse carries a new token's value, shown this once.
type CreateTokenResponse struct {
	TokenValue string    `json:"token_value"`
	TokenInfo  TokenInfo `json:"token_info"`
}

// Tokens returns a handle on the token APIs.
func (c *Client) Tokens() *Tokens { return &Tokens{client: c} }

// Tokens is the token APIs.
type Tokens struct{ client *Client }

// OnBehalfOf makes a token for another principal (admins only).
func (t *Tokens) OnBehalfOf(in *OnBehalfOfRequest, w *WriteOptions) (*CreateTokenResponse, error) {
	var out CreateTokenResponse
	if _, err := t.client.write("POST", "/api/2.0/token-management/on-behalf-of/tokens", in, w, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
