// Package nomadtest is a Nomad HTTP API double for tests. Nomad cannot run
// where Gantry is tested, so this package serves the part of Nomad's HTTP
// API that Gantry's nomad driver uses, written from Nomad's API
// documentation and its server code, and it refuses what a Nomad server
// refuses, with the same status and text:
//
//   - job register (PUT /v1/jobs, /v1/job/:id) canonicalizes the job like
//     the api package and the server do, then validates it (Validate): a
//     missing task driver, a negative count, resources under the minimum,
//     a bad service or artifact are a 500 with go-multierror's text; a body
//     without a job or job ID is a 400;
//   - POST /v1/job/:id/scale is a 404 for an unknown job, a 400 for an
//     unknown group or a negative count, and a 400 "job scaling blocked due
//     to active deployment" while a deployment of the job runs; as in
//     Nomad, a register or scale of a service job without
//     update { max_parallel = 0 } opens one when the group wants
//     allocations and its version has none running yet (or some to update);
//   - reads are blocking queries: ?index=N waits (up to ?wait=, default
//     5 minutes) until the answer's index passes N, and X-Nomad-Index
//     carries the index to send next;
//   - a set token (Config.Token) is required as X-Nomad-Token; an unknown
//     region, namespace or node pool is refused.
//
// It also plays the scheduler and the clients: a registered job's
// allocations are placed on Config.Nodes (by datacenter, node pool, task
// driver, constraints, CPU, memory and GPUs; what does not fit makes a
// blocked evaluation whose FailedTGAllocs say why), and a placed allocation
// runs for real: the artifacts are downloaded and unpacked, ${NOMAD_*} is
// interpolated, the task's command starts as a process on 127.0.0.1 with a
// dynamic port, its services are registered in /v1/service/:name, its
// restart policy is applied when it exits, and it is stopped with its kill
// signal and kill timeout. The docker driver runs Config.DockerEntrypoint
// with the task's args in place of the image, on the host.
package nomadtest

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/nomad/api"
)

// Node is a Nomad client the double places allocations on.
type Node struct {
	ID         string
	Name       string
	Datacenter string
	NodePool   string
	Class      string
	// CPU (MHz) and MemoryMB are what allocations may use. CPU is spread
	// evenly over Cores (CPU/1000 when unset): a task that reserves cores
	// takes their share of CPU, and no other task shares them.
	CPU      int
	Cores    int
	MemoryMB int
	// GPUs counts the node's nvidia/gpu instances, each with GPUMemoryMiB.
	GPUs         int
	GPUMemoryMiB int
	// Drivers are the task drivers the node runs.
	Drivers    []string
	Attributes map[string]string
	Meta       map[string]string
}

// Config configures a Server. It works at its zero value, with one node.
type Config struct {
	// Nodes default to one node "node-1" in datacenter dc1 and the default
	// pool, with 8000 MHz, 16 GiB, no GPU and the docker, exec and
	// raw_exec drivers.
	Nodes []Node
	// Region is the server's region; default "global".
	Region string
	// Namespaces that exist besides "default".
	Namespaces []string
	// Token, when set, is the only ACL token accepted.
	Token string
	// DockerEntrypoint is what a docker task runs with its args, standing
	// in for the image's entrypoint (Gantry's worker image runs gantry).
	// Empty: docker tasks fail with a driver error.
	DockerEntrypoint string
	// Dir holds the allocation directories; default a new temporary
	// directory, removed by Close.
	Dir string
	// Logger defaults to a logger that discards.
	Logger *slog.Logger
}

// Server is a running Nomad API double.
type Server struct {
	// URL is the address to give the client (NOMAD_ADDR).
	URL string

	cfg     Config
	http    *httptest.Server
	ownDir  bool
	pools   map[string]bool
	running sync.WaitGroup // allocation runners
	// requests counts the API requests served.
	requests atomic.Int64

	// mu guards every field below and each alloc's exported state.
	mu sync.Mutex
	// index is the last Raft index; tables holds each table's last index.
	index  uint64
	tables map[string]uint64
	// changed is closed and replaced on every write, waking blocking
	// queries.
	changed     chan struct{}
	jobs        map[jobKey]*jobState
	allocs      map[string]*alloc
	evals       map[string]*api.Evaluation
	services    map[string]*api.ServiceRegistration
	deployments map[string]*api.Deployment
	// blocked is the blocked evaluation Nomad's blocked-evals tracker
	// holds for each job; only these are unblocked when capacity frees.
	blocked map[jobKey]string
	// vars are the Nomad Variables (variables.go).
	vars   map[varKey]*api.Variable
	closed bool
}

type jobKey struct{ ns, id string }

type jobState struct {
	job *api.Job // canonicalized, with the server's fields set
	// spec is the job's JSON without counts and server fields: a register
	// with the same spec is a count change, not a new version.
	spec string
}

// New starts a server on 127.0.0.1. Close it when done.
func New(cfg Config) (*Server, error) {
	if cfg.Region == "" {
		cfg.Region = api.GlobalRegion
	}
	if len(cfg.Nodes) == 0 {
		cfg.Nodes = []Node{{}}
	}
	for i := range cfg.Nodes {
		n := &cfg.Nodes[i]
		if n.Name == "" {
			n.Name = fmt.Sprintf("node-%d", i+1)
		}
		if n.ID == "" {
			n.ID = uuid()
		}
		if n.Datacenter == "" {
			n.Datacenter = "dc1"
		}
		if n.NodePool == "" {
			n.NodePool = "default"
		}
		if n.CPU == 0 {
			n.CPU = 8000
		}
		if n.Cores == 0 {
			n.Cores = max(1, n.CPU/1000)
		}
		if n.MemoryMB == 0 {
			n.MemoryMB = 16384
		}
		if n.Drivers == nil {
			n.Drivers = []string{"docker", "exec", "raw_exec"}
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		cfg:         cfg,
		pools:       map[string]bool{"default": true, "all": true},
		index:       1,
		tables:      map[string]uint64{},
		changed:     make(chan struct{}),
		jobs:        map[jobKey]*jobState{},
		allocs:      map[string]*alloc{},
		evals:       map[string]*api.Evaluation{},
		services:    map[string]*api.ServiceRegistration{},
		deployments: map[string]*api.Deployment{},
		blocked:     map[jobKey]string{},
		vars:        map[varKey]*api.Variable{},
	}
	for _, n := range cfg.Nodes {
		s.pools[n.NodePool] = true
	}
	if s.cfg.Dir == "" {
		dir, err := os.MkdirTemp("", "nomadtest-")
		if err != nil {
			return nil, fmt.Errorf("nomadtest: %w", err)
		}
		s.cfg.Dir, s.ownDir = dir, true
	}
	s.http = httptest.NewServer(s.handler())
	s.URL = s.http.URL
	return s, nil
}

// Close stops every allocation, waits for their processes to exit and
// shuts the server down.
func (s *Server) Close() {
	s.mu.Lock()
	s.closed = true
	for _, a := range s.allocs {
		a.stopLocked("server closed")
	}
	s.mu.Unlock()
	s.running.Wait()
	s.http.CloseClientConnections()
	s.http.Close()
	if s.ownDir {
		os.RemoveAll(s.cfg.Dir)
	}
}

// Processes returns the PIDs of the task processes running now.
func (s *Server) Processes() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []int
	for _, a := range s.allocs {
		if a.pid != 0 {
			out = append(out, a.pid)
		}
	}
	sort.Ints(out)
	return out
}

// Requests counts the API requests the server has answered, so that tests
// can tell blocking queries from polling.
func (s *Server) Requests() int64 { return s.requests.Load() }

// write records a change to tables at a new index and wakes blocking
// queries. s.mu must be held.
func (s *Server) write(tables ...string) uint64 {
	s.index++
	for _, t := range tables {
		s.tables[t] = s.index
	}
	close(s.changed)
	s.changed = make(chan struct{})
	return s.index
}

// codedError is an error with the HTTP status Nomad answers it with.
type codedError struct {
	code int
	msg  string
}

func (e *codedError) Error() string { return e.msg }

func coded(code int, format string, args ...any) error {
	return &codedError{code, fmt.Sprintf(format, args...)}
}

func (s *Server) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/jobs", s.wrap(s.jobsRequest))
	mux.HandleFunc("/v1/validate/job", s.wrap(s.validateRequest))
	mux.HandleFunc("/v1/job/", s.wrap(s.jobRequest))
	mux.HandleFunc("/v1/service/", s.wrap(s.serviceRequest))
	mux.HandleFunc("/v1/client/fs/logs/", s.logsRequest)
	mux.HandleFunc("/v1/var/", s.wrap(s.varRequest))
	mux.HandleFunc("/v1/vars", s.wrap(s.varsRequest))
	mux.HandleFunc("/v1/status/leader", s.wrap(func(w http.ResponseWriter, r *http.Request) (any, error) {
		return "127.0.0.1:4647", nil
	}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNotFound)
	})
	return mux
}

// wrap answers like Nomad's HTTP agent: JSON on success, the error text as
// plain text with its code (500 when it has none) on failure.
func (s *Server) wrap(h func(http.ResponseWriter, *http.Request) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		out, err := s.authorize(r)
		if err == nil {
			out, err = h(w, r)
		}
		if errors.Is(err, errWritten) {
			return // the handler answered itself (a 409, a 204)
		}
		if err != nil {
			code := http.StatusInternalServerError
			var ce *codedError
			if errors.As(err, &ce) {
				code = ce.code
			}
			s.cfg.Logger.Debug("nomadtest: request failed", "method", r.Method, "url", r.URL.String(), "code", code, "err", err)
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.WriteHeader(code)
			io.WriteString(w, err.Error())
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(out)
	}
}

// authorize checks the token and the region of a request.
func (s *Server) authorize(r *http.Request) (any, error) {
	if s.cfg.Token != "" {
		tok := r.Header.Get("X-Nomad-Token")
		if tok == "" {
			tok = strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		}
		if tok == "" {
			return nil, coded(http.StatusForbidden, "Permission denied")
		}
		if tok != s.cfg.Token {
			return nil, coded(http.StatusForbidden, "ACL token not found")
		}
	}
	if reg := r.URL.Query().Get("region"); reg != "" && reg != s.cfg.Region {
		return nil, fmt.Errorf("No path to region")
	}
	return nil, nil
}

// namespace is the request's namespace: the query parameter, else
// fallback, else "default".
func (s *Server) namespace(r *http.Request, fallback string) (string, error) {
	ns := r.URL.Query().Get("namespace")
	if ns == "" {
		ns = fallback
	}
	if ns == "" {
		ns = api.DefaultNamespace
	}
	if ns != api.DefaultNamespace && !contains(s.cfg.Namespaces, ns) {
		return "", fmt.Errorf("nonexistent namespace %q", ns)
	}
	return ns, nil
}

// blocking answers a read as Nomad's blocking queries do: read runs under
// s.mu and returns the answer and its index (the index of the table it
// reads, as Nomad's list endpoints answer); with ?index=N the answer
// waits until its index passes N or ?wait= (default and cap 5 minutes,
// plus up to 1/16 jitter) has passed. The index goes in X-Nomad-Index.
func (s *Server) blocking(w http.ResponseWriter, r *http.Request, read func() (any, uint64, error)) (any, error) {
	q := r.URL.Query()
	var min uint64
	if v := q.Get("index"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return nil, coded(http.StatusBadRequest, "Invalid index")
		}
		min = n
	}
	wait := 5 * time.Minute
	if v := q.Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			return nil, coded(http.StatusBadRequest, "Invalid wait time")
		}
		if d > 0 && d < wait {
			wait = d
		}
	}
	if jitter := int64(wait / 16); jitter > 0 {
		n, _ := rand.Int(rand.Reader, big.NewInt(jitter))
		wait += time.Duration(n.Int64())
	}
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		out, index, err := read()
		changed := s.changed
		s.mu.Unlock()
		if err != nil {
			return nil, err
		}
		if index < 1 {
			index = 1
		}
		if min == 0 || index > min {
			setMeta(w, index)
			return out, nil
		}
		select {
		case <-changed:
		case <-deadline.C:
			setMeta(w, index)
			return out, nil
		case <-r.Context().Done():
			return nil, r.Context().Err()
		}
	}
}

func setMeta(w http.ResponseWriter, index uint64) {
	w.Header().Set("X-Nomad-Index", strconv.FormatUint(index, 10))
	w.Header().Set("X-Nomad-KnownLeader", "true")
	w.Header().Set("X-Nomad-LastContact", "0")
}

func (s *Server) jobsRequest(w http.ResponseWriter, r *http.Request) (any, error) {
	switch r.Method {
	case http.MethodGet:
		ns, err := s.namespace(r, "")
		if err != nil {
			return nil, err
		}
		// ?meta=true adds each job's meta block, as in Nomad 1.6 and later.
		meta, _ := strconv.ParseBool(r.URL.Query().Get("meta"))
		return s.blocking(w, r, func() (any, uint64, error) {
			out := []*api.JobListStub{}
			for k, js := range s.jobs {
				if k.ns == ns && strings.HasPrefix(k.id, r.URL.Query().Get("prefix")) {
					j := js.job
					stub := &api.JobListStub{
						ID: *j.ID, Name: *j.Name, Namespace: *j.Namespace, Type: *j.Type,
						Priority: *j.Priority, Stop: *j.Stop, Status: *j.Status, Datacenters: j.Datacenters,
						CreateIndex: *j.CreateIndex,
						ModifyIndex: *j.ModifyIndex, JobModifyIndex: *j.JobModifyIndex,
					}
					if meta {
						stub.Meta = maps.Clone(j.Meta)
					}
					out = append(out, stub)
				}
			}
			sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
			return out, s.tables["jobs"], nil
		})
	case http.MethodPut, http.MethodPost:
		return s.register(w, r, "")
	}
	return nil, coded(http.StatusMethodNotAllowed, "Invalid method")
}

func (s *Server) validateRequest(w http.ResponseWriter, r *http.Request) (any, error) {
	if r.Method != http.MethodPut && r.Method != http.MethodPost {
		return nil, coded(http.StatusMethodNotAllowed, "Invalid method")
	}
	var req api.JobValidateRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		return nil, coded(http.StatusBadRequest, "%v", err)
	}
	if req.Job == nil {
		return nil, coded(http.StatusBadRequest, "Job must be specified")
	}
	out := &api.JobValidateResponse{DriverConfigValidated: false}
	if err := Validate(req.Job); err != nil {
		out.Error = err.Error()
		var me multiError
		if errors.As(err, &me) {
			for _, e := range me {
				out.ValidationErrors = append(out.ValidationErrors, e.Error())
			}
		}
	}
	return out, nil
}

// jobRequest serves /v1/job/:id and its sub-resources, splitting on the
// suffix as Nomad's agent does.
func (s *Server) jobRequest(w http.ResponseWriter, r *http.Request) (any, error) {
	path := strings.TrimPrefix(r.URL.Path, "/v1/job/")
	sub := func(suffix string) (string, bool) {
		if strings.HasSuffix(path, suffix) {
			return strings.TrimSuffix(path, suffix), true
		}
		return "", false
	}
	if id, ok := sub("/allocations"); ok {
		return s.jobAllocations(w, r, id)
	}
	if id, ok := sub("/evaluations"); ok {
		return s.jobEvaluations(w, r, id)
	}
	if id, ok := sub("/scale"); ok {
		return s.scale(w, r, id)
	}
	if id, ok := sub("/deployment"); ok {
		return s.latestDeployment(w, r, id)
	}
	if id, ok := sub("/services"); ok {
		return s.jobServices(w, r, id)
	}
	switch r.Method {
	case http.MethodGet:
		return s.jobInfo(w, r, path)
	case http.MethodPut, http.MethodPost:
		return s.register(w, r, path)
	case http.MethodDelete:
		return s.deregister(w, r, path)
	}
	return nil, coded(http.StatusMethodNotAllowed, "Invalid method")
}

func (s *Server) jobInfo(w http.ResponseWriter, r *http.Request, id string) (any, error) {
	ns, err := s.namespace(r, "")
	if err != nil {
		return nil, err
	}
	return s.blocking(w, r, func() (any, uint64, error) {
		js, ok := s.jobs[jobKey{ns, id}]
		if !ok {
			return nil, 0, coded(http.StatusNotFound, "job not found")
		}
		j, err := copyJob(js.job)
		return j, *js.job.ModifyIndex, err
	})
}

// register is Job.Register: canonicalize, validate, store, evaluate.
func (s *Server) register(w http.ResponseWriter, r *http.Request, id string) (any, error) {
	var req api.JobRegisterRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		return nil, coded(http.StatusBadRequest, "%v", err)
	}
	if req.Job == nil {
		return nil, coded(http.StatusBadRequest, "Job must be specified")
	}
	if req.Job.ID == nil {
		return nil, coded(http.StatusBadRequest, "Job ID hasn't been provided")
	}
	if id != "" && *req.Job.ID != id {
		return nil, coded(http.StatusBadRequest, "Job ID does not match name")
	}
	if req.Job.Type != nil && *req.Job.Type == api.JobTypeSystem {
		for _, tg := range req.Job.TaskGroups {
			if tg.Scaling != nil {
				return nil, coded(http.StatusBadRequest, "Task groups with job type system do not support scaling blocks")
			}
		}
	}
	ns, err := s.namespace(r, firstNonEmpty(req.Namespace, deref(req.Job.Namespace)))
	if err != nil {
		return nil, err
	}
	job, err := canonical(req.Job)
	if err != nil {
		return nil, coded(http.StatusBadRequest, "%v", err)
	}
	*job.Namespace = ns
	*job.Region = s.cfg.Region
	if err := validate(job); err != nil {
		return nil, err
	}
	if !s.pools[*job.NodePool] {
		return nil, fmt.Errorf("job %q is in nonexistent node pool %q", *job.ID, *job.NodePool)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	key := jobKey{ns, *job.ID}
	prev := s.jobs[key]
	if req.EnforceIndex {
		switch {
		case prev != nil && req.JobModifyIndex == 0:
			return nil, fmt.Errorf("Enforcing job modify index 0: job already exists")
		case prev != nil && req.JobModifyIndex != *prev.job.JobModifyIndex:
			return nil, fmt.Errorf("Enforcing job modify index %d: job exists with conflicting job modify index: %d", req.JobModifyIndex, *prev.job.JobModifyIndex)
		case prev == nil && req.JobModifyIndex != 0:
			return nil, fmt.Errorf("Enforcing job modify index %d: job does not exist", req.JobModifyIndex)
		}
	}
	if prev != nil && req.PreserveCounts {
		for _, tg := range job.TaskGroups {
			if old := prev.job.LookupTaskGroup(*tg.Name); old != nil {
				*tg.Count = *old.Count
			}
		}
	}
	spec, err := specOf(job)
	if err != nil {
		return nil, err
	}
	resp := &api.JobRegisterResponse{}
	if prev != nil && prev.spec == spec && *prev.job.Stop == *job.Stop && sameCounts(prev.job, job) {
		// Nothing changed: Nomad still evaluates, without a new version.
		resp.JobModifyIndex = *prev.job.JobModifyIndex
	} else {
		index := s.write("jobs")
		job.CreateIndex, job.ModifyIndex, job.JobModifyIndex = new(index), new(index), new(index)
		job.SubmitTime = new(time.Now().UnixNano())
		job.Status = new("pending")
		if prev != nil {
			*job.CreateIndex = *prev.job.CreateIndex
			*job.Version = *prev.job.Version + 1
		}
		s.jobs[key] = &jobState{job: job, spec: spec}
		resp.JobModifyIndex = index
	}
	eval := s.evaluate(key, "job-register")
	resp.EvalID, resp.EvalCreateIndex = eval.ID, eval.CreateIndex
	setMeta(w, s.index)
	return resp, nil
}

// deregister is Job.Deregister: stop (and with ?purge=true forget) the
// job. A job that does not exist is not an error.
func (s *Server) deregister(w http.ResponseWriter, r *http.Request, id string) (any, error) {
	purge := false
	if v := r.URL.Query().Get("purge"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return nil, fmt.Errorf("Failed to parse value of %q (%v) as a bool: %v", "purge", v, err)
		}
		purge = b
	}
	ns, err := s.namespace(r, "")
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	key := jobKey{ns, id}
	resp := &api.JobDeregisterResponse{}
	if js, ok := s.jobs[key]; ok {
		index := s.write("jobs")
		*js.job.Stop = true
		*js.job.ModifyIndex, *js.job.JobModifyIndex = index, index
		resp.JobModifyIndex = index
		for _, d := range s.deployments {
			if d.JobID == id && d.Namespace == ns && d.Status == api.DeploymentStatusRunning {
				d.Status, d.StatusDescription = "cancelled", "Cancelled because job is stopped"
				d.ModifyIndex = s.write("deployment")
			}
		}
	}
	eval := s.evaluate(key, "job-deregister")
	if purge {
		delete(s.jobs, key)
		s.write("jobs")
	}
	resp.EvalID, resp.EvalCreateIndex = eval.ID, eval.CreateIndex
	setMeta(w, s.index)
	return resp, nil
}

// scale is Job.Scale.
func (s *Server) scale(w http.ResponseWriter, r *http.Request, id string) (any, error) {
	if r.Method == http.MethodGet {
		return nil, coded(http.StatusNotImplemented, "nomadtest: GET /v1/job/:id/scale is not served")
	}
	if r.Method != http.MethodPut && r.Method != http.MethodPost {
		return nil, coded(http.StatusMethodNotAllowed, "Invalid method")
	}
	var req api.ScalingRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		return nil, coded(http.StatusBadRequest, "%v", err)
	}
	if t := req.Target["Job"]; t != "" && t != id {
		return nil, coded(http.StatusBadRequest, "job ID in payload did not match URL")
	}
	ns, err := s.namespace(r, req.Namespace)
	if err != nil {
		return nil, err
	}
	if t := req.Target["Namespace"]; t != "" && t != ns {
		return nil, coded(http.StatusBadRequest, "namespace in payload did not match header")
	}
	group := req.Target["Group"]
	if group == "" {
		return nil, coded(http.StatusBadRequest, "missing task group name for scaling action")
	}
	if req.Count != nil {
		if *req.Count < 0 {
			return nil, coded(http.StatusBadRequest, "scaling action count can't be negative")
		}
		if req.Error {
			return nil, coded(http.StatusBadRequest, "scaling action should not contain count if error is true")
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	key := jobKey{ns, id}
	js, ok := s.jobs[key]
	if !ok {
		return nil, coded(http.StatusNotFound, "job %q not found", id)
	}
	tg := js.job.LookupTaskGroup(group)
	if tg == nil {
		return nil, coded(http.StatusBadRequest, "task group %q specified for scaling does not exist in job", group)
	}
	resp := &api.JobRegisterResponse{JobModifyIndex: *js.job.ModifyIndex}
	if req.Count == nil {
		setMeta(w, s.index)
		return resp, nil
	}
	if sp := tg.Scaling; sp != nil {
		if sp.Min != nil && *req.Count < *sp.Min {
			return nil, coded(http.StatusBadRequest, "group count was less than scaling policy minimum: %d < %d", *req.Count, *sp.Min)
		}
		if sp.Max != nil && *req.Count > *sp.Max {
			return nil, coded(http.StatusBadRequest, "group count was greater than scaling policy maximum: %d > %d", *req.Count, *sp.Max)
		}
	}
	if d := s.latest(key); d != nil && d.Status == api.DeploymentStatusRunning && d.JobCreateIndex == *js.job.CreateIndex {
		return nil, coded(http.StatusBadRequest, "job scaling blocked due to active deployment")
	}
	if req.JobModifyIndex > 0 && req.JobModifyIndex != *js.job.JobModifyIndex {
		return nil, fmt.Errorf("Enforcing job modify index %d: job exists with conflicting job modify index: %d", req.JobModifyIndex, *js.job.JobModifyIndex)
	}
	index := s.write("jobs")
	*tg.Count = int(*req.Count)
	*js.job.ModifyIndex, *js.job.JobModifyIndex = index, index
	*js.job.Version++
	resp.JobModifyIndex = index
	eval := s.evaluate(key, "job-scaling")
	resp.EvalID, resp.EvalCreateIndex = eval.ID, eval.CreateIndex
	setMeta(w, s.index)
	return resp, nil
}

func (s *Server) jobAllocations(w http.ResponseWriter, r *http.Request, id string) (any, error) {
	ns, err := s.namespace(r, "")
	if err != nil {
		return nil, err
	}
	all, _ := strconv.ParseBool(r.URL.Query().Get("all"))
	_ = all // the double keeps no allocations of earlier jobs with the same ID
	return s.blocking(w, r, func() (any, uint64, error) {
		out := []*api.AllocationListStub{}
		for _, a := range s.allocs {
			if a.stub.JobID == id && a.stub.Namespace == ns {
				out = append(out, a.copyStub())
			}
		}
		sort.Slice(out, func(i, j int) bool { return out[i].CreateIndex < out[j].CreateIndex })
		return out, s.tables["allocs"], nil
	})
}

func (s *Server) jobEvaluations(w http.ResponseWriter, r *http.Request, id string) (any, error) {
	ns, err := s.namespace(r, "")
	if err != nil {
		return nil, err
	}
	return s.blocking(w, r, func() (any, uint64, error) {
		out := []*api.Evaluation{}
		for _, e := range s.evals {
			if e.JobID == id && e.Namespace == ns {
				c := *e
				out = append(out, &c)
			}
		}
		sort.Slice(out, func(i, j int) bool { return out[i].CreateIndex > out[j].CreateIndex })
		return out, s.tables["evals"], nil
	})
}

func (s *Server) latestDeployment(w http.ResponseWriter, r *http.Request, id string) (any, error) {
	ns, err := s.namespace(r, "")
	if err != nil {
		return nil, err
	}
	return s.blocking(w, r, func() (any, uint64, error) {
		d := s.latest(jobKey{ns, id})
		if d == nil {
			return nil, s.tables["deployment"], nil
		}
		c := *d
		return &c, d.ModifyIndex, nil
	})
}

func (s *Server) jobServices(w http.ResponseWriter, r *http.Request, id string) (any, error) {
	ns, err := s.namespace(r, "")
	if err != nil {
		return nil, err
	}
	return s.blocking(w, r, func() (any, uint64, error) {
		if _, ok := s.jobs[jobKey{ns, id}]; !ok {
			return nil, 0, coded(http.StatusNotFound, "job not found")
		}
		return s.servicesWhere(func(sr *api.ServiceRegistration) bool { return sr.JobID == id && sr.Namespace == ns })
	})
}

func (s *Server) serviceRequest(w http.ResponseWriter, r *http.Request) (any, error) {
	name := strings.TrimPrefix(r.URL.Path, "/v1/service/")
	if r.Method != http.MethodGet {
		return nil, coded(http.StatusMethodNotAllowed, "Invalid method")
	}
	if name == "" {
		return nil, coded(http.StatusBadRequest, "missing service name")
	}
	if strings.Contains(name, "/") {
		return nil, coded(http.StatusBadRequest, "invalid URI")
	}
	ns, err := s.namespace(r, "")
	if err != nil {
		return nil, err
	}
	return s.blocking(w, r, func() (any, uint64, error) {
		return s.servicesWhere(func(sr *api.ServiceRegistration) bool { return sr.ServiceName == name && sr.Namespace == ns })
	})
}

// servicesWhere lists matching registrations and their index. s.mu must be
// held.
func (s *Server) servicesWhere(match func(*api.ServiceRegistration) bool) (any, uint64, error) {
	out := []*api.ServiceRegistration{}
	for _, sr := range s.services {
		if match(sr) {
			c := *sr
			out = append(out, &c)
		}
	}
	// Nomad answers with the table's index: the highest index of what is
	// left would miss a deletion.
	index := s.tables["service_registrations"]
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, index, nil
}

// logsRequest serves /v1/client/fs/logs/:alloc_id with plain=true: the
// task's stdout or stderr, from offset bytes after the start or before
// the end (origin=end).
func (s *Server) logsRequest(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	if _, err := s.authorize(r); err != nil {
		http.Error(w, err.Error(), http.StatusForbidden)
		return
	}
	q := r.URL.Query()
	id := strings.TrimPrefix(r.URL.Path, "/v1/client/fs/logs/")
	s.mu.Lock()
	a, ok := s.allocs[id]
	s.mu.Unlock()
	if !ok {
		http.Error(w, "unknown allocation ID", http.StatusNotFound)
		return
	}
	if q.Get("plain") != "true" || q.Get("follow") == "true" {
		http.Error(w, "nomadtest serves plain=true&follow=false logs only", http.StatusNotImplemented)
		return
	}
	typ := q.Get("type")
	if typ != "stdout" && typ != "stderr" {
		http.Error(w, "must include type of log file: stdout or stderr", http.StatusBadRequest)
		return
	}
	task := q.Get("task")
	if task != a.task.Name {
		http.Error(w, fmt.Sprintf("unknown task name %q", task), http.StatusBadRequest)
		return
	}
	b, err := os.ReadFile(filepath.Join(a.dir, "alloc", "logs", task+"."+typ+".0"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	off, _ := strconv.Atoi(q.Get("offset"))
	off = min(max(off, 0), len(b))
	if q.Get("origin") == "end" {
		b = b[len(b)-off:]
	} else {
		b = b[off:]
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write(b)
}

// copyJob deep-copies a job through its JSON.
func copyJob(j *api.Job) (*api.Job, error) {
	b, err := json.Marshal(j)
	if err != nil {
		return nil, fmt.Errorf("encode job: %w", err)
	}
	var out api.Job
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("decode job: %w", err)
	}
	return &out, nil
}

// specOf is a job's JSON without what a scale or the server changes.
func specOf(j *api.Job) (string, error) {
	c, err := copyJob(j)
	if err != nil {
		return "", err
	}
	for _, tg := range c.TaskGroups {
		tg.Count = nil
	}
	c.Stop, c.Status, c.Version, c.SubmitTime = nil, nil, nil, nil
	c.CreateIndex, c.ModifyIndex, c.JobModifyIndex = nil, nil, nil
	b, err := json.Marshal(c)
	return string(b), err
}

func sameCounts(a, b *api.Job) bool {
	for _, tg := range b.TaskGroups {
		old := a.LookupTaskGroup(*tg.Name)
		if old == nil || *old.Count != *tg.Count {
			return false
		}
	}
	return true
}

func uuid() string {
	b := make([]byte, 16)
	rand.Read(b)
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func contains(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

func firstNonEmpty(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}
