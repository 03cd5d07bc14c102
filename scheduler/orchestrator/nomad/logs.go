package nomad

// The tasks' output, read through Nomad's client filesystem API: the end of
// stderr for a failure message, and the recent output of the newest
// allocations for the logs API.

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gantry/gantry/jobs"
	"github.com/hashicorp/nomad/api"
)

// Logs returns the end of the output of the deployment's newest
// allocations, read through Nomad's client filesystem API.
func (d *Driver) Logs(id string) (string, bool) {
	d.mu.Lock()
	dep, ok := d.deps[id]
	var allocs []*api.AllocationListStub
	if ok {
		for _, a := range dep.allocs {
			allocs = append(allocs, a)
		}
	}
	d.mu.Unlock()
	if !ok {
		return "", false
	}
	sort.Slice(allocs, func(i, j int) bool { return allocs[i].CreateIndex > allocs[j].CreateIndex })
	var b strings.Builder
	for _, a := range allocs[:min(3, len(allocs))] {
		for _, typ := range []string{"stdout", "stderr"} {
			out, err := d.logs(d.ctx, a.ID, typ, 16<<10)
			if err != nil || len(out) == 0 {
				continue
			}
			fmt.Fprintf(&b, "==> allocation %s %s <==\n%s\n", short(a.ID), typ, strings.TrimRight(string(out), "\n"))
		}
	}
	return b.String(), true
}

// stderrTail returns the last lines the task wrote to stderr, or "" when
// Nomad cannot say.
func (d *Driver) stderrTail(ctx context.Context, alloc string) string {
	b, err := d.logs(ctx, alloc, "stderr", 4<<10)
	if err != nil {
		d.cfg.Logger.Debug("nomad: read task stderr", "alloc", alloc, "err", err)
		return ""
	}
	return lastLines(string(b), 5)
}

// lastLines is the last n lines of s, without its final newline.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// logs reads the last n bytes of one of the task's logs. The read gets 5 s
// of wall-clock time: it is a network deadline, not the driver's pacing.
func (d *Driver) logs(ctx context.Context, alloc, typ string, n int) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	v := url.Values{"task": {jobs.Task}, "type": {typ}, "origin": {"end"}, "offset": {strconv.Itoa(n)}, "plain": {"true"}}
	r, err := d.client.Raw().Response("/v1/client/fs/logs/"+url.PathEscape(alloc)+"?"+v.Encode(), (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(io.LimitReader(r, int64(n)))
}
