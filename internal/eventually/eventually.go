// Package eventually is the tests' one way to wait for a condition that
// another goroutine or process makes true.
package eventually

import (
	"testing"
	"time"
)

// True polls cond every few milliseconds until it holds, and fails t,
// naming what it waited for, once timeout has passed.
func True(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	poll := min(max(timeout/1000, time.Millisecond), 50*time.Millisecond)
	for deadline := time.Now().Add(timeout); !cond(); time.Sleep(poll) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
	}
}
