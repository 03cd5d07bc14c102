package decider

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// maxBuckets bounds StableWindow/Granularity: a longer ring costs memory and
// CPU on every decision and buys no useful precision.
const maxBuckets = 10000

// Spec is the scaling policy of one served entity. The zero Spec is not
// valid: start from DefaultSpec and change what the entity needs. Each
// field's doc gives its DefaultSpec value.
type Spec struct {
	// TargetPerReplica is how many concurrent requests one replica is
	// sized to hold, from the workload size (Small 4, Medium 8 to 16,
	// Large 16 to 64). Default 4.
	TargetPerReplica float64
	// TargetUtilization is the share of TargetPerReplica the decider aims
	// for, leaving headroom for bursts that arrive between decisions:
	// desired = ceil(observed / (TargetPerReplica × TargetUtilization)).
	// In (0, 1]. Default 0.7.
	TargetUtilization float64

	// MinReplicas and MaxReplicas bound every decision. MinReplicas 0
	// allows scale to zero; MaxReplicas 0 means no upper bound. Default 0
	// and 0.
	MinReplicas, MaxReplicas int

	// StableWindow is the window whose average drives normal scaling, and
	// how long the decider must see no load before it scales to zero.
	// Default 60 s.
	StableWindow time.Duration
	// PanicWindow is the short window that detects bursts; at most
	// StableWindow. Default 6 s.
	PanicWindow time.Duration
	// PanicThreshold is how far the panic window may outgrow current
	// capacity before the decider panics: it panics when the panic-window
	// desired count is at least PanicThreshold × capacity. Above 1.
	// Default 2.0.
	PanicThreshold float64

	// MaxScaleUpRate bounds one decision to at most
	// ceil(MaxScaleUpRate × max(1, ready)) replicas. Above 1. Default 1000.
	MaxScaleUpRate float64
	// MaxScaleDownRate bounds one decision to at least
	// floor(ready / MaxScaleDownRate) replicas. Above 1. Default 2.
	MaxScaleDownRate float64

	// ScaleToZeroGrace is how long the stable window must have stayed empty
	// before the decider scales to zero. Default 30 s.
	ScaleToZeroGrace time.Duration

	// Granularity is the bucket size of both windows. Default 1 s.
	Granularity time.Duration
}

// DefaultSpec returns the policy for a Small workload, with Knative's KPA
// defaults for everything else.
func DefaultSpec() Spec {
	return Spec{
		TargetPerReplica:  4,
		TargetUtilization: 0.7,
		StableWindow:      60 * time.Second,
		PanicWindow:       6 * time.Second,
		PanicThreshold:    2.0,
		MaxScaleUpRate:    1000,
		MaxScaleDownRate:  2,
		ScaleToZeroGrace:  30 * time.Second,
		Granularity:       time.Second,
	}
}

// Validate reports every problem with s at once, joined with errors.Join, or
// nil if s is usable.
func (s Spec) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf(format, args...))
	}
	// The comparisons are written so that NaN fails them.
	if !(s.TargetPerReplica > 0) || math.IsInf(s.TargetPerReplica, 0) {
		bad("TargetPerReplica must be a positive number, got %v", s.TargetPerReplica)
	}
	if !(s.TargetUtilization > 0 && s.TargetUtilization <= 1) {
		bad("TargetUtilization must be in (0, 1], got %v", s.TargetUtilization)
	}
	if s.MinReplicas < 0 {
		bad("MinReplicas must not be negative, got %d", s.MinReplicas)
	}
	if s.MaxReplicas < 0 {
		bad("MaxReplicas must not be negative (0 means no bound), got %d", s.MaxReplicas)
	}
	if s.MaxReplicas > 0 && s.MinReplicas > s.MaxReplicas {
		bad("MinReplicas (%d) must not exceed MaxReplicas (%d)", s.MinReplicas, s.MaxReplicas)
	}
	if s.Granularity <= 0 {
		bad("Granularity must be positive, got %v", s.Granularity)
	}
	if s.StableWindow <= 0 {
		bad("StableWindow must be positive, got %v", s.StableWindow)
	}
	if s.PanicWindow <= 0 {
		bad("PanicWindow must be positive, got %v", s.PanicWindow)
	}
	if s.PanicWindow > s.StableWindow {
		bad("PanicWindow (%v) must not exceed StableWindow (%v)", s.PanicWindow, s.StableWindow)
	}
	if s.Granularity > 0 {
		if s.StableWindow > 0 && s.StableWindow < s.Granularity {
			bad("StableWindow (%v) must be at least Granularity (%v)", s.StableWindow, s.Granularity)
		}
		if s.PanicWindow > 0 && s.PanicWindow < s.Granularity {
			bad("PanicWindow (%v) must be at least Granularity (%v)", s.PanicWindow, s.Granularity)
		}
		if s.StableWindow/s.Granularity > maxBuckets {
			bad("StableWindow (%v) must be at most %d buckets of Granularity (%v)", s.StableWindow, maxBuckets, s.Granularity)
		}
	}
	if !(s.PanicThreshold > 1) || math.IsInf(s.PanicThreshold, 0) {
		bad("PanicThreshold must be a number above 1, got %v", s.PanicThreshold)
	}
	if !(s.MaxScaleUpRate > 1) || math.IsInf(s.MaxScaleUpRate, 0) {
		bad("MaxScaleUpRate must be a number above 1, got %v", s.MaxScaleUpRate)
	}
	if !(s.MaxScaleDownRate > 1) || math.IsInf(s.MaxScaleDownRate, 0) {
		bad("MaxScaleDownRate must be a number above 1, got %v", s.MaxScaleDownRate)
	}
	if s.ScaleToZeroGrace < 0 {
		bad("ScaleToZeroGrace must not be negative, got %v", s.ScaleToZeroGrace)
	}
	return errors.Join(errs...)
}
