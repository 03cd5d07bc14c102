package scheduler

import (
	"slices"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/scheduler/registry"
)

// Provisioned throughput: an LLM entity bounded in tokens per second.
//
// Each model version has a throughput chunk: the tokens per second one
// replica sustains, from its LLM flavor's tokens_per_second, else
// DefaultThroughputChunk. min/max_provisioned_throughput must be multiples
// of it, and each chunk is one replica: min 0 and max 3×chunk is 0 to 3
// replicas. The autoscaler sizes such an entity from the tokens per second
// and the queued sequences its replicas report (autoscaler/tokens.go).
//
// provisioned_model_units, Databricks' newer unit, counts chunks rather
// than tokens: N units are the replica bounds N..N (burst scaling off) or
// N..2N (on, the default), as min/max_provisioned_throughput of N and 2N
// chunks would be, and go down the same path: throughputBounded is true,
// checkThroughput records the chunk, throughputBounds turns them into
// replicas, and the autoscaler sizes the entity on tokens. The stored
// config keeps the units and the burst flag the user set.

// DefaultThroughputChunk is the chunk of an LLM model whose flavor gives no
// tokens_per_second: a modest rate for one replica of a small model, to be
// replaced by the model's measured one (see the README).
const DefaultThroughputChunk = 100

// optimizationInfo is what get-model-optimization-info answers for mv.
func optimizationInfo(mv *api.ModelVersion) api.ModelOptimizationInfo {
	for _, f := range registry.LLMFlavors {
		if slices.Contains(mv.Flavors, f) {
			chunk := mv.TokensPerSecond
			if chunk <= 0 {
				chunk = DefaultThroughputChunk
			}
			return api.ModelOptimizationInfo{Optimizable: true, ModelType: f, ThroughputChunkSize: chunk}
		}
	}
	return api.ModelOptimizationInfo{}
}

// throughputBounded reports whether e is sized in tokens per second:
// throughput bounds or provisioned model units.
func throughputBounded(e *api.ServedEntity) bool {
	return e.MinProvisionedThroughput != nil || e.MaxProvisionedThroughput != nil || e.ProvisionedModelUnits != nil
}

// throughputField names the field that makes e throughput-bounded, for
// messages.
func throughputField(e *api.ServedEntity) string {
	switch {
	case e.ProvisionedModelUnits != nil:
		return "provisioned_model_units"
	case e.MinProvisionedThroughput != nil:
		return "min_provisioned_throughput"
	}
	return "max_provisioned_throughput"
}

// normalizeUnits checks provisioned_model_units and burst_scaling_enabled
// and turns burst scaling on when units are set without it.
func normalizeUnits(e *api.ServedEntity) *api.Error {
	if e.ProvisionedModelUnits == nil {
		if e.BurstScalingEnabled != nil {
			return invalid("burst_scaling_enabled: only with provisioned_model_units")
		}
		return nil
	}
	for _, f := range []struct {
		name string
		set  bool
	}{
		{"min_provisioned_throughput", e.MinProvisionedThroughput != nil},
		{"max_provisioned_throughput", e.MaxProvisionedThroughput != nil},
		{"min_provisioned_concurrency", e.MinProvisionedConcurrency != nil},
		{"max_provisioned_concurrency", e.MaxProvisionedConcurrency != nil},
		{"workload_size", e.WorkloadSize != ""},
	} {
		if f.set {
			return invalid("provisioned_model_units cannot be combined with %s; give one way to size the entity", f.name)
		}
	}
	if n := *e.ProvisionedModelUnits; n < 1 || n > maxThroughputReplicas {
		return invalid("provisioned_model_units: %d is out of range 1-%d (one unit is one throughput chunk of the model, one replica)", n, maxThroughputReplicas)
	}
	if scalesToZero(e) {
		return invalid("scale_to_zero_enabled cannot be true with provisioned_model_units: provisioned units are kept ready; use min_provisioned_throughput 0 to scale to zero")
	}
	if e.BurstScalingEnabled == nil {
		on := true
		e.BurstScalingEnabled = &on
	}
	return nil
}

// normalizeThroughput checks what can be checked of the throughput bounds
// without the model; checkThroughput checks the rest. concurrency says the
// concurrency bounds are set too.
func normalizeThroughput(e *api.ServedEntity, concurrency bool) *api.Error {
	e.ThroughputChunkSize = 0 // read-only: checkThroughput sets it
	if err := normalizeUnits(e); err != nil || e.ProvisionedModelUnits != nil {
		return err
	}
	if !throughputBounded(e) {
		return nil
	}
	switch {
	case e.WorkloadSize != "":
		return invalid("workload_size cannot be combined with min_provisioned_throughput or max_provisioned_throughput")
	case concurrency:
		return invalid("min/max_provisioned_concurrency cannot be combined with min/max_provisioned_throughput")
	case e.MaxProvisionedThroughput == nil:
		return invalid("max_provisioned_throughput: required with min_provisioned_throughput")
	}
	lo, hi := deref(e.MinProvisionedThroughput), *e.MaxProvisionedThroughput
	if lo < 0 {
		return invalid("min_provisioned_throughput: %d must not be negative", lo)
	}
	if hi <= 0 {
		return invalid("max_provisioned_throughput: %d must be positive", hi)
	}
	if lo > hi {
		return invalid("min_provisioned_throughput: %d must not exceed max_provisioned_throughput %d", lo, hi)
	}
	return nil
}

// maxThroughputReplicas bounds max_provisioned_throughput / chunk.
const maxThroughputReplicas = 1000

// checkThroughput checks entity i's throughput bounds against its model
// and records the model's chunk in it.
func checkThroughput(i int, e *api.ServedEntity, mv *api.ModelVersion) *api.Error {
	if !throughputBounded(e) {
		return nil
	}
	info := optimizationInfo(mv)
	if !info.Optimizable {
		return invalid("config.served_entities[%d].%s: model %s version %s does not generate tokens (it has no %v flavor); use workload_size or min/max_provisioned_concurrency",
			i, throughputField(e), mv.Name, mv.Version, registry.LLMFlavors)
	}
	chunk := info.ThroughputChunkSize
	if e.ProvisionedModelUnits != nil {
		e.ThroughputChunkSize = chunk // units count chunks: nothing to check against it
		return nil
	}
	for _, f := range []struct {
		name string
		v    int
	}{{"min_provisioned_throughput", deref(e.MinProvisionedThroughput)}, {"max_provisioned_throughput", *e.MaxProvisionedThroughput}} {
		if f.v%chunk != 0 {
			return invalid("config.served_entities[%d].%s: %d is not a multiple of model %s version %s's throughput chunk, %d tokens/s (GET /api/2.0/serving-endpoints/get-model-optimization-info/%s/%s)",
				i, f.name, f.v, mv.Name, mv.Version, chunk, mv.Name, mv.Version)
		}
	}
	if *e.MaxProvisionedThroughput/chunk > maxThroughputReplicas {
		return invalid("config.served_entities[%d].max_provisioned_throughput: %d is more than %d chunks of %d tokens/s",
			i, *e.MaxProvisionedThroughput, maxThroughputReplicas, chunk)
	}
	e.ThroughputChunkSize = chunk
	return nil
}

// throughputBounds are a throughput-bounded entity's replica bounds, scale
// to zero aside: one replica per chunk, and one per provisioned model
// unit, with as many again for burst scaling (never above
// maxThroughputReplicas).
func throughputBounds(e *api.ServedEntity) (lo, hi int) {
	if n := e.ProvisionedModelUnits; n != nil {
		lo, hi = max(1, *n), max(1, *n)
		if e.BurstScalingEnabled == nil || *e.BurstScalingEnabled {
			hi = min(2*hi, maxThroughputReplicas)
		}
		return lo, hi
	}
	chunk := e.ThroughputChunkSize
	if chunk <= 0 {
		chunk = DefaultThroughputChunk
	}
	return deref(e.MinProvisionedThroughput) / chunk, max(1, deref(e.MaxProvisionedThroughput)/chunk)
}
