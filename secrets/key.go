package secrets

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
)

// keySize is the AES-256 key's size in bytes.
const keySize = 32

// LoadKey reads the store's key from path: 64 hex digits (what
// `openssl rand -hex 32` prints). With create, a missing file is made
// with a new random key, mode 0600, and created says so. A file that
// others than its owner may read is refused: the key is what keeps the
// values in the store secret.
func LoadKey(path string, create bool) (key []byte, created bool, err error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && create {
		key = make([]byte, keySize)
		if _, err := rand.Read(key); err != nil {
			return nil, false, err
		}
		// O_EXCL: two processes starting at once must not each write
		// their own key; the loser reads the winner's.
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			return LoadKey(path, false)
		}
		if err != nil {
			return nil, false, fmt.Errorf("create secrets key %s: %w", path, err)
		}
		_, werr := f.WriteString(hex.EncodeToString(key) + "\n")
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			os.Remove(path)
			return nil, false, fmt.Errorf("write secrets key %s: %w", path, werr)
		}
		return key, true, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("secrets key: %w", err)
	}
	info, err := os.Stat(path)
	if err != nil {
		return nil, false, fmt.Errorf("secrets key: %w", err)
	}
	if info.Mode().Perm()&0o077 != 0 {
		return nil, false, fmt.Errorf("secrets key %s: mode %o lets others read it; chmod 600 it", path, info.Mode().Perm())
	}
	key, err = hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(key) != keySize {
		// Never quote the file: it is the key, or near it.
		return nil, false, fmt.Errorf("secrets key %s: want %d hex digits (openssl rand -hex %d)", path, 2*keySize, keySize)
	}
	return key, false, nil
}
