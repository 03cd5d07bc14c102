package identity

import (
	"net/http"
	"strconv"
	"time"

	"github.com/gantry/gantry/api"
)

// Token APIs in Databricks' shapes: /api/2.0/token/* for a caller's own
// tokens, /api/2.0/token-management/* for admins.

type tokenInfo struct {
	TokenID      string `json:"token_id"`
	CreationTime int64  `json:"creation_time"`
	ExpiryTime   int64  `json:"expiry_time"`
	Comment      string `json:"comment,omitempty"`
	// Admin views (token-management) add who owns and made the token;
	// Databricks' ids there are numbers, as Gantry's are.
	OwnerID           *int64 `json:"owner_id,omitempty"`
	CreatedByID       *int64 `json:"created_by_id,omitempty"`
	CreatedByUsername string `json:"created_by_username,omitempty"`
}

func info(t *Token) tokenInfo {
	return tokenInfo{TokenID: t.ID, CreationTime: t.Created, ExpiryTime: t.Expiry, Comment: t.Comment}
}

func (h *handler) adminInfo(t *Token) tokenInfo {
	ti := info(t)
	if n, err := strconv.ParseInt(t.Owner, 10, 64); err == nil {
		ti.OwnerID = &n
	}
	if n, err := strconv.ParseInt(t.CreatedBy, 10, 64); err == nil {
		ti.CreatedByID = &n
	}
	if p, err := h.s.principalAny(t.CreatedBy); err == nil {
		ti.CreatedByUsername = p.Name
	}
	return ti
}

type createTokenResponse struct {
	TokenValue string    `json:"token_value"`
	TokenInfo  tokenInfo `json:"token_info"`
}

func lifetime(secs *int64) (time.Duration, error) {
	if secs == nil {
		return 0, nil
	}
	// Databricks' -1 and 0 both mean "the default"; Gantry's default
	// expires, so that a forgotten token does not live for ever.
	if *secs == -1 || *secs == 0 {
		return 0, nil
	}
	if *secs < 0 || *secs > int64(100*365*24*time.Hour/time.Second) {
		return 0, api.Errorf(api.ErrInvalidParameterValue, "lifetime_seconds: %d is out of range; send a positive number of seconds, or leave it out for %d days", *secs, int(DefaultTokenLifetime/(24*time.Hour)))
	}
	return time.Duration(*secs) * time.Second, nil
}

func (h *handler) tokenCreate(w http.ResponseWriter, r *http.Request, c *Caller) {
	var in struct {
		LifetimeSeconds *int64 `json:"lifetime_seconds"`
		Comment         string `json:"comment"`
	}
	if err := decode(w, r, &in); err != nil {
		writeError(w, err)
		return
	}
	life, err := lifetime(in.LifetimeSeconds)
	if err != nil {
		writeError(w, err)
		return
	}
	value, t, err := h.s.CreateToken(c.ID, c.ID, life, in.Comment)
	if err != nil {
		writeError(w, err)
		return
	}
	// The only answer that ever carries a token's value.
	writeJSON(w, http.StatusOK, createTokenResponse{TokenValue: value, TokenInfo: info(t)})
}

func (h *handler) tokenList(w http.ResponseWriter, r *http.Request, c *Caller) {
	out := struct {
		TokenInfos []tokenInfo `json:"token_infos"`
	}{TokenInfos: []tokenInfo{}}
	for _, t := range h.s.Tokens(c.ID) {
		out.TokenInfos = append(out.TokenInfos, info(t))
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *handler) tokenDelete(w http.ResponseWriter, r *http.Request, c *Caller) {
	var in struct {
		TokenID string `json:"token_id"`
	}
	if err := decode(w, r, &in); err != nil {
		writeError(w, err)
		return
	}
	if in.TokenID == "" {
		writeError(w, api.Errorf(api.ErrInvalidParameterValue, "token_id: required"))
		return
	}
	// One's own tokens only, admins included: theirs are in
	// token-management.
	if err := h.s.DeleteToken(in.TokenID, c.ID); err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, struct{}{})
}

func (h *handler) tmList(w http.ResponseWriter, r *http.Request, _ *Caller) {
	if err := onlyParams(r, "created_by_username"); err != nil {
		writeError(w, err)
		return
	}
	by := r.URL.Query().Get("created_by_username")
	out := struct {
		TokenInfos []tokenInfo `json:"token_infos"`
	}{TokenInfos: []tokenInfo{}}
	for _, t := range h.s.Tokens("") {
		ti := h.adminInfo(t)
		if by == "" || ti.CreatedByUsername == by {
			out.TokenInfos = append(out.TokenInfos, ti)
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *handler) tmGet(w http.ResponseWriter, r *http.Request, _ *Caller) {
	t, err := h.s.TokenByID(r.PathValue("token_id"), "")
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]tokenInfo{"token_info": h.adminInfo(t)})
}

func (h *handler) tmDelete(w http.ResponseWriter, r *http.Request, _ *Caller) {
	if err := h.s.DeleteToken(r.PathValue("token_id"), ""); err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, struct{}{})
}

// tmOnBehalfOf makes a token for a service principal, named by its
// applicationId, as an admin.
func (h *handler) tmOnBehalfOf(w http.ResponseWriter, r *http.Request, c *Caller) {
	var in struct {
		ApplicationID string `json:"application_id"`
		// UserName (a Gantry extension) names a user instead: Gantry has
		// no single sign-on through which users would get their first
		// token, so an admin issues it, and the user may then make more
		// with /api/2.0/token/create.
		UserName        string `json:"user_name"`
		LifetimeSeconds *int64 `json:"lifetime_seconds"`
		Comment         string `json:"comment"`
	}
	if err := decode(w, r, &in); err != nil {
		writeError(w, err)
		return
	}
	var ref Ref
	switch {
	case in.ApplicationID != "" && in.UserName != "":
		writeError(w, api.Errorf(api.ErrInvalidParameterValue, "name one of application_id (a service principal) and user_name (a user), not both"))
		return
	case in.UserName != "":
		ref = Ref{User, in.UserName}
	case in.ApplicationID != "":
		ref = Ref{ServicePrincipal, in.ApplicationID}
	default:
		writeError(w, api.Errorf(api.ErrInvalidParameterValue, "application_id: required; the service principal's applicationId (or user_name, a user's userName)"))
		return
	}
	sp, ok := h.s.Lookup(ref)
	if !ok {
		if ref.Kind == User {
			writeError(w, api.Errorf(api.ErrResourceDoesNotExist, "user_name: user %q does not exist", in.UserName))
		} else {
			writeError(w, api.Errorf(api.ErrResourceDoesNotExist, "application_id: service principal %q does not exist", in.ApplicationID))
		}
		return
	}
	life, err := lifetime(in.LifetimeSeconds)
	if err != nil {
		writeError(w, err)
		return
	}
	value, t, err := h.s.CreateToken(sp.ID, c.ID, life, in.Comment)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, createTokenResponse{TokenValue: value, TokenInfo: h.adminInfo(t)})
}
