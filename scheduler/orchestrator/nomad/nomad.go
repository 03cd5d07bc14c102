// Package nomad is the orchestrator driver that runs each deployment as a
// Nomad job (rendered by package jobs) through Nomad's HTTP API.
//
// Ensure registers the job, or only scales it (POST /v1/job/:id/scale) when
// the replica count is all that changed; Remove stops and purges it. For
// each deployment the driver follows three lists with blocking queries (the
// job's allocations, its evaluations and the service's registrations), so
// it learns of a change when Nomad does and asks Nomad nothing in between;
// each list is queried at most once per MinQueryInterval.
// Nomad lists a service's instances whether or not they answer, so a
// replica counts as ready only once the driver's own GET /ping answers 200
// and while its allocation runs.
//
// Nomad jobs outlive the scheduler: Close stops the driver's watchers and
// leaves the jobs running, a restarted scheduler adopts them when it
// ensures the same deployments again, and Prune purges those of endpoints
// deleted meanwhile.
package nomad

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gantry/gantry/jobs"
	"github.com/gantry/gantry/scheduler/orchestrator"
	"github.com/hashicorp/nomad/api"
)

// Config configures a Driver. It works at its zero value.
type Config struct {
	// Client says how to reach Nomad; nil means api.DefaultConfig(), which
	// reads NOMAD_ADDR, NOMAD_TOKEN, NOMAD_NAMESPACE, NOMAD_REGION,
	// NOMAD_CACERT, NOMAD_CLIENT_CERT, NOMAD_CLIENT_KEY and friends.
	Client *api.Config
	// Jobs shape the rendered jobs. An empty Namespace or Region is taken
	// from Client, so that the job says where it runs.
	Jobs jobs.Settings
	// WaitTime bounds each blocking query; default 5 minutes, Nomad's
	// own default and cap.
	WaitTime time.Duration
	// MinQueryInterval is the least time between two blocking queries of
	// one watcher; default 100 ms.
	MinQueryInterval time.Duration
	// ProbeInterval is how often a ready replica's /ping is checked again;
	// two failures in a row take it out until it answers again. Default 5 s.
	ProbeInterval time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Driver runs deployments as Nomad jobs. It is safe for concurrent use.
type Driver struct {
	cfg    Config
	client *api.Client
	notify func(id string)
	probe  *http.Client
	ctx    context.Context
	cancel context.CancelFunc
	// running counts watcher and prober goroutines, so Close can wait.
	running sync.WaitGroup

	// mu guards deps and every deployment's fields.
	mu   sync.Mutex
	deps map[string]*deployment
}

// deployment is what the driver knows of one job.
type deployment struct {
	spec    orchestrator.Deployment
	job     string // the Nomad job ID
	service string
	cancel  context.CancelFunc // stops the watchers and probers

	// applied is the spec Nomad last accepted; nil before.
	applied *orchestrator.Deployment
	// submitErr is why Nomad refused the last register or scale of the
	// spec refused; Ensure asks again with the same spec only after
	// retryAt, backing off from 1 s to a minute.
	submitErr error
	refused   orchestrator.Deployment
	retryAt   time.Time
	backoff   time.Duration

	allocs   map[string]*api.AllocationListStub
	services []*api.ServiceRegistration
	// placement says why Nomad cannot place allocations (a blocked
	// evaluation), empty when it can.
	placement string
	// probes holds the replicas being probed, by allocation ID.
	probes map[string]*probe
	// seen counts the failure events counted so far, by allocation ID;
	// evals holds the blocked and failed evaluations counted.
	seen     map[string]int
	evals    map[string]bool
	failures uint64
	failure  string

	last orchestrator.Status // the status last notified
}

// probe is the driver's readiness check of one replica.
type probe struct {
	addr   string
	ready  bool
	cancel context.CancelFunc
}

// New returns a driver. notify is called, without locks held, with a
// deployment's ID each time its Status changes; it must not block.
func New(cfg Config, notify func(id string)) (*Driver, error) {
	if cfg.Client == nil {
		cfg.Client = api.DefaultConfig()
	}
	if cfg.Jobs.Namespace == "" {
		cfg.Jobs.Namespace = cfg.Client.Namespace
	}
	if cfg.Jobs.Region == "" {
		cfg.Jobs.Region = cfg.Client.Region
	}
	if err := cfg.Jobs.Validate(); err != nil {
		return nil, fmt.Errorf("nomad driver: %w", err)
	}
	if cfg.WaitTime <= 0 {
		cfg.WaitTime = 5 * time.Minute
	}
	if cfg.MinQueryInterval <= 0 {
		cfg.MinQueryInterval = 100 * time.Millisecond
	}
	if cfg.ProbeInterval <= 0 {
		cfg.ProbeInterval = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if notify == nil {
		notify = func(string) {}
	}
	client, err := api.NewClient(cfg.Client)
	if err != nil {
		return nil, fmt.Errorf("nomad driver: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Driver{
		cfg:    cfg,
		client: client,
		notify: notify,
		probe:  &http.Client{Timeout: 2 * time.Second},
		ctx:    ctx,
		cancel: cancel,
		deps:   make(map[string]*deployment),
	}, nil
}

// Ensure registers the deployment's job, or scales it when only the
// replica count changed. It returns once Nomad has the job; the workers
// start on their own.
func (d *Driver) Ensure(ctx context.Context, spec orchestrator.Deployment) error {
	d.mu.Lock()
	dep, ok := d.deps[spec.ID]
	if !ok {
		dep = d.watch(spec)
	}
	dep.spec = spec
	prev := dep.applied
	if dep.submitErr != nil && reflect.DeepEqual(dep.refused, spec) && time.Now().Before(dep.retryAt) {
		err := dep.submitErr
		d.mu.Unlock()
		return err
	}
	d.mu.Unlock()

	w := (&api.WriteOptions{}).WithContext(ctx)
	var err error
	if prev != nil && sameButCount(*prev, spec) {
		n := spec.Replicas
		_, _, err = d.client.Jobs().Scale(dep.job, jobs.Group, &n, fmt.Sprintf("gantry: %d replicas", n), false, nil, w)
		if statusCode(err) == http.StatusNotFound {
			// Someone purged the job: register it again.
			prev, err = nil, nil
		}
		if err != nil {
			err = fmt.Errorf("scale job %s to %d: %w", dep.job, n, err)
		}
	}
	if prev == nil || !sameButCount(*prev, spec) {
		var job *api.Job
		job, err = jobs.Render(spec, d.cfg.Jobs)
		if err == nil {
			_, _, err = d.client.Jobs().Register(job, w)
			if err != nil {
				err = fmt.Errorf("register job %s: %w", dep.job, err)
			}
		}
	}

	d.mu.Lock()
	if err != nil && ctx.Err() == nil {
		// Nomad refused: the user sees why, and held requests fail now
		// rather than at their timeout.
		dep.submitErr = err
		dep.failures++
		dep.backoff = min(max(2*dep.backoff, time.Second), time.Minute)
		dep.retryAt = time.Now().Add(dep.backoff)
		dep.refused = spec
		dep.applied = prev
	} else if err == nil {
		applied := spec
		dep.applied = &applied
		dep.submitErr, dep.backoff = nil, 0
	}
	d.mu.Unlock()
	d.changed(spec.ID)
	return err
}

// Remove stops and purges the deployment's job. It does not wait for the
// workers: Nomad stops them with their kill timeout.
func (d *Driver) Remove(ctx context.Context, id string) error {
	d.mu.Lock()
	dep, ok := d.deps[id]
	d.mu.Unlock()
	job := id // a deployment's ID is its Nomad job's ID
	if ok {
		job = dep.job
	}
	_, _, err := d.client.Jobs().Deregister(job, true, (&api.WriteOptions{}).WithContext(ctx))
	if err != nil && statusCode(err) != http.StatusNotFound {
		return fmt.Errorf("stop job %s: %w", job, err)
	}
	if ok {
		d.mu.Lock()
		delete(d.deps, id)
		dep.cancel()
		d.mu.Unlock()
		d.notify(id)
	}
	return nil
}

// RenderJob is the Nomad job that Ensure registers for d.
func (d *Driver) RenderJob(spec orchestrator.Deployment) (any, error) {
	return jobs.Render(spec, d.cfg.Jobs)
}

// Prune stops and purges Gantry's jobs in the driver's namespace whose
// deployment is not in keep: the jobs of endpoints deleted while the
// scheduler was down, which nothing else would stop. A job is Gantry's when
// its meta names a deployment (jobs.MetaDeployment); other jobs in the
// namespace are left alone. The listing needs Nomad 1.6 or later, which
// returns the meta with ?meta=true.
func (d *Driver) Prune(ctx context.Context, keep []string) error {
	want := make(map[string]bool, len(keep))
	for _, id := range keep {
		want[id] = true
	}
	q := (&api.QueryOptions{Namespace: d.cfg.Jobs.Namespace}).WithContext(ctx)
	list, _, err := d.client.Jobs().ListOptions(&api.JobListOptions{Fields: &api.JobListFields{Meta: true}}, q)
	if err != nil {
		return fmt.Errorf("list jobs: %w", err)
	}
	var errs []error
	for _, j := range list {
		if dep := j.Meta[jobs.MetaDeployment]; dep == "" || want[dep] || want[j.ID] {
			continue
		}
		d.cfg.Logger.Info("nomad: purge orphaned job", "job", j.ID)
		if err := d.Remove(ctx, j.ID); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Close stops following Nomad and waits for the watchers to end or ctx to
// end. The jobs keep running.
func (d *Driver) Close(ctx context.Context) error {
	d.cancel()
	done := make(chan struct{})
	go func() { d.running.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stop nomad watchers: %w", ctx.Err())
	}
}

// Status reports what the driver knows of a deployment; an unknown ID has
// no instances.
func (d *Driver) Status(id string) orchestrator.Status {
	d.mu.Lock()
	defer d.mu.Unlock()
	dep, ok := d.deps[id]
	if !ok {
		return orchestrator.Status{ID: id}
	}
	return dep.status()
}

// status joins the service's registrations with their allocations and the
// probes. d.mu must be held.
func (dep *deployment) status() orchestrator.Status {
	s := orchestrator.Status{ID: dep.spec.ID, Desired: dep.spec.Replicas, Failures: dep.failures}
	for _, sr := range dep.services {
		a := dep.allocs[sr.AllocID]
		if a == nil || a.DesiredStatus != api.AllocDesiredStatusRun {
			continue
		}
		in := orchestrator.Instance{ID: sr.AllocID, Addr: net.JoinHostPort(sr.Address, strconv.Itoa(sr.Port))}
		if p := dep.probes[sr.AllocID]; p != nil && p.addr == in.Addr {
			in.Ready = p.ready && running(a)
		}
		s.Instances = append(s.Instances, in)
	}
	if s.Ready() == 0 {
		switch {
		case dep.submitErr != nil:
			s.Failure = dep.submitErr.Error()
		case dep.placement != "":
			s.Failure = dep.placement
		default:
			s.Failure = dep.failure
		}
	}
	return s
}

// running reports whether an allocation runs and Nomad holds it healthy
// (when a deployment tracks its health).
func running(a *api.AllocationListStub) bool {
	if a.ClientStatus != api.AllocClientStatusRunning || a.DesiredStatus != api.AllocDesiredStatusRun {
		return false
	}
	if ts := a.TaskStates[jobs.Task]; ts == nil || ts.State != "running" {
		return false
	}
	ds := a.DeploymentStatus
	return ds == nil || ds.Healthy == nil || *ds.Healthy
}

// changed notifies when the deployment's status differs from the last one
// notified.
func (d *Driver) changed(id string) {
	d.mu.Lock()
	dep, ok := d.deps[id]
	if !ok {
		d.mu.Unlock()
		return
	}
	st := dep.status()
	same := reflect.DeepEqual(st, dep.last)
	dep.last = st
	d.mu.Unlock()
	if !same {
		d.notify(id)
	}
}

// watch adds a deployment and starts following it. d.mu must be held.
func (d *Driver) watch(spec orchestrator.Deployment) *deployment {
	ctx, cancel := context.WithCancel(d.ctx)
	dep := &deployment{
		spec: spec, job: spec.ID, service: jobs.ServiceName(spec.ID), cancel: cancel,
		allocs: map[string]*api.AllocationListStub{}, probes: map[string]*probe{}, seen: map[string]int{}, evals: map[string]bool{},
	}
	d.deps[spec.ID] = dep
	id := spec.ID
	d.follow(ctx, id, "allocations", func(q *api.QueryOptions) (*api.QueryMeta, error) {
		allocs, meta, err := d.client.Jobs().Allocations(dep.job, false, q)
		if err == nil {
			d.allocations(ctx, dep, allocs)
		}
		return meta, err
	})
	d.follow(ctx, id, "evaluations", func(q *api.QueryOptions) (*api.QueryMeta, error) {
		evals, meta, err := d.client.Jobs().Evaluations(dep.job, q)
		if err == nil {
			d.mu.Lock()
			dep.placement = placementFailure(evals)
			// Forget evaluations Nomad has garbage-collected.
			current := make(map[string]bool, len(evals))
			for _, e := range evals {
				current[e.ID] = true
			}
			for id := range dep.evals {
				if !current[id] {
					delete(dep.evals, id)
				}
			}
			for _, e := range evals {
				// Each blocked or failed evaluation is a start that failed:
				// counting it fails the requests held for it.
				if (e.Status == api.EvalStatusBlocked || e.Status == api.EvalStatusFailed) && !dep.evals[e.ID] {
					dep.evals[e.ID] = true
					dep.failures++
				}
			}
			d.mu.Unlock()
		}
		return meta, err
	})
	d.follow(ctx, id, "service", func(q *api.QueryOptions) (*api.QueryMeta, error) {
		regs, meta, err := d.client.Services().Get(dep.service, q)
		if err == nil {
			d.services(ctx, dep, regs)
		}
		return meta, err
	})
	return dep
}

// follow runs query as a blocking query in its own goroutine until ctx
// ends, feeding each answer's index into the next, and notifies after each
// answer if the status changed. Errors back off from 1 s to 30 s.
func (d *Driver) follow(ctx context.Context, id, what string, query func(*api.QueryOptions) (*api.QueryMeta, error)) {
	d.running.Add(1)
	go func() {
		defer d.running.Done()
		var index uint64
		backoff := time.Second
		for ctx.Err() == nil {
			q := (&api.QueryOptions{WaitIndex: index, WaitTime: d.cfg.WaitTime}).WithContext(ctx)
			meta, err := query(q)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				d.cfg.Logger.Warn("nomad: follow "+what, "deployment", id, "err", err, "retry_in", backoff)
				select {
				case <-ctx.Done():
					return
				case <-time.After(backoff):
				}
				backoff = min(2*backoff, 30*time.Second)
				continue
			}
			backoff = time.Second
			// Nomad answers with the index the next query waits past (its
			// lists' indexes are table-wide: any change in the cluster wakes
			// the query). An index that went backwards means Nomad restored
			// a snapshot: start over with 0, which answers at once. Else
			// keep at least 1, as 0 would never block.
			if meta.LastIndex < index && index > 1 {
				index = 0
			} else {
				index = max(meta.LastIndex, 1)
			}
			d.changed(id)
			// A busy cluster wakes every watcher on every allocation change:
			// pause between queries, as Nomad's own watchers (and its
			// autoscaler) rate-limit theirs, so one deployment costs at most
			// a few queries a second however much else changes.
			select {
			case <-ctx.Done():
				return
			case <-time.After(d.cfg.MinQueryInterval):
			}
		}
	}()
}

// failureEvents are the task events that mean a start failed or a worker
// exited.
var failureEvents = map[string]bool{
	api.TaskTerminated: true, api.TaskDriverFailure: true, api.TaskArtifactDownloadFailed: true,
	api.TaskSetupFailure: true, api.TaskFailedValidation: true,
}

// allocations takes a new list of the job's allocations: it counts new
// failure events and, for the newest, fetches the end of the task's
// stderr so that the failure says why.
func (d *Driver) allocations(ctx context.Context, dep *deployment, list []*api.AllocationListStub) {
	type failed struct {
		alloc string
		event *api.TaskEvent
	}
	var newest *failed
	d.mu.Lock()
	dep.allocs = make(map[string]*api.AllocationListStub, len(list))
	// Nomad garbage-collects old allocations: forget their counts too.
	seen := make(map[string]int, len(list))
	for _, a := range list {
		dep.allocs[a.ID] = a
		ts := a.TaskStates[jobs.Task]
		if ts == nil {
			continue
		}
		n := 0
		// Nomad's task runner emits Terminated after every kill, the
		// driver's own scale-downs and stops included: a Terminated that
		// follows a Killing (with no start in between), or of an
		// allocation Nomad is stopping, is a stop, not a failure.
		killing := false
		for _, e := range ts.Events {
			switch e.Type {
			case api.TaskKilling:
				killing = true
			case api.TaskStarted:
				killing = false
			}
			if !failureEvents[e.Type] {
				continue
			}
			if e.Type == api.TaskTerminated && (killing || a.DesiredStatus == api.AllocDesiredStatusStop) {
				continue
			}
			n++
			if n > dep.seen[a.ID] {
				dep.failures++
				if newest == nil || e.Time > newest.event.Time {
					newest = &failed{a.ID, e}
				}
			}
		}
		seen[a.ID] = max(dep.seen[a.ID], n)
	}
	dep.seen = seen
	d.mu.Unlock()
	if newest == nil {
		return
	}
	msg := fmt.Sprintf("allocation %s: %s: %s", short(newest.alloc), newest.event.Type, eventMessage(newest.event))
	if newest.event.Type == api.TaskTerminated {
		if tail := d.stderrTail(ctx, newest.alloc); tail != "" {
			msg += "\n" + tail
		}
	}
	d.mu.Lock()
	dep.failure = msg
	d.mu.Unlock()
}

func eventMessage(e *api.TaskEvent) string {
	for _, m := range []string{e.DisplayMessage, e.Message, e.Details["driver_error"], e.Details["download_error"]} {
		if m != "" {
			return m
		}
	}
	return "no message"
}

// stderrTail returns the last lines the task wrote to stderr, or "" when
// Nomad cannot say.
func (d *Driver) stderrTail(ctx context.Context, alloc string) string {
	b, err := d.logs(ctx, alloc, "stderr", 4<<10)
	if err != nil {
		d.cfg.Logger.Debug("nomad: read task stderr", "alloc", alloc, "err", err)
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-5):], "\n")
}

// logs reads the last n bytes of one of the task's logs.
func (d *Driver) logs(ctx context.Context, alloc, typ string, n int) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	v := url.Values{"task": {jobs.Task}, "type": {typ}, "origin": {"end"}, "offset": {strconv.Itoa(n)}, "plain": {"true"}}
	r, err := d.client.Raw().Response("/v1/client/fs/logs/"+url.PathEscape(alloc)+"?"+v.Encode(), (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(io.LimitReader(r, int64(n)))
}

// Logs returns the end of the output of the deployment's newest
// allocations, read through Nomad's client filesystem API.
func (d *Driver) Logs(id string) (string, bool) {
	d.mu.Lock()
	dep, ok := d.deps[id]
	var allocs []*api.AllocationListStub
	if ok {
		for _, a := range dep.allocs {
			allocs = append(allocs, a)
		}
	}
	d.mu.Unlock()
	if !ok {
		return "", false
	}
	sort.Slice(allocs, func(i, j int) bool { return allocs[i].CreateIndex > allocs[j].CreateIndex })
	var b strings.Builder
	for _, a := range allocs[:min(3, len(allocs))] {
		for _, typ := range []string{"stdout", "stderr"} {
			out, err := d.logs(d.ctx, a.ID, typ, 16<<10)
			if err != nil || len(out) == 0 {
				continue
			}
			fmt.Fprintf(&b, "==> allocation %s %s <==\n%s\n", short(a.ID), typ, strings.TrimRight(string(out), "\n"))
		}
	}
	return b.String(), true
}

// services takes a new list of the service's registrations and starts or
// stops the probes to match.
func (d *Driver) services(ctx context.Context, dep *deployment, regs []*api.ServiceRegistration) {
	d.mu.Lock()
	defer d.mu.Unlock()
	dep.services = regs
	want := map[string]string{}
	for _, sr := range regs {
		want[sr.AllocID] = net.JoinHostPort(sr.Address, strconv.Itoa(sr.Port))
	}
	for alloc, p := range dep.probes {
		if want[alloc] != p.addr {
			p.cancel()
			delete(dep.probes, alloc)
		}
	}
	for alloc, addr := range want {
		if _, ok := dep.probes[alloc]; ok {
			continue
		}
		pctx, cancel := context.WithCancel(ctx)
		p := &probe{addr: addr, cancel: cancel}
		dep.probes[alloc] = p
		d.running.Add(1)
		go d.probeLoop(pctx, dep, p)
	}
}

// probeLoop checks a replica's /ping: every few milliseconds at first (a
// native model loads in milliseconds, and cold starts are what users wait
// for), up to every 500 ms while it is not ready, then every ProbeInterval.
func (d *Driver) probeLoop(ctx context.Context, dep *deployment, p *probe) {
	defer d.running.Done()
	interval := 5 * time.Millisecond
	misses := 0
	for {
		ok := d.ping(ctx, p.addr)
		d.mu.Lock()
		was := p.ready
		switch {
		case ok:
			p.ready, misses = true, 0
			dep.failure = "" // a replica answers: older failures are history
		case was:
			misses++
			if misses >= 2 {
				p.ready = false
			}
		}
		now := p.ready
		id := dep.spec.ID
		d.mu.Unlock()
		if now != was {
			d.changed(id)
		}
		wait := interval
		if now {
			wait = d.cfg.ProbeInterval
		} else {
			interval = min(2*interval, 500*time.Millisecond)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

func (d *Driver) ping(ctx context.Context, addr string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/ping", nil)
	if err != nil {
		return false
	}
	resp, err := d.probe.Do(req)
	if err != nil {
		return false
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// placementFailure says why Nomad cannot place the job's allocations: the
// failed placements of the evaluation that created the job's blocked
// evaluation, or of a failed evaluation. Empty when nothing is blocked.
//
// Only evaluations newer than the newest complete one that placed
// everything count: Nomad merely untracks the blocked evaluation that
// such an evaluation makes moot, and leaves its status "blocked".
func placementFailure(evals []*api.Evaluation) string {
	byBlocked := map[string]*api.Evaluation{}
	for _, e := range evals {
		if e.BlockedEval != "" {
			byBlocked[e.BlockedEval] = e
		}
	}
	sort.Slice(evals, func(i, j int) bool { return evals[i].CreateIndex > evals[j].CreateIndex })
	for _, e := range evals {
		switch e.Status {
		case api.EvalStatusComplete:
			if len(e.FailedTGAllocs) == 0 {
				return ""
			}
		case api.EvalStatusBlocked:
			if src := byBlocked[e.ID]; src != nil && len(src.FailedTGAllocs) > 0 {
				return describeFailedPlacements(src.FailedTGAllocs)
			}
			return "Nomad cannot place the job's allocations yet (blocked evaluation " + short(e.ID) + ")"
		case api.EvalStatusFailed:
			return "Nomad evaluation " + short(e.ID) + " failed: " + e.StatusDescription
		}
	}
	return ""
}

// describeFailedPlacements condenses AllocationMetrics into one line, the
// way `nomad job status` explains them.
func describeFailedPlacements(failed map[string]*api.AllocationMetric) string {
	groups := make([]string, 0, len(failed))
	for g := range failed {
		groups = append(groups, g)
	}
	sort.Strings(groups)
	var out []string
	for _, g := range groups {
		m := failed[g]
		var why []string
		if m.NodesEvaluated == 0 {
			if m.NodesInPool == 0 && m.NodePool != "" {
				why = append(why, fmt.Sprintf("no nodes in node pool %q", m.NodePool))
			} else {
				why = append(why, "no nodes were eligible for evaluation (check the datacenters)")
			}
		}
		for _, c := range sortedKeys(m.ConstraintFiltered) {
			why = append(why, fmt.Sprintf("constraint %q filtered %s", c, nodes(m.ConstraintFiltered[c])))
		}
		for _, dim := range sortedKeys(m.DimensionExhausted) {
			why = append(why, fmt.Sprintf("dimension %q exhausted on %s", dim, nodes(m.DimensionExhausted[dim])))
		}
		if m.NodesExhausted > 0 && len(m.DimensionExhausted) == 0 {
			why = append(why, fmt.Sprintf("resources exhausted on %s", nodes(m.NodesExhausted)))
		}
		n := 1 + m.CoalescedFailures
		plural := "s"
		if n == 1 {
			plural = ""
		}
		out = append(out, fmt.Sprintf("Nomad cannot place %d allocation%s of group %q: %s", n, plural, g, strings.Join(why, "; ")))
	}
	return strings.Join(out, "; ")
}

func nodes(n int) string {
	if n == 1 {
		return "1 node"
	}
	return strconv.Itoa(n) + " nodes"
}

func sortedKeys(m map[string]int) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// sameButCount reports whether two specs differ in their replica count
// at most.
func sameButCount(a, b orchestrator.Deployment) bool {
	a.Replicas, b.Replicas = 0, 0
	return reflect.DeepEqual(a, b)
}

// statusCode is the HTTP status of a Nomad API error, 0 for other errors.
func statusCode(err error) int {
	var ue api.UnexpectedResponseError
	if errors.As(err, &ue) {
		return ue.StatusCode()
	}
	return 0
}

func short(id string) string { return id[:min(8, len(id))] }
