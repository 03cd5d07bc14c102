// Package fakeclock is a settable clock for tests of code that takes its
// time from an injected func() time.Time, or its timers from an injected
// After.
package fakeclock

import (
	"sync"
	"time"
)

// Clock starts at time.Time{} and moves only when Add is called. It is safe
// for concurrent use; pass its Now method where a clock func is wanted, and
// its After method where a timer func is.
type Clock struct {
	mu     sync.Mutex // guards now and timers
	now    time.Time
	timers []timer
}

// timer is a channel of After that fires once the clock reaches at.
type timer struct {
	at time.Time
	c  chan time.Time
}

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Add moves the clock forward by d, firing every After whose time has come.
func (c *Clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.timers[:0]
	for _, t := range c.timers {
		if t.at.After(c.now) {
			kept = append(kept, t)
			continue
		}
		t.c <- c.now // buffered, and sent once: never blocks
	}
	clear(c.timers[len(kept):]) // let fired channels go
	c.timers = kept
}

// After returns a channel that receives the clock's time once Add has moved
// it d past now, as time.After does with the wall clock. d <= 0 fires at
// once.
func (c *Clock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if d <= 0 {
		ch <- c.now
		return ch
	}
	c.timers = append(c.timers, timer{at: c.now.Add(d), c: ch})
	return ch
}

// Waiters is how many After channels have not fired yet. A test polls it to
// know that the code under test is parked on its timer before it calls Add,
// so that the Add is not lost on a timer not yet made.
func (c *Clock) Waiters() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}
