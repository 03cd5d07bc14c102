package scheduler

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"regexp"
	"sort"
	"strings"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/jobs"
	"github.com/gantry/gantry/secrets"
)

// Limits from API.md.
const (
	maxServedEntities = 15
	// defaultReplicaConcurrency is how many requests one replica takes at
	// once unless the entity says otherwise.
	defaultReplicaConcurrency = 4
	maxReplicaConcurrency     = 1024
)

var (
	nameRE   = regexp.MustCompile(`^[A-Za-z0-9_-]{1,63}$`)
	envKeyRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	secretRE = regexp.MustCompile(`\{\{\s*secrets/`)
)

// workloadSizes maps a workload_size to its total concurrency range, as
// Databricks documents it. The lower bound drops to 0 with scale to zero.
var workloadSizes = map[string][2]int{
	api.WorkloadSmall:  {4, 4},
	api.WorkloadMedium: {8, 16},
	api.WorkloadLarge:  {16, 64},
}

var workloadTypes = map[string]bool{
	api.WorkloadCPU: true, api.WorkloadGPUSmall: true, api.WorkloadGPUMedium: true,
	api.WorkloadGPULarge: true, api.WorkloadMultiGPUMedium: true,
}

func invalid(format string, args ...any) *api.Error {
	return api.Errorf(api.ErrInvalidParameterValue, format, args...)
}

func validateName(name string) *api.Error {
	if !nameRE.MatchString(name) {
		return invalid("name: %q must be 1-63 characters of letters, digits, '-' and '_'", name)
	}
	return nil
}

// normalizeConfig checks a config from a user and fills in its defaults in
// place. Read-only fields the user may have copied from a GET are dropped.
func normalizeConfig(c *api.EndpointConfig) error {
	if c == nil {
		return invalid("config: required")
	}
	n := len(c.ServedEntities)
	if n == 0 {
		return invalid("config.served_entities: at least one served entity is required")
	}
	if n > maxServedEntities {
		return invalid("config.served_entities: %d entities, at most %d are allowed", n, maxServedEntities)
	}
	c.ConfigVersion = 0
	seen := map[string]bool{}
	for i := range c.ServedEntities {
		e := &c.ServedEntities[i]
		if err := normalizeEntity(e); err != nil {
			return invalid("config.served_entities[%d].%s", i, err.Message)
		}
		if seen[e.Name] {
			return invalid("config.served_entities[%d].name: %q is used twice; served entity names must be unique", i, e.Name)
		}
		seen[e.Name] = true
	}
	if err := checkExternalMix(c); err != nil {
		return err
	}
	return normalizeTraffic(c, seen)
}

func normalizeEntity(e *api.ServedEntity) *api.Error {
	e.State, e.ScaledToZero, e.Replicas = nil, nil, nil
	if isExternal(e) {
		if err := normalizeExternal(e); err != nil {
			return err
		}
		return validateName(e.Name)
	}
	if e.EntityName == "" {
		return invalid("entity_name: required")
	}
	// No entity_version: the entity serves a feature spec (checkConfig
	// checks that it exists, or says a model's version is required).
	if e.Name == "" {
		e.Name = strings.ReplaceAll(e.EntityName+"-"+e.EntityVersion, ".", "-")
		if isFeatureServing(e) {
			e.Name = strings.ReplaceAll(e.EntityName, ".", "-")
		}
	}
	if err := validateName(e.Name); err != nil {
		return err
	}
	provisioned := e.MinProvisionedConcurrency != nil || e.MaxProvisionedConcurrency != nil
	if err := normalizeThroughput(e, provisioned); err != nil {
		return err
	}
	switch {
	case throughputBounded(e):
		// Sized in tokens per second (throughput.go).
	case e.WorkloadSize != "" && provisioned:
		return invalid("workload_size cannot be combined with min_provisioned_concurrency or max_provisioned_concurrency")
	case e.WorkloadSize == "" && !provisioned:
		e.WorkloadSize = api.WorkloadSmall
	case e.WorkloadSize != "":
		if _, ok := workloadSizes[e.WorkloadSize]; !ok {
			return invalid("workload_size: %q is not one of Small, Medium, Large", e.WorkloadSize)
		}
	default:
		lo, hi := deref(e.MinProvisionedConcurrency), deref(e.MaxProvisionedConcurrency)
		if e.MaxProvisionedConcurrency == nil {
			return invalid("max_provisioned_concurrency: required with min_provisioned_concurrency")
		}
		if lo < 0 || hi < 0 || lo%4 != 0 || hi%4 != 0 {
			return invalid("min/max_provisioned_concurrency: %d and %d must be non-negative multiples of 4", lo, hi)
		}
		if hi == 0 || lo > hi {
			return invalid("max_provisioned_concurrency: %d must be at least 4 and not below min_provisioned_concurrency %d", hi, lo)
		}
	}
	if c := e.ReplicaConcurrency; c != nil && (*c < 1 || *c > maxReplicaConcurrency) {
		return invalid("replica_concurrency: %d is out of range 1-%d", *c, maxReplicaConcurrency)
	}
	if e.WorkloadType == "" {
		e.WorkloadType = api.WorkloadCPU
	}
	if !workloadTypes[e.WorkloadType] {
		return invalid("workload_type: %q is not one of CPU, GPU_SMALL, GPU_MEDIUM, GPU_LARGE, MULTIGPU_MEDIUM", e.WorkloadType)
	}
	for _, k := range envNames(e.EnvironmentVars) {
		if !envKeyRE.MatchString(k) {
			return invalid("environment_vars: %q is not a valid variable name", k)
		}
		// Loader and interpreter variables run code in the worker (an
		// LD_PRELOAD naming a .so in the model's own tar): refused, never
		// dropped silently, so the user learns why.
		if err := jobs.CheckEnv(k); err != nil {
			return invalid("environment_vars.%s: %v", k, err)
		}
		if err := jobs.CheckEnvValue(k, e.EnvironmentVars[k]); err != nil {
			return invalid("environment_vars.%s: %v", k, err)
		}
		// A reference must be the whole value, so that a typo is refused
		// rather than reaching the worker as text; whether the creator may
		// read it is checkSecretRefs's.
		if _, ok, mentions := secrets.ParseRef(e.EnvironmentVars[k]); mentions && !ok {
			return invalid("environment_vars.%s: a secret reference must be the whole value, {{secrets/scope/key}}", k)
		} else if ok && strings.HasPrefix(k, "GANTRY_") {
			return invalid("environment_vars.%s: is a setting, not a credential; give its value, not a secret reference", k)
		}
	}
	return nil
}

func envNames(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func normalizeTraffic(c *api.EndpointConfig, entities map[string]bool) error {
	if c.TrafficConfig == nil || len(c.TrafficConfig.Routes) == 0 {
		if len(c.ServedEntities) > 1 {
			return invalid("config.traffic_config.routes: required with more than one served entity")
		}
		c.TrafficConfig = &api.TrafficConfig{Routes: []api.Route{{ServedModelName: c.ServedEntities[0].Name, TrafficPercentage: 100}}}
		return nil
	}
	sum := 0
	routed := map[string]bool{}
	for i, r := range c.TrafficConfig.Routes {
		if !entities[r.ServedModelName] {
			return invalid("traffic_config.routes[%d]: served_model_name %q is not a served entity of this config", i, r.ServedModelName)
		}
		if routed[r.ServedModelName] {
			return invalid("traffic_config.routes[%d]: %q has more than one route", i, r.ServedModelName)
		}
		routed[r.ServedModelName] = true
		if r.TrafficPercentage < 0 || r.TrafficPercentage > 100 {
			return invalid("traffic_config.routes[%d].traffic_percentage: %d is out of range 0-100", i, r.TrafficPercentage)
		}
		if !r.Shadow {
			sum += r.TrafficPercentage
		}
	}
	if sum != 100 {
		return invalid("traffic_config.routes: percentages sum to %d, must sum to 100 (shadow routes do not count)", sum)
	}
	return nil
}

// replicaBounds is the range of replicas an entity may run: sizedBounds,
// with the floor at 0 when it may scale to zero.
func replicaBounds(e *api.ServedEntity) (lo, hi int) {
	lo, hi = sizedBounds(e)
	if scalesToZero(e) {
		lo = 0
	}
	return lo, hi
}

// sizedBounds is the range of replicas an entity's size asks for, scale to
// zero aside: its throughput bounds (throughputBounds), else its workload
// size's (or provisioned) concurrency range divided by the per-replica
// concurrency. Small is 1..1, Medium 2..4, Large 4..16.
func sizedBounds(e *api.ServedEntity) (lo, hi int) {
	if throughputBounded(e) {
		return throughputBounds(e)
	}
	var clo, chi int
	if r, ok := workloadSizes[e.WorkloadSize]; ok {
		clo, chi = r[0], r[1]
	} else {
		clo, chi = deref(e.MinProvisionedConcurrency), deref(e.MaxProvisionedConcurrency)
	}
	c := replicaConcurrency(e)
	return ceilDiv(clo, c), max(1, ceilDiv(chi, c))
}

// scalesToZero reports whether e may scale to zero replicas.
func scalesToZero(e *api.ServedEntity) bool {
	return e.ScaleToZeroEnabled != nil && *e.ScaleToZeroEnabled
}

// replicaConcurrency is how many requests one replica of e takes at once.
func replicaConcurrency(e *api.ServedEntity) int {
	if e.ReplicaConcurrency != nil {
		return *e.ReplicaConcurrency
	}
	return defaultReplicaConcurrency
}

// initialReplicas is what a new deployment starts with before the
// autoscaler has a say: its floor, and at least one, so that a config
// rollout proves the model loads before it takes traffic.
func initialReplicas(e *api.ServedEntity) int {
	lo, _ := replicaBounds(e)
	return max(1, lo)
}

func ceilDiv(a, b int) int { return (a + b - 1) / b }

func deref(p *int) int {
	if p == nil {
		return 0
	}
	return *p
}

// checkJSONKeys walks the JSON document b alongside the Go type of v and
// refuses what encoding/json lets through silently: a key given twice in
// one object (the last one would win, so what a reviewer reads is not what
// runs), and a field name in another case ("Name" for "name"), which
// encoding/json matches case-insensitively but Databricks' API does not.
// b must already have decoded into v without error.
func checkJSONKeys(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	return walkJSON(dec, reflect.TypeOf(v), "")
}

var jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()

// walkJSON reads one value from dec; t is the Go type it decodes into, or
// nil where no type is known (an unknown field, an any, a type with its
// own UnmarshalJSON), where only duplicates are checked.
func walkJSON(dec *json.Decoder, t reflect.Type, path string) error {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t != nil && (t.Implements(jsonUnmarshaler) || reflect.PointerTo(t).Implements(jsonUnmarshaler) || t.Kind() == reflect.Interface) {
		t = nil
	}
	tok, err := dec.Token()
	if err != nil {
		return api.Errorf(api.ErrMalformedRequest, "request body is not valid JSON: %v", err)
	}
	switch tok {
	case json.Delim('{'):
		var fields map[string]reflect.StructField
		if t != nil && t.Kind() == reflect.Struct {
			fields = jsonFields(t)
		}
		seen := map[string]bool{}
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return api.Errorf(api.ErrMalformedRequest, "request body is not valid JSON: %v", err)
			}
			key, _ := kt.(string)
			at := joinPath(path, key)
			if seen[key] {
				return invalid("%s: the key is given twice; give each key once", at)
			}
			seen[key] = true
			var vt reflect.Type
			switch {
			case fields != nil:
				f, ok := fields[key]
				if !ok {
					for name := range fields {
						if strings.EqualFold(name, key) {
							return invalid("%s: unknown field; field names are case-sensitive: did you mean %q?", at, joinPath(path, name))
						}
					}
				}
				vt = f.Type // nil for unknown fields, which decode refused already
			case t != nil && t.Kind() == reflect.Map:
				vt = t.Elem()
			}
			if err := walkJSON(dec, vt, at); err != nil {
				return err
			}
		}
		_, err := dec.Token() // '}'
		return err
	case json.Delim('['):
		var et reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			et = t.Elem()
		}
		for i := 0; dec.More(); i++ {
			if err := walkJSON(dec, et, fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		_, err := dec.Token() // ']'
		return err
	}
	return nil
}

// jsonFields maps the JSON names of struct t's fields, with the fields of
// embedded structs promoted as encoding/json does.
func jsonFields(t reflect.Type) map[string]reflect.StructField {
	out := map[string]reflect.StructField{}
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				for k, v := range jsonFields(ft) {
					if _, ok := out[k]; !ok {
						out[k] = v
					}
				}
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f
	}
	return out
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}
