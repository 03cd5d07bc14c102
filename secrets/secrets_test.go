package secrets

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gantry/gantry/api"
	bolt "go.etcd.io/bbolt"
)

func openTest(t *testing.T) (*Store, string, []byte) {
	t.Helper()
	dir := t.TempDir()
	key, created, err := LoadKey(filepath.Join(dir, "secrets.key"), true)
	if err != nil || !created {
		t.Fatalf("LoadKey: %v created=%v", err, created)
	}
	path := filepath.Join(dir, "secrets.db")
	s, err := Open(path, key, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path, key
}

func code(err error) string {
	var ae *api.Error
	if errors.As(err, &ae) {
		return ae.Code
	}
	if err != nil {
		return "other: " + err.Error()
	}
	return ""
}

var (
	alice = Principal{Name: "alice@corp.com"}
	bob   = Principal{Name: "bob@corp.com", Groups: []string{"ds"}}
	admin = Principal{Name: "ops", Admin: true}
)

// TestRoundTripAndAtRest: a value put comes back from Resolve, and the
// store's file holds neither it nor any long part of it, before and after
// a reopen (which the check value must pass).
func TestRoundTripAndAtRest(t *testing.T) {
	s, path, key := openTest(t)
	const value = "sk-live-4f9a1c7e2b8d6f0a3e5c9b1d7f2a4c6e"
	if err := s.CreateScope(alice, "prod", ""); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(alice, "prod", "openai", []byte(value)); err != nil {
		t.Fatal(err)
	}
	got, err := s.Resolve(alice, "prod", "openai")
	if err != nil || got != value {
		t.Fatalf("Resolve = %q, %v", got, err)
	}
	ls, err := s.List(alice, "prod")
	if err != nil || len(ls) != 1 || ls[0].Key != "openai" || ls[0].LastUpdatedTimestamp == 0 {
		t.Fatalf("List = %+v, %v", ls, err)
	}
	s.Close()

	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, needle := range []string{value, value[:12], value[len(value)-12:]} {
		if bytes.Contains(raw, []byte(needle)) {
			t.Fatalf("the store file holds %q in the clear", needle)
		}
	}
	if !bytes.Contains(raw, []byte("openai")) {
		t.Fatal("the store file does not hold the key name: is this the file written?")
	}

	s2, err := Open(path, key, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s2.Resolve(alice, "prod", "openai"); err != nil || got != value {
		t.Fatalf("after reopen: %q, %v", got, err)
	}
	s2.Close()

	other := bytes.Repeat([]byte{7}, keySize)
	if _, err := Open(path, other, Options{}); err == nil || !strings.Contains(err.Error(), "does not open this store") {
		t.Fatalf("open with another key: %v", err)
	}
}

// TestSealedValueBoundToItsKey: a sealed value copied under another key
// in the file does not open there.
func TestSealedValueBoundToItsKey(t *testing.T) {
	s, _, _ := openTest(t)
	s.CreateScope(alice, "a", "")
	s.Put(alice, "a", "one", []byte("first"))
	s.Put(alice, "a", "two", []byte("second"))
	err := s.db.Update(func(tx *bolt.Tx) error {
		vb := tx.Bucket(valuesBucket).Bucket([]byte("a"))
		return vb.Put([]byte("two"), bytes.Clone(vb.Get([]byte("one"))))
	})
	if err != nil {
		t.Fatal(err)
	}
	if v, err := s.Resolve(alice, "a", "two"); err == nil {
		t.Fatalf("a value moved to another key opened: %q", v)
	} else if strings.Contains(err.Error(), "first") {
		t.Fatalf("the error quotes the value: %v", err)
	}
}

func TestACLs(t *testing.T) {
	s, _, _ := openTest(t)
	if err := s.CreateScope(alice, "team", ""); err != nil {
		t.Fatal(err)
	}
	// bob holds nothing: the scope does not exist for him.
	_, err1 := s.List(bob, "team")
	_, err2 := s.List(bob, "nope")
	if code(err1) != api.ErrResourceDoesNotExist || strings.ReplaceAll(err2.Error(), "nope", "team") != err1.Error() {
		t.Fatalf("hidden scope: %v; missing: %v", err1, err2)
	}
	if sc, _ := s.Scopes(bob); len(sc) != 0 {
		t.Fatalf("bob lists %+v", sc)
	}
	if err := s.PutACL(bob, "team", "bob@corp.com", Manage); code(err) != api.ErrResourceDoesNotExist {
		t.Fatalf("bob grants himself: %v", err)
	}

	// READ through his group: list and resolve, not write.
	if err := s.PutACL(alice, "team", "ds", Read); err != nil {
		t.Fatal(err)
	}
	s.Put(alice, "team", "k", []byte("v"))
	if _, err := s.List(bob, "team"); err != nil {
		t.Fatal(err)
	}
	if v, err := s.Resolve(bob, "team", "k"); err != nil || v != "v" {
		t.Fatalf("bob resolves: %q %v", v, err)
	}
	err := s.Put(bob, "team", "k", []byte("x"))
	if code(err) != api.ErrPermissionDenied || !strings.Contains(err.Error(), "lacks WRITE") {
		t.Fatalf("bob writes with READ: %v", err)
	}
	if err := s.Delete(bob, "team", "k"); code(err) != api.ErrPermissionDenied {
		t.Fatalf("bob deletes with READ: %v", err)
	}
	if _, err := s.ACLs(bob, "team"); code(err) != api.ErrPermissionDenied {
		t.Fatalf("bob lists ACLs with READ: %v", err)
	}

	// WRITE by name beats READ by group.
	s.PutACL(alice, "team", "bob@corp.com", Write)
	if err := s.Put(bob, "team", "k2", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteScope(bob, "team"); code(err) != api.ErrPermissionDenied || !strings.Contains(err.Error(), "lacks MANAGE") {
		t.Fatalf("bob deletes the scope with WRITE: %v", err)
	}
	items, err := s.ACLs(alice, "team")
	if err != nil || len(items) != 3 || items[0] != (api.AclItem{Principal: "alice@corp.com", Permission: "MANAGE"}) {
		t.Fatalf("ACLs = %+v %v", items, err)
	}
	if it, err := s.ACL(alice, "team", "ds"); err != nil || it.Permission != "READ" {
		t.Fatalf("ACL ds = %+v %v", it, err)
	}
	if err := s.PutACL(alice, "team", "ds", "OWNER"); code(err) != api.ErrInvalidParameterValue {
		t.Fatalf("a bad permission: %v", err)
	}

	// Admins manage every scope; a revoked grant is gone at once.
	if _, err := s.ACLs(admin, "team"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteACL(alice, "team", "bob@corp.com"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteACL(alice, "team", "ds"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Resolve(bob, "team", "k"); code(err) != api.ErrResourceDoesNotExist {
		t.Fatalf("bob after revocation: %v", err)
	}

	// "users" grants everyone.
	s.PutACL(alice, "team", AllUsers, Read)
	if err := s.CanRead(Principal{Name: "anyone"}, "team"); err != nil {
		t.Fatal(err)
	}

	if err := s.CreateScope(bob, "team", ""); code(err) != api.ErrResourceAlreadyExists {
		t.Fatalf("a taken name: %v", err)
	}
	if err := s.DeleteScope(alice, "team"); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateScope(bob, "team", ""); err != nil {
		t.Fatal(err)
	}
	if ls, err := s.List(bob, "team"); err != nil || len(ls) != 0 {
		t.Fatalf("a re-created scope inherits secrets: %+v %v", ls, err)
	}
	if _, err := s.ACL(bob, "team", "alice@corp.com"); code(err) != api.ErrResourceDoesNotExist {
		t.Fatalf("a re-created scope inherits grants: %v", err)
	}
}

func TestPrincipalsMustExist(t *testing.T) {
	dir := t.TempDir()
	key, _, _ := LoadKey(filepath.Join(dir, "k"), true)
	s, err := Open(filepath.Join(dir, "s.db"), key, Options{Exists: func(p string) bool { return p == "bob@corp.com" }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.CreateScope(alice, "x", "")
	if err := s.PutACL(alice, "x", "mallory", Read); code(err) != api.ErrResourceDoesNotExist {
		t.Fatalf("grant to nobody: %v", err)
	}
	for _, p := range []string{"bob@corp.com", AllUsers} {
		if err := s.PutACL(alice, "x", p, Read); err != nil {
			t.Fatalf("grant to %s: %v", p, err)
		}
	}
}

func TestNamesAndLimits(t *testing.T) {
	s, _, _ := openTest(t)
	for _, bad := range []string{"", "a/b", "a b", strings.Repeat("x", 129), "{{x}}"} {
		if err := s.CreateScope(alice, bad, ""); code(err) != api.ErrInvalidParameterValue {
			t.Errorf("scope %q: %v", bad, err)
		}
	}
	if err := s.CreateScope(alice, "a@b.c-d_e", ""); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(alice, "a@b.c-d_e", "bad/key", nil); code(err) != api.ErrInvalidParameterValue {
		t.Errorf("key with a slash: %v", err)
	}
	if err := s.Put(alice, "a@b.c-d_e", "big", make([]byte, MaxValueSize+1)); code(err) != api.ErrInvalidParameterValue {
		t.Errorf("a value over the limit: %v", err)
	}
	if err := s.CreateScope(alice, "y", "bob"); code(err) != api.ErrInvalidParameterValue {
		t.Errorf("initial_manage_principal bob: %v", err)
	}
}

func TestKeyFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "secrets.key")
	if _, _, err := LoadKey(path, false); err == nil {
		t.Fatal("a missing key without create loaded")
	}
	k1, created, err := LoadKey(path, true)
	if err != nil || !created {
		t.Fatal(err)
	}
	info, _ := os.Stat(path)
	if info.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %o, want 600", info.Mode().Perm())
	}
	k2, created, err := LoadKey(path, true)
	if err != nil || created || !bytes.Equal(k1, k2) {
		t.Fatalf("second load: created=%v err=%v same=%v", created, err, bytes.Equal(k1, k2))
	}
	os.Chmod(path, 0o644)
	if _, _, err := LoadKey(path, false); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("a readable key: %v", err)
	}
	os.Chmod(path, 0o600)
	os.WriteFile(path, []byte("not hex at all\n"), 0o600)
	if _, _, err := LoadKey(path, false); err == nil || strings.Contains(err.Error(), "not hex") {
		t.Fatalf("a bad key: %v", err)
	}
}

func TestParseRef(t *testing.T) {
	for in, want := range map[string]Ref{
		"{{secrets/prod/openai}}":       {"prod", "openai"},
		"{{ secrets/my_scope/my.key }}": {"my_scope", "my.key"},
		" {{secrets/a@b/k-1}} ":         {"a@b", "k-1"},
	} {
		r, ok, m := ParseRef(in)
		if !ok || !m || r != want {
			t.Errorf("ParseRef(%q) = %+v %v %v", in, r, ok, m)
		}
	}
	for in, mentions := range map[string]bool{
		"plain":                        false,
		"{{secrets/prod}}":             true,
		"Bearer {{secrets/prod/key}}":  true,
		"{{secrets/prod/key/extra}}":   true,
		"{{secret/prod/key}}":          false,
		"{{secrets/pr od/key}}":        true,
		"{{secrets/prod/key}}{{x}}":    true,
		"https://example.com/{{path}}": false,
	} {
		_, ok, m := ParseRef(in)
		if ok || m != mentions {
			t.Errorf("ParseRef(%q): ok=%v mentions=%v, want false %v", in, ok, m, mentions)
		}
	}
}
