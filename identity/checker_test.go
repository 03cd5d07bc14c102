package identity

import (
	"testing"
	"time"

	"github.com/gantry/gantry/api"
)

// TestInvokeAllocatesNothing: the check every invocation pays is a hash
// and map lookups on the stack; an allocation here is one per request.
func TestInvokeAllocatesNothing(t *testing.T) {
	const tok = "dapi0123456789abcdef0123456789abcdef"
	chk := NewChecker(&api.AccessSnapshot{Index: 1,
		Tokens:    []api.AccessToken{{Hash: HashToken(tok), Principal: "a@corp.com", Kind: "user", ExpiryTime: -1}},
		Endpoints: []api.EndpointAccess{{Name: "ep", Grants: []api.AccessGrant{{Kind: "user", Name: "a@corp.com", Level: "CAN_QUERY"}}}}})
	now := time.Now()
	hdr := "Bearer " + tok
	if c, err := chk.Invoke(hdr, "ep", now, nil); err != nil || c.Name() != "a@corp.com" {
		t.Fatalf("Invoke = %v, %v", c, err)
	}
	if n := testing.AllocsPerRun(100, func() { chk.Invoke(hdr, "ep", now, nil) }); n != 0 {
		t.Errorf("Invoke allocates %.0f times per call, want 0", n)
	}
}
