// Package redistest starts the real redis-server that tests talk to, as
// chtest does ClickHouse.
package redistest

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/gantry/gantry/features/onlinestore"
)

// Start runs a redis-server on a free loopback port under a test temp
// dir, stopped when the test ends. Without the binary the test fails
// under CI (CI=true, where make test-deps installs it) and is skipped
// elsewhere with how to install it.
func Start(t testing.TB) *onlinestore.Server {
	t.Helper()
	s, err := onlinestore.NewServer(t.TempDir(), 0)
	if errors.Is(err, onlinestore.ErrNoRedis) {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI must provide redis-server: %v", err)
		}
		t.Skipf("needs Redis: %v (apt-get install redis-server)", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Kill)
	return s
}

// Open connects to s, closed when the test ends.
func Open(t testing.TB, s *onlinestore.Server) *onlinestore.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := onlinestore.Open(ctx, s.URL(), onlinestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}
