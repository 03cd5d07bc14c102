package meter

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gantry/gantry/loggers"
)

func ids() func() string {
	n := 0
	return func() string { n++; return fmt.Sprint("r", n) }
}

// rows renders rows as "start+endpoint/entity size type used saved".
func rows(t0 time.Time, rs []loggers.ProvisionedRow) string {
	var b []string
	for _, r := range rs {
		b = append(b, fmt.Sprintf("%v %s/%s %s %s %g %g", time.UnixMilli(r.TimestampMs).Sub(t0), r.Endpoint, r.ServedEntity,
			r.WorkloadSize, r.WorkloadType, r.ReplicaSeconds, r.SavedReplicaSeconds))
	}
	return strings.Join(b, "; ")
}

// TestMeter: a story on a fake clock. fraud/a runs 2 replicas, then 3,
// across a minute boundary; chat/gpu scales to zero and saves its one
// replica; rows come out once their minute ended, and Flush gives the
// rest.
func TestMeter(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0).Truncate(time.Minute) // on a minute
	m := New(0, ids())
	a := func(n int) Sample { return Sample{"fraud", "a", "Small", "CPU", n, 0} }
	g := func(n int) Sample { return Sample{"chat", "gpu", "", "GPU_SMALL", n, 1} }
	steps := []struct {
		at      time.Duration
		samples []Sample
		due     string
	}{
		{10 * time.Second, []Sample{a(2), g(1)}, ""}, // starts the clock: nothing counted before
		{40 * time.Second, []Sample{a(3), g(0)}, ""},
		// 40 s → 70 s crosses the minute: 20 s in the first, 10 s in the
		// second; the first minute is due.
		{70 * time.Second, []Sample{a(3), g(0)}, "0s chat/gpu  GPU_SMALL 30 20; 0s fraud/a Small CPU 120 0"},
		{90 * time.Second, nil, ""}, // the entities are gone
		{200 * time.Second, nil, "1m0s chat/gpu  GPU_SMALL 0 30; 1m0s fraud/a Small CPU 90 0"},
	}
	for _, s := range steps {
		now := t0.Add(s.at)
		m.Observe(now, s.samples)
		if got := rows(t0, m.Due(now)); got != s.due {
			t.Errorf("at %v: due %q; want %q", s.at, got, s.due)
		}
	}
	if got := rows(t0, m.Flush()); got != "" {
		t.Errorf("flush %q; want nothing", got)
	}
}

// TestMeterPartialAndClock: Flush gives the current minute's row; a clock
// stepped back counts nothing; every row has its own id.
func TestMeterPartialAndClock(t *testing.T) {
	t0 := time.Unix(0, 0)
	m := New(time.Minute, ids())
	s := []Sample{{"e", "x", "Medium", "CPU", 4, 0}}
	m.Observe(t0, s)
	m.Observe(t0.Add(15*time.Second), s)
	m.Observe(t0.Add(5*time.Second), s) // back: nothing
	m.Observe(t0.Add(10*time.Second), s)
	if due := m.Due(t0.Add(10 * time.Second)); len(due) != 0 {
		t.Fatalf("due %+v before the minute ended", due)
	}
	got := m.Flush()
	if len(got) != 1 || got[0].ReplicaSeconds != 80 || got[0].RowID == "" || got[0].PeriodMs != 60000 {
		t.Fatalf("flush %+v; want one row of 4 replicas × 20 s", got)
	}
	m.Observe(t0.Add(130*time.Second), s) // 120 s over two minutes and a bit
	a := m.Flush()
	if len(a) != 3 || a[0].RowID == got[0].RowID || a[0].ReplicaSeconds != 200 || a[1].ReplicaSeconds != 240 || a[2].ReplicaSeconds != 40 {
		t.Fatalf("rows %+v", a)
	}
}
