package nomad

import "github.com/gantry/gantry/jobs"

// RefuseSecretEnv says why endpoints with secret references cannot run on
// this driver, so that the scheduler refuses them at create with a 400
// instead of failing their deployment (jobs.Render refuses them too).
func (d *Driver) RefuseSecretEnv() string { return jobs.SecretsRefused }
