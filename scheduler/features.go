package scheduler

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/features"
	"github.com/gantry/gantry/features/onlinestore"
	"github.com/gantry/gantry/features/publish"
	"gopkg.in/yaml.v3"
)

// FeatureStore is the scheduler's side of feature serving (issue 17): the
// online store, where published tables and feature specs live, and the
// publisher that copies tables from ClickHouse into it.
type FeatureStore struct {
	Store     *onlinestore.Store
	Publisher *publish.Publisher // nil: publishing needs ClickHouse

	// mu guards routes, stale and resolving.
	mu sync.Mutex
	// routes caches each model version's and spec's resolved feature
	// route. The reconcile pass only reads it: resolving reaches Redis,
	// and the pass holds the scheduler's lock, so a miss is resolved in
	// the background (resolving, one at a time per key) and the pass
	// after it sees the answer.
	routes    map[string]*api.FeatureRoute
	resolving map[string]bool
	// generation counts forgets: a resolve that began before the last
	// one may have read what it replaced, and its answer is dropped.
	generation uint64
	// stale holds the routes a publish or a spec change moved out of
	// routes (they may name old columns): each is still served, so that
	// its endpoint keeps answering, until its new resolve lands.
	stale map[string]*api.FeatureRoute
	// outage is the last error of a key's resolve that the online store
	// was down for, shown while the next try runs.
	outage map[string]string
	// notify asks the scheduler for a pass once a route is resolved; set
	// by New.
	notify func()
	// attached names the feature spec attached to a model version ("":
	// none); set by New, from the registry.
	attached func(name, version string) (string, error)
}

// cached returns the route cached under key and true. On a miss it
// returns pending, its Error saying why, and false, and starts resolve in
// the background, once per key: its route is cached unless final is false
// (an outage: the next miss tries again).
func (fs *FeatureStore) cached(key string, pending api.FeatureRoute, resolve func() (r *api.FeatureRoute, final bool)) (*api.FeatureRoute, bool) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if r, ok := fs.routes[key]; ok {
		return r, true
	}
	old, isStale := fs.stale[key]
	pending.Error = "the feature spec is being resolved against the online store; retry shortly"
	if why := fs.outage[key]; why != "" {
		pending.Error = "the online store did not answer (" + why + "); retrying"
	}
	if !fs.resolving[key] {
		if fs.resolving == nil {
			fs.resolving = map[string]bool{}
		}
		fs.resolving[key] = true
		gen := fs.generation
		go func() {
			r, final := resolve()
			fs.mu.Lock()
			delete(fs.resolving, key)
			switch {
			case gen != fs.generation:
				// Forgotten meanwhile: dropped, the next miss (the pass
				// notify asks for) resolves again.
			case final:
				if fs.routes == nil {
					fs.routes = map[string]*api.FeatureRoute{}
				}
				fs.routes[key] = r
				delete(fs.stale, key)
				delete(fs.outage, key)
			default:
				if fs.outage == nil {
					fs.outage = map[string]string{}
				}
				fs.outage[key] = r.Error
			}
			fs.mu.Unlock()
			if fs.notify != nil {
				fs.notify()
			}
		}()
	}
	if isStale {
		return old, true
	}
	return &pending, false
}

// SpecFile is the file of a model directory that names its lookups (what
// Databricks' feature engineering client writes when it logs a model).
const SpecFile = "feature_spec.yaml"

var noFeatureStore = api.Errorf(api.ErrTemporarilyUnavailable,
	"feature serving is off: start the scheduler with --online-store redis://host:port/db")

// featureError maps the online store's failures to API errors.
func featureError(err error) error {
	var ae *api.Error
	if errors.As(err, &ae) {
		return ae
	}
	if errors.Is(err, onlinestore.ErrUnavailable) {
		return api.Errorf(api.ErrTemporarilyUnavailable, "%v", err)
	}
	return err
}

func (s *Scheduler) features(w http.ResponseWriter) *FeatureStore {
	if s.cfg.Features == nil {
		err := noFeatureStore
		if s.cfg.FeaturesOff != "" {
			err = api.Errorf(api.ErrTemporarilyUnavailable, "feature serving is off: %s", s.cfg.FeaturesOff)
		}
		writeError(w, err)
	}
	return s.cfg.Features
}

// publishTable serves POST /api/2.0/feature-store/tables/{source}/publish.
func (s *Scheduler) publishTable(w http.ResponseWriter, r *http.Request) {
	fs := s.features(w)
	if fs == nil {
		return
	}
	if fs.Publisher == nil {
		writeError(w, api.Errorf(api.ErrTemporarilyUnavailable, "publishing needs ClickHouse (--clickhouse)"))
		return
	}
	var req api.PublishRequest
	if err := decode(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	t, err := fs.Publisher.Publish(r.Context(), r.PathValue("source"), req)
	if err != nil {
		writeError(w, featureError(err))
		return
	}
	s.featuresChanged(fs)
	writeJSON(w, http.StatusOK, t)
}

// getTable serves GET /api/2.0/feature-store/tables/{source}.
func (s *Scheduler) getTable(w http.ResponseWriter, r *http.Request) {
	fs := s.features(w)
	if fs == nil {
		return
	}
	src := r.PathValue("source")
	t, ok, err := fs.Store.Table(r.Context(), src)
	switch {
	case err != nil:
		writeError(w, featureError(err))
	case !ok:
		writeError(w, api.Errorf(api.ErrResourceDoesNotExist, "table %s is not published to the online store", src))
	default:
		writeJSON(w, http.StatusOK, t)
	}
}

// listTables serves GET /api/2.0/feature-store/tables.
func (s *Scheduler) listTables(w http.ResponseWriter, r *http.Request) {
	fs := s.features(w)
	if fs == nil {
		return
	}
	ts, err := fs.Store.Tables(r.Context())
	if err != nil {
		writeError(w, featureError(err))
		return
	}
	writeJSON(w, http.StatusOK, api.ListOnlineTablesResponse{Tables: ts})
}

var specName = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}$`)

// createSpec serves POST /api/2.0/gantry/feature-specs. The spec is
// checked against the published tables at once, so that a typo is a 400
// now and not a failed deployment later; names share the models'
// namespace.
func (s *Scheduler) createSpec(w http.ResponseWriter, r *http.Request) {
	fs := s.features(w)
	if fs == nil {
		return
	}
	var spec api.FeatureSpec
	if err := decode(w, r, &spec); err != nil {
		writeError(w, err)
		return
	}
	if !specName.MatchString(spec.Name) {
		writeError(w, invalid("name %q: 1-255 of [A-Za-z0-9_.-]", spec.Name))
		return
	}
	if models, err := s.cfg.Registry.List(); err == nil {
		for _, m := range models {
			if m.Name == spec.Name {
				writeError(w, api.Errorf(api.ErrResourceAlreadyExists, "%s is a model; models and feature specs share one namespace", spec.Name))
				return
			}
		}
	}
	ctx := r.Context()
	if _, err := features.Resolve(spec, tableSource(ctx, fs.Store), nil, true); err != nil {
		writeError(w, featureError(asInvalid(err)))
		return
	}
	ok, err := fs.Store.CreateSpec(ctx, spec)
	if err != nil {
		writeError(w, featureError(err))
		return
	}
	if !ok {
		writeError(w, api.Errorf(api.ErrResourceAlreadyExists, "feature spec %s exists", spec.Name))
		return
	}
	s.featuresChanged(fs)
	writeJSON(w, http.StatusOK, spec)
}

// asInvalid makes a resolution error a 400, except an outage.
func asInvalid(err error) error {
	if errors.Is(err, onlinestore.ErrUnavailable) {
		return err
	}
	return invalid("%v", err)
}

func tableSource(ctx context.Context, st *onlinestore.Store) features.TableSource {
	return func(src string) (api.OnlineTable, bool, error) { return st.Table(ctx, src) }
}

// listSpecs serves GET /api/2.0/gantry/feature-specs.
func (s *Scheduler) listSpecs(w http.ResponseWriter, r *http.Request) {
	fs := s.features(w)
	if fs == nil {
		return
	}
	specs, err := fs.Store.Specs(r.Context())
	if err != nil {
		writeError(w, featureError(err))
		return
	}
	writeJSON(w, http.StatusOK, api.ListFeatureSpecsResponse{Specs: specs})
}

// getSpec serves GET /api/2.0/gantry/feature-specs/{name}.
func (s *Scheduler) getSpec(w http.ResponseWriter, r *http.Request) {
	fs := s.features(w)
	if fs == nil {
		return
	}
	spec, ok, err := fs.Store.Spec(r.Context(), r.PathValue("name"))
	switch {
	case err != nil:
		writeError(w, featureError(err))
	case !ok:
		writeError(w, api.Errorf(api.ErrResourceDoesNotExist, "feature spec %s does not exist", r.PathValue("name")))
	default:
		writeJSON(w, http.StatusOK, spec)
	}
}

// deleteSpec serves DELETE /api/2.0/gantry/feature-specs/{name}.
func (s *Scheduler) deleteSpec(w http.ResponseWriter, r *http.Request) {
	fs := s.features(w)
	if fs == nil {
		return
	}
	name := r.PathValue("name")
	if models, err := s.cfg.Registry.List(); err == nil {
		for _, m := range models {
			if m.FeatureSpec == name {
				writeError(w, api.Errorf(api.ErrResourceConflict,
					"feature spec %s is attached to model %s version %s; detach it first (DELETE /api/2.0/gantry/models/%s/versions/%s/feature-spec)",
					name, m.Name, m.Version, m.Name, m.Version))
				return
			}
		}
	}
	ok, err := fs.Store.DeleteSpec(r.Context(), name)
	switch {
	case err != nil:
		writeError(w, featureError(err))
	case !ok:
		writeError(w, api.Errorf(api.ErrResourceDoesNotExist, "feature spec %s does not exist", r.PathValue("name")))
	default:
		s.featuresChanged(fs)
		writeJSON(w, http.StatusOK, struct{}{})
	}
}

// featuresChanged follows a publish or a spec change: every cached route
// is resolved again, and a pass now starts the resolves, rather than
// whenever something else asks for one.
func (s *Scheduler) featuresChanged(fs *FeatureStore) {
	fs.forget()
	s.Notify("")
}

// forget has every cached route resolved again (after a publish or a
// spec change), serving each as it was until then.
func (fs *FeatureStore) forget() {
	fs.mu.Lock()
	if fs.stale == nil {
		fs.stale = map[string]*api.FeatureRoute{}
	}
	for k, r := range fs.routes {
		fs.stale[k] = r
	}
	fs.routes = nil
	fs.generation++
	fs.mu.Unlock()
}

// modelRoute is the feature route of a model version whose directory has
// a feature_spec.yaml, or that a spec is attached to; nil when neither. A
// spec that cannot be served is a route with Error set, which fails the
// entity's deployment. ok is false while the route is being resolved.
func (fs *FeatureStore) modelRoute(dir, name, version string, sig *api.Schema) (*api.FeatureRoute, bool) {
	// Most models have no spec: that is known from local disk (the
	// directory and the registry's record), with no wait for a resolve,
	// so their endpoints never pause for one.
	if _, err := os.Stat(filepath.Join(dir, SpecFile)); errors.Is(err, os.ErrNotExist) {
		if fs.attached == nil {
			return nil, true
		}
		if spec, err := fs.attached(name, version); err == nil && spec == "" {
			return nil, true
		}
	}
	return fs.cached(name+"\x00"+version, api.FeatureRoute{}, func() (*api.FeatureRoute, bool) {
		b, err := os.ReadFile(filepath.Join(dir, SpecFile))
		if errors.Is(err, os.ErrNotExist) {
			return fs.attachedRoute(name, version, sig)
		}
		var spec api.FeatureSpec
		if err == nil {
			err = yaml.Unmarshal(b, &spec)
		}
		var r *api.FeatureRoute
		if err == nil {
			spec.Name = name + "/" + version + "/" + SpecFile
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			r, err = features.Resolve(spec, tableSource(ctx, fs.Store), sig, false)
			cancel()
		}
		if err != nil {
			return &api.FeatureRoute{Error: err.Error()}, !errors.Is(err, onlinestore.ErrUnavailable)
		}
		return r, true
	})
}

// attachedRoute resolves the spec attached to a model version; nil when
// none is. The registry is local disk: only the spec and its tables come
// from the online store.
func (fs *FeatureStore) attachedRoute(name, version string, sig *api.Schema) (*api.FeatureRoute, bool) {
	var specName string
	if fs.attached != nil {
		var err error
		if specName, err = fs.attached(name, version); err != nil {
			return &api.FeatureRoute{Error: err.Error()}, true
		}
	}
	if specName == "" {
		return nil, true
	}
	return fs.resolveSpec(specName, fmt.Sprintf(", attached to model %s version %s,", name, version), sig, false)
}

// resolveSpec resolves the stored spec name against the published tables
// and sig, for a feature-serving endpoint when serving. A failure is a
// route with Error set (what names the spec, in its does-not-exist
// message), final unless the online store did not answer.
func (fs *FeatureStore) resolveSpec(name, what string, sig *api.Schema, serving bool) (*api.FeatureRoute, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	spec, ok, err := fs.Store.Spec(ctx, name)
	if err == nil && !ok {
		err = fmt.Errorf("feature spec %s%s does not exist", name, what)
	}
	var r *api.FeatureRoute
	if err == nil {
		r, err = features.Resolve(spec, tableSource(ctx, fs.Store), sig, serving)
	}
	if err != nil {
		return &api.FeatureRoute{Spec: name, Serving: serving, Error: err.Error()}, !errors.Is(err, onlinestore.ErrUnavailable)
	}
	return r, true
}

// attachSpec serves PUT /api/2.0/gantry/models/{name}/versions/{version}/feature-spec
// (api.AttachFeatureSpecRequest): the version's endpoints look up the
// spec's features, as for a feature_spec.yaml in its directory. The spec
// is checked against the published tables and the model's signature now,
// so that a mismatch is a 400 here, not a failed deployment later. An
// endpoint that serves the version follows at the scheduler's next pass.
func (s *Scheduler) attachSpec(w http.ResponseWriter, r *http.Request) {
	fs := s.features(w)
	if fs == nil {
		return
	}
	name, version := r.PathValue("name"), r.PathValue("version")
	var req api.AttachFeatureSpecRequest
	if err := decode(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	if req.FeatureSpec == "" {
		writeError(w, invalid("feature_spec: required, the name of a feature spec (POST /api/2.0/gantry/feature-specs)"))
		return
	}
	mv, err := s.cfg.Registry.Get(name, version)
	if err != nil {
		writeError(w, err)
		return
	}
	dir, err := s.cfg.Registry.ModelDir(name, version)
	if err != nil {
		writeError(w, err)
		return
	}
	if _, err := os.Stat(filepath.Join(dir, SpecFile)); err == nil {
		writeError(w, api.Errorf(api.ErrResourceConflict,
			"model %s version %s has its own %s; a version has one feature spec", name, version, SpecFile))
		return
	}
	ctx := r.Context()
	spec, ok, err := fs.Store.Spec(ctx, req.FeatureSpec)
	if err != nil {
		writeError(w, featureError(err))
		return
	}
	if !ok {
		writeError(w, api.Errorf(api.ErrResourceDoesNotExist, "feature spec %s does not exist; create it with POST /api/2.0/gantry/feature-specs", req.FeatureSpec))
		return
	}
	if _, err := features.Resolve(spec, tableSource(ctx, fs.Store), mv.Signature, false); err != nil {
		writeError(w, featureError(asInvalid(err)))
		return
	}
	if mv, err = s.cfg.Registry.SetFeatureSpec(name, version, req.FeatureSpec); err != nil {
		writeError(w, err)
		return
	}
	s.featuresChanged(fs)
	writeJSON(w, http.StatusOK, mv)
}

// detachSpec serves DELETE /api/2.0/gantry/models/{name}/versions/{version}/feature-spec.
func (s *Scheduler) detachSpec(w http.ResponseWriter, r *http.Request) {
	fs := s.features(w)
	if fs == nil {
		return
	}
	name, version := r.PathValue("name"), r.PathValue("version")
	mv, err := s.cfg.Registry.Get(name, version)
	if err != nil {
		writeError(w, err)
		return
	}
	if mv.FeatureSpec == "" {
		writeError(w, api.Errorf(api.ErrResourceDoesNotExist, "model %s version %s has no feature spec attached", name, version))
		return
	}
	if mv, err = s.cfg.Registry.SetFeatureSpec(name, version, ""); err != nil {
		writeError(w, err)
		return
	}
	s.featuresChanged(fs)
	writeJSON(w, http.StatusOK, mv)
}

// featureRoute is the world's featureRoute: nil without a feature store.
func (s *Scheduler) featureRoute() func(dir, name, version string, sig *api.Schema) (*api.FeatureRoute, bool) {
	if s.cfg.Features == nil {
		return nil
	}
	return s.cfg.Features.modelRoute
}

// isFeatureServing reports whether a served entity serves a feature spec
// (Databricks' Feature Serving endpoint): an entity_name with no
// entity_version and no external_model. The activator answers it.
func isFeatureServing(e *api.ServedEntity) bool {
	return e.ExternalModel == nil && e.EntityVersion == ""
}

// deploys reports whether a served entity runs replicas (a model version).
func deploys(e *api.ServedEntity) bool { return !isExternal(e) && !isFeatureServing(e) }

// checkSpecEntity checks the feature spec that served entity i serves.
func (s *Scheduler) checkSpecEntity(ctx context.Context, i int, name string) error {
	if ok, err := s.modelExists(name); err == nil && ok {
		return invalid("config.served_entities[%d].entity_version: required: %s is a model", i, name)
	}
	fs := s.cfg.Features
	if fs == nil {
		off := s.cfg.FeaturesOff
		if off == "" {
			off = "the scheduler has no online store (--online-store)"
		}
		return invalid("config.served_entities[%d]: entity_version: required, unless entity_name is a feature spec, and feature serving is off: %s", i, off)
	}
	_, ok, err := fs.Store.Spec(ctx, name)
	if err != nil {
		return featureError(err)
	}
	if !ok {
		return api.Errorf(api.ErrResourceDoesNotExist, "config.served_entities[%d]: %s is neither a feature spec nor a model (give entity_version for a model; create a spec with POST /api/2.0/gantry/feature-specs)", i, name)
	}
	return nil
}

// notASpec refuses a model name that a feature spec holds: models and
// feature specs share one namespace.
func (s *Scheduler) notASpec(ctx context.Context, name string) error {
	if s.cfg.Features == nil {
		return nil
	}
	_, ok, err := s.cfg.Features.Store.Spec(ctx, name)
	if err != nil {
		return featureError(err)
	}
	if ok {
		return api.Errorf(api.ErrResourceAlreadyExists, "%s is a feature spec; models and feature specs share one namespace", name)
	}
	return nil
}

// specRoute resolves the feature spec name for a feature-serving entity,
// cached like a model's until a publish or a spec changes; an outage is
// not cached. ok is false while it is being resolved.
func (fs *FeatureStore) specRoute(name string) (*api.FeatureRoute, bool) {
	return fs.cached("spec\x00"+name, api.FeatureRoute{Spec: name, Serving: true}, func() (*api.FeatureRoute, bool) {
		return fs.resolveSpec(name, "", nil, true)
	})
}

// specRoute is the world's specRoute: nil without a feature store.
func (s *Scheduler) specRoute() func(name string) (*api.FeatureRoute, bool) {
	if s.cfg.Features == nil {
		return nil
	}
	return s.cfg.Features.specRoute
}
