package scheduler

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"slices"
	"sort"
	"strconv"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/console"
	"github.com/gantry/gantry/guardrail"
	"github.com/gantry/gantry/identity"
	"github.com/gantry/gantry/internal/apierr"
	"github.com/gantry/gantry/internal/jsonbody"
	"github.com/gantry/gantry/loggers"
	"github.com/gantry/gantry/ratelimit"
	"github.com/gantry/gantry/scheduler/store"
)

// maxConfigBody bounds control-plane JSON bodies; configs are small.
const maxConfigBody = 1 << 20

// maxBlockingWait caps the ?wait= of a blocking query.
const maxBlockingWait = 5 * time.Minute

// Handler serves the control-plane API of API.md. With Config.Auth set,
// every route needs a bearer token and its rule (apiRoutes), and the
// identity APIs (SCIM, tokens, permissions) are served too.
func (s *Scheduler) Handler() http.Handler {
	mux := http.NewServeMux()
	for _, rt := range s.apiRoutes() {
		mux.Handle(rt.pattern, s.guard(rt))
	}
	if s.cfg.Auth != nil {
		ih := s.cfg.Auth.Handler(authObjects{s})
		for _, p := range identity.Patterns() {
			mux.Handle(p, s.authenticate(s.audited(p, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if err := confined(identity.CallerFrom(r.Context()), r, anyCaller); err != nil {
					writeError(w, err)
					return
				}
				ih.ServeHTTP(w, r)
			}))))
		}
	}
	// Unknown paths answer 404, and a wrong method 405 with Allow, without
	// a token: which paths exist is public (API.md), and clients learn of a
	// wrong path before a token.
	return apierr.Unrouted(mux)
}

// apiRoutes is every control-plane route with who may call it (auth.go).
// Levels follow API.md and PEERS.md: CAN_VIEW gets, lists, reads logs
// and deployment specs; CAN_MANAGE changes and deletes, and reads the
// inference table (its rows are callers' payloads), directly or through
// monitors. The route table and the deployments are the components' view
// of every endpoint: admins and the components' service principals only.
func (s *Scheduler) apiRoutes() []apiRoute {
	d := &deploymentsAPI{s: s}
	return []apiRoute{
		{"POST /api/2.0/serving-endpoints", anyCaller, s.create},      // + CAN_READ on its models
		{"POST /api/2.0/serving-endpoints/pt", anyCaller, s.createPt}, // the same, every entity in provisioned_model_units
		{"GET /api/2.0/serving-endpoints", anyCaller, s.list},         // what the caller may view
		{"GET /api/2.0/serving-endpoints/{name}", onEndpoint(identity.CanView), s.get},
		{"DELETE /api/2.0/serving-endpoints/{name}", onEndpoint(identity.CanManage), s.delete},
		{"PUT /api/2.0/serving-endpoints/{name}/config", onEndpoint(identity.CanManage), s.updateConfig},
		{"PUT /api/2.0/serving-endpoints/pt/{name}/config", onEndpoint(identity.CanManage), s.updatePtConfig},
		{"PATCH /api/2.0/serving-endpoints/{name}/tags", onEndpoint(identity.CanManage), s.patchTags},
		{"PUT /api/2.0/serving-endpoints/{name}/ai-gateway", onEndpoint(identity.CanManage), s.putAIGateway},
		{"GET /api/2.0/serving-endpoints/{name}/served-models/{served}/logs", onEndpoint(identity.CanView), s.logs},
		{"GET /api/2.0/serving-endpoints/{name}/served-models/{served}/build-logs", onEndpoint(identity.CanView), s.buildLogs},
		{"GET /api/2.0/serving-endpoints/{name}/metrics", onEndpoint(identity.CanView), s.endpointMetrics},
		{"GET /.well-known/databricks-config", public, hostMetadata},              // SDKs ask before they authenticate
		{"GET /api/2.0/gantry/models", anyCaller, s.listModels},                   // what the caller may read
		{"POST /api/2.0/gantry/models/{name}/versions", anyCaller, s.uploadModel}, // a new model, or CAN_MANAGE
		{"GET /api/2.0/gantry/models/{name}/versions/{version}", onModel(identity.CanRead), s.getModel},
		{"GET /api/2.0/serving-endpoints/get-model-optimization-info/{name}/{version}", onModel(identity.CanRead), s.optimizationInfo},
		{"DELETE /api/2.0/gantry/models/{name}/versions/{version}", onModel(identity.CanManage), s.deleteModel}, // 409 while served
		{"GET /api/2.0/gantry/models/{name}/versions/{version}/artifact", artifactRule, s.modelArtifact},        // or an artifact token
		{"GET /api/2.0/gantry/routes", components, s.routes},
		{"GET /api/2.0/gantry/access", components, s.access},
		{"GET /api/2.0/gantry/external-keys", components, s.externalKeys},
		{"POST /api/2.0/gantry/rate-limits/reserve", components, s.reserveRate},
		{"POST /api/2.0/gantry/rate-limits/refund", components, s.refundRate},
		{"GET /api/2.0/gantry/usage", adminOnly, s.usage},
		{"GET /api/2.0/gantry/serving-endpoints/{name}/deployments", onEndpoint(identity.CanView), s.listDeploymentSpecs},
		{"POST /api/2.0/gantry/tables/query", anyCaller, s.queryTable}, // + CAN_MANAGE on the body's endpoint
		{"GET /api/2.0/gantry/deployments", components, d.list},
		{"POST /api/2.0/gantry/deployments/{id}/scale", components, d.scale},
		{"POST /api/2.0/gantry/monitors", anyCaller, s.createMonitor},           // + CAN_MANAGE on the body's endpoint
		{"GET /api/2.0/gantry/monitors", rule{component: true}, s.listMonitors}, // those of endpoints the caller may view; all for the components (loggers run them)
		{"GET /api/2.0/gantry/monitors/{name}", onMonitor(identity.CanView), s.getMonitor},
		{"DELETE /api/2.0/gantry/monitors/{name}", onMonitor(identity.CanManage), s.deleteMonitor},
		{"POST /api/2.0/gantry/monitors/{name}/run", onMonitor(identity.CanManage), s.runMonitor},
		{"GET /api/2.0/gantry/monitors/{name}/report", onMonitor(identity.CanManage), s.reportMonitor},
		// Secrets: scope, key and permission travel in the body or query.
		{"POST /api/2.0/secrets/scopes/create", anyCaller, s.createScope}, // the creator gets MANAGE
		{"GET /api/2.0/secrets/scopes/list", anyCaller, s.listScopes},     // the scopes the caller holds a grant on
		{"POST /api/2.0/secrets/scopes/delete", anyCaller, s.deleteScope}, // + MANAGE on the scope
		{"POST /api/2.0/secrets/put", anyCaller, s.putSecret},             // + WRITE
		{"GET /api/2.0/secrets/list", anyCaller, s.listSecrets},           // + READ
		{"POST /api/2.0/secrets/delete", anyCaller, s.deleteSecret},       // + WRITE
		{"POST /api/2.0/secrets/acls/put", anyCaller, s.putSecretACL},     // + MANAGE
		{"POST /api/2.0/secrets/acls/delete", anyCaller, s.deleteSecretACL},
		{"GET /api/2.0/secrets/acls/list", anyCaller, s.listSecretACLs},
		{"GET /api/2.0/secrets/acls/get", anyCaller, s.getSecretACL},
		// Feature serving (issue 17): tables are shared data, so
		// publishing and specs are an admin's; any caller may read them.
		{"POST /api/2.0/feature-store/tables/{source}/publish", adminOnly, s.publishTable},
		{"GET /api/2.0/feature-store/tables", anyCaller, s.listTables},
		{"GET /api/2.0/feature-store/tables/{source}", anyCaller, s.getTable},
		{"POST /api/2.0/gantry/feature-specs", adminOnly, s.createSpec},
		{"GET /api/2.0/gantry/feature-specs", anyCaller, s.listSpecs},
		{"GET /api/2.0/gantry/feature-specs/{name}", anyCaller, s.getSpec},
		{"DELETE /api/2.0/gantry/feature-specs/{name}", adminOnly, s.deleteSpec},
		// A spec attached to a model version is the model's, as a
		// feature_spec.yaml in its directory would be.
		{"PUT /api/2.0/gantry/models/{name}/versions/{version}/feature-spec", onModel(identity.CanManage), s.attachSpec},
		{"DELETE /api/2.0/gantry/models/{name}/versions/{version}/feature-spec", onModel(identity.CanManage), s.detachSpec},
		// The web console's static files: public, as a login page is; the
		// API calls the console makes carry its user's token.
		{"GET /{$}", public, console.Index},
		{"GET /assets/{file}", public, console.Asset(http.HandlerFunc(notFound))},
	}
}

// notFound answers a path Gantry does not serve in API.md's error shape.
func notFound(w http.ResponseWriter, r *http.Request) {
	writeError(w, api.Errorf(api.ErrResourceDoesNotExist, "no API at %s %s", r.Method, r.URL.Path))
}

func (s *Scheduler) create(w http.ResponseWriter, r *http.Request) { s.createEndpoint(w, r, false) }

// createPt is POST /api/2.0/serving-endpoints/pt, Databricks' create of a
// provisioned-throughput endpoint: the create's body and answer, with
// provisioned_model_units required of every served entity.
func (s *Scheduler) createPt(w http.ResponseWriter, r *http.Request) { s.createEndpoint(w, r, true) }

// requireUnits refuses a config of the /pt routes with a served entity
// that is not sized in provisioned_model_units.
func requireUnits(c *api.EndpointConfig) error {
	if c == nil {
		return nil // normalizeConfig says config is required
	}
	for i, e := range c.ServedEntities {
		if e.ProvisionedModelUnits == nil {
			name := e.Name
			switch {
			case name == "" && e.ExternalModel != nil:
				name = e.ExternalModel.Name
			case name == "":
				name = e.EntityName
			}
			return invalid("config.served_entities[%d].provisioned_model_units: required for served entity %q on the provisioned-throughput routes (/api/2.0/serving-endpoints/pt); size other entities with POST /api/2.0/serving-endpoints", i, name)
		}
	}
	return nil
}

func (s *Scheduler) createEndpoint(w http.ResponseWriter, r *http.Request, pt bool) {
	var req api.CreateEndpointRequest
	if err := decode(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	if err := validateName(req.Name); err != nil {
		writeError(w, err)
		return
	}
	if err := checkTags(req.Tags); err != nil {
		writeError(w, err)
		return
	}
	if pt {
		if err := requireUnits(req.Config); err != nil {
			writeError(w, err)
			return
		}
	}
	// Limits first, so that a refused endpoint creates no table.
	if err := normalizeConfig(req.Config); err != nil {
		writeError(w, err)
		return
	}
	if err := s.checkCeiling(req.Config); err != nil {
		writeError(w, err)
		return
	}
	if err := s.needModels(r, req.Config); err != nil {
		writeError(w, err)
		return
	}
	auditTarget(r, "serving-endpoint "+req.Name)
	if err := s.checkSecretRefs(r, req.Config, ""); err != nil {
		writeError(w, err)
		return
	}
	s.mu.Lock()
	err := s.checkEndpointCount()
	if err == nil {
		err = s.checkTableFree(req.Name, "config.auto_capture_config", req.Config.AutoCaptureConfig)
	}
	s.mu.Unlock()
	if err != nil {
		writeError(w, err)
		return
	}
	if err := s.checkConfig(r.Context(), req.Name, req.Config); err != nil {
		writeError(w, err)
		return
	}
	now := s.cfg.Now().UnixMilli()
	ep := &store.Endpoint{
		Name: req.Name, ID: newID(), Creator: requester(r), Created: now, Updated: now,
		Tags: req.Tags, Config: *req.Config, UpdateState: api.ConfigInProgress,
	}
	ep.Config.ConfigVersion = 1

	s.mu.Lock()
	if _, ok := s.eps[req.Name]; ok {
		s.mu.Unlock()
		writeError(w, api.Errorf(api.ErrResourceAlreadyExists, "endpoint %q already exists", req.Name))
		return
	}
	// Again under the lock that the write holds: concurrent creates.
	err = s.checkEndpointCount()
	if err == nil {
		err = s.checkTableFree(req.Name, "config.auto_capture_config", ep.Config.AutoCaptureConfig)
	}
	if err != nil {
		s.mu.Unlock()
		writeError(w, err)
		return
	}
	if err := s.cfg.Store.Put(ep); err != nil {
		s.mu.Unlock()
		writeError(w, err)
		return
	}
	s.eps[req.Name] = ep
	view := s.endpoint(ep) // the creator manages it
	s.mu.Unlock()
	// The creator's CAN_MANAGE is claimed once the endpoint exists, so
	// that the access snapshot the claim wakes (activators) has its name;
	// until then only admins see it, and its creator is still waiting
	// for this answer.
	if s.cfg.Auth != nil {
		if _, err := s.cfg.Auth.Claim(identity.Object{Type: identity.Endpoints, ID: ep.ID}, s.caller(r)); err != nil {
			s.dropNew(ep)
			writeError(w, err)
			return
		}
	}
	s.Notify(req.Name)
	writeJSON(w, http.StatusOK, view)
}

// checkConfig validates endpoint ep's config, makes sure its models exist,
// and creates its inference table.
func (s *Scheduler) checkConfig(ctx context.Context, ep string, c *api.EndpointConfig) error {
	if err := normalizeConfig(c); err != nil {
		return err
	}
	if c.AutoCaptureConfig != nil {
		c.AutoCaptureConfig.State = nil // read-only
	}
	tasks := make([]string, len(c.ServedEntities)) // served LLM entities'
	for i, e := range c.ServedEntities {
		if isExternal(&e) {
			continue
		}
		if isFeatureServing(&e) {
			if err := s.checkSpecEntity(ctx, i, e.EntityName); err != nil {
				return err
			}
			if throughputBounded(&e) {
				return invalid("config.served_entities[%d].%s: feature spec %s does not generate tokens; feature serving runs no replicas to provision", i, throughputField(&e), e.EntityName)
			}
			continue
		}
		mv, err := s.cfg.Registry.Get(e.EntityName, e.EntityVersion)
		if err != nil {
			var ae *api.Error
			if errors.As(err, &ae) {
				return api.Errorf(ae.Code, "config.served_entities[%d]: %s; upload it with `gantry models upload %s DIR`", i, ae.Message, e.EntityName)
			}
			return err
		}
		if err := checkThroughput(i, &c.ServedEntities[i], mv); err != nil {
			return err
		}
		tasks[i] = mv.Task
	}
	if err := llmTasksDiffer(c, func(i int) string { return tasks[i] }); err != nil {
		return err
	}
	if loggers.Enabled(c.AutoCaptureConfig) {
		return s.ensureTable(ctx, ep, "config.auto_capture_config", c.AutoCaptureConfig)
	}
	return nil
}

// ensureTable creates the inference table that c names, so that users can
// query it as soon as the endpoint exists (the logger would create it with
// the first rows otherwise).
// field is c's path in the request, for error messages.
func (s *Scheduler) ensureTable(ctx context.Context, ep, field string, c *api.AutoCaptureConfig) error {
	t, err := loggers.PayloadTable(ep, field, c)
	if err != nil {
		return err
	}
	if s.cfg.Tables == nil {
		return invalid("%s: inference tables are off in this Gantry: %s", field, s.cfg.TablesOff)
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.TablesTimeout)
	defer cancel()
	if err := s.cfg.Tables.Ensure(ctx, t); err != nil {
		return api.Errorf(api.ErrTemporarilyUnavailable, "%s: create inference table %s: %v", field, t, err)
	}
	return nil
}

// errTwoTables refuses a second way to turn on the inference table.
var errTwoTables = invalid("auto_capture_config and ai_gateway.inference_table_config cannot both be enabled; disable one of them")

// putAIGateway sets an endpoint's AI gateway config. Its inference table
// is created before the config is stored, as for auto_capture_config.
func (s *Scheduler) putAIGateway(w http.ResponseWriter, r *http.Request) {
	var gw api.AIGateway
	if err := decode(w, r, &gw); err != nil {
		writeError(w, err)
		return
	}
	if msg := ratelimit.Validate(gw.RateLimits); msg != "" {
		writeError(w, invalid("%s", msg))
		return
	}
	if msg := guardrail.Validate(gw.Guardrails); msg != "" {
		writeError(w, invalid("%s", msg))
		return
	}
	name := r.PathValue("name")
	var read [2]*api.EndpointConfig // the config and the pending one, as their tasks were read
	var tasks [2]map[string]string
	if gw.Guardrails != nil {
		// The entities' tasks are read from the registry before the
		// lock, for the config that serves and the one rolling out.
		s.mu.Lock()
		cur, err := s.lookup(name)
		if err == nil {
			read[0] = &api.EndpointConfig{ServedEntities: slices.Clone(cur.Config.ServedEntities)}
			if cur.Pending != nil {
				read[1] = &api.EndpointConfig{ServedEntities: slices.Clone(cur.Pending.ServedEntities)}
			}
		}
		s.mu.Unlock()
		if err != nil {
			writeError(w, err)
			return
		}
		tasks = [2]map[string]string{s.entityTasks(read[0]), s.entityTasks(read[1])}
	}
	s.mu.Lock()
	cur, err := s.lookup(name)
	if err == nil && gw.Guardrails != nil {
		err = guardrailsProblem(name, cur, read, tasks, gw.Guardrails)
	}
	if err == nil {
		err = s.checkTableFree(name, "inference_table_config", gw.InferenceTableConfig)
	}
	s.mu.Unlock()
	if err != nil { // before creating a table for it
		writeError(w, err)
		return
	}
	if u := gw.UsageTrackingConfig; u != nil && u.Enabled {
		if err := s.ensureUsage(r.Context()); err != nil {
			writeError(w, err)
			return
		}
	}
	if c := gw.InferenceTableConfig; c != nil {
		c.State = nil // read-only
		if loggers.Enabled(c) {
			if err := s.ensureTable(r.Context(), name, "inference_table_config", c); err != nil {
				writeError(w, err)
				return
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ep, err := s.lookup(name)
	if err != nil {
		writeError(w, err)
		return
	}
	if loggers.Enabled(gw.InferenceTableConfig) && loggers.Enabled(ep.Config.AutoCaptureConfig) {
		writeError(w, errTwoTables)
		return
	}
	next := *ep
	next.AIGateway = &gw
	next.Updated = s.cfg.Now().UnixMilli()
	if err := s.cfg.Store.Put(&next); err != nil {
		writeError(w, err)
		return
	}
	*ep = next
	s.Notify(ep.Name)
	writeJSON(w, http.StatusOK, s.endpoint(ep).AIGateway)
}

// list answers the endpoints the caller may view; a blocking query with
// ?index= (watch.go).
func (s *Scheduler) list(w http.ResponseWriter, r *http.Request) {
	s.blocking(w, r, func(r *http.Request) (any, error) {
		s.mu.Lock()
		out := api.ListEndpointsResponse{Endpoints: make([]api.Endpoint, 0, len(s.eps))}
		for _, ep := range s.eps {
			l := s.endpointLevel(r, ep.ID)
			if !l.AtLeast(identity.CanView) {
				continue
			}
			v := s.endpoint(ep)
			v.PermissionLevel = string(l)
			out.Endpoints = append(out.Endpoints, v)
		}
		s.mu.Unlock()
		sort.Slice(out.Endpoints, func(i, j int) bool { return out.Endpoints[i].Name < out.Endpoints[j].Name })
		return out, nil
	})
}

// get answers one endpoint; a blocking query with ?index= (watch.go).
// The guard checked CAN_VIEW before the first answer; needEndpoint checks
// it again before each, as a wait may outlast the grant.
func (s *Scheduler) get(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	s.blocking(w, r, func(r *http.Request) (any, error) {
		if _, err := s.needEndpoint(r, name, identity.CanView); err != nil {
			return nil, err
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		ep, err := s.lookup(name)
		if err != nil {
			return nil, err
		}
		v := s.endpoint(ep)
		v.PermissionLevel = string(s.endpointLevel(r, ep.ID))
		return v, nil
	})
}

// lookup finds an endpoint or returns a 404 error. s.mu must be held.
func (s *Scheduler) lookup(name string) (*store.Endpoint, error) {
	ep, ok := s.eps[name]
	if !ok {
		return nil, api.Errorf(api.ErrResourceDoesNotExist, "endpoint %q does not exist", name)
	}
	return ep, nil
}

func (s *Scheduler) delete(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	s.mu.Lock()
	if _, err := s.lookup(name); err != nil {
		s.mu.Unlock()
		writeError(w, err)
		return
	}
	if err := s.cfg.Store.Delete(name); err != nil {
		s.mu.Unlock()
		writeError(w, err)
		return
	}
	id := s.eps[name].ID
	delete(s.eps, name)
	s.deleteMonitorsOf(name)
	s.mu.Unlock()
	s.forget(identity.Object{Type: identity.Endpoints, ID: id})
	s.Notify(name)
	writeJSON(w, http.StatusOK, struct{}{})
}

func (s *Scheduler) updateConfig(w http.ResponseWriter, r *http.Request) {
	var c api.EndpointConfig
	if err := decode(w, r, &c); err != nil {
		writeError(w, err)
		return
	}
	s.putConfig(w, r, c)
}

// updatePtConfig is PUT /api/2.0/serving-endpoints/pt/{name}/config:
// Databricks' body {"config": {...}}, every served entity in
// provisioned_model_units, then the config update's checks and answer.
func (s *Scheduler) updatePtConfig(w http.ResponseWriter, r *http.Request) {
	var req api.UpdatePtConfigRequest
	if err := decode(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	if req.Config == nil {
		writeError(w, invalid("config: required"))
		return
	}
	if err := requireUnits(req.Config); err != nil {
		writeError(w, err)
		return
	}
	s.putConfig(w, r, *req.Config)
}

// putConfig rolls out config c on the endpoint the path names.
func (s *Scheduler) putConfig(w http.ResponseWriter, r *http.Request, c api.EndpointConfig) {
	name := r.PathValue("name")
	// The endpoint and the limits first: checkConfig creates the table.
	if err := normalizeConfig(&c); err != nil {
		writeError(w, err)
		return
	}
	if err := s.checkCeiling(&c); err != nil {
		writeError(w, err)
		return
	}
	if err := s.needModels(r, &c); err != nil {
		writeError(w, err)
		return
	}
	if err := s.checkSecretRefs(r, &c, name); err != nil {
		writeError(w, err)
		return
	}
	s.mu.Lock()
	_, err := s.lookup(name)
	if err == nil {
		err = s.checkTableFree(name, "auto_capture_config", c.AutoCaptureConfig)
	}
	s.mu.Unlock()
	if err != nil {
		writeError(w, err)
		return
	}
	if err := s.checkConfig(r.Context(), name, &c); err != nil {
		writeError(w, err)
		return
	}
	tasks := s.entityTasks(&c) // for the guardrails' checks, before the lock
	s.mu.Lock()
	defer s.mu.Unlock()
	ep, err := s.lookup(name)
	if err != nil {
		writeError(w, err)
		return
	}
	if err := s.checkTableFree(name, "auto_capture_config", c.AutoCaptureConfig); err != nil {
		writeError(w, err)
		return
	}
	if loggers.Enabled(c.AutoCaptureConfig) && ep.AIGateway != nil && loggers.Enabled(ep.AIGateway.InferenceTableConfig) {
		writeError(w, errTwoTables)
		return
	}
	if ep.Pending != nil || (ep.UpdateState == api.ConfigInProgress) {
		writeError(w, api.Errorf(api.ErrResourceConflict, "endpoint %q has a config update in progress; wait for it to finish", ep.Name))
		return
	}
	if err := checkExternalSwitch(&ep.Config, &c); err != nil {
		writeError(w, err)
		return
	}
	// The endpoint's guardrails must keep guarding every entity, and its
	// judge stay a chat entity of the config that serves, or every judged
	// call would fail closed.
	if g := ep.AIGateway; g != nil && g.Guardrails != nil {
		if msg := notLLMProblem(ep.Name, &c, tasks); msg != "" {
			writeError(w, invalid("served_entities: ai_gateway.%s; remove the guardrails first", msg))
			return
		}
		if g.Guardrails.JudgeEntity != "" {
			if msg := judgeProblem(ep.Name, &c, tasks, g.Guardrails.JudgeEntity); msg != "" {
				writeError(w, invalid("served_entities: ai_gateway.%s; keep the judge or change the AI gateway first", msg))
				return
			}
		}
	}
	next := *ep
	now := s.cfg.Now().UnixMilli()
	next.Updated = now
	next.DroppedUpdate = false
	if sameDeployments(ep.Name, &ep.Config, &c) || allExternal(&c) {
		// Only traffic (or nothing) changed, or only external entities,
		// which have no replicas: apply at once.
		c.ConfigVersion = ep.Config.ConfigVersion + 1
		next.Config = c
		next.UpdateState, next.UpdateMessage = api.ConfigNotUpdating, ""
	} else {
		next.Pending, next.PendingStart = &c, now
		next.UpdateState, next.UpdateMessage = api.ConfigInProgress, ""
	}
	if err := s.cfg.Store.Put(&next); err != nil {
		writeError(w, err)
		return
	}
	*ep = next
	s.Notify(ep.Name)
	v := s.endpoint(ep)
	v.PermissionLevel = string(s.endpointLevel(r, ep.ID))
	writeJSON(w, http.StatusOK, v)
}

// sameDeployments reports whether two configs run the same deployments.
func sameDeployments(ep string, a, b *api.EndpointConfig) bool {
	if len(a.ServedEntities) != len(b.ServedEntities) {
		return false
	}
	ids := map[string]bool{}
	for i := range a.ServedEntities {
		ids[deploymentID(ep, &a.ServedEntities[i])] = true
	}
	for i := range b.ServedEntities {
		if !ids[deploymentID(ep, &b.ServedEntities[i])] {
			return false
		}
	}
	return true
}

func (s *Scheduler) patchTags(w http.ResponseWriter, r *http.Request) {
	var req struct {
		AddTags    []api.Tag `json:"add_tags"`
		DeleteTags []string  `json:"delete_tags"`
	}
	if err := decode(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	if err := checkTags(req.AddTags); err != nil {
		writeError(w, err)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ep, err := s.lookup(r.PathValue("name"))
	if err != nil {
		writeError(w, err)
		return
	}
	next := *ep
	tags := map[string]string{}
	for _, t := range ep.Tags {
		tags[t.Key] = t.Value
	}
	for _, k := range req.DeleteTags {
		delete(tags, k)
	}
	for _, t := range req.AddTags {
		tags[t.Key] = t.Value
	}
	// Bounded after the merge: PATCHes add up, and the store keeps all.
	if len(tags) > maxTags {
		writeError(w, invalid("add_tags: the endpoint would have %d tags, at most %d are allowed; delete some with delete_tags", len(tags), maxTags))
		return
	}
	next.Tags = make([]api.Tag, 0, len(tags))
	for k, v := range tags {
		next.Tags = append(next.Tags, api.Tag{Key: k, Value: v})
	}
	sort.Slice(next.Tags, func(i, j int) bool { return next.Tags[i].Key < next.Tags[j].Key })
	if err := s.cfg.Store.Put(&next); err != nil {
		writeError(w, err)
		return
	}
	*ep = next
	writeJSON(w, http.StatusOK, api.EndpointTags{Tags: ep.Tags})
}

func (s *Scheduler) logs(w http.ResponseWriter, r *http.Request) {
	src, ok := s.cfg.Orchestrator.(logSource)
	if !ok {
		writeError(w, api.Errorf(api.ErrInvalidParameterValue, "this orchestrator keeps no worker logs"))
		return
	}
	s.mu.Lock()
	ep, err := s.lookup(r.PathValue("name"))
	var id string
	if err == nil {
		for _, e := range s.world().entities(ep.Name, &ep.Config) {
			if e.served.Name == r.PathValue("served") {
				id = e.d.ID
			}
		}
		if id == "" {
			err = api.Errorf(api.ErrResourceDoesNotExist, "endpoint %q has no served entity %q", ep.Name, r.PathValue("served"))
		}
	}
	s.mu.Unlock()
	if err != nil {
		writeError(w, err)
		return
	}
	text, _ := src.Logs(id)
	writeJSON(w, http.StatusOK, map[string]string{"logs": text})
}

func (s *Scheduler) listModels(w http.ResponseWriter, r *http.Request) {
	ms, err := s.cfg.Registry.List()
	if err != nil {
		writeError(w, err)
		return
	}
	// Only the models the caller may read.
	ms = slices.DeleteFunc(ms, func(m api.ModelVersion) bool { return !s.modelLevel(r, m.Name).AtLeast(identity.CanRead) })
	writeJSON(w, http.StatusOK, api.ListModelsResponse{Models: ms})
}

func (s *Scheduler) uploadModel(w http.ResponseWriter, r *http.Request) {
	if err := s.mayUpload(r, r.PathValue("name")); err != nil {
		writeError(w, err)
		return
	}
	if err := s.notASpec(r.Context(), r.PathValue("name")); err != nil {
		writeError(w, err)
		return
	}
	mv, err := s.cfg.Registry.Upload(r.PathValue("name"), r.Body)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, api.UploadModelResponse{Version: mv.Version})
}

func (s *Scheduler) getModel(w http.ResponseWriter, r *http.Request) {
	mv, err := s.cfg.Registry.Get(r.PathValue("name"), r.PathValue("version"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, mv)
}

// optimizationInfo answers whether a model version can take provisioned
// throughput, and in which chunk (throughput.go).
func (s *Scheduler) optimizationInfo(w http.ResponseWriter, r *http.Request) {
	mv, err := s.cfg.Registry.Get(r.PathValue("name"), r.PathValue("version"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, optimizationInfo(mv))
}

func (s *Scheduler) modelArtifact(w http.ResponseWriter, r *http.Request) {
	p, err := s.cfg.Registry.ArtifactPath(r.PathValue("name"), r.PathValue("version"))
	if err != nil {
		writeError(w, err)
		return
	}
	f, err := os.Open(p)
	if err != nil {
		writeError(w, err)
		return
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		writeError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/gzip")
	http.ServeContent(w, r, "model.tar.gz", info.ModTime(), f)
}

// routes serves the route table as a blocking query: with ?index=N it waits
// (up to ?wait=, default 30 s) for a table newer than N.
func (s *Scheduler) routes(w http.ResponseWriter, r *http.Request) {
	index, wait, err := blockingParams(r)
	if err != nil {
		writeError(w, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), wait)
	defer cancel()
	rt, _ := s.cfg.Routes.Wait(ctx, index) // on timeout: the current table
	w.Header().Set("X-Gantry-Index", strconv.FormatUint(rt.Index, 10))
	writeJSON(w, http.StatusOK, rt)
}

// decode reads a JSON body strictly (jsonbody.Decode), then refuses
// duplicate keys and field names in another case (checkJSONKeys), which
// encoding/json accepts silently.
func decode(w http.ResponseWriter, r *http.Request, v any) error {
	b, err := jsonbody.Decode(w, r, v, maxConfigBody)
	if err != nil {
		return err
	}
	return checkJSONKeys(b, v)
}

// requester names who made a request: the authenticated principal's name
// (a userName or a service principal's applicationId), else, with
// authentication off, X-Gantry-User or "anonymous".
func requester(r *http.Request) string {
	if c := identity.CallerFrom(r.Context()); c != nil {
		return c.Name()
	}
	if u := r.Header.Get("X-Gantry-User"); u != "" {
		return u
	}
	return "anonymous"
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// writeError answers with API.md's error shape; errors that are not
// *api.Error are internal.
func writeError(w http.ResponseWriter, err error) { apierr.Write(w, err) }
