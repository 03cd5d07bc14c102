package fakeclock

import (
	"testing"
	"time"
)

func TestAfterFiresOnAdd(t *testing.T) {
	var c Clock
	a, b := c.After(time.Second), c.After(3*time.Second)
	if n := c.Waiters(); n != 2 {
		t.Fatalf("Waiters = %d, want 2", n)
	}
	c.Add(999 * time.Millisecond)
	select {
	case <-a:
		t.Fatal("fired 1 ms early")
	default:
	}
	c.Add(time.Millisecond)
	if got := <-a; got != (time.Time{}).Add(time.Second) {
		t.Errorf("fired with %v, want the clock's time", got)
	}
	if n := c.Waiters(); n != 1 {
		t.Errorf("Waiters = %d after one fired, want 1", n)
	}
	c.Add(5 * time.Second)
	<-b
	if n := c.Waiters(); n != 0 {
		t.Errorf("Waiters = %d, want 0", n)
	}
	select {
	case <-c.After(0):
	default:
		t.Error("After(0) did not fire at once")
	}
}
