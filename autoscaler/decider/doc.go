// Package decider turns observed concurrency into a replica count for one
// served entity, the way Knative's KPA does (pkg/autoscaler/scaling), with no
// I/O: no clock, no goroutines, no network, no logging. The loop that owns a
// Decider feeds it samples and asks it for decisions, passing the time in.
//
// # Use
//
//  1. Build one Decider per served entity with New(spec), starting from
//     DefaultSpec().
//  2. Each time the activators report, call Record(now, concurrency) with the
//     entity's total of in-flight plus queued requests at that instant. When a
//     request reaches an entity at zero, the activator reports at once, so the
//     wake-up does not wait for the next tick.
//  3. Every tick (Knative uses 2 s), call Decide(now, Inputs{Ready, Starting})
//     and, if the Decision is Valid, ask the orchestrator for
//     Decision.Desired replicas. An invalid Decision means "keep what you
//     have".
//  4. When the entity's scaling settings change, call Update(spec).
//
// A Decider is not safe for concurrent use: call it from the loop's goroutine
// only, or under a lock of the caller's.
//
// # How a count is chosen
//
// The worked numbers use DefaultSpec: TargetPerReplica 4 × TargetUtilization
// 0.7 = 2.8 concurrent requests per replica.
//
// Two windows average the samples: the stable window (60 s) and the panic
// window (6 s). Each gives a count: ceil(average / 2.8). 10 concurrent over the
// last minute wants ceil(10/2.8) = 4 replicas.
//
// Panic. Capacity is Ready + Starting: replicas that are loading are capacity
// on their way, so a burst that is already being answered does not panic again.
// The decider panics when the panic-window count is at least PanicThreshold ×
// max(1, capacity). With 3 replicas and a burst to 20 concurrent over the
// last 6 s, the panic window wants ceil(20/2.8) = 8 ≥ 2.0 × 3 = 6: panic, and
// the decision is 8 at once, where the stable window (still near 4) would have
// taken a minute to get there. While panicking the count is the largest of
// the stable count, the panic count, the highest count of this panic, and the
// current capacity: it never goes down. The panic ends once a whole stable
// window has passed without the panic condition, by which time the burst is
// in the stable average.
//
// Rates. One decision moves at most to ceil(MaxScaleUpRate × max(1, Ready))
// and at least to floor(Ready / MaxScaleDownRate). With MaxScaleUpRate 1000
// and MaxScaleDownRate 2, 8 ready replicas may go up to 8000 or down to 4,
// not lower, however quiet it gets; the next decision may halve again.
// Scale-up counts Ready 0 as 1, so an entity at zero can always start.
//
// Waking. With no replicas ready or starting, any non-zero sample in the
// panic window asks for at least 1 replica, on the very next Decide.
//
// Scale to zero. Only with MinReplicas 0, and only once the stable window has
// been empty (no non-zero sample) for ScaleToZeroGrace: that is StableWindow +
// ScaleToZeroGrace = 90 s after the last request was seen. Until then an idle
// entity keeps 1 replica. A decider that has never seen load counts from its
// first call, since it cannot know what came before it started.
//
// Starting replicas. When replicas are still loading, the decision is never
// below Ready + Starting: a model that takes minutes to load is not
// cancelled because the burst that asked for it has faded.
//
// Warm-up. For the first StableWindow after the decider's first call it has
// less history than its stable window needs (a restarted autoscaler has lost
// its samples), so it does not scale down; it does scale up. Until the first
// sample arrives it has nothing to go on: the Decision is not Valid, unless
// MinReplicas or MaxReplicas call for a change. A whole stable window without
// a sample counts as no load.
//
// Bounds. MinReplicas and MaxReplicas are applied last, over every rule
// above, and the Reason says when they changed the count.
package decider
