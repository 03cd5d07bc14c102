// Package scheduler is Gantry's control plane: it owns serving endpoints
// (REST API and durable store), turns their served entities into deployments
// on an orchestrator, follows the deployments' state, and publishes the route
// table that activators follow.
//
// All decisions happen in reconcile, a level-triggered pass over every
// endpoint that one goroutine runs whenever something changed (an API call, a
// driver's status) and once a second regardless. It compares what the store
// says with what the orchestrator reports, so it is correct however many
// notifications were coalesced or lost.
package scheduler

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/url"
	"reflect"
	"sort"
	"sync"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/autoscaler"
	"github.com/gantry/gantry/loggers"
	"github.com/gantry/gantry/monitors"
	"github.com/gantry/gantry/scheduler/orchestrator"
	"github.com/gantry/gantry/scheduler/registry"
	"github.com/gantry/gantry/scheduler/routes"
	"github.com/gantry/gantry/scheduler/store"
)

// Orchestrator runs deployments: local processes, Docker containers or Nomad
// jobs. Ensure and Remove must not block on the workers themselves.
type Orchestrator interface {
	Ensure(ctx context.Context, d orchestrator.Deployment) error
	Remove(ctx context.Context, id string) error
	Status(id string) orchestrator.Status
}

// Tables holds endpoints' inference tables (ClickHouse). Exec runs the
// drift monitors' writes (it makes Tables a monitors.Store).
type Tables interface {
	Ensure(ctx context.Context, t loggers.Table) error
	Query(ctx context.Context, sql string, args ...any) (*api.QueryResult, error)
	Exec(ctx context.Context, sql string, args ...any) error
}

// pruner is implemented by drivers whose deployments outlive the
// scheduler (Nomad jobs). After the first reconcile that ensured every
// wanted deployment, Prune removes the driver's deployments not in keep:
// those of endpoints deleted while the scheduler was down.
type pruner interface {
	Prune(ctx context.Context, keep []string) error
}

// logSource is implemented by drivers that keep their workers' output.
type logSource interface {
	Logs(id string) (string, bool)
}

// Config configures a Scheduler.
type Config struct {
	Store    *store.Store
	Registry *registry.Registry
	// Orchestrator runs the deployments; required.
	Orchestrator Orchestrator
	Routes       *routes.Table
	// BaseURL is how clients and workers reach this control plane, e.g.
	// http://127.0.0.1:8080; it makes endpoint_url and artifact URLs.
	BaseURL string
	// InvocationURL is the base of endpoint_url; default BaseURL.
	InvocationURL string
	// Resync is the period of the safety-net reconcile. Default 1 s.
	Resync time.Duration
	// Tables creates and queries inference tables; nil turns them off,
	// and TablesOff says why (users see it when they enable capture).
	Tables    Tables
	TablesOff string
	// Monitors runs drift monitors on demand (POST …/monitors/{name}/run);
	// default: one over Tables. Share it with the logger's monitors.Runner
	// in one process, so that a monitor has one refresh at a time.
	Monitors *monitors.Refresher
	// Now is the clock; default time.Now.
	Now    func() time.Time
	Logger *slog.Logger

	// Limits on what callers can grow (limits.go); zero means the default.
	// MaxEndpoints bounds the number of endpoints (default 100);
	// MaxProvisionedConcurrency bounds a served entity's concurrency, so
	// its replicas (default 200, Databricks' default per model).
	MaxEndpoints              int
	MaxProvisionedConcurrency int
	// WebhookAllow names the private addresses monitor webhooks may
	// reach; nil allows public addresses only.
	WebhookAllow *monitors.WebhookAllow
}

// Scheduler serves the endpoints API and reconciles endpoints with the
// orchestrator.
type Scheduler struct {
	cfg  Config
	kick chan struct{}

	// mu guards eps, applied, everReady, published and pruned, and
	// serializes reconcile with API writes.
	mu  sync.Mutex
	eps map[string]*store.Endpoint
	// applied is what was last handed to the orchestrator, by deployment ID.
	applied map[string]orchestrator.Deployment
	// everReady marks deployments that had a ready replica once, which
	// tells DEPLOYMENT_RECOVERING from DEPLOYMENT_CREATING.
	everReady map[string]bool
	// scale is the autoscaler's replica count by deployment ID; a
	// deployment it has not sized yet runs initialReplicas.
	scale     map[string]int
	published []api.EndpointRoute
	// pruned is set once the orchestrator was pruned (see pruner).
	pruned bool
}

// New loads the stored endpoints and returns a scheduler. Call Run to start
// reconciling.
func New(cfg Config) (*Scheduler, error) {
	if cfg.Resync <= 0 {
		cfg.Resync = time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.InvocationURL == "" {
		cfg.InvocationURL = cfg.BaseURL
	}
	if cfg.Monitors == nil && cfg.Tables != nil {
		cfg.Monitors = monitors.NewRefresher(cfg.Tables, &monitors.Alerter{Logger: cfg.Logger})
	}
	all, err := cfg.Store.List()
	if err != nil {
		return nil, err
	}
	s := &Scheduler{
		cfg:       cfg,
		kick:      make(chan struct{}, 1),
		eps:       make(map[string]*store.Endpoint, len(all)),
		applied:   make(map[string]orchestrator.Deployment),
		everReady: make(map[string]bool),
		scale:     make(map[string]int),
	}
	for _, e := range all {
		s.eps[e.Name] = e
	}
	return s, nil
}

// Notify asks for a reconcile soon. Drivers call it when a deployment's
// status changes; it never blocks.
func (s *Scheduler) Notify(string) {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Run reconciles until ctx ends.
func (s *Scheduler) Run(ctx context.Context) error {
	t := time.NewTicker(s.cfg.Resync)
	defer t.Stop()
	for {
		s.reconcile(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-s.kick:
		case <-t.C:
		}
	}
}

// entityDeployment pairs a served entity with the deployment that runs it.
type entityDeployment struct {
	entity *api.ServedEntity
	spec   orchestrator.Deployment
	// err is set when the entity cannot be deployed (its model is gone).
	err error
}

// deployments maps a config's served entities to deployments.
func (s *Scheduler) deployments(ep string, c *api.EndpointConfig) []entityDeployment {
	out := make([]entityDeployment, len(c.ServedEntities))
	for i := range c.ServedEntities {
		e := &c.ServedEntities[i]
		id := deploymentID(ep, e)
		n, ok := s.scale[id]
		if !ok {
			n = initialReplicas(e)
		}
		d := orchestrator.Deployment{
			ID:           id,
			Endpoint:     ep,
			Entity:       e.Name,
			ModelName:    e.EntityName,
			ModelVersion: e.EntityVersion,
			Replicas:     n,
			WorkloadSize: e.WorkloadSize,
			WorkloadType: e.WorkloadType,
			Env:          e.EnvironmentVars,
			ArtifactURL: fmt.Sprintf("%s/api/2.0/gantry/models/%s/versions/%s/artifact",
				s.cfg.BaseURL, url.PathEscape(e.EntityName), url.PathEscape(e.EntityVersion)),
		}
		dir, err := s.cfg.Registry.ModelDir(e.EntityName, e.EntityVersion)
		d.ModelDir = dir
		out[i] = entityDeployment{entity: e, spec: d, err: err}
	}
	return out
}

// deploymentID names the deployment of an entity. It hashes everything but
// the replica count, so a change of model, workload or environment makes a
// new deployment while a change of traffic alone keeps the running one.
func deploymentID(ep string, e *api.ServedEntity) string {
	spec := *e
	spec.State, spec.ScaledToZero, spec.Replicas = nil, nil, nil
	b, _ := json.Marshal(spec) // map keys are sorted, so this is stable
	sum := sha256.Sum256(b)
	return ep + "-" + e.Name + "-" + hex.EncodeToString(sum[:4])
}

// entityState derives a served entity's state from its deployment's status.
// s.mu must be held.
func (s *Scheduler) entityState(d entityDeployment) (api.ServedEntityState, orchestrator.Status) {
	if d.err != nil {
		return api.ServedEntityState{Deployment: api.DeploymentFailed, DeploymentStateMessage: d.err.Error()}, orchestrator.Status{}
	}
	st := s.cfg.Orchestrator.Status(d.spec.ID)
	switch {
	case st.Ready() > 0:
		s.everReady[d.spec.ID] = true
		return api.ServedEntityState{Deployment: api.DeploymentReady}, st
	case st.Failure != "":
		return api.ServedEntityState{Deployment: api.DeploymentFailed, DeploymentStateMessage: st.Failure}, st
	case d.spec.Replicas == 0:
		return api.ServedEntityState{Deployment: api.DeploymentReady, DeploymentStateMessage: "scaled to zero; the next request wakes it"}, st
	case s.everReady[d.spec.ID]:
		return api.ServedEntityState{Deployment: api.DeploymentRecovering, DeploymentStateMessage: "no replica is ready; restarting"}, st
	}
	return api.ServedEntityState{Deployment: api.DeploymentCreating, DeploymentStateMessage: "starting replicas"}, st
}

// rollout summarizes deployments: all ready, or the first failure.
// s.mu must be held.
func (s *Scheduler) rollout(ds []entityDeployment) (ready bool, failure string) {
	ready = true
	for _, d := range ds {
		st, _ := s.entityState(d)
		switch st.Deployment {
		case api.DeploymentReady:
		case api.DeploymentFailed:
			return false, fmt.Sprintf("served entity %s: %s", d.entity.Name, st.DeploymentStateMessage)
		default:
			ready = false
		}
	}
	return ready, ""
}

// reconcile moves every endpoint one step towards its desired state, hands
// the deployments to the orchestrator and publishes the route table.
func (s *Scheduler) reconcile(ctx context.Context) {
	s.mu.Lock()
	defer s.mu.Unlock()
	names := make([]string, 0, len(s.eps))
	for n := range s.eps {
		names = append(names, n)
	}
	sort.Strings(names)

	want := map[string]orchestrator.Deployment{}
	table := make([]api.EndpointRoute, 0, len(names))
	for _, name := range names {
		ep := s.eps[name]
		cur := s.deployments(name, &ep.Config)
		if s.step(ep, &cur, want) {
			ep.Updated = s.cfg.Now().UnixMilli()
			if err := s.cfg.Store.Put(ep); err != nil {
				s.cfg.Logger.Error("persist endpoint", "endpoint", name, "err", err)
			}
		}
		for _, d := range cur {
			if d.err == nil {
				want[d.spec.ID] = d.spec
			}
		}
		table = append(table, s.route(ep, cur))
	}

	// Publish before removing, so activators stop sending to replicas that
	// are about to stop.
	if !reflect.DeepEqual(table, s.published) {
		s.cfg.Routes.Publish(table)
		s.published = table
	}
	for id, d := range want {
		if prev, ok := s.applied[id]; ok && prev.Replicas == d.Replicas {
			continue
		}
		if err := s.cfg.Orchestrator.Ensure(ctx, d); err != nil {
			s.cfg.Logger.Error("ensure deployment", "deployment", id, "err", err)
			continue
		}
		s.applied[id] = d
	}
	for id := range s.applied {
		if _, ok := want[id]; ok {
			continue
		}
		if err := s.cfg.Orchestrator.Remove(ctx, id); err != nil {
			s.cfg.Logger.Error("remove deployment", "deployment", id, "err", err)
			continue
		}
		delete(s.applied, id)
		delete(s.everReady, id)
		delete(s.scale, id)
	}
	s.prune(ctx, want)
}

// prune runs the orchestrator's Prune once, after the first reconcile in
// which every wanted deployment was ensured. It keeps the deployment of
// every served entity of every stored config, pending or not, even one
// that cannot run now (its model is gone). s.mu must be held.
func (s *Scheduler) prune(ctx context.Context, want map[string]orchestrator.Deployment) {
	p, ok := s.cfg.Orchestrator.(pruner)
	if s.pruned || !ok {
		return
	}
	for id := range want {
		if _, ok := s.applied[id]; !ok {
			return // not a full reconcile yet
		}
	}
	var keep []string
	for name, ep := range s.eps {
		for _, c := range []*api.EndpointConfig{&ep.Config, ep.Pending} {
			if c == nil {
				continue
			}
			for i := range c.ServedEntities {
				keep = append(keep, deploymentID(name, &c.ServedEntities[i]))
			}
		}
	}
	if err := p.Prune(ctx, keep); err != nil {
		s.cfg.Logger.Error("prune orphaned deployments", "err", err)
		return
	}
	s.pruned = true
}

// step advances an endpoint's config rollout and reports whether the stored
// record changed. It may replace *cur (when a pending config takes over) and
// adds the pending config's deployments to want while it rolls out.
// s.mu must be held.
func (s *Scheduler) step(ep *store.Endpoint, cur *[]entityDeployment, want map[string]orchestrator.Deployment) bool {
	if ep.Pending == nil {
		// Only the first config is rolling out (or failed to): settle its state.
		if ep.DroppedUpdate || (ep.UpdateState != api.ConfigInProgress && ep.UpdateState != api.ConfigUpdateFailed) {
			return false
		}
		ready, failure := s.rollout(*cur)
		switch {
		case ready:
			ep.UpdateState, ep.UpdateMessage = api.ConfigNotUpdating, ""
			return true
		case failure != "" && ep.UpdateMessage != failure:
			ep.UpdateState, ep.UpdateMessage = api.ConfigUpdateFailed, failure
			return true
		}
		return false
	}
	pend := s.deployments(ep.Name, ep.Pending)
	ready, failure := s.rollout(pend)
	switch {
	case ready:
		next := *ep.Pending
		next.ConfigVersion = ep.Config.ConfigVersion + 1
		ep.Config, ep.Pending, ep.PendingStart = next, nil, 0
		ep.UpdateState, ep.UpdateMessage = api.ConfigNotUpdating, ""
		*cur = s.deployments(ep.Name, &ep.Config)
		return true
	case failure != "":
		// The old config keeps serving; the new deployments go away.
		ep.Pending, ep.PendingStart = nil, 0
		ep.UpdateState, ep.UpdateMessage, ep.DroppedUpdate = api.ConfigUpdateFailed, failure, true
		return true
	}
	for _, d := range pend {
		want[d.spec.ID] = d.spec
	}
	return false
}

// Targets lists the deployments the autoscaler sizes: those of every
// endpoint's serving config and of configs rolling out.
func (s *Scheduler) Targets() []autoscaler.Target {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []autoscaler.Target
	add := func(ep string, c *api.EndpointConfig) {
		for _, d := range s.deployments(ep, c) {
			if d.err != nil {
				continue
			}
			st := s.cfg.Orchestrator.Status(d.spec.ID)
			t := autoscaler.Target{Deployment: d.spec.ID, Current: d.spec.Replicas, Ready: st.Ready(),
				TargetPerReplica: float64(replicaConcurrency(d.entity))}
			t.Min, t.Max = replicaBounds(d.entity)
			if st.Failure == "" {
				// A failing replica is no capacity on the way: it must not
				// hold the deployment up when idle.
				t.Starting = max(0, d.spec.Replicas-t.Ready)
			}
			out = append(out, t)
		}
	}
	for name, ep := range s.eps {
		add(name, &ep.Config)
		if ep.Pending != nil {
			add(name, ep.Pending)
		}
	}
	return out
}

// Scale sets a deployment's replica count, within its entity's bounds.
func (s *Scheduler) Scale(deployment string, replicas int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, ep := range s.eps {
		for _, c := range []*api.EndpointConfig{&ep.Config, ep.Pending} {
			if c == nil {
				continue
			}
			for i := range c.ServedEntities {
				e := &c.ServedEntities[i]
				if deploymentID(name, e) != deployment {
					continue
				}
				lo, hi := replicaBounds(e)
				s.scale[deployment] = min(max(replicas, lo), hi)
				s.Notify(deployment)
				return nil
			}
		}
	}
	return api.Errorf(api.ErrResourceDoesNotExist, "deployment %q does not exist", deployment)
}

// route builds an endpoint's entry in the route table. s.mu must be held.
func (s *Scheduler) route(ep *store.Endpoint, cur []entityDeployment) api.EndpointRoute {
	r := api.EndpointRoute{Name: ep.Name, ConfigVersion: ep.Config.ConfigVersion, Entities: make([]api.EntityRoute, 0, len(cur))}
	if ep.Config.TrafficConfig != nil {
		r.Routes = ep.Config.TrafficConfig.Routes
	}
	if t, ok := payloadTable(ep.Name, captureConfig(ep.AIGateway, &ep.Config)); ok {
		r.InferenceTable = t.String()
	}
	for _, d := range cur {
		st, status := s.entityState(d)
		er := api.EntityRoute{
			Name: d.entity.Name, Deployment: d.spec.ID, State: st.Deployment,
			Message: st.DeploymentStateMessage, Failures: status.Failures,
			Concurrency: replicaConcurrency(d.entity), Replicas: []api.Replica{},
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

// endpoint renders the API view of a stored endpoint. s.mu must be held.
func (s *Scheduler) endpoint(ep *store.Endpoint) api.Endpoint {
	out := api.Endpoint{
		Name: ep.Name, ID: ep.ID, Creator: ep.Creator,
		CreationTimestamp: ep.Created, LastUpdatedTimestamp: ep.Updated,
		Tags: ep.Tags, PermissionLevel: api.CanManage,
		EndpointURL: s.cfg.InvocationURL + "/serving-endpoints/" + ep.Name + "/invocations",
		State:       api.EndpointState{ConfigUpdate: ep.UpdateState, Message: ep.UpdateMessage},
	}
	if out.Tags == nil {
		out.Tags = []api.Tag{}
	}
	cfg, allReady := s.configView(ep.Name, &ep.Config)
	if gw := ep.AIGateway; gw != nil {
		v := *gw
		v.InferenceTableConfig = withTableState(ep.Name, gw.InferenceTableConfig)
		out.AIGateway = &v
	}
	out.Config = cfg
	out.State.Ready = api.EndpointNotReady
	if allReady {
		out.State.Ready = api.EndpointReady
	}
	if ep.Pending != nil {
		pc, _ := s.configView(ep.Name, ep.Pending)
		out.PendingConfig = &api.PendingConfig{EndpointConfig: *pc, StartTime: ep.PendingStart}
	}
	return out
}

// configView copies a config with each entity's live state filled in and
// reports whether every entity is ready. s.mu must be held.
func (s *Scheduler) configView(ep string, c *api.EndpointConfig) (*api.EndpointConfig, bool) {
	v := *c
	v.AutoCaptureConfig = withTableState(ep, c.AutoCaptureConfig)
	v.ServedEntities = make([]api.ServedEntity, len(c.ServedEntities))
	allReady := true
	for i, d := range s.deployments(ep, c) {
		e := *d.entity
		st, status := s.entityState(d)
		e.State = &st
		zero := d.spec.Replicas == 0
		e.ScaledToZero = &zero
		e.Replicas = &api.Replicas{Desired: d.spec.Replicas, Ready: status.Ready()}
		v.ServedEntities[i] = e
		allReady = allReady && st.Deployment == api.DeploymentReady
	}
	return &v, allReady
}

// captureConfig is the capture config in force: the endpoint config's
// auto_capture_config, or else the AI gateway's inference_table_config;
// nil when neither is enabled.
func captureConfig(gw *api.AIGateway, c *api.EndpointConfig) *api.AutoCaptureConfig {
	switch {
	case loggers.Enabled(c.AutoCaptureConfig):
		return c.AutoCaptureConfig
	case gw != nil && loggers.Enabled(gw.InferenceTableConfig):
		return gw.InferenceTableConfig
	}
	return nil
}

// payloadTable names the inference table of capture config c, if it
// captures. Stored configs were checked, so the name is valid.
func payloadTable(ep string, c *api.AutoCaptureConfig) (loggers.Table, bool) {
	if !loggers.Enabled(c) {
		return loggers.Table{}, false
	}
	t, err := loggers.PayloadTable(ep, "", c)
	return t, err == nil
}

// withTableState is a copy of c with its table named in State, for views.
func withTableState(ep string, c *api.AutoCaptureConfig) *api.AutoCaptureConfig {
	t, ok := payloadTable(ep, c)
	if !ok {
		return c
	}
	v := *c
	v.State = &api.AutoCaptureState{PayloadTable: api.PayloadTable{Name: t.String()}}
	return &v
}

func newID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}
