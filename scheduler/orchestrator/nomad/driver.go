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
// (package probe, the policy every driver shares) and while its allocation
// runs.
//
// Nomad jobs outlive the scheduler: Close stops the driver's watchers and
// leaves the jobs running, a restarted scheduler adopts them when it
// ensures the same deployments again, and Prune purges those of endpoints
// deleted meanwhile.
//
// The files hold one job each: driver.go the Driver and its bookkeeping,
// submit.go registration with backoff, watch.go the blocking-query
// watchers, explain.go the pure functions that turn Nomad's API structs
// into the failure users see, ready.go the readiness probes of the
// service's instances, logs.go the tasks' output.
package nomad

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"reflect"
	"strconv"
	"sync"
	"time"

	"github.com/gantry/gantry/jobs"
	"github.com/gantry/gantry/scheduler/orchestrator"
	"github.com/gantry/gantry/scheduler/orchestrator/probe"
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
	// probe.Misses (3) failures in a row take it out until it answers
	// again. Default 5 s (probe.DefaultInterval).
	ProbeInterval time.Duration
	// Clock is the time the driver reads (submit backoff) and waits on
	// (watcher pauses and retries, probe pacing); nil: the wall clock.
	// Tests pass a *fakeclock.Clock. Nomad's blocking queries and the log
	// reads' 5 s deadline are network timeouts and keep the wall clock.
	Clock Clock
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Clock is the driver's source of time; *fakeclock.Clock is one.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type wallClock struct{}

func (wallClock) Now() time.Time                         { return time.Now() }
func (wallClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Driver runs deployments as Nomad jobs. It is safe for concurrent use.
type Driver struct {
	cfg    Config
	client *api.Client
	notify func(id string)
	prober *probe.Prober
	ctx    context.Context
	cancel context.CancelFunc
	// running counts watcher and prober goroutines, so Close can wait.
	running sync.WaitGroup

	// mu guards deps and every deployment's and replicaProbe's mutable
	// fields.
	mu   sync.Mutex
	deps map[string]*deployment
}

// deployment is what the driver knows of one job. job, service and cancel
// never change; Driver.mu guards the other fields.
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
	probes map[string]*replicaProbe
	// seen counts the failure events counted so far, by allocation ID;
	// evals holds the blocked and failed evaluations counted.
	seen     map[string]int
	evals    map[string]bool
	failures uint64
	failure  string

	last orchestrator.Status // the status last notified
}

func newDeployment(spec orchestrator.Deployment, cancel context.CancelFunc) *deployment {
	return &deployment{
		spec: spec, job: spec.ID, service: jobs.ServiceName(spec.ID), cancel: cancel,
		allocs: map[string]*api.AllocationListStub{}, probes: map[string]*replicaProbe{},
		seen: map[string]int{}, evals: map[string]bool{},
	}
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
		cfg.ProbeInterval = probe.DefaultInterval
	}
	if cfg.Clock == nil {
		cfg.Clock = wallClock{}
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
		prober: &probe.Prober{Interval: cfg.ProbeInterval, Clock: cfg.Clock},
		ctx:    ctx,
		cancel: cancel,
		deps:   make(map[string]*deployment),
	}, nil
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
	// Its secrets go with it (Nomad answers 204 when there were none):
	// after the job, so that no allocation still starting misses them.
	if _, err := d.client.Variables().Delete(jobs.VariablePath(job), d.nsWrite(ctx)); err != nil && statusCode(err) != http.StatusNotFound {
		return fmt.Errorf("delete the secrets of job %s (Nomad Variable %s): %w", job, jobs.VariablePath(job), err)
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

// nsWrite are the write options of the driver's namespace, for calls
// (variables) whose namespace the client does not take from a job.
func (d *Driver) nsWrite(ctx context.Context) *api.WriteOptions {
	return (&api.WriteOptions{Namespace: d.cfg.Jobs.Namespace}).WithContext(ctx)
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
	s := orchestrator.Status{ID: dep.spec.ID, Desired: dep.spec.Replicas, Failures: dep.failures, Starts: dep.starts()}
	for _, sr := range dep.services {
		a := dep.allocs[sr.AllocID]
		if a == nil || a.DesiredStatus != api.AllocDesiredStatusRun {
			continue
		}
		in := orchestrator.Instance{ID: sr.AllocID, Addr: net.JoinHostPort(sr.Address, strconv.Itoa(sr.Port))}
		if p := dep.probes[sr.AllocID]; p != nil && p.addr == in.Addr {
			in.Ready = p.ready && running(a)
			if in.Ready && s.Notice == "" {
				s.Notice = p.notice
			}
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
