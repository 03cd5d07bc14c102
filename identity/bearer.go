package identity

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
)

// tokenPrefix starts every token value, as Databricks' personal access
// tokens start with "dapi", so that secret scanners and people recognise
// one in a paste.
const tokenPrefix = "dapi"

// maxTokenLen bounds what ParseBearer accepts: Gantry's tokens are 36
// characters, and a long header is someone else's token or garbage.
const maxTokenLen = 512

// Errors of ParseBearer; each says what to send instead.
var (
	ErrNoToken     = errors.New("no Authorization header; send Authorization: Bearer <token>")
	ErrNotBearer   = errors.New("the Authorization header is not a bearer token; send Authorization: Bearer <token>")
	ErrBadToken    = errors.New("the bearer token is malformed")
	ErrUnknown     = errors.New("the token is not valid: it is unknown or was revoked; create a new one")
	errTokenLength = errors.New("the bearer token is too long")
)

// ParseBearer reads the token of an Authorization header value
// ("Bearer <token>", the scheme in any case, RFC 6750 §2.1). It checks
// the token's characters (RFC 6750's b64token) but not that Gantry made
// it: that is a lookup.
func ParseBearer(header string) (string, error) {
	if header == "" {
		return "", ErrNoToken
	}
	scheme, tok, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", ErrNotBearer
	}
	tok = strings.TrimLeft(tok, " ")
	if tok == "" {
		return "", ErrBadToken
	}
	if len(tok) > maxTokenLen {
		return "", errTokenLength
	}
	// b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
	end := len(tok)
	for end > 0 && tok[end-1] == '=' {
		end--
	}
	if end == 0 {
		return "", ErrBadToken
	}
	for i := 0; i < end; i++ {
		c := tok[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '-', c == '.', c == '_', c == '~', c == '+', c == '/':
		default:
			return "", ErrBadToken
		}
	}
	return tok, nil
}

// newTokenValue makes a token: the prefix and 128 random bits in hex.
// Only its hash is stored.
func newTokenValue() string {
	b := make([]byte, 16)
	rand.Read(b) // never fails (crypto/rand's contract since Go 1.24)
	return tokenPrefix + hex.EncodeToString(b)
}

// HashToken is the key a token is stored and looked up under. A plain
// SHA-256 is enough: the value has 128 random bits, so there is no
// dictionary to try, and a lookup must cost nanoseconds, not a KDF's
// milliseconds, on every invocation.
func HashToken(value string) string {
	sum := sha256.Sum256([]byte(value))
	return hex.EncodeToString(sum[:])
}
