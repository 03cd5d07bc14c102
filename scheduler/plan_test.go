package scheduler

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/scheduler/orchestrator"
	"github.com/gantry/gantry/scheduler/store"
)

var rewrite = flag.Bool("rewrite", false, "rewrite testdata/plan/*.txt with the output the planner gives now")

// TestPlanScripts drives the planner through the stories in
// testdata/plan/*.txt, with no store, HTTP or driver: each block is one
// command and, under ----, what it printed. A script reads like the story
// it tells; `go test ./scheduler -run PlanScripts -rewrite` regenerates the
// expectations after a deliberate change (read the diff).
//
// Commands:
//
//	create EP ENTITY=MODEL:VER[:zero] ...   a new endpoint, as the API stores it
//	update EP ENTITY=MODEL:VER[:zero] ...   a config update that needs new deployments
//	delete EP
//	gone MODEL:VER                          the model version is no longer in the registry
//	ready DEP [N] | fail DEP REASON | down DEP    the driver's status of a deployment
//	scale DEP N                             the autoscaler's count
//	driver ok | hang | fail REASON          how the driver answers the calls of the next passes
//	answer ok | fail REASON                 the calls still hanging return
//	tick DURATION                           the clock moves
//	pass                                    one reconcile pass: prints the plan
//	show EP                                 the endpoint as the API shows it
//
// Deployments print as EP/ENTITY#N: the Nth deployment of that entity,
// since their IDs are hashes.
func TestPlanScripts(t *testing.T) {
	files, _ := filepath.Glob("testdata/plan/*.txt")
	if len(files) == 0 {
		t.Fatal("no scripts in testdata/plan")
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".txt"), func(t *testing.T) { runScript(t, f) })
	}
}

func runScript(t *testing.T, path string) {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sim := newSim(false)
	var out strings.Builder
	lines := strings.Split(string(b), "\n")
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		if line == "" || strings.HasPrefix(line, "#") {
			out.WriteString(line + "\n")
			continue
		}
		if i+1 >= len(lines) || lines[i+1] != "----" {
			t.Fatalf("%s:%d: %q: want ---- on the next line", path, i+1, line)
		}
		j := i + 2
		for j < len(lines) && lines[j] != "" {
			j++
		}
		want := strings.Join(lines[i+2:j], "\n")
		got := strings.TrimRight(sim.run(t, line), "\n")
		if got != want && !*rewrite {
			t.Errorf("%s:%d: %s\n got:\n%s\nwant:\n%s", path, i+1, line, got, want)
		}
		out.WriteString(line + "\n----\n")
		if got != "" {
			out.WriteString(got + "\n")
		}
		i = j - 1
	}
	if *rewrite {
		os.WriteFile(path, []byte(strings.TrimRight(out.String(), "\n")+"\n"), 0o644)
	}
}

// sim is the scheduler's state with the I/O replaced: records live in a
// map, the driver's answers are chosen by the script.
type sim struct {
	now     time.Time
	eps     map[string]*store.Endpoint
	led     *ledger
	status  map[string]orchestrator.Status
	gone    map[string]bool
	driver  error // nil: calls succeed; errHang: calls hang
	names   map[string]string
	counter map[string]int
}

var errHang = errors.New("hang")

func newSim(pruned bool) *sim {
	return &sim{
		now: time.Unix(1_700_000_000, 0), eps: map[string]*store.Endpoint{}, led: newLedger(pruned),
		status: map[string]orchestrator.Status{}, gone: map[string]bool{},
		names: map[string]string{}, counter: map[string]int{},
	}
}

func (s *sim) world() *world {
	return &world{
		now:    s.now,
		status: func(id string) orchestrator.Status { return s.status[id] },
		modelDir: func(name, version string) (string, error) {
			if s.gone[name+":"+version] {
				return "", api.Errorf(api.ErrResourceDoesNotExist, "model %s version %s does not exist", name, version)
			}
			return "/models/" + name + "/" + version, nil
		},
		baseURL: "http://gantry.test", ledger: s.led, callTimeout: 30 * time.Second,
	}
}

// name gives deployment id its script name.
func (s *sim) name(id string, ep, entity string) string {
	if n, ok := s.names[id]; ok {
		return n
	}
	k := ep + "/" + entity
	s.counter[k]++
	n := fmt.Sprintf("%s#%d", k, s.counter[k])
	s.names[id] = n
	return n
}

// id finds a deployment by its script name.
func (s *sim) id(t *testing.T, name string) string {
	for id, n := range s.names {
		if n == name {
			return id
		}
	}
	t.Fatalf("no deployment %s yet (deployments get names when a pass plans them)", name)
	return ""
}

func (s *sim) config(t *testing.T, args []string) api.EndpointConfig {
	var c api.EndpointConfig
	for _, a := range args {
		name, spec, ok := strings.Cut(a, "=")
		parts := strings.Split(spec, ":")
		if !ok || len(parts) < 2 {
			t.Fatalf("entity %q: want NAME=MODEL:VERSION[:zero]", a)
		}
		e := api.ServedEntity{Name: name, EntityName: parts[0], EntityVersion: parts[1], WorkloadSize: "Small"}
		if len(parts) > 2 && parts[2] == "zero" {
			yes := true
			e.ScaleToZeroEnabled = &yes
		}
		c.ServedEntities = append(c.ServedEntities, e)
	}
	return c
}

func (s *sim) run(t *testing.T, line string) string {
	f := strings.Fields(line)
	rest := func(i int) string { return strings.Join(f[i:], " ") }
	switch f[0] {
	case "create":
		c := s.config(t, f[2:])
		c.ConfigVersion = 1
		s.eps[f[1]] = &store.Endpoint{Name: f[1], Config: c, UpdateState: api.ConfigInProgress}
	case "update":
		c := s.config(t, f[2:])
		ep := s.eps[f[1]]
		ep.Pending, ep.UpdateState, ep.DroppedUpdate = &c, api.ConfigInProgress, false
	case "delete":
		delete(s.eps, f[1])
	case "gone":
		s.gone[f[1]] = true
	case "ready":
		n := 1
		if len(f) > 2 {
			n, _ = strconv.Atoi(f[2])
		}
		st := orchestrator.Status{Desired: n}
		for i := range n {
			st.Instances = append(st.Instances, orchestrator.Instance{ID: fmt.Sprint("r", i), Addr: fmt.Sprint("10.0.0.1:", 9000+i), Ready: true})
		}
		s.status[s.id(t, f[1])] = st
	case "notice":
		id := s.id(t, f[1])
		st := s.status[id]
		st.Notice = rest(2)
		s.status[id] = st
	case "fail":
		s.status[s.id(t, f[1])] = orchestrator.Status{Failure: rest(2), Failures: 1}
	case "down":
		delete(s.status, s.id(t, f[1]))
	case "scale":
		n, _ := strconv.Atoi(f[2])
		s.led.scale[s.id(t, f[1])] = n
	case "driver":
		switch f[1] {
		case "ok":
			s.driver = nil
		case "hang":
			s.driver = errHang
		default:
			s.driver = errors.New(rest(2))
		}
	case "answer":
		var err error
		if f[1] == "fail" {
			err = errors.New(rest(2))
		}
		for _, k := range keysOf(s.led.calls) {
			if c := s.led.calls[k]; !c.done {
				s.led.end(k, c.op, s.led.applied[k], err)
			}
		}
		return ""
	case "tick":
		d, err := time.ParseDuration(f[1])
		if err != nil {
			t.Fatal(err)
		}
		s.now = s.now.Add(d)
	case "pass":
		return s.pass()
	case "show":
		return s.show(f[1])
	default:
		t.Fatalf("unknown command %q", f[0])
	}
	return ""
}

// pass plans, commits to the sim and answers the driver calls as the
// script said; it prints the plan.
func (s *sim) pass() string {
	var eps []*store.Endpoint
	for _, n := range keysOf(s.eps) {
		eps = append(eps, s.eps[n])
	}
	p := plan(s.world(), eps)
	var b strings.Builder
	dep := func(d orchestrator.Deployment) string { return s.name(d.ID, d.Endpoint, d.Entity) }
	for _, r := range p.Routes { // name deployments in route order first
		for _, e := range r.Entities {
			s.name(e.Deployment, r.Name, e.Name)
		}
	}
	for _, r := range p.Records {
		fmt.Fprintf(&b, "store %s v%d %s", r.Name, r.Config.ConfigVersion, r.UpdateState)
		if r.UpdateMessage != "" {
			fmt.Fprintf(&b, " %q", r.UpdateMessage)
		}
		b.WriteString("\n")
		*s.eps[r.Name] = *r
	}
	for _, a := range p.Ensure {
		fmt.Fprintf(&b, "ensure %s ×%d: %s\n", dep(a.Deployment), a.Deployment.Replicas, a.Reason)
	}
	for _, a := range p.Remove {
		fmt.Fprintf(&b, "remove %s: %s\n", dep(a.Deployment), a.Reason)
	}
	if p.Prune != nil {
		keep := []string{"nothing"}
		for i, id := range p.Prune {
			keep = append(keep[:i], s.names[id])
		}
		fmt.Fprintf(&b, "prune keeping %s\n", strings.Join(keep, " "))
	}
	for _, r := range p.Routes {
		fmt.Fprintf(&b, "route %s v%d:", r.Name, r.ConfigVersion)
		for _, e := range r.Entities {
			fmt.Fprintf(&b, " %s=%s %s", e.Name, s.names[e.Deployment], strings.TrimPrefix(e.State, "DEPLOYMENT_"))
			if len(e.Replicas) > 0 {
				fmt.Fprintf(&b, " ×%d", len(e.Replicas))
			}
		}
		b.WriteString("\n")
	}
	s.led.begin(p, s.now)
	if s.driver != errHang {
		for _, a := range p.Ensure {
			s.led.end(a.Deployment.ID, opEnsure, a.Deployment, s.driver)
		}
		for _, a := range p.Remove {
			s.led.end(a.Deployment.ID, opRemove, a.Deployment, s.driver)
		}
		if p.Prune != nil {
			s.led.end(pruneKey, opPrune, orchestrator.Deployment{}, s.driver)
		}
	}
	if b.Len() == 0 {
		return "nothing to do"
	}
	return b.String()
}

// show prints what GET /api/2.0/serving-endpoints/EP answers, in short.
func (s *sim) show(name string) string {
	ep, ok := s.eps[name]
	if !ok {
		return "404"
	}
	v := s.world().endpointView(ep, "http://gantry.test")
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s %s", name, v.State.Ready, v.State.ConfigUpdate)
	if v.State.Message != "" {
		fmt.Fprintf(&b, " %q", v.State.Message)
	}
	b.WriteString("\n")
	entities := func(label string, c *api.EndpointConfig) {
		for _, e := range c.ServedEntities {
			fmt.Fprintf(&b, "  %s%s: %s desired=%d ready=%d", label, e.Name, e.State.Deployment, e.Replicas.Desired, e.Replicas.Ready)
			if m := e.State.DeploymentStateMessage; m != "" {
				fmt.Fprintf(&b, " %q", m)
			}
			b.WriteString("\n")
		}
	}
	entities("", v.Config)
	if v.PendingConfig != nil {
		entities("pending ", &v.PendingConfig.EndpointConfig)
	}
	return b.String()
}

// The plan never changes the records it is given: it hands back copies.
func TestPlanDoesNotWriteItsInput(t *testing.T) {
	s := newSim(true)
	s.run(t, "create ep a=m:1")
	s.pass()
	s.run(t, "ready ep/a#1")
	before := *s.eps["ep"]
	p := plan(s.world(), []*store.Endpoint{s.eps["ep"]})
	if len(p.Records) != 1 || p.Records[0] == s.eps["ep"] {
		t.Fatalf("plan records = %v, want one copy", p.Records)
	}
	if got := *s.eps["ep"]; got.UpdateState != before.UpdateState || !slices.Equal(keysOf(s.led.calls), []string{}) {
		t.Errorf("plan changed its input: %+v", got)
	}
}
