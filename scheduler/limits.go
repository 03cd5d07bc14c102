package scheduler

import (
	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/loggers"
)

// Limits on what API callers can grow. Each endpoint runs at least one
// worker (even with scale to zero, until its first idle period) and each
// replica is a process or an allocation: without bounds one caller with
// CAN_MANAGE takes the host down. README.md's "Limits" lists them.
const (
	// DefaultMaxEndpoints is Config.MaxEndpoints' default. Databricks
	// allows 1,000 per workspace; a Gantry host runs every endpoint's
	// workers, so it allows fewer unless the operator says otherwise.
	DefaultMaxEndpoints = 100
	// DefaultMaxProvisionedConcurrency is Config.MaxProvisionedConcurrency's
	// default: Databricks' default provisioned concurrency per model, 200.
	// With the default 4 requests per replica it is 50 replicas; it bounds
	// the replicas at 200 whatever replica_concurrency says.
	DefaultMaxProvisionedConcurrency = 200

	// Tags: count per endpoint (after a PATCH too), key and value bytes.
	maxTags        = 50
	maxTagKeyLen   = 255
	maxTagValueLen = 1024
)

func (s *Scheduler) maxEndpoints() int {
	if s.cfg.MaxEndpoints > 0 {
		return s.cfg.MaxEndpoints
	}
	return DefaultMaxEndpoints
}

func (s *Scheduler) maxConcurrency() int {
	if s.cfg.MaxProvisionedConcurrency > 0 {
		return s.cfg.MaxProvisionedConcurrency
	}
	return DefaultMaxProvisionedConcurrency
}

// checkEndpointCount refuses a new endpoint once there are as many as the
// limit allows. s.mu must be held.
func (s *Scheduler) checkEndpointCount() error {
	if n, limit := len(s.eps), s.maxEndpoints(); n >= limit {
		// No quota code in API.md: 400 naming the limit and what to do.
		return invalid("name: this Gantry has %d serving endpoints, the most it allows (--max-endpoints %d); delete one first or ask the operator to raise the limit", n, limit)
	}
	return nil
}

// checkCeiling refuses served entities whose concurrency, and so replica
// count, is above the ceiling. c must be normalized. The autoscaler and
// the scale API clamp replicas to the entity's bounds (Scale), so this
// ceiling bounds them too.
func (s *Scheduler) checkCeiling(c *api.EndpointConfig) error {
	ceiling := s.maxConcurrency()
	for i := range c.ServedEntities {
		e := &c.ServedEntities[i]
		if e.MaxProvisionedConcurrency != nil && *e.MaxProvisionedConcurrency > ceiling {
			return invalid("config.served_entities[%d].max_provisioned_concurrency: %d is above this Gantry's ceiling of %d per served entity (--max-provisioned-concurrency); ask for at most %d",
				i, *e.MaxProvisionedConcurrency, ceiling, ceiling)
		}
		if r, ok := workloadSizes[e.WorkloadSize]; ok && r[1] > ceiling {
			return invalid("config.served_entities[%d].workload_size: %s runs up to %d concurrent requests, above this Gantry's ceiling of %d per served entity (--max-provisioned-concurrency); choose a smaller size",
				i, e.WorkloadSize, r[1], ceiling)
		}
	}
	return nil
}

// checkTableFree refuses an inference table that another endpoint writes
// to: two endpoints in one table mix their rows (and their monitors'
// numbers), and "fraud-ep" and "fraud_ep" get the same default table name.
// ep is the endpoint that wants the table, field its config's path for the
// message. s.mu must be held.
func (s *Scheduler) checkTableFree(ep, field string, c *api.AutoCaptureConfig) error {
	if !loggers.Enabled(c) {
		return nil
	}
	want, err := loggers.PayloadTable(ep, field, c)
	if err != nil {
		return err
	}
	for name, other := range s.eps {
		if name == ep {
			continue
		}
		used := []*api.AutoCaptureConfig{other.Config.AutoCaptureConfig}
		if other.Pending != nil {
			used = append(used, other.Pending.AutoCaptureConfig)
		}
		if other.AIGateway != nil {
			used = append(used, other.AIGateway.InferenceTableConfig)
		}
		for _, u := range used {
			if t, ok := payloadTable(name, u); ok && t == want {
				return invalid("%s: inference table %s is already the table of endpoint %q; set table_name_prefix (or catalog_name/schema_name) to another name",
					field, want, name)
			}
		}
	}
	return nil
}

// checkTags bounds tags: their count, key and value sizes, one of each key.
func checkTags(tags []api.Tag) error {
	if len(tags) > maxTags {
		return invalid("tags: %d tags, at most %d are allowed", len(tags), maxTags)
	}
	seen := map[string]bool{}
	for i, t := range tags {
		switch {
		case t.Key == "":
			return invalid("tags[%d].key: required", i)
		case len(t.Key) > maxTagKeyLen:
			return invalid("tags[%d].key: %d bytes, at most %d are allowed", i, len(t.Key), maxTagKeyLen)
		case len(t.Value) > maxTagValueLen:
			return invalid("tags[%d].value: %d bytes, at most %d are allowed", i, len(t.Value), maxTagValueLen)
		case seen[t.Key]:
			return invalid("tags[%d].key: %q is given twice; give each key once", i, t.Key)
		}
		seen[t.Key] = true
	}
	return nil
}
