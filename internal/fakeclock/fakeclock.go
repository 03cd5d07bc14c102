// Package fakeclock is a settable clock for tests of code that takes its
// time from an injected func() time.Time.
package fakeclock

import (
	"sync"
	"time"
)

// Clock starts at time.Time{} and moves only when Add is called. It is safe
// for concurrent use; pass its Now method where a clock func is wanted.
type Clock struct {
	mu  sync.Mutex // guards now
	now time.Time
}

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Add moves the clock forward by d.
func (c *Clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}
