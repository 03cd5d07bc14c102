// Package chtest starts the real ClickHouse server that tests talk to.
package chtest

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/gantry/gantry/loggers/local"
	"github.com/gantry/gantry/loggers/tables"
)

// Start runs a clickhouse-server under a test temp dir, stopped when the
// test ends. Without the binary the test fails under CI (CI=true, where
// .ci/run installs it) and is skipped elsewhere with how to install it.
func Start(t testing.TB) *local.ClickHouse {
	t.Helper()
	ch, err := local.NewClickHouse(t.TempDir())
	if errors.Is(err, local.ErrNoClickHouse) {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI must provide ClickHouse: %v", err)
		}
		t.Skipf("needs ClickHouse: %v (apt-get install clickhouse-server)", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := ch.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ch.Stop)
	return ch
}

// Open connects to ch, closed when the test ends.
func Open(t testing.TB, ch *local.ClickHouse) *tables.DB {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db, err := tables.Open(ctx, tables.Options{Addr: ch.Addr(), Username: "default"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}
