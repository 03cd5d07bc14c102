package scheduler

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strings"
)

// Deployment credentials: what a deployment's workers carry to prove
// what they are, derived from Config.DeploymentKey with HMAC-SHA256 so
// that nothing is stored, a restarted scheduler agrees with the jobs it
// submitted before, and each credential opens one thing only. With no
// key there are none (authentication off).
//
//   - An artifact token lets a remote worker (a Nomad artifact block)
//     fetch its deployment's model version without a user's token:
//     "<deployment>.<mac>", the MAC over the deployment and the model
//     name and version, sent as X-Gantry-Artifact-Token. It opens that
//     one artifact and nothing else; jobs carry it, never an admin token.
//   - A worker secret lets a deployment's workers tell the activators'
//     invocations from anyone else's: the scheduler puts it in the
//     workers' environment (GANTRY_WORKER_SECRET) and in the route table
//     entry the activators read (admins only), and activators send it as
//     X-Gantry-Worker-Secret; a worker reached directly answers 401.
type credentials struct {
	key []byte
}

// ArtifactTokenHeader carries an artifact token on the artifact route.
const ArtifactTokenHeader = "X-Gantry-Artifact-Token"

// mac is the hex HMAC of parts, each ended by a NUL (no part holds one),
// cut to 128 bits.
func (c credentials) mac(parts ...string) string {
	m := hmac.New(sha256.New, c.key)
	for _, p := range parts {
		m.Write([]byte(p))
		m.Write([]byte{0})
	}
	return hex.EncodeToString(m.Sum(nil)[:16])
}

// artifactToken is deployment's token for model name at version; "" with
// no key.
func (c credentials) artifactToken(deployment, name, version string) string {
	if c.key == nil {
		return ""
	}
	return deployment + "." + c.mac("artifact", deployment, name, version)
}

// workerSecret is deployment's worker secret; "" with no key.
func (c credentials) workerSecret(deployment string) string {
	if c.key == nil {
		return ""
	}
	return c.mac("worker", deployment)
}

// artifactAllowed reports whether r carries an artifact token for the
// model version its path names.
func (c credentials) artifactAllowed(r *http.Request) bool {
	tok := r.Header.Get(ArtifactTokenHeader)
	i := strings.LastIndexByte(tok, '.')
	if c.key == nil || i <= 0 {
		return false
	}
	want := c.mac("artifact", tok[:i], r.PathValue("name"), r.PathValue("version"))
	return hmac.Equal([]byte(tok[i+1:]), []byte(want))
}
