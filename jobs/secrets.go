package jobs

import (
	"fmt"
	"maps"
	"slices"

	"github.com/gantry/gantry/scheduler/orchestrator"
	"github.com/gantry/gantry/secrets"
)

// SecretsRefused says why Nomad jobs take no secrets yet. A secret in a
// task's env block would sit in the job's JSON, which anyone with
// read-job in the namespace reads; delivering it safely takes Nomad
// Variables and a template block, which Gantry does not write yet.
const SecretsRefused = "secret references are not delivered to Nomad jobs yet: the value would be in the job's JSON. " +
	"Use --driver local or docker for endpoints with secrets, or give the worker the value through Nomad Variables yourself"

// checkNoSecrets refuses a deployment whose environment holds secrets
// (resolved, d.SecretEnv) or references to them: neither may reach a job.
func checkNoSecrets(d orchestrator.Deployment) error {
	if len(d.SecretEnv) > 0 {
		return fmt.Errorf("render job %s: environment_vars.%s: %s", d.ID, d.SecretEnv[0], SecretsRefused)
	}
	for _, k := range slices.Sorted(maps.Keys(d.Env)) {
		if secrets.Mentions(d.Env[k]) {
			return fmt.Errorf("render job %s: environment_vars.%s: %s", d.ID, k, SecretsRefused)
		}
	}
	return nil
}
