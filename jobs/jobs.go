// Package jobs renders a served entity's deployment into a Nomad job, with
// the types of github.com/hashicorp/nomad/api so that what Gantry submits is
// exactly what `nomad job run -json` would.
//
// One deployment is one job, whose single task group runs the replicas.
// The job carries update { max_parallel = 0 }: Nomad refuses to scale a job
// while one of its deployments is active, and Gantry scales often; a change
// of anything but the count makes a new deployment ID, so a new job, instead
// of a rolling update. README.md holds the resource table.
package jobs

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/scheduler/orchestrator"
	"github.com/gantry/gantry/worker/mlmodel"
	nomad "github.com/hashicorp/nomad/api"
)

// Names inside every rendered job.
const (
	// Group and Task name the job's task group and its one task.
	Group = "worker"
	Task  = "worker"
	// PortLabel is the dynamic port the worker listens on and its service
	// advertises.
	PortLabel = "http"
	// ModelDir is where the artifact unpacks, relative to the task dir.
	ModelDir = "local/model"
)

// Task drivers that Settings.TaskDriver accepts.
const (
	DriverDocker  = "docker"
	DriverExec    = "exec"
	DriverRawExec = "raw_exec"
)

// Defaults of Settings.
const (
	// DefaultImage is the image `make image` builds.
	DefaultImage = "gantry-worker:dev"
	// DefaultPythonImage is the image `make python-image` builds: the
	// worker with Debian's python3 and libraries, for models that the
	// Python runtime serves (DefaultImage is FROM scratch).
	DefaultPythonImage = "gantry-worker-python:dev"
	// DefaultLLMImage is the image `make llm-image` builds: the worker
	// with libstdc++ and llama.cpp's CPU libraries, for GGUF models
	// (mlmodel.NeedsLlama) on CPU workload types.
	DefaultLLMImage = "gantry-worker-llm:dev"
	// DefaultLLMGPUImage is the image `make llm-gpu-image` builds: the
	// same with llama.cpp's CUDA build and the CUDA 13 runtime, for GGUF
	// models on GPU workload types.
	DefaultLLMGPUImage = "gantry-worker-llm-gpu:dev"
	// DefaultPython is the interpreter a worker runs Python models with
	// unless told otherwise: python3 on the PATH (the worker's own
	// default, pyfunc.DefaultPython).
	DefaultPython = "python3"
	// DefaultBinary is where exec and raw_exec find gantry on a client.
	// The exec driver's default chroot includes /usr.
	DefaultBinary = "/usr/local/bin/gantry"
)

// Meta keys that tie a job back to Gantry.
const (
	MetaDeployment = "gantry_deployment"
	MetaEndpoint   = "gantry_endpoint"
	MetaEntity     = "gantry_entity"
	MetaModel      = "gantry_model"
	// MetaRuntime says how the worker serves the model: RuntimeNative,
	// RuntimePython, RuntimeGGUF or RuntimeGGUFCUDA (see RuntimeOf).
	MetaRuntime = "gantry_runtime"
)

// Values of MetaRuntime.
const (
	RuntimeNative = "native"
	RuntimePython = "python"
	// RuntimeGGUF is llama.cpp's CPU build; RuntimeGGUFCUDA its CUDA
	// build with every layer offloaded, for GPU workload types.
	RuntimeGGUF     = "gguf"
	RuntimeGGUFCUDA = "gguf-cuda"
)

// RuntimeOf says how d's worker serves its model, by the flavor the worker
// picks (mlmodel.NeedsPython, mlmodel.NeedsLlama) and, for GGUF models,
// whether d's workload type has GPUs.
func RuntimeOf(d orchestrator.Deployment) string {
	switch {
	case mlmodel.NeedsPython(d.Flavors):
		return RuntimePython
	case mlmodel.NeedsLlama(d.Flavors):
		if gpuTypes[d.WorkloadType].GPUs > 0 {
			return RuntimeGGUFCUDA
		}
		return RuntimeGGUF
	}
	return RuntimeNative
}

// PythonEnv is the worker's variable naming its Python interpreter (its
// --python flag); a served entity may set it in environment_vars.
const PythonEnv = "GANTRY_PYTHON"

// Settings say where and how Nomad runs the workers. The zero value runs
// them with the docker driver and DefaultImage in Nomad's default
// namespace, region, datacenters and node pool.
type Settings struct {
	// Namespace and Region are set on the job when not empty; empty
	// leaves them to the client that registers it (NOMAD_NAMESPACE,
	// NOMAD_REGION).
	Namespace string
	Region    string
	// Datacenters default to Nomad's default, every datacenter ("*").
	Datacenters []string
	// NodePool defaults to Nomad's default pool.
	NodePool string
	// Constraints are added to the job as they are.
	Constraints []*nomad.Constraint
	// TaskDriver is docker (default), exec or raw_exec.
	TaskDriver string
	// Image is the worker image for the docker driver; default DefaultImage.
	Image string
	// Binary is the gantry binary on the clients for exec and raw_exec;
	// default DefaultBinary.
	Binary string
	// PythonImage replaces Image for models that need the Python runtime
	// (mlmodel.NeedsPython); default DefaultPythonImage.
	PythonImage string
	// Python is the interpreter such models run with on exec and
	// raw_exec clients; default DefaultPython. Docker tasks use the
	// image's python3 (a path on the scheduler's host means nothing in
	// the image). A served entity's own GANTRY_PYTHON wins on every
	// driver.
	Python string
	// LLMImage replaces Image for GGUF models on CPU workload types
	// (RuntimeGGUF), LLMGPUImage on GPU types (RuntimeGGUFCUDA): the
	// scratch worker image has neither libstdc++ nor llama.cpp. Defaults
	// DefaultLLMImage and DefaultLLMGPUImage; each image says where its
	// libraries are (GANTRY_LLAMA_LIB_DIR in its environment).
	LLMImage, LLMGPUImage string
	// LlamaLibDir and LlamaCUDALibDir are the folders of llama.cpp's CPU
	// and CUDA builds on exec and raw_exec clients, passed to GGUF
	// models' workers as --llama-lib-dir. Empty leaves the worker its own
	// default on the client: GANTRY_LLAMA_LIB_DIR (raw_exec tasks get the
	// client's environment), else llama/ beside the gantry binary.
	LlamaLibDir, LlamaCUDALibDir string
	// MaxCores, when set, caps a GGUF replica's llama.cpp threads: gantry's
	// docker driver caps a container's CPU quota at its engine's CPUs, and
	// more threads than that would crawl. Nomad jobs leave it 0: a client
	// without the cores to reserve does not take the job.
	MaxCores int
}

// ImageFor is the image that runs d's worker with the docker task driver
// or gantry's docker driver: PythonImage when d's model needs the Python
// runtime, which the scratch worker image cannot hold, else Image.
func (s Settings) ImageFor(d orchestrator.Deployment) string {
	switch RuntimeOf(d) {
	case RuntimePython:
		return cmp.Or(s.PythonImage, DefaultPythonImage)
	case RuntimeGGUF:
		return cmp.Or(s.LLMImage, DefaultLLMImage)
	case RuntimeGGUFCUDA:
		return cmp.Or(s.LLMGPUImage, DefaultLLMGPUImage)
	}
	return cmp.Or(s.Image, DefaultImage)
}

// GPULayersAll is the worker's --llm-gpu-layers value that offloads every
// layer of a GGUF model.
const GPULayersAll = "-1"

// LlamaArgs are the worker flags that d's GGUF model needs on s's task
// driver, none for other models: where llama.cpp's libraries are on exec
// and raw_exec clients (--llama-lib-dir, when set; an image knows its
// own), and, on GPU workload types, every layer offloaded to the GPU
// (--llm-gpu-layers -1), without which the CUDA build computes on the
// CPU. The worker refuses GPU layers when the build it loaded finds no
// GPU, so a GPU replica given the CPU build fails rather than crawls. On
// CPU workload types, one llama.cpp thread per core of the replica's
// size (--llm-threads).
func (s Settings) LlamaArgs(d orchestrator.Deployment) []string {
	rt := RuntimeOf(d)
	if rt != RuntimeGGUF && rt != RuntimeGGUFCUDA {
		return nil
	}
	var args []string
	if s.TaskDriver == DriverExec || s.TaskDriver == DriverRawExec {
		dir := s.LlamaLibDir
		if rt == RuntimeGGUFCUDA {
			dir = s.LlamaCUDALibDir
		}
		if dir != "" {
			args = append(args, "--llama-lib-dir", dir)
		}
	}
	if rt == RuntimeGGUFCUDA {
		args = append(args, "--llm-gpu-layers", GPULayersAll)
	} else if res, err := ResourcesFor(d.WorkloadSize, d.WorkloadType); err == nil {
		// One thread per core the replica has (Render reserves them): the
		// worker's default, half the CPUs it sees, counts the host's in a
		// container limited by quota, and more threads than cores crawl.
		threads := res.Cores()
		if s.MaxCores > 0 {
			threads = min(threads, s.MaxCores)
		}
		args = append(args, "--llm-threads", strconv.Itoa(threads))
	}
	return args
}

// PythonFor is the interpreter d's worker runs its model with, and
// whether it needs one: the entity's GANTRY_PYTHON, else s.Python on exec
// and raw_exec, else DefaultPython.
func (s Settings) PythonFor(d orchestrator.Deployment) (string, bool) {
	if !mlmodel.NeedsPython(d.Flavors) {
		return "", false
	}
	if py := d.Env[PythonEnv]; py != "" {
		return py, true
	}
	if s.TaskDriver == "" || s.TaskDriver == DriverDocker {
		return DefaultPython, true
	}
	return cmp.Or(s.Python, DefaultPython), true
}

// Validate reports settings that no job could use.
func (s Settings) Validate() error {
	switch s.TaskDriver {
	case "", DriverDocker, DriverExec, DriverRawExec:
	default:
		return fmt.Errorf("task driver %q: choose docker, exec or raw_exec", s.TaskDriver)
	}
	for _, dc := range s.Datacenters {
		if dc == "" {
			return fmt.Errorf("datacenters: an empty name")
		}
	}
	return nil
}

// Resources is what one replica asks of its Nomad client.
type Resources struct {
	CPU      int // MHz
	MemoryMB int
	// GPUs counts nvidia/gpu devices; GPUMemory, when set, is the least
	// memory each must have, in Nomad's units ("24 GiB").
	GPUs      int
	GPUMemory string
}

// Cores is how many whole cores CPU makes, at 1000 MHz each: what a GGUF
// replica on CPU reserves.
func (r Resources) Cores() int { return max(1, r.CPU/1000) }

// cpuSizes are the resources of a CPU replica by workload_size. An empty
// size (provisioned concurrency) gets Small's.
var cpuSizes = map[string]Resources{
	"":                 {CPU: 1000, MemoryMB: 1024},
	api.WorkloadSmall:  {CPU: 1000, MemoryMB: 1024},
	api.WorkloadMedium: {CPU: 2000, MemoryMB: 2048},
	api.WorkloadLarge:  {CPU: 4000, MemoryMB: 4096},
}

// gpuTypes are the resources of a GPU replica by workload_type, after the
// cards Databricks names for them (T4, A10G, A100, 4×A10G). A GPU replica's
// size comes from its card, whatever its workload_size.
var gpuTypes = map[string]Resources{
	api.WorkloadGPUSmall:       {CPU: 4000, MemoryMB: 16384, GPUs: 1},
	api.WorkloadGPUMedium:      {CPU: 8000, MemoryMB: 32768, GPUs: 1, GPUMemory: "20 GiB"},
	api.WorkloadGPULarge:       {CPU: 8000, MemoryMB: 65536, GPUs: 1, GPUMemory: "40 GiB"},
	api.WorkloadMultiGPUMedium: {CPU: 16000, MemoryMB: 65536, GPUs: 4, GPUMemory: "20 GiB"},
}

// ResourcesFor returns a replica's resources for a workload size and type.
func ResourcesFor(size, typ string) (Resources, error) {
	if r, ok := gpuTypes[typ]; ok {
		return r, nil
	}
	if typ != "" && typ != api.WorkloadCPU {
		return Resources{}, fmt.Errorf("workload_type %q: not one of CPU, GPU_SMALL, GPU_MEDIUM, GPU_LARGE, MULTIGPU_MEDIUM", typ)
	}
	r, ok := cpuSizes[size]
	if !ok {
		return Resources{}, fmt.Errorf("workload_size %q: not one of Small, Medium, Large", size)
	}
	return r, nil
}

// Render returns the Nomad job that runs deployment d.
func Render(d orchestrator.Deployment, s Settings) (*nomad.Job, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	if d.ID == "" {
		return nil, fmt.Errorf("render job: the deployment has no ID")
	}
	if d.ArtifactURL == "" {
		return nil, fmt.Errorf("render job %s: the deployment has no artifact URL", d.ID)
	}
	if d.Replicas < 0 {
		return nil, fmt.Errorf("render job %s: %d replicas", d.ID, d.Replicas)
	}
	// Stored configs may predate the scheduler's check (see CheckEnv).
	if err := CheckEnvs(d.Env); err != nil {
		return nil, fmt.Errorf("render job %s: %w", d.ID, err)
	}
	tmpl, err := secretsTemplate(d)
	if err != nil {
		return nil, err
	}
	res, err := ResourcesFor(d.WorkloadSize, d.WorkloadType)
	if err != nil {
		return nil, fmt.Errorf("render job %s: %w", d.ID, err)
	}

	// The deployment's ID is the job's: Nomad takes it as it is.
	job := nomad.NewServiceJob(d.ID, d.ID, "", 50)
	job.Region = nil // NewServiceJob sets "", which would not fall back to the client's region
	if s.Region != "" {
		job.Region = new(s.Region)
	}
	if s.Namespace != "" {
		job.Namespace = new(s.Namespace)
	}
	job.Datacenters = s.Datacenters
	if s.NodePool != "" {
		job.NodePool = new(s.NodePool)
	}
	job.Constraints = s.Constraints
	job.Update = &nomad.UpdateStrategy{MaxParallel: new(0)}
	job.Meta = map[string]string{
		MetaDeployment: d.ID,
		MetaEndpoint:   d.Endpoint,
		MetaEntity:     d.Entity,
		MetaModel:      d.ModelName + "/" + d.ModelVersion,
		MetaRuntime:    RuntimeOf(d),
	}
	// A model that needs Python says so, and which interpreter runs it, in
	// the job itself: GANTRY_PYTHON in the task's environment (the worker
	// reads its --python from it) and, for docker, the image that has it.
	env := withoutSecrets(d)
	if py, ok := s.PythonFor(d); ok {
		if env[PythonEnv] != py {
			env = withVar(env, PythonEnv, py)
		}
	}

	task := &nomad.Task{
		Name: Task,
		// Secrets and the worker secret come from the template, not here.
		Env:       env,
		Resources: &nomad.Resources{CPU: new(res.CPU), MemoryMB: new(res.MemoryMB)},
		Artifacts: []*nomad.TaskArtifact{{
			GetterSource: new(d.ArtifactURL),
			// The URL has no .tar.gz suffix for go-getter to detect the
			// archive by, so say it; go-getter drops the option from the
			// request it sends.
			GetterOptions: map[string]string{"archive": "tar.gz"},
			// The deployment's artifact token: a scheduler with
			// authentication answers the fetch only with it, and it opens
			// this model version alone (never a user's or an admin's
			// token in a job).
			GetterHeaders: artifactHeaders(d.ArtifactToken),
			RelativeDest:  new(ModelDir),
		}},
		// The worker finishes in-flight requests on SIGTERM; an execution
		// may take up to API.md's 297 s, but 30 s covers all but a few.
		KillTimeout: new(30 * time.Second),
	}
	args := []string{"worker", "--model-dir", "${NOMAD_TASK_DIR}/model"}
	switch s.TaskDriver {
	case "", DriverDocker:
		img := s.ImageFor(d)
		task.Driver = DriverDocker
		// In the container only its own address is bound; Nomad maps the
		// port to the same number on the host.
		task.Config = map[string]any{
			"image": img,
			"args":  append(append(args, "--listen", "0.0.0.0:${NOMAD_PORT_"+PortLabel+"}"), s.LlamaArgs(d)...),
			"ports": []string{PortLabel},
		}
	default:
		bin := s.Binary
		if bin == "" {
			bin = DefaultBinary
		}
		task.Driver = s.TaskDriver
		// On the host network, bind only the address Nomad advertises.
		task.Config = map[string]any{
			"command": bin,
			"args":    append(append(args, "--listen", "${NOMAD_ADDR_"+PortLabel+"}"), s.LlamaArgs(d)...),
		}
	}
	if RuntimeOf(d) == RuntimeGGUF {
		// llama.cpp's threads meet at every layer of every token, so one
		// thread held up holds up all: on a core shared with other tasks
		// (CPU in MHz is a share, not a core) generation slows with their
		// load. Reserved cores are the task's alone (Nomad gives it a
		// cpuset); BenchmarkLLMOverhead's "own core" placement measures
		// the difference.
		task.Resources.CPU, task.Resources.Cores = nil, new(res.Cores())
	}
	if res.GPUs > 0 {
		dev := &nomad.RequestedDevice{Name: "nvidia/gpu", Count: new(uint64(res.GPUs))}
		if res.GPUMemory != "" {
			dev.Constraints = []*nomad.Constraint{{LTarget: "${device.attr.memory}", Operand: ">=", RTarget: res.GPUMemory}}
		}
		task.Resources.Devices = []*nomad.RequestedDevice{dev}
	}

	if tmpl != nil {
		task.Templates = []*nomad.Template{tmpl}
	}

	group := nomad.NewTaskGroup(Group, d.Replicas)
	group.Networks = []*nomad.NetworkResource{{DynamicPorts: []nomad.Port{{Label: PortLabel}}}}
	group.Services = []*nomad.Service{{
		Name:      ServiceName(d.ID),
		PortLabel: PortLabel,
		Provider:  "nomad",
		Tags:      []string{"gantry"},
		Meta:      map[string]string{MetaDeployment: d.ID},
		Checks: []nomad.ServiceCheck{{
			Name: "ping", Type: "http", Path: "/ping",
			Interval: 5 * time.Second, Timeout: 2 * time.Second,
		}},
	}}
	// A worker that cannot load its model exits at once: fail the
	// allocation after two quick restarts, so that the failure reaches the
	// user in seconds rather than after Nomad's default 30 minutes.
	group.RestartPolicy = &nomad.RestartPolicy{
		Attempts: new(2), Interval: new(5 * time.Minute), Delay: new(5 * time.Second), Mode: new("fail"),
	}
	// Between deregistering the service and stopping the worker, so that
	// activators drop the replica before it refuses connections.
	group.ShutdownDelay = new(2 * time.Second)
	group.Tasks = []*nomad.Task{task}
	job.TaskGroups = []*nomad.TaskGroup{group}
	return job, nil
}

// invalidService matches what Nomad's service names (RFC 1123 labels)
// cannot hold.
var invalidService = regexp.MustCompile(`[^A-Za-z0-9-]+`)

// ServiceName is the Nomad service of a deployment. Nomad allows letters,
// digits and dashes, at most 63, so underscores become dashes and a long ID
// is cut. Whenever the ID had to change, the name ends with a hash of the
// whole ID, so that IDs that differ only there ("my_ep", "my-ep") keep
// distinct services.
func ServiceName(id string) string {
	s := strings.Trim(invalidService.ReplaceAllString(id, "-"), "-")
	if s == id && s != "" && len(s) <= 63 {
		return s
	}
	sum := sha256.Sum256([]byte(id))
	prefix := strings.Trim(s[:min(len(s), 54)], "-")
	if prefix == "" {
		prefix = "gantry"
	}
	return prefix + "-" + hex.EncodeToString(sum[:4])
}

// artifactHeaders are the headers of the artifact fetch: the artifact
// token when the deployment has one (the scheduler's
// X-Gantry-Artifact-Token), else none.
func artifactHeaders(token string) map[string]string {
	if token == "" {
		return nil
	}
	return map[string]string{"X-Gantry-Artifact-Token": token}
}

// WorkerSecretEnv is the variable that gives a worker its deployment's
// worker secret (orchestrator.Deployment.WorkerSecret); served entities
// may not set it (GANTRY_ is reserved).
const WorkerSecretEnv = "GANTRY_WORKER_SECRET"

// withVar is a copy of env with k set to v; env, the deployment's, is
// never written.
func withVar(env map[string]string, k, v string) map[string]string {
	out := make(map[string]string, len(env)+1)
	for n, x := range env {
		out[n] = x
	}
	out[k] = v
	return out
}
