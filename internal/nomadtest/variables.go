package nomadtest

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/nomad/api"
)

// Nomad Variables (/v1/var/:path, /v1/vars), as Nomad's HTTP agent
// (command/agent/variable_endpoint.go) and its structs.VariableDecrypted
// Validate answer them:
//
//   - PUT (or POST) /v1/var/:path stores the body's Items at the URL's
//     path in the request's namespace (?namespace=, else default): no
//     Items is a 400 "variable missing required Items object"; a path
//     outside ^[a-zA-Z0-9-_~/]{1,128}$, or under nomad/ other than
//     nomad/jobs (or one level of nomad/job-templates), or items over
//     64 KiB are refused as the server does (500 with its text); ?cas=N
//     writes only when the variable's ModifyIndex is N (0: it must not
//     exist), else 409 with the current variable. The answer is the
//     stored variable with its indexes and times.
//   - GET /v1/var/:path answers the variable, or 404 "variable not found".
//   - DELETE /v1/var/:path answers 204, also when there was none.
//   - GET /v1/vars?prefix= lists the metadata, never the items.
//
// Tasks read them through template blocks (alloc.go), with the implicit
// access Nomad's workload identity gives a task to nomad/jobs/<job> and
// below.

// maxVariableSize is Nomad's limit on a variable's keys and values.
const maxVariableSize = 64 * 1024

var validVariablePath = regexp.MustCompile(`^[a-zA-Z0-9-_~/]{1,128}$`)

type varKey struct{ ns, path string }

// Variable returns the variable at path in namespace ns ("" is default),
// for tests to check what a client wrote; nil when there is none.
func (s *Server) Variable(ns, path string) *api.Variable {
	if ns == "" {
		ns = api.DefaultNamespace
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.vars[varKey{ns, path}]
	if v == nil {
		return nil
	}
	return v.Copy()
}

func (s *Server) varRequest(w http.ResponseWriter, r *http.Request) (any, error) {
	path := strings.TrimPrefix(r.URL.Path, "/v1/var/")
	if path == "" {
		return nil, coded(http.StatusBadRequest, "missing variable path")
	}
	ns, err := s.namespace(r, "")
	if err != nil {
		return nil, err
	}
	key := varKey{ns, path}
	cas, checked, err := parseCAS(r)
	if err != nil {
		return nil, err
	}
	switch r.Method {
	case http.MethodGet:
		return s.blocking(w, r, func() (any, uint64, error) {
			v := s.vars[key]
			if v == nil {
				return nil, 0, coded(http.StatusNotFound, "variable not found")
			}
			return v.Copy(), v.ModifyIndex, nil
		})
	case http.MethodPut, http.MethodPost:
		var in api.Variable
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
			return nil, coded(http.StatusBadRequest, "%v", err)
		}
		if len(in.Items) == 0 {
			return nil, coded(http.StatusBadRequest, "variable missing required Items object")
		}
		if err := validateVariable(path, in.Items); err != nil {
			return nil, err
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		prev := s.vars[key]
		if checked && (prev == nil && cas != 0 || prev != nil && prev.ModifyIndex != cas) {
			return s.casConflict(w, key, prev)
		}
		index := s.write("variables")
		now := time.Now().UnixNano()
		v := &api.Variable{Namespace: ns, Path: path, Items: maps.Clone(in.Items),
			CreateIndex: index, ModifyIndex: index, CreateTime: now, ModifyTime: now}
		if prev != nil {
			v.CreateIndex, v.CreateTime = prev.CreateIndex, prev.CreateTime
		}
		s.vars[key] = v
		setMeta(w, index)
		return v.Copy(), nil
	case http.MethodDelete:
		s.mu.Lock()
		defer s.mu.Unlock()
		prev := s.vars[key]
		if checked && (prev == nil && cas != 0 || prev != nil && prev.ModifyIndex != cas) {
			return s.casConflict(w, key, prev)
		}
		if prev != nil {
			delete(s.vars, key)
			setMeta(w, s.write("variables"))
		}
		w.WriteHeader(http.StatusNoContent)
		return nil, errWritten
	}
	return nil, coded(http.StatusBadRequest, "Invalid method")
}

// casConflict is the 409 of a failed check-and-set, with the variable
// that is there (an empty one when there is none). s.mu must be held.
func (s *Server) casConflict(w http.ResponseWriter, key varKey, cur *api.Variable) (any, error) {
	out := &api.Variable{Namespace: key.ns, Path: key.path}
	if cur != nil {
		out = cur.Copy()
	}
	setMeta(w, out.ModifyIndex)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusConflict)
	json.NewEncoder(w).Encode(out)
	return nil, errWritten
}

// errWritten tells wrap that the handler answered already.
var errWritten = errors.New("nomadtest: answered")

func parseCAS(r *http.Request) (uint64, bool, error) {
	cq := r.URL.Query().Get("cas")
	if cq == "" {
		return 0, false, nil
	}
	var n uint64
	if _, err := fmt.Sscan(cq, &n); err != nil {
		return 0, true, coded(http.StatusBadRequest, "can not parse cas: %v", err)
	}
	return n, true, nil
}

// validateVariable is structs.VariableDecrypted.Validate's checks of
// the path and the size.
func validateVariable(path string, items api.VariableItems) error {
	size := 0
	for k, v := range items {
		size += len(k) + len(v)
	}
	if size > maxVariableSize {
		return errors.New("variables are limited to 64KiB in total size")
	}
	if !validVariablePath.MatchString(path) {
		return fmt.Errorf("invalid path %q", path)
	}
	parts := strings.Split(path, "/")
	if parts[0] != "nomad" {
		return nil
	}
	switch {
	case len(parts) == 1:
		return errors.New(`"nomad" is a reserved top-level directory path, but you may write variables to "nomad/jobs", "nomad/job-templates", or below`)
	case parts[1] == "jobs", parts[1] == "job-templates" && len(parts) == 3:
		return nil
	}
	return errors.New(`only paths at "nomad/jobs" or "nomad/job-templates/<name>" are valid paths under the top-level "nomad" directory`)
}

func (s *Server) varsRequest(w http.ResponseWriter, r *http.Request) (any, error) {
	ns, err := s.namespace(r, "")
	if err != nil {
		return nil, err
	}
	prefix := r.URL.Query().Get("prefix")
	return s.blocking(w, r, func() (any, uint64, error) {
		out := []*api.VariableMetadata{}
		for k, v := range s.vars {
			if k.ns == ns && strings.HasPrefix(k.path, prefix) {
				out = append(out, v.Metadata())
			}
		}
		sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
		return out, s.tables["variables"], nil
	})
}

// taskVariable is what a task's template reads with nomadVar: the
// variable at path in the allocation's namespace, if the task's
// workload identity may read it (nomad/jobs/<job>, …/<group>,
// …/<group>/<task>, as Nomad's implicit policy allows).
func (s *Server) taskVariable(a *alloc, path string) (api.VariableItems, error) {
	job := "nomad/jobs/" + *a.job.ID
	allowed := path == "nomad/jobs" || path == job || path == job+"/"+*a.group.Name || path == job+"/"+*a.group.Name+"/"+a.task.Name
	if !allowed {
		return nil, fmt.Errorf("nomad.var.block(%s@%s.%s): Permission denied", path, *a.job.Namespace, *a.job.Region)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.vars[varKey{*a.job.Namespace, path}]
	if v == nil {
		return nil, fmt.Errorf("Missing: nomad.var.block(%s@%s.%s)", path, *a.job.Namespace, *a.job.Region)
	}
	return maps.Clone(v.Items), nil
}
