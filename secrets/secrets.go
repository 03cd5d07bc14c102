// Package secrets keeps secret scopes, their secrets and their ACLs, in
// Databricks' shapes (/api/2.0/secrets): a scope is a named set of
// key → value secrets with an ACL of READ, WRITE and MANAGE grants.
//
// Values are encrypted at rest with AES-256-GCM under a key that lives
// outside the store (KeyFile): the bbolt file alone tells nothing about a
// value. Each value is sealed with its scope and key as additional data,
// so that a value copied to another key inside the file does not open.
// A check value sealed when the store is created makes opening it with
// another key an error at once, instead of at the first deployment.
//
// Who does what: Store answers every call for a Principal (who asks),
// deciding permissions itself, so that the HTTP layer and the deploy
// path (Resolve) apply one rule. Nothing here logs, and no error quotes a
// value.
package secrets

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/gantry/gantry/api"
	bolt "go.etcd.io/bbolt"
)

// Limits, as Databricks documents them for its own secret scopes.
const (
	MaxScopes          = 1000
	MaxSecretsPerScope = 1000
	MaxValueSize       = 128 << 10
	maxNameLen         = 128
)

// AllUsers is the principal that stands for every principal in an ACL.
const AllUsers = "users"

// Permission is a grant on a scope: READ < WRITE < MANAGE.
type Permission string

const (
	None   Permission = ""
	Read   Permission = api.SecretRead
	Write  Permission = api.SecretWrite
	Manage Permission = api.SecretManage
)

func (p Permission) rank() int {
	switch p {
	case Read:
		return 1
	case Write:
		return 2
	case Manage:
		return 3
	}
	return 0
}

// AtLeast reports whether p grants everything need grants.
func (p Permission) AtLeast(need Permission) bool { return p.rank() >= need.rank() }

// ParsePermission reads READ, WRITE or MANAGE.
func ParsePermission(s string) (Permission, bool) {
	p := Permission(s)
	return p, p.rank() > 0
}

// Principal is who asks: a user's userName or a service principal's
// applicationId, the display names of its groups, and whether it is an
// admin (admins manage every scope).
type Principal struct {
	Name   string
	Groups []string
	Admin  bool
}

func (p Principal) String() string { return "principal " + p.Name }

var (
	scopeRE = regexp.MustCompile(`^[A-Za-z0-9_.@-]{1,128}$`)
	keyRE   = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,128}$`)
)

var (
	metaBucket   = []byte("meta")
	scopesBucket = []byte("scopes")
	valuesBucket = []byte("values") // one nested bucket per scope
	checkKey     = []byte("check")
)

// scope is a scope as stored.
type scope struct {
	Name string `json:"name"`
	// Created is milliseconds since the epoch.
	Created int64  `json:"created"`
	Creator string `json:"creator"`
	// ACL maps a principal to its permission.
	ACL map[string]Permission `json:"acl"`
}

// level is what p holds on sc: MANAGE for admins, else the highest grant
// to p's name, its groups or AllUsers.
func (sc *scope) level(p Principal) Permission {
	if p.Admin {
		return Manage
	}
	best := None
	for who, perm := range sc.ACL {
		if who == p.Name || who == AllUsers || slices.Contains(p.Groups, who) {
			if perm.rank() > best.rank() {
				best = perm
			}
		}
	}
	return best
}

// Options tune a Store; the zero value works.
type Options struct {
	// Exists reports whether an ACL principal names a user, service
	// principal or group; nil accepts any name (authentication off).
	Exists func(principal string) bool
	// Now is the clock of timestamps; nil: time.Now.
	Now func() time.Time
}

// Store is the secret store. It is safe for concurrent use: bbolt
// serializes writers, and each call is one transaction.
type Store struct {
	db   *bolt.DB
	aead cipher.AEAD
	opts Options
}

// Open opens or creates the store at path, sealing with key (32 bytes,
// from LoadKey). A store created with another key is an error.
func Open(path string, key []byte, opts Options) (*Store, error) {
	if len(key) != keySize {
		return nil, fmt.Errorf("secrets key: %d bytes, want %d", len(key), keySize)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open secret store %s: %w", path, err)
	}
	s := &Store{db: db, aead: aead, opts: opts}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{metaBucket, scopesBucket, valuesBucket} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		meta := tx.Bucket(metaBucket)
		if c := meta.Get(checkKey); c != nil {
			if _, _, err := s.open(c, checkAAD()); err != nil {
				return fmt.Errorf("the secrets key does not open this store (was it created with another --secrets-key-file?)")
			}
			return nil
		}
		sealed, err := s.seal([]byte("gantry"), checkAAD(), 0)
		if err != nil {
			return err
		}
		return meta.Put(checkKey, sealed)
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("secret store %s: %w", path, err)
	}
	return s, nil
}

// Close closes the file.
func (s *Store) Close() error { return s.db.Close() }

// Sealed values: a version byte, the update time (8 bytes, ms), the GCM
// nonce, then the ciphertext with its tag.
const sealVersion = 1

func checkAAD() []byte { return []byte("gantry-secrets-check") }

// valueAAD binds a sealed value to its place: scope and key.
func valueAAD(scope, key string) []byte {
	return []byte("gantry-secret\x00" + scope + "\x00" + key)
}

func (s *Store) seal(plain, aad []byte, updated int64) ([]byte, error) {
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	out := make([]byte, 0, 1+8+len(nonce)+len(plain)+s.aead.Overhead())
	out = append(out, sealVersion)
	out = binary.BigEndian.AppendUint64(out, uint64(updated))
	out = append(out, nonce...)
	return s.aead.Seal(out, nonce, plain, aad), nil
}

var errSealed = errors.New("sealed value is damaged or sealed under another key")

// open returns a sealed value's plaintext and update time.
func (s *Store) open(b, aad []byte) ([]byte, int64, error) {
	n := s.aead.NonceSize()
	if len(b) < 1+8+n || b[0] != sealVersion {
		return nil, 0, errSealed
	}
	updated := int64(binary.BigEndian.Uint64(b[1:9]))
	plain, err := s.aead.Open(nil, b[9:9+n], b[9+n:], aad)
	if err != nil {
		return nil, 0, errSealed
	}
	return plain, updated, nil
}

// updatedAt reads a sealed value's update time without opening it.
func updatedAt(b []byte) int64 {
	if len(b) < 9 {
		return 0
	}
	return int64(binary.BigEndian.Uint64(b[1:9]))
}

func checkScopeName(name string) error {
	if !scopeRE.MatchString(name) {
		return api.Errorf(api.ErrInvalidParameterValue, "scope: %q must be 1-%d characters of letters, digits, '-', '_', '.' and '@'", clip(name), maxNameLen)
	}
	return nil
}

func checkKeyName(key string) error {
	if !keyRE.MatchString(key) {
		return api.Errorf(api.ErrInvalidParameterValue, "key: %q must be 1-%d characters of letters, digits, '-', '_' and '.'", clip(key), maxNameLen)
	}
	return nil
}

// clip shortens a name for an error message.
func clip(s string) string {
	if len(s) > maxNameLen+8 {
		return s[:maxNameLen] + "..."
	}
	return s
}

func getScope(tx *bolt.Tx, name string) (*scope, error) {
	b := tx.Bucket(scopesBucket).Get([]byte(name))
	if b == nil {
		return nil, nil
	}
	sc := new(scope)
	if err := json.Unmarshal(b, sc); err != nil {
		return nil, fmt.Errorf("decode scope %s: %w", name, err)
	}
	return sc, nil
}

func putScope(tx *bolt.Tx, sc *scope) error {
	b, err := json.Marshal(sc)
	if err != nil {
		return err
	}
	return tx.Bucket(scopesBucket).Put([]byte(sc.Name), b)
}

// notFound is the answer for a scope that does not exist and for one the
// caller holds nothing on: the two must not be told apart.
func notFound(name string) error {
	return api.Errorf(api.ErrResourceDoesNotExist, "secret scope %q does not exist", name)
}

// need finds scope name and checks that p holds want on it.
func need(tx *bolt.Tx, p Principal, name string, want Permission) (*scope, error) {
	if err := checkScopeName(name); err != nil {
		return nil, err
	}
	sc, err := getScope(tx, name)
	if err != nil {
		return nil, err
	}
	if sc == nil {
		return nil, notFound(name)
	}
	have := sc.level(p)
	if have == None {
		return nil, notFound(name)
	}
	if !have.AtLeast(want) {
		return nil, api.Errorf(api.ErrPermissionDenied, "%s has %s on secret scope %s and lacks %s", p, have, name, want)
	}
	return sc, nil
}

// CreateScope creates scope name; its creator p gets MANAGE, and with
// initialManage "users" so does everyone.
func (s *Store) CreateScope(p Principal, name, initialManage string) error {
	if err := checkScopeName(name); err != nil {
		return err
	}
	if initialManage != "" && initialManage != AllUsers {
		return api.Errorf(api.ErrInvalidParameterValue, "initial_manage_principal: only %q is supported; leave it out for the creator alone", AllUsers)
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		if sc, err := getScope(tx, name); err != nil {
			return err
		} else if sc != nil {
			// Scope names are one namespace: a taken name is told even to
			// those who may not see the scope, as Databricks does.
			return api.Errorf(api.ErrResourceAlreadyExists, "secret scope %q already exists", name)
		}
		if n := tx.Bucket(scopesBucket).Stats().KeyN; n >= MaxScopes {
			return api.Errorf(api.ErrInvalidParameterValue, "scope: this Gantry holds %d secret scopes, the most it allows; delete one first", n)
		}
		sc := &scope{Name: name, Created: s.opts.Now().UnixMilli(), Creator: p.Name, ACL: map[string]Permission{p.Name: Manage}}
		if initialManage == AllUsers {
			sc.ACL[AllUsers] = Manage
		}
		if _, err := tx.Bucket(valuesBucket).CreateBucketIfNotExists([]byte(name)); err != nil {
			return err
		}
		return putScope(tx, sc)
	})
}

// Scopes lists the scopes p may read, by name: a scope one holds nothing
// on does not exist for one.
func (s *Store) Scopes(p Principal) ([]api.SecretScope, error) {
	out := []api.SecretScope{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(scopesBucket).ForEach(func(k, v []byte) error {
			sc := new(scope)
			if err := json.Unmarshal(v, sc); err != nil {
				return fmt.Errorf("decode scope %s: %w", k, err)
			}
			if sc.level(p) != None {
				out = append(out, api.SecretScope{Name: sc.Name, BackendType: "DATABRICKS"})
			}
			return nil
		})
	})
	return out, err // ForEach goes in key order: sorted by name
}

// DeleteScope deletes scope name with its secrets; it takes MANAGE.
func (s *Store) DeleteScope(p Principal, name string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		if _, err := need(tx, p, name, Manage); err != nil {
			return err
		}
		if err := tx.Bucket(valuesBucket).DeleteBucket([]byte(name)); err != nil && !errors.Is(err, bolt.ErrBucketNotFound) {
			return err
		}
		return tx.Bucket(scopesBucket).Delete([]byte(name))
	})
}

// Put sets secret key of scope name to value; it takes WRITE.
func (s *Store) Put(p Principal, name, key string, value []byte) error {
	if err := checkKeyName(key); err != nil {
		return err
	}
	if len(value) > MaxValueSize {
		return api.Errorf(api.ErrInvalidParameterValue, "string_value: %d bytes, at most %d are allowed", len(value), MaxValueSize)
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		if _, err := need(tx, p, name, Write); err != nil {
			return err
		}
		vb, err := tx.Bucket(valuesBucket).CreateBucketIfNotExists([]byte(name))
		if err != nil {
			return err
		}
		if vb.Get([]byte(key)) == nil && vb.Stats().KeyN >= MaxSecretsPerScope {
			return api.Errorf(api.ErrInvalidParameterValue, "key: secret scope %s holds %d secrets, the most it allows; delete one first", name, MaxSecretsPerScope)
		}
		sealed, err := s.seal(value, valueAAD(name, key), s.opts.Now().UnixMilli())
		if err != nil {
			return err
		}
		return vb.Put([]byte(key), sealed)
	})
}

// List lists the secrets of scope name, without values; it takes READ.
func (s *Store) List(p Principal, name string) ([]api.SecretMetadata, error) {
	out := []api.SecretMetadata{}
	err := s.db.View(func(tx *bolt.Tx) error {
		if _, err := need(tx, p, name, Read); err != nil {
			return err
		}
		vb := tx.Bucket(valuesBucket).Bucket([]byte(name))
		if vb == nil {
			return nil
		}
		return vb.ForEach(func(k, v []byte) error {
			out = append(out, api.SecretMetadata{Key: string(k), LastUpdatedTimestamp: updatedAt(v)})
			return nil
		})
	})
	return out, err
}

// Delete deletes secret key of scope name; it takes WRITE.
func (s *Store) Delete(p Principal, name, key string) error {
	if err := checkKeyName(key); err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		if _, err := need(tx, p, name, Write); err != nil {
			return err
		}
		vb := tx.Bucket(valuesBucket).Bucket([]byte(name))
		if vb == nil || vb.Get([]byte(key)) == nil {
			return api.Errorf(api.ErrResourceDoesNotExist, "secret scope %s has no secret %q", name, key)
		}
		return vb.Delete([]byte(key))
	})
}

// Resolve returns the value of secret key of scope name for p; it takes
// READ. It is how deployments get their environment's secrets, as the
// endpoint's creator.
func (s *Store) Resolve(p Principal, name, key string) (string, error) {
	if err := checkKeyName(key); err != nil {
		return "", err
	}
	var out string
	err := s.db.View(func(tx *bolt.Tx) error {
		if _, err := need(tx, p, name, Read); err != nil {
			return err
		}
		vb := tx.Bucket(valuesBucket).Bucket([]byte(name))
		var b []byte
		if vb != nil {
			b = vb.Get([]byte(key))
		}
		if b == nil {
			return api.Errorf(api.ErrResourceDoesNotExist, "secret scope %s has no secret %q", name, key)
		}
		plain, _, err := s.open(b, valueAAD(name, key))
		if err != nil {
			return fmt.Errorf("secret %s/%s: %w", name, key, err)
		}
		out = string(plain)
		return nil
	})
	return out, err
}

// CanRead checks that p may read scope name, whether or not key exists
// yet: what an endpoint config that references it needs.
func (s *Store) CanRead(p Principal, name string) error {
	return s.db.View(func(tx *bolt.Tx) error {
		_, err := need(tx, p, name, Read)
		return err
	})
}

// PutACL grants principal perm on scope name (replacing its grant); it
// takes MANAGE.
func (s *Store) PutACL(p Principal, name, principal string, perm Permission) error {
	if err := s.checkPrincipal(principal); err != nil {
		return err
	}
	if perm.rank() == 0 {
		return api.Errorf(api.ErrInvalidParameterValue, "permission: %q is not one of READ, WRITE, MANAGE", string(perm))
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		sc, err := need(tx, p, name, Manage)
		if err != nil {
			return err
		}
		sc.ACL[principal] = perm
		return putScope(tx, sc)
	})
}

// DeleteACL drops principal's grant on scope name; it takes MANAGE.
func (s *Store) DeleteACL(p Principal, name, principal string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		sc, err := need(tx, p, name, Manage)
		if err != nil {
			return err
		}
		if _, ok := sc.ACL[principal]; !ok {
			return api.Errorf(api.ErrResourceDoesNotExist, "secret scope %s has no ACL for %q", name, principal)
		}
		delete(sc.ACL, principal)
		return putScope(tx, sc)
	})
}

// ACLs lists the grants on scope name, by principal; it takes MANAGE.
func (s *Store) ACLs(p Principal, name string) ([]api.AclItem, error) {
	var out []api.AclItem
	err := s.db.View(func(tx *bolt.Tx) error {
		sc, err := need(tx, p, name, Manage)
		if err != nil {
			return err
		}
		out = make([]api.AclItem, 0, len(sc.ACL))
		for who, perm := range sc.ACL {
			out = append(out, api.AclItem{Principal: who, Permission: string(perm)})
		}
		slices.SortFunc(out, func(a, b api.AclItem) int { return strings.Compare(a.Principal, b.Principal) })
		return nil
	})
	return out, err
}

// ACL returns principal's grant on scope name; it takes MANAGE.
func (s *Store) ACL(p Principal, name, principal string) (api.AclItem, error) {
	var out api.AclItem
	err := s.db.View(func(tx *bolt.Tx) error {
		sc, err := need(tx, p, name, Manage)
		if err != nil {
			return err
		}
		perm, ok := sc.ACL[principal]
		if !ok {
			return api.Errorf(api.ErrResourceDoesNotExist, "secret scope %s has no ACL for %q", name, principal)
		}
		out = api.AclItem{Principal: principal, Permission: string(perm)}
		return nil
	})
	return out, err
}

func (s *Store) checkPrincipal(principal string) error {
	switch {
	case principal == "":
		return api.Errorf(api.ErrInvalidParameterValue, "principal: required (a userName, a service principal's applicationId, a group, or %q)", AllUsers)
	case len(principal) > 256:
		return api.Errorf(api.ErrInvalidParameterValue, "principal: longer than 256 bytes")
	case principal == AllUsers || s.opts.Exists == nil:
		return nil
	case !s.opts.Exists(principal):
		return api.Errorf(api.ErrResourceDoesNotExist, "principal: %q is no user, service principal or group", clip(principal))
	}
	return nil
}
