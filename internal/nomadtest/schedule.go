package nomadtest

import (
	"fmt"
	"net"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/nomad/api"
)

// evaluate is the scheduler: it creates an evaluation of the job and
// applies it at once, stopping allocations beyond the count (and those of
// an earlier version), placing the missing ones, and blocking what does not
// fit. s.mu must be held.
func (s *Server) evaluate(key jobKey, trigger string) *api.Evaluation {
	now := time.Now().UnixNano()
	index := s.write("evals")
	e := &api.Evaluation{
		ID: uuid(), Namespace: key.ns, JobID: key.id, TriggeredBy: trigger,
		Type: api.JobTypeService, Priority: api.JobDefaultPriority, Status: api.EvalStatusPending,
		CreateIndex: index, ModifyIndex: index, CreateTime: now, ModifyTime: now,
	}
	s.evals[e.ID] = e
	js := s.jobs[key]
	if js != nil {
		e.Type, e.Priority, e.JobModifyIndex = *js.job.Type, *js.job.Priority, *js.job.JobModifyIndex
	}

	failed := map[string]*api.AllocationMetric{}
	queued := map[string]int{}
	groups := map[string]*api.TaskGroup{}
	if js != nil {
		for _, tg := range js.job.TaskGroups {
			groups[*tg.Name] = tg
		}
	}
	// Allocations that run or will: stop those the job no longer wants.
	live := map[string][]*alloc{}
	for _, a := range s.allocs {
		if a.stub.JobID != key.id || a.stub.Namespace != key.ns || a.stub.DesiredStatus != api.AllocDesiredStatusRun || a.terminal() {
			continue
		}
		tg, ok := groups[a.stub.TaskGroup]
		switch {
		case js == nil || *js.job.Stop || !ok:
			a.stopLocked("alloc not needed as job is stopped")
		case a.spec != js.spec:
			a.stopLocked("alloc is being updated due to job update")
		default:
			live[*tg.Name] = append(live[*tg.Name], a)
		}
	}
	if js != nil && !*js.job.Stop {
		s.deploy(key, js, live)
		for name, tg := range groups {
			as := live[name]
			// Stop the highest indexes first, as Nomad's reconciler does.
			sort.Slice(as, func(i, j int) bool { return as[i].index < as[j].index })
			for len(as) > *tg.Count {
				as[len(as)-1].stopLocked("alloc not needed due to job update")
				as = as[:len(as)-1]
			}
			used := map[int]bool{}
			for _, a := range as {
				used[a.index] = true
			}
			next := 0
			for n := len(as); n < *tg.Count; n++ {
				for used[next] {
					next++
				}
				used[next] = true
				if err := s.place(js, tg, next, e, failed); err != nil {
					queued[name]++
				}
			}
		}
	}

	// Nomad's blocked-evals tracker holds one blocked evaluation per job:
	// a newer one cancels the older as a duplicate. An evaluation that
	// places everything only untracks the job's blocked evaluation
	// (fsm.upsertEvals → blockedEvals.Untrack), whose status stays
	// "blocked" for good.
	if len(failed) > 0 {
		if old := s.evals[s.blocked[key]]; old != nil && old.Status == api.EvalStatusBlocked {
			old.Status, old.StatusDescription = api.EvalStatusCancelled, "existing blocked evaluation exists for job"
			old.ModifyIndex = s.write("evals")
		}
		index := s.write("evals")
		b := &api.Evaluation{
			ID: uuid(), Namespace: key.ns, JobID: key.id, Type: e.Type, Priority: e.Priority,
			TriggeredBy: "queued-allocs", Status: api.EvalStatusBlocked, PreviousEval: e.ID,
			StatusDescription: "created to place remaining allocations",
			JobModifyIndex:    e.JobModifyIndex, ClassEligibility: map[string]bool{},
			CreateIndex: index, ModifyIndex: index, CreateTime: now, ModifyTime: now,
		}
		s.evals[b.ID] = b
		s.blocked[key] = b.ID
		e.BlockedEval = b.ID
		e.FailedTGAllocs = failed
	} else {
		delete(s.blocked, key)
	}
	e.QueuedAllocations = queued
	e.Status = api.EvalStatusComplete
	e.ModifyIndex = s.write("evals")
	return e
}

// unblock re-evaluates every job with a blocked evaluation, as Nomad does
// when capacity frees up. s.mu must be held.
func (s *Server) unblock() {
	var keys []jobKey
	for k, id := range s.blocked {
		// The tracker hands the blocked evaluation back to the scheduler,
		// which completes it; the double evaluates afresh.
		if e := s.evals[id]; e != nil && e.Status == api.EvalStatusBlocked {
			e.Status, e.StatusDescription = api.EvalStatusComplete, ""
			e.ModifyIndex = s.write("evals")
		}
		delete(s.blocked, k)
		keys = append(keys, k)
	}
	for _, k := range keys {
		s.evaluate(k, "queued-allocs")
	}
}

// place finds a node for one allocation of tg and starts it, or records
// why none fits in failed. s.mu must be held.
func (s *Server) place(js *jobState, tg *api.TaskGroup, index int, e *api.Evaluation, failed map[string]*api.AllocationMetric) error {
	if s.closed {
		return fmt.Errorf("server closed")
	}
	job := js.job
	task := tg.Tasks[0]
	need := demand(tg)
	m := &api.AllocationMetric{
		NodesAvailable: map[string]int{}, ClassFiltered: map[string]int{}, ConstraintFiltered: map[string]int{},
		ClassExhausted: map[string]int{}, DimensionExhausted: map[string]int{}, NodePool: *job.NodePool,
	}
	var chosen *Node
	for i := range s.cfg.Nodes {
		n := &s.cfg.Nodes[i]
		if *job.NodePool != "all" && n.NodePool != *job.NodePool {
			continue
		}
		m.NodesInPool++
		if !inDatacenters(n.Datacenter, job.Datacenters) {
			continue
		}
		m.NodesAvailable[n.Datacenter]++
		m.NodesEvaluated++
		if reason := s.filter(n, job, tg); reason != "" {
			m.NodesFiltered++
			m.ConstraintFiltered[reason]++
			if n.Class != "" {
				m.ClassFiltered[n.Class]++
			}
			continue
		}
		if dim := s.exhausted(n, need); dim != "" {
			m.NodesExhausted++
			m.DimensionExhausted[dim]++
			if n.Class != "" {
				m.ClassExhausted[n.Class]++
			}
			continue
		}
		chosen = n
		break
	}
	if chosen == nil {
		if prev, ok := failed[*tg.Name]; ok {
			prev.CoalescedFailures++
		} else {
			failed[*tg.Name] = m
		}
		return fmt.Errorf("no node fits")
	}

	a := &alloc{
		srv: s, job: job, group: tg, task: task, node: chosen, index: index, need: need,
		spec: js.spec, stop: make(chan struct{}), done: make(chan struct{}),
	}
	id := uuid()
	a.dir = s.cfg.Dir + "/" + id
	a.ports = map[string]int{}
	var mappings []api.PortMapping
	for _, nw := range tg.Networks {
		for _, p := range nw.ReservedPorts {
			a.ports[p.Label] = p.Value
			mappings = append(mappings, api.PortMapping{Label: p.Label, Value: p.Value, To: p.To, HostIP: "127.0.0.1"})
		}
		for _, p := range nw.DynamicPorts {
			port := freePort()
			a.ports[p.Label] = port
			mappings = append(mappings, api.PortMapping{Label: p.Label, Value: port, To: p.To, HostIP: "127.0.0.1"})
		}
	}
	now := time.Now().UnixNano()
	created := s.write("allocs")
	a.stub = api.AllocationListStub{
		ID: id, EvalID: e.ID, Name: fmt.Sprintf("%s.%s[%d]", *job.ID, *tg.Name, index),
		Namespace: *job.Namespace, NodeID: chosen.ID, NodeName: chosen.Name, JobID: *job.ID,
		JobType: *job.Type, JobVersion: *job.Version, TaskGroup: *tg.Name,
		AllocatedResources: &api.AllocatedResources{Shared: api.AllocatedSharedResources{Ports: mappings}},
		DesiredStatus:      api.AllocDesiredStatusRun, ClientStatus: api.AllocClientStatusPending,
		TaskStates:  map[string]*api.TaskState{task.Name: {State: "pending"}},
		CreateIndex: created, ModifyIndex: created, CreateTime: now, ModifyTime: now,
	}
	if d := s.latest(jobKey{*job.Namespace, *job.ID}); d != nil && d.Status == api.DeploymentStatusRunning {
		a.deployment = d
		if st := d.TaskGroups[*tg.Name]; st != nil {
			st.PlacedAllocs++
		}
	}
	s.allocs[id] = a
	s.running.Add(1)
	go a.run()
	return nil
}

// resources are what an allocation takes from a node: cores are
// reserved whole, cpu is MHz of the rest.
type resources struct{ cpu, cores, memoryMB, gpus int }

// demand is what one allocation of tg takes from a node.
func demand(tg *api.TaskGroup) resources {
	var r resources
	for _, t := range tg.Tasks {
		if t.Resources == nil {
			continue
		}
		r.cpu += deref(t.Resources.CPU)
		r.cores += deref(t.Resources.Cores)
		r.memoryMB += deref(t.Resources.MemoryMB)
		for _, d := range t.Resources.Devices {
			r.gpus += int(deref(d.Count))
		}
	}
	return r
}

// filter says why node n cannot run tg ("" when it can), in the words
// Nomad's feasibility checkers put in ConstraintFiltered.
func (s *Server) filter(n *Node, job *api.Job, tg *api.TaskGroup) string {
	for _, t := range tg.Tasks {
		if !contains(n.Drivers, t.Driver) {
			return "missing drivers"
		}
	}
	var cs []*api.Constraint
	cs = append(cs, job.Constraints...)
	cs = append(cs, tg.Constraints...)
	for _, t := range tg.Tasks {
		cs = append(cs, t.Constraints...)
	}
	for _, c := range cs {
		if !satisfied(c, n) {
			return fmt.Sprintf("%s %s %s", c.LTarget, c.Operand, c.RTarget)
		}
	}
	for _, t := range tg.Tasks {
		if t.Resources == nil {
			continue
		}
		for _, d := range t.Resources.Devices {
			if !gpuMatches(d.Name) || n.GPUs == 0 {
				return "missing devices"
			}
			for _, c := range d.Constraints {
				if !deviceSatisfied(c, n) {
					return "missing devices"
				}
			}
		}
	}
	return ""
}

// exhausted says which resource of node n is too short for need, given
// the allocations on it ("" when it fits). s.mu must be held.
func (s *Server) exhausted(n *Node, need resources) string {
	var used resources
	for _, a := range s.allocs {
		if a.node == n && !a.terminal() {
			used.cpu += a.need.cpu
			used.cores += a.need.cores
			used.memoryMB += a.need.memoryMB
			used.gpus += a.need.gpus
		}
	}
	perCore := n.CPU / n.Cores
	switch {
	case used.cores+need.cores > n.Cores:
		return "cores"
	case used.cpu+need.cpu > n.CPU-(used.cores+need.cores)*perCore:
		return "cpu"
	case used.memoryMB+need.memoryMB > n.MemoryMB:
		return "memory"
	case used.gpus+need.gpus > n.GPUs:
		return "devices: no devices match request"
	}
	return ""
}

func gpuMatches(name string) bool {
	switch name {
	case "gpu", "nvidia/gpu":
		return true
	}
	return strings.HasPrefix(name, "nvidia/gpu/")
}

func inDatacenters(dc string, patterns []string) bool {
	for _, p := range patterns {
		if ok, _ := path.Match(p, dc); ok {
			return true
		}
	}
	return false
}

// attribute resolves a constraint target against a node; ok is false for
// an attribute the node does not have.
func attribute(target string, n *Node) (string, bool) {
	if !strings.HasPrefix(target, "${") || !strings.HasSuffix(target, "}") {
		return target, true
	}
	name := target[2 : len(target)-1]
	switch {
	case name == "node.datacenter":
		return n.Datacenter, true
	case name == "node.unique.name":
		return n.Name, true
	case name == "node.unique.id":
		return n.ID, true
	case name == "node.class":
		return n.Class, n.Class != ""
	case name == "node.pool":
		return n.NodePool, true
	case strings.HasPrefix(name, "attr."):
		v, ok := n.Attributes[strings.TrimPrefix(name, "attr.")]
		return v, ok
	case strings.HasPrefix(name, "meta."):
		v, ok := n.Meta[strings.TrimPrefix(name, "meta.")]
		return v, ok
	}
	return "", false
}

// satisfied checks a job, group or task constraint against node n.
func satisfied(c *api.Constraint, n *Node) bool {
	switch c.Operand {
	case "distinct_hosts", "distinct_property":
		return true // one allocation per node is all the double checks
	}
	l, lok := attribute(c.LTarget, n)
	r, rok := attribute(c.RTarget, n)
	switch c.Operand {
	case "is_set":
		return lok
	case "is_not_set":
		return !lok
	}
	if !lok || !rok {
		return false
	}
	return compare(c.Operand, l, r)
}

// deviceSatisfied checks a device constraint against the node's GPUs; the
// double knows ${device.attr.memory} (with units) and ${device.model}.
func deviceSatisfied(c *api.Constraint, n *Node) bool {
	switch c.LTarget {
	case "${device.attr.memory}":
		want, ok := parseBytes(c.RTarget)
		if !ok {
			return false
		}
		have := int64(n.GPUMemoryMiB) << 20
		return compare(c.Operand, strconv.FormatInt(have, 10), strconv.FormatInt(want, 10))
	}
	return false
}

func compare(op, l, r string) bool {
	switch op {
	case "=", "==", "is":
		return l == r
	case "!=", "not":
		return l != r
	case "regexp":
		re, err := regexp.Compile(r)
		return err == nil && re.MatchString(l)
	case "set_contains", "set_contains_all":
		have := map[string]bool{}
		for _, v := range strings.Split(l, ",") {
			have[strings.TrimSpace(v)] = true
		}
		for _, v := range strings.Split(r, ",") {
			if !have[strings.TrimSpace(v)] {
				return false
			}
		}
		return true
	case "<", "<=", ">", ">=":
		lf, lerr := strconv.ParseFloat(l, 64)
		rf, rerr := strconv.ParseFloat(r, 64)
		if lerr != nil || rerr != nil {
			c := strings.Compare(l, r)
			lf, rf = float64(c), 0
		}
		switch op {
		case "<":
			return lf < rf
		case "<=":
			return lf <= rf
		case ">":
			return lf > rf
		}
		return lf >= rf
	}
	return false
}

// parseBytes reads "20 GiB"-style sizes, as Nomad's device constraints
// take them.
func parseBytes(s string) (int64, bool) {
	s = strings.TrimSpace(s)
	i := strings.IndexFunc(s, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	if i <= 0 {
		n, err := strconv.ParseInt(s, 10, 64)
		return n, err == nil
	}
	v, err := strconv.ParseFloat(s[:i], 64)
	if err != nil {
		return 0, false
	}
	units := map[string]float64{
		"B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12,
		"KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30, "TIB": 1 << 40,
	}
	u, ok := units[strings.ToUpper(strings.TrimSpace(s[i:]))]
	return int64(v * u), ok
}

// deploy opens a deployment as Nomad's reconciler does (createDeployment):
// for the groups that roll out (max_parallel above 0) and want
// allocations (DesiredTotal above 0), unless this job version already has
// a deployment, or it has allocations running and none to update. So a
// count-0 register makes none, and a scale up from zero (a new version,
// nothing running) makes one. live holds the group's allocations of the
// current spec. s.mu must be held.
func (s *Server) deploy(key jobKey, js *jobState, live map[string][]*alloc) {
	job := js.job
	if *job.Type != api.JobTypeService || *job.Stop {
		return
	}
	old := s.latest(key)
	if old != nil && old.JobVersion == *job.Version && old.JobCreateIndex == *job.CreateIndex && old.Status != api.DeploymentStatusSuccessful {
		return
	}
	d := &api.Deployment{
		ID: uuid(), Namespace: *job.Namespace, JobID: *job.ID, JobVersion: *job.Version,
		JobModifyIndex: *job.JobModifyIndex, JobCreateIndex: *job.CreateIndex,
		Status: api.DeploymentStatusRunning, StatusDescription: "Deployment is running",
		TaskGroups: map[string]*api.DeploymentState{},
	}
	var inplace []*alloc
	for _, tg := range job.TaskGroups {
		if tg.Update == nil || deref(tg.Update.MaxParallel) <= 0 || *tg.Count == 0 {
			continue
		}
		// Like Nomad's reconciler, count every allocation of this version
		// of this job (not of a purged one with the same ID), finished
		// ones too.
		hadRunning := false
		for _, a := range s.allocs {
			if a.stub.JobID == key.id && a.stub.Namespace == key.ns && a.stub.TaskGroup == *tg.Name &&
				a.stub.JobVersion == *job.Version && *a.job.CreateIndex == *job.CreateIndex {
				hadRunning = true
				break
			}
		}
		var updating []*alloc
		for _, a := range live[*tg.Name] {
			if a.stub.JobVersion != *job.Version {
				updating = append(updating, a) // same spec, older version: an in-place update
			}
		}
		if hadRunning && len(updating) == 0 {
			continue
		}
		d.TaskGroups[*tg.Name] = &api.DeploymentState{DesiredTotal: *tg.Count}
		inplace = append(inplace, updating...)
	}
	if len(d.TaskGroups) == 0 {
		return
	}
	// The previous deployment of the job is superseded.
	if old != nil && old.Status == api.DeploymentStatusRunning {
		old.Status, old.StatusDescription = "cancelled", "Cancelled due to newer version of job"
		old.ModifyIndex = s.write("deployment")
	}
	d.CreateIndex = s.write("deployment")
	d.ModifyIndex = d.CreateIndex
	s.deployments[d.ID] = d
	// Allocations updated in place join the deployment. A Nomad client
	// checks their health again; the double counts a running one healthy
	// at once.
	for _, a := range inplace {
		st := d.TaskGroups[a.stub.TaskGroup]
		a.stub.JobVersion = *job.Version
		st.PlacedAllocs++
		if a.stub.ClientStatus == api.AllocClientStatusRunning {
			st.HealthyAllocs++
		}
		a.stub.ModifyIndex = s.write("allocs")
	}
	s.settle(d)
}

// settle ends a running deployment once every group has its desired
// healthy count. s.mu must be held.
func (s *Server) settle(d *api.Deployment) {
	if d.Status != api.DeploymentStatusRunning {
		return
	}
	for _, g := range d.TaskGroups {
		if g.HealthyAllocs < g.DesiredTotal {
			return
		}
	}
	d.Status, d.StatusDescription = api.DeploymentStatusSuccessful, "Deployment completed successfully"
	d.ModifyIndex = s.write("deployment")
}

// latest is the job's newest deployment, or nil. s.mu must be held.
func (s *Server) latest(key jobKey) *api.Deployment {
	var out *api.Deployment
	for _, d := range s.deployments {
		if d.JobID == key.id && d.Namespace == key.ns && (out == nil || d.CreateIndex > out.CreateIndex) {
			out = d
		}
	}
	return out
}

// healthy marks an allocation of a deployment healthy after the group's
// min_healthy_time and ends the deployment once every group has its
// desired healthy count. s.mu must be held.
func (s *Server) healthy(a *alloc, ok bool) {
	d := a.deployment
	if d == nil || d.Status != api.DeploymentStatusRunning {
		return
	}
	st := d.TaskGroups[a.stub.TaskGroup]
	if st == nil {
		return
	}
	a.stub.DeploymentStatus = &api.AllocDeploymentStatus{Healthy: new(ok), Timestamp: time.Now(), ModifyIndex: s.index}
	a.stub.ModifyIndex = s.write("allocs")
	if !ok {
		st.UnhealthyAllocs++
		d.Status, d.StatusDescription = api.DeploymentStatusFailed, "Failed due to unhealthy allocations"
		d.ModifyIndex = s.write("deployment")
		return
	}
	st.HealthyAllocs++
	s.settle(d)
}

// freePort finds a free loopback port. Another process could take it
// first; the task then fails to bind and is restarted, as on a real client.
func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
