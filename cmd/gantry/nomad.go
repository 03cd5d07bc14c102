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
	// pythonImage is --python-image; python the interpreter of Python
	// models on the clients, the control plane's --python.
	pythonImage, python string
	// llmImage and llmGPUImage are --llm-image and --llm-gpu-image;
	// llamaLibDir (the control plane's --llama-lib-dir) and
	// llamaCUDALibDir the llama.cpp builds on exec and raw_exec clients.
	llmImage, llmGPUImage        string
	llamaLibDir, llamaCUDALibDir string
	constraints                  []*nomadapi.Constraint
}

// constraintsValue is the repeatable --constraint flag: each value is
// "ATTR OPERATOR VALUE", as in a jobspec's constraint block, or
// "ATTR OPERATOR" for operators that take no value (distinct_hosts,
// is_set, is_not_set). ATTR holds no spaces; VALUE may.
type constraintsValue struct{ list *[]*nomadapi.Constraint }

func (v constraintsValue) String() string {
	if v.list == nil {
		return ""
	}
	var out []string
	for _, c := range *v.list {
		out = append(out, strings.TrimSpace(c.LTarget+" "+c.Operand+" "+c.RTarget))
	}
	return "[" + strings.Join(out, ",") + "]"
}

func (v constraintsValue) Set(s string) error {
	f := strings.Fields(s)
	switch {
	case len(f) == 1 && f[0] == "distinct_hosts":
		*v.list = append(*v.list, &nomadapi.Constraint{Operand: f[0], RTarget: "true"})
	case len(f) == 2 && (f[1] == "is_set" || f[1] == "is_not_set" || f[1] == "distinct_property"):
		*v.list = append(*v.list, &nomadapi.Constraint{LTarget: f[0], Operand: f[1]})
	case len(f) >= 3:
		// The value keeps its inner spaces: everything after the operator.
		rest := strings.TrimSpace(s)
		rest = strings.TrimSpace(strings.TrimPrefix(rest, f[0]))
		rest = strings.TrimSpace(strings.TrimPrefix(rest, f[1]))
		*v.list = append(*v.list, &nomadapi.Constraint{LTarget: f[0], Operand: f[1], RTarget: rest})
	default:
		return fmt.Errorf("constraint %q: want \"ATTR OPERATOR VALUE\", e.g. \"${attr.kernel.name} = linux\"", s)
	}
	return nil
}

func (v constraintsValue) Type() string { return "constraint" }

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
	fs.StringVar(&o.image, "worker-image", jobs.DefaultImage, "worker image for --driver docker and for --task-driver docker; make image builds it")
	fs.StringVar(&o.pythonImage, "python-image", jobs.DefaultPythonImage, "worker image with a Python interpreter and the models' libraries, for models without a native runtime (sklearn, pytorch, custom pyfunc) under --driver docker and --task-driver docker; make python-image builds one")
	fs.StringVar(&o.llmImage, "llm-image", jobs.DefaultLLMImage, "worker image with llama.cpp's CPU libraries, for GGUF models on CPU workload types under --driver docker and --task-driver docker; make llm-image builds it")
	fs.StringVar(&o.llmGPUImage, "llm-gpu-image", jobs.DefaultLLMGPUImage, "worker image with llama.cpp's CUDA build and the CUDA 13 runtime, for GGUF models on GPU_* workload types under --driver docker and --task-driver docker; make llm-gpu-image builds it")
	fs.StringVar(&o.llamaCUDALibDir, "llama-cuda-lib-dir", "", "folder of llama.cpp's CUDA build on the Nomad clients, for GGUF models on GPU_* workload types under --task-driver exec and raw_exec (default: the worker's own, $GANTRY_LLAMA_LIB_DIR or llama/ beside --worker-binary)")
	fs.Var(constraintsValue{&o.constraints}, "constraint", `Nomad constraint on the worker jobs, "ATTR OPERATOR VALUE" (e.g. "${attr.kernel.name} = linux"); repeatable`)
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
		PythonImage: o.pythonImage, Python: o.python,
		LLMImage: o.llmImage, LLMGPUImage: o.llmGPUImage,
		LlamaLibDir: o.llamaLibDir, LlamaCUDALibDir: o.llamaCUDALibDir,
		Constraints: o.constraints,
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
			"{\"Job\": ...} each, as the nomad driver registers it. A scheduler that runs the nomad driver\n" +
			"sends the very job it submits. Otherwise the job is rendered here from the job flags\n" +
			"(--task-driver, --namespace, …, or their GANTRY_* variables), and so it is when a job flag is\n" +
			"given on the command line. The deployments of a config that is rolling out come after those\n" +
			"of the serving config.",
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := newClient(addr)
			if err != nil {
				return err
			}
			specs, err := cl.Endpoints().DeploymentSpecs(args[0], (*api.QueryOptions)(nil).WithContext(cmd.Context()))
			if err != nil {
				return err
			}
			// A job flag asks what the job would be with that setting:
			// render here rather than print the scheduler's.
			jobFlagsSet := false
			jobFlags := pflag.NewFlagSet("", pflag.ContinueOnError)
			(&nomadOptions{}).jobFlags(jobFlags)
			jobFlags.VisitAll(func(f *pflag.Flag) {
				jobFlagsSet = jobFlagsSet || cmd.Flags().Changed(f.Name)
			})
			jobFlagsSet = jobFlagsSet || cmd.Flags().Changed("python") || cmd.Flags().Changed("llama-lib-dir")
			var names []string
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			printed := 0
			for _, sp := range specs {
				names = append(names, sp.Entity)
				if len(args) == 2 && sp.Entity != args[1] {
					continue
				}
				var job any = sp.Job // the scheduler's own, when it runs the nomad driver
				if len(sp.Job) == 0 || jobFlagsSet {
					if job, err = jobs.Render(deploymentOf(sp), o.settings()); err != nil {
						return err
					}
				}
				if err := enc.Encode(struct{ Job any }{job}); err != nil {
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
	render.Flags().StringVar(&o.python, "python", "",
		"interpreter on the Nomad clients for models that need Python (exec and raw_exec; default python3 on the PATH), as the scheduler's --python")
	render.Flags().StringVar(&o.llamaLibDir, "llama-lib-dir", "",
		"folder of llama.cpp's CPU build on the Nomad clients for GGUF models (exec and raw_exec; default the worker's own), as the scheduler's --llama-lib-dir")
	c.AddCommand(render)
	return c
}

func deploymentOf(sp api.DeploymentSpec) orchestrator.Deployment {
	return orchestrator.Deployment{
		ID: sp.ID, Endpoint: sp.Endpoint, Entity: sp.Entity,
		ModelName: sp.ModelName, ModelVersion: sp.ModelVersion, ArtifactURL: sp.ArtifactURL,
		Flavors:  sp.Flavors,
		Replicas: sp.Replicas, WorkloadSize: sp.WorkloadSize, WorkloadType: sp.WorkloadType, Env: sp.Env,
	}
}
