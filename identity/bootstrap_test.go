package identity

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestBootstrap(t *testing.T) {
	dir := t.TempDir()
	s := open(t, filepath.Join(dir, "identity.db"), &clock{time.Unix(1_800_000_000, 0)})
	path := filepath.Join(dir, "admin-token")
	wrote, err := s.Bootstrap(path)
	if err != nil || !wrote {
		t.Fatalf("first start: %v %v", wrote, err)
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Errorf("admin-token mode %v, want 0600", info.Mode().Perm())
	}
	tok, err := ReadTokenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.Authenticate("Bearer " + tok)
	if err != nil || !c.Admin || c.Ref.Kind != ServicePrincipal {
		t.Fatalf("the bootstrap token: %+v %v", c, err)
	}
	// A second start changes nothing.
	if wrote, err := s.Bootstrap(path); err != nil || wrote {
		t.Errorf("second start: %v %v", wrote, err)
	}
	if again, _ := ReadTokenFile(path); again != tok {
		t.Error("the second start replaced the token")
	}
	// The file deleted: a new token for the same principal.
	os.Remove(path)
	if wrote, err := s.Bootstrap(path); err != nil || !wrote {
		t.Fatalf("after deleting the file: %v %v", wrote, err)
	}
	if n := len(s.Principals(ServicePrincipal, nil)); n != 1 {
		t.Errorf("%d service principals, want the one gantry-admin", n)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 2 {
		t.Errorf("left-over files in the data dir: %v", entries)
	}
}
