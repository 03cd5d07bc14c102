// Package routes holds the route table that the scheduler publishes and
// activators follow with blocking queries, the way Nomad's API serves
// X-Nomad-Index and ?index=&wait=.
package routes

import (
	"context"
	"sync"

	"github.com/gantry/gantry/api"
)

// Table is the current route table plus a way to wait for the next one.
// Its zero value is not usable; call NewTable.
type Table struct {
	// mu guards cur and changed.
	mu  sync.Mutex
	cur *api.RouteTable
	// changed is closed and replaced on every Publish, waking all waiters.
	changed chan struct{}
}

// NewTable returns a table at index 1 with no endpoints.
func NewTable() *Table {
	return &Table{
		cur:     &api.RouteTable{Index: 1, Endpoints: []api.EndpointRoute{}},
		changed: make(chan struct{}),
	}
}

// Publish replaces the endpoints and bumps the index. The table keeps eps;
// callers must not change it afterwards.
func (t *Table) Publish(eps []api.EndpointRoute) uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.cur = &api.RouteTable{Index: t.cur.Index + 1, Endpoints: eps}
	close(t.changed)
	t.changed = make(chan struct{})
	return t.cur.Index
}

// Current returns the current table. The result is shared: do not modify it.
func (t *Table) Current() *api.RouteTable {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.cur
}

// Wait returns the first table whose Index is above index. It returns the
// current table when ctx ends first, along with ctx's error, so that a caller
// with a wait deadline can answer with what it has.
func (t *Table) Wait(ctx context.Context, index uint64) (*api.RouteTable, error) {
	for {
		t.mu.Lock()
		cur, changed := t.cur, t.changed
		t.mu.Unlock()
		if cur.Index > index {
			return cur, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return cur, ctx.Err()
		}
	}
}
