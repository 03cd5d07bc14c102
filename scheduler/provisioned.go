package scheduler

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/loggers"
	"github.com/gantry/gantry/scheduler/meter"
)

// Provisioned time: every served entity that runs replicas is metered
// (meter.Meter) from the driver's statuses, sampled every
// Config.MeterSample; each period's rows (replica-seconds by endpoint,
// entity, workload size and type, and what scale to zero saved) go to
// Config.Provisioned, the capture producer, and through Kafka and the
// logger into loggers.ProvisionedTable. GET /api/2.0/gantry/usage prices
// them with Config.UnitCosts.

// ProvisionedWriter takes the meter's rows without blocking
// (*capture.Capturer queues them for Kafka).
type ProvisionedWriter interface {
	Provisioned(p *loggers.ProvisionedRow) bool
}

// DefaultUnitCosts are the prices of a replica-hour by workload, in US
// dollars, after public cloud list prices of machines of the same
// resources (jobs.ResourcesFor): a CPU replica by workload_size (an
// empty size, provisioned concurrency, gets Small's resources and price),
// a GPU replica by workload_type (its size comes from its card: T4, A10G,
// A100, 4×A10G). Set yours with --unit-costs.
var DefaultUnitCosts = map[string]float64{
	"CPU/Small": 0.05, "CPU/Medium": 0.10, "CPU/Large": 0.20,
	api.WorkloadGPUSmall: 0.53, api.WorkloadGPUMedium: 1.01, api.WorkloadGPULarge: 3.67, api.WorkloadMultiGPUMedium: 5.67,
}

// unitKey names the price of a replica of size and type in a UnitCosts
// map: CPU/<size> for CPU replicas, the type for GPU ones.
func unitKey(size, typ string) string {
	if typ == "" || typ == api.WorkloadCPU {
		if size == "" {
			size = api.WorkloadSmall
		}
		return api.WorkloadCPU + "/" + size
	}
	return typ
}

// ParseUnitCosts reads --unit-costs ("CPU/Small=0.05,GPU_SMALL=0.53")
// over DefaultUnitCosts: the keys it names change, the others keep their
// defaults.
func ParseUnitCosts(s string) (map[string]float64, error) {
	out := make(map[string]float64, len(DefaultUnitCosts))
	for k, v := range DefaultUnitCosts {
		out[k] = v
	}
	for _, kv := range strings.Split(s, ",") {
		if kv = strings.TrimSpace(kv); kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if _, known := DefaultUnitCosts[k]; !ok || !known {
			return nil, fmt.Errorf("unit cost %q: want KEY=PRICE with KEY one of %s", kv, strings.Join(unitKeys(), ", "))
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f < 0 {
			return nil, fmt.Errorf("unit cost %q: the price of a replica-hour must be a number of 0 or more", kv)
		}
		out[k] = f
	}
	return out, nil
}

func unitKeys() []string {
	var ks []string
	for k := range DefaultUnitCosts {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// priced fills c's costs from its replica-seconds at the price of a
// replica of size and type.
func priced(costs map[string]float64, size, typ string, c api.UsageCost) api.UsageCost {
	p := costs[unitKey(size, typ)] / 3600
	c.Cost, c.SavedCost = c.ReplicaSeconds*p, c.SavedReplicaSeconds*p
	return c
}

// meterLoop samples the replicas every MeterSample and writes the rows of
// each period once it ends, until ctx ends; then the current period's
// too. It owns m.
func (s *Scheduler) meterLoop(ctx context.Context) {
	m := meter.New(s.cfg.MeterPeriod, newID)
	t := time.NewTicker(s.cfg.MeterSample)
	defer t.Stop()
	for {
		s.meterTick(m, s.cfg.Now())
		select {
		case <-ctx.Done():
			m.Observe(s.cfg.Now(), nil)
			s.writeProvisioned(m.Flush())
			return
		case <-t.C:
		}
	}
}

// meterTick takes one sample into m and writes the rows that are due.
func (s *Scheduler) meterTick(m *meter.Meter, now time.Time) {
	m.Observe(now, s.provisionedSamples())
	s.writeProvisioned(m.Due(now))
}

func (s *Scheduler) writeProvisioned(rows []loggers.ProvisionedRow) {
	for i := range rows {
		if !s.cfg.Provisioned.Provisioned(&rows[i]) {
			s.cfg.Logger.Warn("provisioned row dropped: the capture buffer is full", "endpoint", rows[i].Endpoint, "entity", rows[i].ServedEntity)
		}
	}
}

// provisionedSamples are the replicas of every entity that has a
// deployment, from the driver's statuses (answered from memory: no I/O
// under s.mu). A deployment shared by the serving and the pending config
// counts once.
func (s *Scheduler) provisionedSamples() []meter.Sample {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.world()
	seen := map[string]bool{}
	var out []meter.Sample
	for _, e := range w.allEntities(s.eps) {
		if e.err != nil || e.d.ID == "" || seen[e.d.ID] {
			continue
		}
		seen[e.d.ID] = true
		out = append(out, meter.Sample{
			Endpoint: e.d.Endpoint, Entity: e.d.Entity, WorkloadSize: e.d.WorkloadSize, WorkloadType: e.d.WorkloadType,
			Replicas: len(w.status(e.d.ID).Instances), Saved: savedReplicas(e.served),
		})
	}
	return out
}

// savedReplicas is how many replicas scale to zero saves e while it is
// at zero: the floor it would have without it (Small: 4 requests at 4
// per replica, 1). 0 when e does not scale to zero.
func savedReplicas(e *api.ServedEntity) int {
	if !scalesToZero(e) {
		return 0
	}
	lo, _ := sizedBounds(e)
	return lo
}
