package scheduler

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/loggers"
	"github.com/gantry/gantry/scheduler/meter"
	"github.com/gantry/gantry/scheduler/orchestrator"
)

// provisionedRows is a ProvisionedWriter that keeps what it is given.
type provisionedRows struct {
	mu   sync.Mutex
	rows []loggers.ProvisionedRow
}

var _ ProvisionedWriter = (*provisionedRows)(nil)

func (p *provisionedRows) Provisioned(r *loggers.ProvisionedRow) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rows = append(p.rows, *r)
	return true
}

func (p *provisionedRows) take() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var b []string
	for _, r := range p.rows {
		b = append(b, fmt.Sprintf("%s/%s %s %s %g %g", r.Endpoint, r.ServedEntity, r.WorkloadSize, r.WorkloadType, r.ReplicaSeconds, r.SavedReplicaSeconds))
	}
	p.rows = nil
	return strings.Join(b, "; ")
}

func instances(n int) orchestrator.Status {
	st := orchestrator.Status{Desired: n}
	for i := range n {
		st.Instances = append(st.Instances, orchestrator.Instance{ID: fmt.Sprint("r", i), Ready: i > 0})
	}
	return st
}

// TestProvisionedMeter: the scheduler meters every entity with replicas
// from its driver's statuses on a fake clock: replica-seconds by workload
// (a starting replica counts), and what scale to zero saves while an
// entity is at zero; rows come once their minute ends.
func TestProvisionedMeter(t *testing.T) {
	h := newHarness(t, t.TempDir())
	h.upload(t, "m")
	body := `{"name": "fraud", "config": {"served_entities": [
		{"name": "small", "entity_name": "m", "entity_version": "1", "workload_size": "Small", "scale_to_zero_enabled": true},
		{"name": "gpu", "entity_name": "m", "entity_version": "1", "workload_size": "Medium", "workload_type": "GPU_SMALL"}],
		"traffic_config": {"routes": [{"served_model_name": "small", "traffic_percentage": 50}, {"served_model_name": "gpu", "traffic_percentage": 50}]}}}`
	if code, e := h.call(t, "POST", "/api/2.0/serving-endpoints", body, nil); code != 200 {
		t.Fatalf("create: %d %+v", code, e)
	}
	h.reconcile()
	w := &provisionedRows{}
	h.s.cfg.Provisioned = w
	m := meter.New(time.Minute, newID)
	t0 := time.Unix(1_700_000_000, 0).Truncate(time.Minute)
	h.orch.set("small", instances(2))
	h.orch.set("gpu", instances(1))
	h.s.meterTick(m, t0)
	h.s.meterTick(m, t0.Add(30*time.Second))
	h.orch.set("small", instances(0)) // scaled to zero: saves its 1 replica
	h.s.meterTick(m, t0.Add(45*time.Second))
	if got := w.take(); got != "" {
		t.Fatalf("rows %q before the minute ended", got)
	}
	h.s.meterTick(m, t0.Add(70*time.Second))
	if got, want := w.take(), "fraud/gpu Medium GPU_SMALL 60 0; fraud/small Small CPU 90 15"; got != want {
		t.Errorf("first minute: %q; want %q", got, want)
	}
	h.s.meterTick(m, t0.Add(120*time.Second))
	if got, want := w.take(), "fraud/gpu Medium GPU_SMALL 60 0; fraud/small Small CPU 0 60"; got != want {
		t.Errorf("second minute: %q; want %q", got, want)
	}
}

func TestSavedReplicasAndUnitCosts(t *testing.T) {
	yes, no, eight, two := true, false, 8, 2
	for _, c := range []struct {
		e    api.ServedEntity
		want int
	}{
		{api.ServedEntity{WorkloadSize: "Small", ScaleToZeroEnabled: &yes}, 1},
		{api.ServedEntity{WorkloadSize: "Medium", ScaleToZeroEnabled: &yes}, 2},
		{api.ServedEntity{WorkloadSize: "Medium", ScaleToZeroEnabled: &yes, ReplicaConcurrency: &two}, 4},
		{api.ServedEntity{WorkloadSize: "Large", ScaleToZeroEnabled: &no}, 0},
		{api.ServedEntity{MinProvisionedConcurrency: &eight, MaxProvisionedConcurrency: &eight, ScaleToZeroEnabled: &yes}, 2},
	} {
		if got := savedReplicas(&c.e); got != c.want {
			t.Errorf("savedReplicas(%+v) = %d; want %d", c.e, got, c.want)
		}
	}
	costs, err := ParseUnitCosts("CPU/Small=0.36, GPU_SMALL=3.6")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		size, typ string
		want      float64
	}{{"Small", "CPU", 0.36}, {"", "", 0.36}, {"Medium", "CPU", DefaultUnitCosts["CPU/Medium"]}, {"Large", "GPU_SMALL", 3.6}} {
		if got := priced(costs, c.size, c.typ, api.UsageCost{ReplicaSeconds: 3600, SavedReplicaSeconds: 7200}); got.Cost != c.want || got.SavedCost != 2*c.want {
			t.Errorf("an hour of %s/%s costs %+v; want %g", c.size, c.typ, got, c.want)
		}
	}
	for _, bad := range []string{"CPU/Huge=1", "GPU_SMALL=-1", "GPU_SMALL", "CPU/Small=x"} {
		if _, err := ParseUnitCosts(bad); err == nil {
			t.Errorf("ParseUnitCosts(%q) took it", bad)
		}
	}
}
