package scheduler

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/scheduler/orchestrator"
	"github.com/gantry/gantry/scheduler/store"
)

// The scheduler decides in plan and acts in apply (apply.go), the split
// etcd's raft makes between RawNode and the code that persists and sends
// what Ready returns:
//
//  1. Under s.mu, the scheduler builds a world (what it knows now: the
//     endpoints, the driver's statuses, the autoscaler's counts, what the
//     driver accepted and how its calls went) and calls plan.
//  2. Still under s.mu, it stores the records the plan changed, publishes
//     the plan's route table and marks the plan's driver calls as running.
//  3. With s.mu released, apply starts the driver calls, each with its own
//     deadline, and records each outcome in the world of the next pass,
//     which each outcome asks for. Run does not wait for them: the next
//     pass plans while they run (a deployment with a running call is left
//     alone), so a write's route change never waits on a slow call.
//
// plan does no I/O and never blocks, so a driver that hangs cannot hold
// the lock that every API read takes, and plan_test.go drives it through
// whole stories without a store, HTTP or processes.

// world is what one pass knows. Its ledger belongs to the Scheduler and is
// read under s.mu; plan and the views never write it.
type world struct {
	now time.Time
	// status is the driver's last known status of a deployment; drivers
	// answer from memory (see Orchestrator).
	status func(id string) orchestrator.Status
	// modelDir resolves a model version to its directory in the registry.
	modelDir func(name, version string) (string, error)
	// signature is a model version's MLflow signature, for the route
	// table (the Open Inference Protocol's metadata); nil, or nil answers,
	// leave it out.
	signature func(name, version string) *api.Schema
	// task is a model version's LLM task ("" for other models); nil
	// leaves it out.
	task func(name, version string) string
	// flavors are a model version's MLflow flavors, which deployments
	// carry so that a driver can tell a model that needs Python; nil
	// leaves them out.
	flavors func(name, version string) []string
	// featureRoute is a model version's feature route (its
	// feature_spec.yaml resolved), nil when it has none; nil leaves
	// feature specs unread.
	featureRoute func(dir, name, version string, sig *api.Schema) (r *api.FeatureRoute, resolved bool)
	// specRoute is a feature spec's route for a feature-serving entity
	// (Serving set; Error when it cannot be served); nil: feature serving
	// is off.
	specRoute func(name string) (r *api.FeatureRoute, resolved bool)
	// baseURL makes the artifact URLs that remote workers fetch.
	baseURL string
	// creds makes the credentials deployments carry.
	creds credentials

	*ledger
	// callTimeout is each driver call's deadline; a call running longer
	// ignored it, and the views say that the orchestrator is not answering.
	callTimeout time.Duration
}

// ledger is what the scheduler remembers between passes, besides the
// endpoints: the autoscaler's counts and the driver's calls.
type ledger struct {
	// scale is the autoscaler's replica count by deployment; a deployment
	// it has not sized yet runs initialReplicas.
	scale map[string]int
	// applied is what the driver last accepted, by deployment.
	applied map[string]orchestrator.Deployment
	// everReady marks deployments that had a ready replica once, which
	// tells DEPLOYMENT_RECOVERING from DEPLOYMENT_CREATING.
	everReady map[string]bool
	// calls are the driver calls running or last failed, by deployment
	// (and pruneKey).
	calls map[string]*call
	// pruned is set once no prune is due: it ran, or the driver keeps no
	// deployments across restarts.
	pruned bool
}

func newLedger(pruned bool) *ledger {
	return &ledger{
		scale: map[string]int{}, applied: map[string]orchestrator.Deployment{},
		everReady: map[string]bool{}, calls: map[string]*call{}, pruned: pruned,
	}
}

// Plan is what one pass must do, in this order: store Records, publish
// Routes, then make the driver calls (Ensure, Remove, Prune) with the lock
// released. Removals come after the route table so that activators stop
// sending to replicas before they stop.
type Plan struct {
	// Records are endpoint records that changed (a rollout moved on).
	Records []*store.Endpoint
	// Routes is the route table.
	Routes []api.EndpointRoute
	// Ensure are deployments to hand the driver, Remove those to stop.
	Ensure []Action
	Remove []Action
	// Prune, when not nil, lists the deployments to keep: the driver
	// removes any other it finds (those of endpoints deleted while the
	// scheduler was down).
	Prune []string
	// Ready are deployments seen ready for the first time.
	Ready []string
}

// Action is one driver call and why the plan makes it.
type Action struct {
	Deployment orchestrator.Deployment
	Reason     string
}

// entity is a served entity with the deployment that runs it.
type entity struct {
	served *api.ServedEntity
	d      orchestrator.Deployment
	// err is set when the entity cannot be deployed (its model is gone).
	err error
}

// external reports whether e serves an external model: its deployment
// is a name in the route table, never handed to the driver, with no
// replicas.
func (e entity) external() bool { return isExternal(e.served) }

// noDeployment reports whether e runs no replicas: an external model, or
// a feature spec the activator answers itself.
func (e entity) noDeployment() bool { return !deploys(e.served) }

// plan computes a pass over eps, which are sorted by name.
func plan(w *world, eps []*store.Endpoint) Plan {
	var p Plan
	want := map[string]orchestrator.Deployment{}
	for _, ep := range eps {
		next, cur, pend := w.step(ep)
		if next != nil {
			p.Records = append(p.Records, next)
			ep = next
		}
		for _, e := range slices.Concat(cur, pend) {
			if e.err != nil || e.noDeployment() {
				continue // nothing to deploy
			}
			want[e.d.ID] = e.d
			if !w.everReady[e.d.ID] && w.status(e.d.ID).Ready() > 0 && !slices.Contains(p.Ready, e.d.ID) {
				p.Ready = append(p.Ready, e.d.ID)
			}
		}
		p.Routes = append(p.Routes, w.route(ep, cur))
	}

	allApplied := true
	for _, id := range keysOf(want) {
		d := want[id]
		prev, ok := w.applied[id]
		if ok && prev.Replicas == d.Replicas {
			continue
		}
		allApplied = false
		if w.running(id) {
			continue // one call at a time per deployment
		}
		reason := "new deployment"
		switch c := w.calls[id]; {
		case c != nil && c.err != nil:
			reason = "retry: " + c.err.Error()
		case ok:
			reason = fmt.Sprintf("scale %d → %d", prev.Replicas, d.Replicas)
		}
		p.Ensure = append(p.Ensure, Action{Deployment: d, Reason: reason})
	}
	for _, id := range keysOf(w.applied) {
		if _, ok := want[id]; ok || w.running(id) {
			continue
		}
		p.Remove = append(p.Remove, Action{Deployment: w.applied[id], Reason: "no config of any endpoint runs it"})
	}
	if !w.pruned && allApplied && !w.running(pruneKey) {
		p.Prune = keep(eps)
	}
	return p
}

// keep lists the deployment of every served entity of every stored
// config, rolling out or not, even one that cannot run now (its model is
// gone): Prune must not remove what a config still names.
func keep(eps []*store.Endpoint) []string {
	out := []string{}
	for _, ep := range eps {
		for _, c := range []*api.EndpointConfig{&ep.Config, ep.Pending} {
			if c == nil {
				continue
			}
			for i := range c.ServedEntities {
				if deploys(&c.ServedEntities[i]) {
					out = append(out, deploymentID(ep.Name, &c.ServedEntities[i]))
				}
			}
		}
	}
	slices.Sort(out)
	return out
}

// step advances an endpoint's config rollout by one move. It returns the
// record to store when the move changed it (nil otherwise), the entities
// that serve after the move, and those of a pending config still rolling
// out.
func (w *world) step(ep *store.Endpoint) (next *store.Endpoint, cur, pend []entity) {
	cur = w.entities(ep.Name, &ep.Config)
	if ep.Pending == nil {
		// Only the first config is rolling out (or failed to): settle its state.
		if ep.DroppedUpdate || (ep.UpdateState != api.ConfigInProgress && ep.UpdateState != api.ConfigUpdateFailed) {
			return nil, cur, nil
		}
		ready, failure := w.rollout(cur)
		switch {
		case ready:
			next = w.touch(ep)
			next.UpdateState, next.UpdateMessage = api.ConfigNotUpdating, ""
		case failure != "" && ep.UpdateMessage != failure:
			next = w.touch(ep)
			next.UpdateState, next.UpdateMessage = api.ConfigUpdateFailed, failure
		}
		return next, cur, nil
	}
	pend = w.entities(ep.Name, ep.Pending)
	ready, failure := w.rollout(pend)
	switch {
	case ready:
		// The new config takes over in one step; the old deployments are
		// no longer wanted and go away.
		next = w.touch(ep)
		next.Config = *ep.Pending
		next.Config.ConfigVersion = ep.Config.ConfigVersion + 1
		next.Pending, next.PendingStart = nil, 0
		next.UpdateState, next.UpdateMessage = api.ConfigNotUpdating, ""
		return next, pend, nil
	case failure != "":
		// The old config keeps serving; the new deployments go away.
		next = w.touch(ep)
		next.Pending, next.PendingStart = nil, 0
		next.UpdateState, next.UpdateMessage, next.DroppedUpdate = api.ConfigUpdateFailed, failure, true
		return next, cur, nil
	}
	return nil, cur, pend
}

// touch copies a record to change, stamped with the pass's time.
func (w *world) touch(ep *store.Endpoint) *store.Endpoint {
	next := *ep
	next.Updated = w.now.UnixMilli()
	return &next
}

// entities maps a config's served entities to their deployments.
func (w *world) entities(ep string, c *api.EndpointConfig) []entity {
	out := make([]entity, len(c.ServedEntities))
	for i := range c.ServedEntities {
		e := &c.ServedEntities[i]
		id := deploymentID(ep, e)
		if !deploys(e) {
			out[i] = entity{served: e, d: orchestrator.Deployment{ID: id, Endpoint: ep, Entity: e.Name}}
			continue
		}
		n, ok := w.scale[id]
		if !ok {
			n = initialReplicas(e)
		}
		dir, err := w.modelDir(e.EntityName, e.EntityVersion)
		out[i] = entity{served: e, err: err, d: orchestrator.Deployment{
			ID:           id,
			Endpoint:     ep,
			Entity:       e.Name,
			ModelName:    e.EntityName,
			ModelVersion: e.EntityVersion,
			ModelDir:     dir,
			Flavors:      w.flavorsOf(e.EntityName, e.EntityVersion),
			Replicas:     n,
			WorkloadSize: e.WorkloadSize,
			WorkloadType: e.WorkloadType,
			Env:          e.EnvironmentVars,
			ArtifactURL: fmt.Sprintf("%s/api/2.0/gantry/models/%s/versions/%s/artifact",
				w.baseURL, url.PathEscape(e.EntityName), url.PathEscape(e.EntityVersion)),
			ArtifactToken: w.creds.artifactToken(id, e.EntityName, e.EntityVersion),
			WorkerSecret:  w.creds.workerSecret(id),
		}}
	}
	return out
}

func (w *world) flavorsOf(name, version string) []string {
	if w.flavors == nil {
		return nil
	}
	return w.flavors(name, version)
}

// deploymentID names the deployment of an entity. It hashes everything but
// the replica count, so a change of model, workload or environment makes a
// new deployment while a change of traffic alone keeps the running one.
//
// An external entity's hash leaves its key out (redactExternal): the ID is
// in the route table and the activators' metrics, and a hash of a short key
// would be a way to guess it. A new key alone keeps the ID; the route table
// carries the key itself.
func deploymentID(ep string, e *api.ServedEntity) string {
	spec := *e
	spec.State, spec.ScaledToZero, spec.Replicas = nil, nil, nil
	spec.ExternalModel = redactExternal(e.ExternalModel)
	b, _ := json.Marshal(spec) // map keys are sorted, so this is stable
	sum := sha256.Sum256(b)
	return ep + "-" + e.Name + "-" + hex.EncodeToString(sum[:4])
}

// entityState derives a served entity's state from its deployment's
// status and from how the driver's calls for it went.
func (w *world) entityState(e entity) (api.ServedEntityState, orchestrator.Status) {
	if e.err != nil {
		return api.ServedEntityState{Deployment: api.DeploymentFailed, DeploymentStateMessage: e.err.Error()}, orchestrator.Status{}
	}
	if isFeatureServing(e.served) {
		// Ready once its spec resolves against the published tables;
		// nothing runs but the activators' lookups.
		switch r, resolved := w.specFeatures(e.served.EntityName); {
		case !resolved:
			return api.ServedEntityState{Deployment: api.DeploymentCreating, DeploymentStateMessage: "feature spec: " + r.Error}, orchestrator.Status{}
		case r.Error != "":
			return api.ServedEntityState{Deployment: api.DeploymentFailed, DeploymentStateMessage: "feature spec: " + r.Error}, orchestrator.Status{}
		}
		return api.ServedEntityState{Deployment: api.DeploymentReady}, orchestrator.Status{}
	}
	if e.external() {
		// Ready once its config validated: a wrong key shows on the first
		// call, as the provider's 401, not as a failed deployment.
		return api.ServedEntityState{Deployment: api.DeploymentReady}, orchestrator.Status{}
	}
	st := w.status(e.d.ID)
	state := func(s, msg string) (api.ServedEntityState, orchestrator.Status) {
		return api.ServedEntityState{Deployment: s, DeploymentStateMessage: msg}, st
	}
	switch {
	case st.Ready() > 0:
		// A worker's notice (packages unlike the model's) is the one
		// place its owner sees it without the worker's log.
		return state(api.DeploymentReady, st.Notice)
	case st.Failure != "":
		return state(api.DeploymentFailed, st.Failure)
	}
	// Nothing ready: if the driver is the reason, say so.
	if msg := w.callTrouble(e.d.ID); msg != "" {
		if w.everReady[e.d.ID] {
			return state(api.DeploymentRecovering, msg)
		}
		return state(api.DeploymentCreating, msg)
	}
	switch {
	case e.d.Replicas == 0:
		return state(api.DeploymentReady, "scaled to zero; the next request wakes it")
	case w.everReady[e.d.ID]:
		return state(api.DeploymentRecovering, "no replica is ready; restarting")
	}
	return state(api.DeploymentCreating, "starting replicas")
}

// callTrouble describes a driver call for deployment id that hangs or
// failed, or returns "".
func (w *world) callTrouble(id string) string {
	c := w.calls[id]
	switch {
	case c == nil:
		return ""
	case !c.done && w.now.Sub(c.started) > w.callTimeout:
		return fmt.Sprintf("the orchestrator is not answering: %s has been waiting %s", c.op, w.now.Sub(c.started).Round(time.Second))
	case c.err != nil:
		return fmt.Sprintf("the orchestrator failed to %s this deployment: %v; retrying", c.op, c.err)
	}
	return ""
}

// running reports whether a driver call for key has not returned.
func (w *world) running(key string) bool {
	c := w.calls[key]
	return c != nil && !c.done
}

// rollout summarizes entities: all ready, or the first failure.
func (w *world) rollout(es []entity) (ready bool, failure string) {
	ready = true
	for _, e := range es {
		st, _ := w.entityState(e)
		switch st.Deployment {
		case api.DeploymentReady:
		case api.DeploymentFailed:
			return false, fmt.Sprintf("served entity %s: %s", e.served.Name, st.DeploymentStateMessage)
		default:
			ready = false
		}
	}
	return ready, ""
}

// route builds an endpoint's entry in the route table.
func (w *world) route(ep *store.Endpoint, cur []entity) api.EndpointRoute {
	r := api.EndpointRoute{Name: ep.Name, ConfigVersion: ep.Config.ConfigVersion, Entities: make([]api.EntityRoute, 0, len(cur))}
	if ep.Config.TrafficConfig != nil {
		r.Routes = ep.Config.TrafficConfig.Routes
	}
	if c := captureConfig(ep.AIGateway, &ep.Config); c != nil {
		if t, ok := payloadTable(ep.Name, c); ok {
			r.InferenceTable = t.String()
			r.LogRequestAsSent = c.LogRequestAsSent
		}
	}
	r.Fallback = ep.AIGateway != nil && ep.AIGateway.FallbackConfig != nil && ep.AIGateway.FallbackConfig.Enabled
	if ep.AIGateway != nil {
		r.RateLimits = ep.AIGateway.RateLimits
		r.Guardrails = ep.AIGateway.Guardrails
		r.Usage = ep.AIGateway.UsageTrackingConfig != nil && ep.AIGateway.UsageTrackingConfig.Enabled
	}
	for _, e := range cur {
		st, status := w.entityState(e)
		er := api.EntityRoute{
			Name: e.served.Name, Deployment: e.d.ID, State: st.Deployment,
			Message: st.DeploymentStateMessage, Failures: status.Failures,
			Concurrency: replicaConcurrency(e.served), Replicas: []api.Replica{},
			Secret: e.d.WorkerSecret,
		}
		if e.external() {
			er.Concurrency, er.External = 0, externalRoute(e.served.ExternalModel)
		} else if isFeatureServing(e.served) {
			er.Concurrency = 0
			er.Features, _ = w.specFeatures(e.served.EntityName) // unresolved: its Error refuses calls
		} else {
			if w.signature != nil {
				er.Signature = w.signature(e.served.EntityName, e.served.EntityVersion)
			}
			if w.task != nil {
				er.Task = w.task(e.served.EntityName, e.served.EntityVersion)
			}
		}
		if w.featureRoute != nil && !e.noDeployment() && e.err == nil {
			// A spec that cannot be served fails the entity here, at
			// deployment, with the reason; the activator refuses its
			// requests with the same words.
			var resolved bool
			er.Features, resolved = w.featureRoute(e.d.ModelDir, e.served.EntityName, e.served.EntityVersion, er.Signature)
			switch {
			case !resolved:
				// Its Error refuses calls until the spec is resolved.
				er.State, er.Message = api.DeploymentCreating, "feature spec: "+er.Features.Error
			case er.Features != nil && er.Features.Error != "":
				er.State, er.Message = api.DeploymentFailed, "feature spec: "+er.Features.Error
			}
		}
		for _, in := range status.Instances {
			if in.Ready {
				er.Replicas = append(er.Replicas, api.Replica{ID: in.ID, Addr: in.Addr})
			}
		}
		r.Entities = append(r.Entities, er)
	}
	return r
}

func keysOf[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// specFeatures is the route of the feature spec a feature-serving entity
// serves; Error says why it cannot be served.
func (w *world) specFeatures(name string) (r *api.FeatureRoute, resolved bool) {
	if w.specRoute == nil {
		return &api.FeatureRoute{Spec: name, Serving: true, Error: "feature serving is off: the scheduler has no online store (--online-store)"}, true
	}
	return w.specRoute(name)
}
