package main

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/jobs"
	"github.com/gantry/gantry/scheduler/orchestrator"
	"github.com/gantry/gantry/scheduler/orchestrator/nomad"
	nomadapi "github.com/hashicorp/nomad/api"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// nomadOptions are the flags of the nomad driver. Nomad's own variables
// (NOMAD_ADDR, NOMAD_TOKEN, NOMAD_NAMESPACE, NOMAD_REGION, NOMAD_CACERT,
// NOMAD_CLIENT_CERT, NOMAD_CLIENT_KEY, …) apply first; a flag that is set
// overrides its variable.
type nomadOptions struct {
	addr, token                   string
	caCert, clientCert, clientKey string
	namespace, region             string
	datacenters                   []string
	nodePool                      string
	taskDriver                    string
	image, binary                 string
}

// flags adds the connection flags and the job flags.
func (o *nomadOptions) flags(c *cobra.Command) {
	fs := c.Flags()
	fs.StringVar(&o.addr, "nomad-addr", "", "Nomad API address for --driver nomad (default $NOMAD_ADDR, else http://127.0.0.1:4646)")
	fs.StringVar(&o.token, "nomad-token", "", "Nomad ACL token (default $NOMAD_TOKEN)")
	fs.StringVar(&o.caCert, "nomad-ca-cert", "", "CA certificate to verify Nomad's TLS certificate (default $NOMAD_CACERT)")
	fs.StringVar(&o.clientCert, "nomad-client-cert", "", "client certificate for Nomad's mTLS (default $NOMAD_CLIENT_CERT)")
	fs.StringVar(&o.clientKey, "nomad-client-key", "", "client key for Nomad's mTLS (default $NOMAD_CLIENT_KEY)")
	o.jobFlags(fs)
}

// jobFlags are the flags that shape the rendered jobs, which `gantry jobs
// render` takes too.
func (o *nomadOptions) jobFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.namespace, "namespace", "", "Nomad namespace of the worker jobs (default $NOMAD_NAMESPACE, else Nomad's default)")
	fs.StringVar(&o.region, "region", "", "Nomad region of the worker jobs (default $NOMAD_REGION, else the agent's)")
	fs.StringSliceVar(&o.datacenters, "datacenters", nil, "Nomad datacenters the worker jobs may run in, comma-separated (default every one)")
	fs.StringVar(&o.nodePool, "node-pool", "", "Nomad node pool of the worker jobs (default Nomad's default pool)")
	fs.StringVar(&o.taskDriver, "task-driver", jobs.DriverDocker, "Nomad task driver that runs the worker: docker, exec or raw_exec")
	fs.StringVar(&o.image, "worker-image", jobs.DefaultImage, "worker image for --task-driver docker; make image builds it")
	fs.StringVar(&o.binary, "worker-binary", jobs.DefaultBinary, "path of the gantry binary on the Nomad clients, for --task-driver exec and raw_exec")
}

// client is Nomad's DefaultConfig with the flags that were set on top.
func (o *nomadOptions) client() *nomadapi.Config {
	c := nomadapi.DefaultConfig()
	set := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	set(&c.Address, o.addr)
	set(&c.SecretID, o.token)
	set(&c.Namespace, o.namespace)
	set(&c.Region, o.region)
	set(&c.TLSConfig.CACert, o.caCert)
	set(&c.TLSConfig.ClientCert, o.clientCert)
	set(&c.TLSConfig.ClientKey, o.clientKey)
	return c
}

// settings are the job settings, with the namespace and region the client
// will use.
func (o *nomadOptions) settings() jobs.Settings {
	c := o.client()
	return jobs.Settings{
		Namespace: c.Namespace, Region: c.Region,
		Datacenters: o.datacenters, NodePool: o.nodePool,
		TaskDriver: o.taskDriver, Image: o.image, Binary: o.binary,
	}
}

// newNomadDriver opens the nomad driver.
func newNomadDriver(o *nomadOptions, log *slog.Logger, notify func(id string)) (driver, error) {
	return nomad.New(nomad.Config{Client: o.client(), Jobs: o.settings(), Logger: log}, notify)
}

func jobsCmd() *cobra.Command {
	var addr string
	var o nomadOptions
	c := &cobra.Command{Use: "jobs", Short: "Show the Nomad jobs that the nomad driver submits"}
	clientFlags(c, &addr)
	render := &cobra.Command{
		Use:   "render ENDPOINT [ENTITY]",
		Short: "Print the Nomad job of each served entity of ENDPOINT (or of ENTITY) as JSON for `nomad job run -json`",
		Long: "Print the Nomad job of each served entity of ENDPOINT (or only of ENTITY), one JSON document\n" +
			"{\"Job\": ...} each, as the nomad driver registers it. Give the same --task-driver, --namespace,\n" +
			"… (or GANTRY_* variables) as the scheduler runs with. The deployments of a config that is\n" +
			"rolling out come after those of the serving config.",
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := newClient(addr)
			if err != nil {
				return err
			}
			specs, _, err := cl.Endpoints().Deployments(args[0], nil)
			if err != nil {
				return err
			}
			var names []string
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			printed := 0
			for _, sp := range specs {
				names = append(names, sp.Entity)
				if len(args) == 2 && sp.Entity != args[1] {
					continue
				}
				job, err := jobs.Render(deploymentOf(sp), o.settings())
				if err != nil {
					return err
				}
				if err := enc.Encode(struct{ Job *nomadapi.Job }{job}); err != nil {
					return err
				}
				printed++
			}
			if printed == 0 && len(args) == 2 {
				return fmt.Errorf("endpoint %s has no served entity %q; it has %s", args[0], args[1], strings.Join(names, ", "))
			}
			return nil
		},
	}
	o.jobFlags(render.Flags())
	c.AddCommand(render)
	return c
}

func deploymentOf(sp api.DeploymentSpec) orchestrator.Deployment {
	return orchestrator.Deployment{
		ID: sp.ID, Endpoint: sp.Endpoint, Entity: sp.Entity,
		ModelName: sp.ModelName, ModelVersion: sp.ModelVersion, ArtifactURL: sp.ArtifactURL,
		Replicas: sp.Replicas, WorkloadSize: sp.WorkloadSize, WorkloadType: sp.WorkloadType, Env: sp.Env,
	}
}
