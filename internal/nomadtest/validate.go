package nomadtest

import (
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/nomad/api"
)

// multiError formats like hashicorp/go-multierror, which is what Nomad's
// servers send back, so that callers see the same text.
type multiError []error

func (m multiError) Error() string {
	if len(m) == 1 {
		return fmt.Sprintf("1 error occurred:\n\t* %s\n\n", m[0])
	}
	points := make([]string, len(m))
	for i, err := range m {
		points[i] = fmt.Sprintf("* %s", err)
	}
	return fmt.Sprintf("%d errors occurred:\n\t%s\n\n", len(m), strings.Join(points, "\n\t"))
}

func (m multiError) orNil() error {
	if len(m) == 0 {
		return nil
	}
	return m
}

// validServiceName is Nomad's rule for service names (RFC 1123 labels).
var validServiceName = regexp.MustCompile(`^(?i:[a-z0-9]|[a-z0-9][a-z0-9\-]{0,61}[a-z0-9])$`)

// Validate checks a job the way a Nomad server does on register, after
// canonicalizing a copy of it: the checks of structs.Job.Validate and its
// task groups, tasks, resources, services and artifacts that Gantry's jobs
// can run into. It returns the error text Nomad sends with its 500.
func Validate(job *api.Job) error {
	j, err := canonical(job)
	if err != nil {
		return err
	}
	return validate(j)
}

// canonical returns a canonicalized deep copy of job.
func canonical(job *api.Job) (*api.Job, error) {
	j, err := copyJob(job)
	if err != nil {
		return nil, err
	}
	j.Canonicalize()
	// What the server's own canonicalization and mutating hooks add.
	if len(j.Datacenters) == 0 {
		j.Datacenters = []string{"*"}
	}
	if *j.NodePool == "" {
		*j.NodePool = "default"
	}
	return j, nil
}

func validate(j *api.Job) error {
	var errs multiError
	if *j.Region == "" {
		errs = append(errs, errors.New("Missing job region"))
	}
	switch {
	case *j.ID == "":
		errs = append(errs, errors.New("Missing job ID"))
	case strings.Contains(*j.ID, " "):
		errs = append(errs, errors.New("Job ID contains a space"))
	case strings.Contains(*j.ID, "\000"):
		errs = append(errs, errors.New("Job ID contains a null character"))
	}
	if *j.Name == "" {
		errs = append(errs, errors.New("Missing job name"))
	}
	if *j.Namespace == "" {
		errs = append(errs, errors.New("Job must be in a namespace"))
	}
	switch *j.Type {
	case api.JobTypeService, api.JobTypeBatch, api.JobTypeSystem, api.JobTypeSysbatch:
	case "":
		errs = append(errs, errors.New("Missing job type"))
	default:
		errs = append(errs, fmt.Errorf("Invalid job type: %q", *j.Type))
	}
	if p := *j.Priority; p < 1 || p > 100 {
		errs = append(errs, fmt.Errorf("Job priority must be between [%d, %d]", 1, 100))
	}
	if len(j.Datacenters) == 0 {
		errs = append(errs, errors.New("Missing job datacenters"))
	}
	for _, dc := range j.Datacenters {
		if dc == "" {
			errs = append(errs, errors.New("Job datacenter must be non-empty string"))
		}
	}
	if len(j.TaskGroups) == 0 {
		errs = append(errs, errors.New("Missing job task groups"))
	}
	for i, c := range j.Constraints {
		if err := validateConstraint(c); err != nil {
			errs = append(errs, fmt.Errorf("Constraint %d validation failed: %s", i+1, err))
		}
	}
	seen := map[string]int{}
	for i, tg := range j.TaskGroups {
		name := *tg.Name
		if name == "" {
			errs = append(errs, fmt.Errorf("Job task group %d missing name", i+1))
		} else if prev, ok := seen[name]; ok {
			errs = append(errs, fmt.Errorf("Job task group %d redefines '%s' from group %d", i+1, name, prev+1))
		} else {
			seen[name] = i
		}
		if *j.Type == api.JobTypeSystem && *tg.Count > 1 {
			errs = append(errs, fmt.Errorf("Job task group %s has count %d. Count cannot exceed 1 with system scheduler", name, *tg.Count))
		}
	}
	for _, tg := range j.TaskGroups {
		if err := validateGroup(j, tg); err != nil {
			errs = append(errs, fmt.Errorf("Task group %s validation failed: %s", *tg.Name, err))
		}
	}
	return errs.orNil()
}

func validateGroup(j *api.Job, tg *api.TaskGroup) error {
	var errs multiError
	if *tg.Count < 0 {
		errs = append(errs, errors.New("Task group count can't be negative"))
	}
	if len(tg.Tasks) == 0 {
		errs = append(errs, errors.New("Missing tasks for task group"))
	}
	for i, c := range tg.Constraints {
		if err := validateConstraint(c); err != nil {
			errs = append(errs, fmt.Errorf("Constraint %d validation failed: %s", i+1, err))
		}
	}
	if rp := tg.RestartPolicy; rp != nil {
		switch *rp.Mode {
		case "delay", "fail":
		default:
			errs = append(errs, fmt.Errorf("Unsupported restart mode: %q", *rp.Mode))
		}
		if *rp.Attempts < 0 {
			errs = append(errs, fmt.Errorf("Restart attempts can't be negative: %d", *rp.Attempts))
		}
		if *rp.Attempts > 0 && *rp.Delay*time.Duration(*rp.Attempts) > *rp.Interval {
			errs = append(errs, fmt.Errorf("Nonzero restart attempts (%d) with Delay (%s) * Attempts (%d) exceeds Interval (%s)",
				*rp.Attempts, *rp.Delay, *rp.Attempts, *rp.Interval))
		}
	}
	ports := map[string]bool{}
	for _, n := range tg.Networks {
		for _, p := range append(append([]api.Port{}, n.ReservedPorts...), n.DynamicPorts...) {
			if p.Label == "" {
				errs = append(errs, errors.New("Port label is empty"))
			} else if ports[p.Label] {
				errs = append(errs, fmt.Errorf("Port label %s already in use", p.Label))
			}
			ports[p.Label] = true
		}
	}
	for _, svc := range tg.Services {
		if err := validateService(svc, ports); err != nil {
			errs = append(errs, fmt.Errorf("Service %s is invalid: %v", svc.Name, err))
		}
	}
	tasks := map[string]bool{}
	for i, t := range tg.Tasks {
		if t.Name == "" {
			errs = append(errs, fmt.Errorf("Task %d missing name", i+1))
		} else if tasks[t.Name] {
			errs = append(errs, fmt.Errorf("Task %d redefines '%s'", i+1, t.Name))
		}
		tasks[t.Name] = true
	}
	for _, t := range tg.Tasks {
		if err := validateTask(t, ports); err != nil {
			errs = append(errs, fmt.Errorf("Task %s validation failed: %v", t.Name, err))
		}
	}
	return errs.orNil()
}

func validateService(svc *api.Service, ports map[string]bool) error {
	var errs multiError
	if !validServiceName.MatchString(svc.Name) {
		errs = append(errs, fmt.Errorf("Service name must be valid per RFC 1123 and can contain only alphanumeric characters or dashes and must be no longer than 63 characters: %q", svc.Name))
	}
	switch svc.Provider {
	case "consul", "nomad":
	default:
		errs = append(errs, fmt.Errorf("Service provider must be %q, or %q; not %q", "consul", "nomad", svc.Provider))
	}
	if svc.PortLabel != "" && !ports[svc.PortLabel] {
		errs = append(errs, fmt.Errorf("Port label %q referenced by service does not exist", svc.PortLabel))
	}
	for _, c := range svc.Checks {
		if svc.Provider == "nomad" && c.Type != "http" && c.Type != "tcp" {
			errs = append(errs, fmt.Errorf("Check %s invalid: service using provider nomad only supports http and tcp checks", c.Name))
			continue
		}
		if c.Interval < time.Second {
			errs = append(errs, fmt.Errorf("Check %s invalid: interval (%v) cannot be lower than %v", c.Name, c.Interval, time.Second))
		}
		if c.Timeout < time.Second {
			errs = append(errs, fmt.Errorf("Check %s invalid: timeout (%v) is lower than required minimum timeout %v", c.Name, c.Timeout, time.Second))
		}
		if c.Type == "http" && c.Path == "" {
			errs = append(errs, fmt.Errorf("Check %s invalid: http type must have http path", c.Name))
		}
	}
	return errs.orNil()
}

func validateTask(t *api.Task, ports map[string]bool) error {
	var errs multiError
	if strings.Contains(t.Name, "/") {
		errs = append(errs, errors.New("Task name cannot include slashes"))
	}
	if t.Driver == "" {
		errs = append(errs, errors.New("Missing task driver"))
	}
	if t.KillTimeout != nil && *t.KillTimeout < 0 {
		errs = append(errs, errors.New("KillTimeout must be a positive value"))
	}
	if t.Resources == nil {
		errs = append(errs, errors.New("Missing task resources"))
	} else if err := validateResources(t.Resources); err != nil {
		errs = append(errs, err)
	}
	for i, c := range t.Constraints {
		if err := validateConstraint(c); err != nil {
			errs = append(errs, fmt.Errorf("Constraint %d validation failed: %s", i+1, err))
		}
	}
	for i, a := range t.Artifacts {
		if err := validateArtifact(a); err != nil {
			errs = append(errs, fmt.Errorf("Artifact %d validation failed: %v", i+1, err))
		}
	}
	dests := map[string]int{}
	for i, tmpl := range t.Templates {
		if err := validateTemplate(tmpl); err != nil {
			errs = append(errs, fmt.Errorf("Template %d validation failed: %s", i+1, err))
		}
		if d := deref(tmpl.DestPath); d != "" {
			if j, ok := dests[d]; ok {
				errs = append(errs, fmt.Errorf("Template %d has same destination as %d", i+1, j+1))
			}
			dests[d] = i
		}
	}
	for _, svc := range t.Services {
		if err := validateService(svc, ports); err != nil {
			errs = append(errs, fmt.Errorf("Service %s is invalid: %v", svc.Name, err))
		}
	}
	return errs.orNil()
}

func validateResources(r *api.Resources) error {
	var errs multiError
	cpu, cores, mem := deref(r.CPU), deref(r.Cores), deref(r.MemoryMB)
	if cores > 0 && cpu > 0 {
		errs = append(errs, errors.New("Task can only ask for 'cpu' or 'cores' resource, not both."))
	}
	if cpu < 1 && cores == 0 {
		errs = append(errs, fmt.Errorf("minimum CPU value is %d; got %d", 1, cpu))
	}
	if mem < 10 {
		errs = append(errs, fmt.Errorf("minimum MemoryMB value is %d; got %d", 10, mem))
	}
	if deref(r.DiskMB) > 0 {
		errs = append(errs, errors.New("Task can't ask for disk resources, they have to be specified at the task group level."))
	}
	if max := deref(r.MemoryMaxMB); max != 0 && max < mem {
		errs = append(errs, fmt.Errorf("MemoryMaxMB value (%d) should be larger than MemoryMB value (%d)", max, mem))
	}
	for i, d := range r.Devices {
		if err := validateDevice(d); err != nil {
			errs = append(errs, fmt.Errorf("device %d failed validation: %v", i+1, err))
		}
	}
	return errs.orNil()
}

func validateDevice(d *api.RequestedDevice) error {
	parts := strings.Split(d.Name, "/")
	if d.Name == "" || len(parts) > 3 || slicesContainsEmpty(parts) {
		return errors.New("device name must be given as one of the following: type, vendor/type, or vendor/type/name")
	}
	for i, c := range d.Constraints {
		if err := validateConstraint(c); err != nil {
			return fmt.Errorf("Constraint %d validation failed: %s", i+1, err)
		}
	}
	return nil
}

func slicesContainsEmpty(s []string) bool {
	for _, v := range s {
		if v == "" {
			return true
		}
	}
	return false
}

func validateArtifact(a *api.TaskArtifact) error {
	var errs multiError
	if a.GetterSource == nil || *a.GetterSource == "" {
		errs = append(errs, errors.New("source must be specified"))
	}
	switch *a.GetterMode {
	case "any", "file", "dir":
	default:
		errs = append(errs, fmt.Errorf("invalid artifact mode %q; must be one of: %s, %s, %s", *a.GetterMode, "any", "file", "dir"))
	}
	if dest := *a.RelativeDest; filepath.IsAbs(dest) || escapes(dest) {
		errs = append(errs, fmt.Errorf("destination escapes allocation directory"))
	}
	return errs.orNil()
}

// validateTemplate is structs.Template.Validate, on a canonicalized
// template.
func validateTemplate(t *api.Template) error {
	var errs multiError
	if deref(t.SourcePath) == "" && deref(t.EmbeddedTmpl) == "" {
		errs = append(errs, errors.New("Must specify a source path or have an embedded template"))
	}
	dest := deref(t.DestPath)
	if dest == "" {
		errs = append(errs, errors.New("Must specify a destination for the template"))
	}
	if escapes(dest) {
		errs = append(errs, errors.New("destination escapes allocation directory"))
	}
	switch deref(t.ChangeMode) {
	case "noop", "restart":
	case "signal":
		if deref(t.ChangeSignal) == "" {
			errs = append(errs, errors.New("Must specify signal value when change mode is signal"))
		}
		if deref(t.Envvars) {
			errs = append(errs, errors.New("cannot use signals with env var templates"))
		}
	case "script":
		if t.ChangeScript == nil {
			errs = append(errs, errors.New("must specify change script configuration value when change mode is script"))
		}
	default:
		errs = append(errs, errors.New("Invalid change mode. Must be one of the following: noop, signal, script, restart"))
	}
	if deref(t.Splay) < 0 {
		errs = append(errs, errors.New("Must specify positive splay value"))
	}
	if p := deref(t.Perms); p != "" {
		if _, err := strconv.ParseUint(p, 8, 12); err != nil {
			errs = append(errs, fmt.Errorf("Failed to parse %q as octal: %v", p, err))
		}
	}
	return errs.orNil()
}

// escapes reports whether a path relative to the task dir leaves the
// allocation directory (the task dir is one level below it).
func escapes(rel string) bool {
	clean := filepath.Clean(filepath.Join("alloc", "task", rel))
	return clean == ".." || strings.HasPrefix(clean, ".."+string(filepath.Separator))
}

// operands are the constraint operands the double knows, as Nomad's
// structs.Constraint.Validate lists them.
var operands = map[string]bool{
	"=": true, "==": true, "is": true, "!=": true, "not": true,
	"<": true, "<=": true, ">": true, ">=": true,
	"regexp": true, "set_contains": true, "set_contains_all": true, "set_contains_any": true,
	"is_set": true, "is_not_set": true, "distinct_hosts": true, "distinct_property": true,
	"version": true, "semver": true,
}

func validateConstraint(c *api.Constraint) error {
	if !operands[c.Operand] {
		return fmt.Errorf("Unknown constraint type %q", c.Operand)
	}
	if c.Operand == "regexp" {
		if _, err := regexp.Compile(c.RTarget); err != nil {
			return fmt.Errorf("Regular expression failed to compile: %v", err)
		}
	}
	switch c.Operand {
	case "distinct_hosts", "is_set", "is_not_set":
	default:
		if c.LTarget == "" {
			return errors.New("No LTarget provided but is required by constraint")
		}
	}
	return nil
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}
