package scheduler

import (
	"slices"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/scheduler/orchestrator"
	"github.com/gantry/gantry/scheduler/store"
)

// allEntities lists the entities that have deployments, of every
// endpoint's serving config and of configs rolling out.
func (w *world) allEntities(eps map[string]*store.Endpoint) []entity {
	var out []entity
	for name, ep := range eps {
		out = append(out, w.entities(name, &ep.Config)...)
		if ep.Pending != nil {
			out = append(out, w.entities(name, ep.Pending)...)
		}
	}
	// External and feature-serving entities have no deployment to size
	// or scale.
	return slices.DeleteFunc(out, entity.noDeployment)
}

// endpointView renders the API view of a stored endpoint; invocationURL
// is the base of its endpoint_url.
func (w *world) endpointView(ep *store.Endpoint, invocationURL string) api.Endpoint {
	out := api.Endpoint{
		Name: ep.Name, ID: ep.ID, Creator: ep.Creator,
		CreationTimestamp: ep.Created, LastUpdatedTimestamp: ep.Updated,
		Tags: ep.Tags, PermissionLevel: api.CanManage,
		EndpointURL: invocationURL + "/serving-endpoints/" + ep.Name + "/invocations",
		State:       api.EndpointState{ConfigUpdate: ep.UpdateState, Message: ep.UpdateMessage},
	}
	if out.Tags == nil {
		out.Tags = []api.Tag{}
	}
	cfg, allReady := w.configView(ep.Name, &ep.Config)
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
		pc, _ := w.configView(ep.Name, ep.Pending)
		out.PendingConfig = &api.PendingConfig{EndpointConfig: *pc, StartTime: ep.PendingStart}
	}
	return out
}

// configView copies a config with each entity's live state filled in and
// reports whether every entity is ready.
func (w *world) configView(ep string, c *api.EndpointConfig) (*api.EndpointConfig, bool) {
	v := *c
	v.AutoCaptureConfig = withTableState(ep, c.AutoCaptureConfig)
	v.ServedEntities = make([]api.ServedEntity, len(c.ServedEntities))
	allReady := true
	for i, e := range w.entities(ep, c) {
		view := *e.served
		st, status := w.entityState(e)
		view.State = &st
		if e.noDeployment() {
			// No replicas to count, and never a key in an answer.
			view.ExternalModel = redactExternal(e.served.ExternalModel)
			v.ServedEntities[i] = view
			continue
		}
		zero := e.d.Replicas == 0
		view.ScaledToZero = &zero
		view.Replicas = &api.Replicas{Desired: e.d.Replicas, Ready: status.Ready(), Starts: replicaStarts(status.Starts)}
		v.ServedEntities[i] = view
		allReady = allReady && st.Deployment == api.DeploymentReady
	}
	return &v, allReady
}

// replicaStarts is the API's view of the replicas' cold starts.
func replicaStarts(ss []orchestrator.Start) []api.ReplicaStart {
	if len(ss) == 0 {
		return nil
	}
	ms := func(t time.Time) int64 {
		if t.IsZero() {
			return 0
		}
		return t.UnixMilli()
	}
	out := make([]api.ReplicaStart, len(ss))
	for i, s := range ss {
		v := api.ReplicaStart{ID: s.ID, RequestedMs: ms(s.Requested), StartedMs: ms(s.Started), AnsweredMs: ms(s.Answered), ReadyMs: ms(s.Ready),
			FirstRequestMs: ms(s.FirstRequest), FirstResponseMs: ms(s.FirstResponse), DownloadingMs: ms(s.Downloading)}
		switch {
		case s.FirstPhase != "" && !s.Ready.IsZero():
			v.Phase = s.FirstPhase
		case !s.Ready.IsZero():
			v.Phase = "ready"
		case !s.Answered.IsZero():
			v.Phase = orchestrator.PhaseModelLoad
		case !s.Started.IsZero():
			v.Phase = orchestrator.PhaseProcessStart
		case !s.Downloading.IsZero():
			v.Phase = orchestrator.PhaseDownload
		default:
			v.Phase = orchestrator.PhaseSchedule
		}
		out[i] = v
	}
	return out
}
