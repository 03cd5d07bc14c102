package scheduler

import (
	"net/http"

	"github.com/gantry/gantry/api"
)

// deleteModel serves DELETE /api/2.0/gantry/models/{name}/versions/{version}.
// A version that a config serves or rolls out stays: deleting it would
// fail that endpoint's next restart or scale from zero.
func (s *Scheduler) deleteModel(w http.ResponseWriter, r *http.Request) {
	name, version := r.PathValue("name"), r.PathValue("version")
	s.mu.Lock()
	if ep, ok := s.modelUser(name, version); ok {
		s.mu.Unlock()
		writeError(w, api.Errorf(api.ErrResourceConflict,
			"model %s version %s is served by endpoint %q; change or delete that endpoint first", name, version, ep))
		return
	}
	// Under the lock, so that no create can start serving the version
	// while it goes.
	err := s.cfg.Registry.Delete(name, version)
	s.mu.Unlock()
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, struct{}{})
}

// modelUser names an endpoint whose config, serving or rolling out, has a
// served entity of the model version. s.mu must be held.
func (s *Scheduler) modelUser(name, version string) (string, bool) {
	for _, n := range keysOf(s.eps) {
		ep := s.eps[n]
		for _, c := range []*api.EndpointConfig{&ep.Config, ep.Pending} {
			if c == nil {
				continue
			}
			for _, e := range c.ServedEntities {
				if e.EntityName == name && e.EntityVersion == version {
					return n, true
				}
			}
		}
	}
	return "", false
}
