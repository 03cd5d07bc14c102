package jobs

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"

	"github.com/gantry/gantry/scheduler/orchestrator"
	"github.com/gantry/gantry/secrets"
	nomad "github.com/hashicorp/nomad/api"
)

// Secrets reach a Nomad job's task through a Nomad Variable, never the
// job: a task's env block is in the job's JSON, which anyone who may read
// jobs in the namespace reads (and `gantry jobs render` shows). Before it
// registers the job, the driver writes the deployment's secret values
// (its resolved {{secrets/...}} references and its worker secret) to the
// variable at VariablePath(job), which the task's workload identity may
// read without any ACL policy; the job carries a template block that
// reads them into the task's environment at start (env = true), naming
// the keys and never a value. So the job is the same whether rendered
// with the references (gantry jobs render) or with their values.

// SecretsFile is where the template renders, in the task's secrets dir
// (not readable from other tasks, not in the allocation's shared dir).
const SecretsFile = "secrets/gantry.env"

// VariablePath is the Nomad Variable of job's secrets: the path Nomad's
// implicit workload-identity policy lets the job's tasks read.
func VariablePath(job string) string { return "nomad/jobs/" + job }

// validVariablePath is what Nomad takes as a variable's path.
var validVariablePath = regexp.MustCompile(`^[a-zA-Z0-9-_~/]{1,128}$`)

// secretKeys lists, sorted, the variables of d's environment that are
// secrets: resolved values (d.SecretEnv), references not resolved yet
// (what gantry jobs render sees), and the worker secret.
func secretKeys(d orchestrator.Deployment) []string {
	var keys []string
	for k, v := range d.Env {
		if slices.Contains(d.SecretEnv, k) || secrets.Mentions(v) {
			keys = append(keys, k)
		}
	}
	if d.WorkerSecret != "" {
		keys = append(keys, WorkerSecretEnv)
	}
	slices.Sort(keys)
	return keys
}

// SecretItems are the items of d's Nomad Variable: each secret
// variable's value. nil when d has no secret; an error when a secret is
// still a reference (the scheduler resolves them before Ensure) or names
// a variable d does not have.
func SecretItems(d orchestrator.Deployment) (nomad.VariableItems, error) {
	for _, k := range d.SecretEnv {
		if _, ok := d.Env[k]; !ok {
			return nil, fmt.Errorf("deployment %s: secret variable %s is not in its environment", d.ID, k)
		}
	}
	keys := secretKeys(d)
	if len(keys) == 0 {
		return nil, nil
	}
	items := make(nomad.VariableItems, len(keys))
	for _, k := range keys {
		v := d.Env[k]
		if k == WorkerSecretEnv {
			v = d.WorkerSecret
		}
		if secrets.Mentions(v) {
			// Never the value: it is a reference here anyway.
			return nil, fmt.Errorf("deployment %s: environment_vars.%s is a secret reference that was not resolved", d.ID, k)
		}
		items[k] = v
	}
	return items, nil
}

// secretsTemplate is the template that reads d's secrets from its
// variable into the task's environment, nil without secrets. Each value
// is written as a JSON string, which Nomad's env file parser
// (go-envparse) reads back exactly, newlines and quotes included.
// change_mode restart: a new value (a config update that keeps the
// deployment, or a re-resolved secret) restarts the task with it.
func secretsTemplate(d orchestrator.Deployment) (*nomad.Template, error) {
	keys := secretKeys(d)
	if len(keys) == 0 {
		return nil, nil
	}
	path := VariablePath(d.ID)
	if !validVariablePath.MatchString(path) {
		return nil, fmt.Errorf("render job %s: its secrets need the Nomad Variable %q, which is not a valid variable path (letters, digits, -, _, ~, /; at most 128); shorten the endpoint or served entity name", d.ID, path)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "{{ with nomadVar %q }}\n", path)
	for _, k := range keys {
		fmt.Fprintf(&b, "%s={{ (index . %q).Value | toJSON }}\n", k, k)
	}
	b.WriteString("{{ end }}\n")
	return &nomad.Template{
		EmbeddedTmpl: new(b.String()),
		DestPath:     new(SecretsFile),
		Envvars:      new(true),
		ChangeMode:   new("restart"),
		Perms:        new("0600"),
	}, nil
}

// withoutSecrets is d's environment less its secrets (the template gives
// the task those), in a map of its own.
func withoutSecrets(d orchestrator.Deployment) map[string]string {
	keys := secretKeys(d)
	if len(keys) == 0 {
		return d.Env
	}
	env := maps.Clone(d.Env)
	for _, k := range keys {
		delete(env, k)
	}
	if len(env) == 0 {
		return nil
	}
	return env
}
