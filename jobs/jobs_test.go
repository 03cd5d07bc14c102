package jobs_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/gantry/gantry/internal/nomadtest"
	"github.com/gantry/gantry/jobs"
	"github.com/gantry/gantry/scheduler/orchestrator"
	nomad "github.com/hashicorp/nomad/api"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden.json from the rendered jobs")

// registerRequest is the body of PUT /v1/jobs, the shape `nomad job run
// -json` and `gantry jobs render` use.
type registerRequest struct {
	Job *nomad.Job
}

func cpuDeployment() orchestrator.Deployment {
	return orchestrator.Deployment{
		ID: "fraud-model-v2-1a2b3c4d", Endpoint: "fraud", Entity: "model-v2",
		ModelName: "fraud_detector", ModelVersion: "2",
		ArtifactURL:  "http://gantry.service.consul:8080/api/2.0/gantry/models/fraud_detector/versions/2/artifact",
		Replicas:     2,
		WorkloadSize: "Small", WorkloadType: "CPU",
		Env: map[string]string{"LOG_LEVEL": "debug"},
	}
}

func gpuDeployment() orchestrator.Deployment {
	return orchestrator.Deployment{
		ID: "vision-resnet_50-5e6f7a8b", Endpoint: "vision", Entity: "resnet_50",
		ModelName: "resnet", ModelVersion: "7",
		ArtifactURL:  "https://gantry.example.com/api/2.0/gantry/models/resnet/versions/7/artifact",
		Replicas:     1,
		WorkloadSize: "Medium", WorkloadType: "MULTIGPU_MEDIUM",
	}
}

// pythonDeployment is a scikit-learn model, which the worker serves
// through the Python runtime.
func pythonDeployment() orchestrator.Deployment {
	d := cpuDeployment()
	d.ID, d.Entity, d.ModelName, d.ModelVersion = "churn-sk-9c8d7e6f", "sk", "churn", "3"
	d.Endpoint = "churn"
	d.ArtifactURL = "http://gantry.service.consul:8080/api/2.0/gantry/models/churn/versions/3/artifact"
	d.Flavors = []string{"python_function", "sklearn"}
	return d
}

// ggufDeployment is stories260K, which the worker serves with llama.cpp
// (the gguf flavor), on a CPU or a GPU workload type.
func ggufDeployment(workloadType string) orchestrator.Deployment {
	return orchestrator.Deployment{
		ID: "stories-chat-2b3c4d5e", Endpoint: "stories", Entity: "chat",
		ModelName: "stories", ModelVersion: "1",
		ArtifactURL:  "http://gantry.service.consul:8080/api/2.0/gantry/models/stories/versions/1/artifact",
		Replicas:     1,
		WorkloadSize: "Small", WorkloadType: workloadType,
		Flavors: []string{"gguf"},
	}
}

func TestRenderGolden(t *testing.T) {
	for _, tc := range []struct {
		name     string
		d        orchestrator.Deployment
		settings jobs.Settings
	}{
		{"cpu", cpuDeployment(), jobs.Settings{}},
		{"gpu", gpuDeployment(), jobs.Settings{
			Namespace: "ml", Region: "eu", Datacenters: []string{"eu-west-1a", "eu-west-1b"}, NodePool: "gpu",
			Constraints: []*nomad.Constraint{{LTarget: "${attr.kernel.name}", Operand: "=", RTarget: "linux"}},
			TaskDriver:  jobs.DriverExec, Binary: "/opt/gantry/bin/gantry",
		}},
		{"python", pythonDeployment(), jobs.Settings{PythonImage: "registry.example.com/gantry-worker-python:1.4"}},
		{"gguf", ggufDeployment("CPU"), jobs.Settings{}},
		{"gguf-gpu", ggufDeployment("GPU_MEDIUM"), jobs.Settings{LLMGPUImage: "registry.example.com/gantry-worker-llm-gpu:1.4"}},
		{"gguf-gpu-exec", ggufDeployment("GPU_SMALL"), jobs.Settings{
			TaskDriver: jobs.DriverRawExec, LlamaLibDir: "/opt/llama/cpu", LlamaCUDALibDir: "/opt/llama/cuda",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			job, err := jobs.Render(tc.d, tc.settings)
			if err != nil {
				t.Fatal(err)
			}
			got, err := json.MarshalIndent(registerRequest{job}, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, '\n')
			path := filepath.Join("testdata", tc.name+".golden.json")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./jobs/ -update to write it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("rendered job differs from %s (run with -update if the change is meant):\n%s", path, got)
			}

			// The golden JSON is a job: it decodes into api.Job and back
			// into what was rendered, and Nomad's validation takes it.
			var back registerRequest
			if err := json.Unmarshal(want, &back); err != nil {
				t.Fatalf("decode %s: %v", path, err)
			}
			if !reflect.DeepEqual(normalize(t, back.Job), normalize(t, job)) {
				t.Errorf("%s does not round-trip through api.Job", path)
			}
			if err := nomadtest.Validate(back.Job); err != nil {
				t.Errorf("Nomad would refuse %s: %v", path, err)
			}
		})
	}
}

// normalize re-encodes a job so that typed values in the task config
// ([]string) compare equal to decoded ones ([]any).
func normalize(t *testing.T, j *nomad.Job) *nomad.Job {
	t.Helper()
	b, err := json.Marshal(j)
	if err != nil {
		t.Fatal(err)
	}
	var out nomad.Job
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return &out
}

func TestRenderJob(t *testing.T) {
	job, err := jobs.Render(cpuDeployment(), jobs.Settings{})
	if err != nil {
		t.Fatal(err)
	}
	if *job.ID != "fraud-model-v2-1a2b3c4d" || job.Namespace != nil || job.Region != nil {
		t.Errorf("job ID %q namespace %v region %v: want the deployment ID and the client's namespace and region", *job.ID, job.Namespace, job.Region)
	}
	if job.Update == nil || *job.Update.MaxParallel != 0 {
		t.Errorf("update = %+v, want max_parallel = 0 so that Nomad lets Gantry scale at any time", job.Update)
	}
	tg := job.TaskGroups[0]
	if *tg.Count != 2 {
		t.Errorf("count = %d, want the 2 replicas", *tg.Count)
	}
	svc := tg.Services[0]
	if svc.Provider != "nomad" || svc.PortLabel != jobs.PortLabel || len(svc.Checks) != 1 ||
		svc.Checks[0].Type != "http" || svc.Checks[0].Path != "/ping" {
		t.Errorf("service = %+v, want provider nomad with an http check on /ping", svc)
	}
	task := tg.Tasks[0]
	art := task.Artifacts[0]
	if *art.GetterSource != cpuDeployment().ArtifactURL || art.GetterOptions["archive"] != "tar.gz" || *art.RelativeDest != jobs.ModelDir {
		t.Errorf("artifact = %+v, want the artifact URL unpacked as tar.gz into %s", art, jobs.ModelDir)
	}
	args := strings.Join(toStrings(task.Config["args"]), " ")
	if task.Driver != "docker" || task.Config["image"] != jobs.DefaultImage ||
		args != "worker --model-dir ${NOMAD_TASK_DIR}/model --listen 0.0.0.0:${NOMAD_PORT_http}" {
		t.Errorf("task %s %v: want the worker image serving ${NOMAD_TASK_DIR}/model on the dynamic port", task.Driver, task.Config)
	}
	if task.Env["LOG_LEVEL"] != "debug" {
		t.Errorf("env = %v, want the entity's environment_vars", task.Env)
	}

	raw, err := jobs.Render(cpuDeployment(), jobs.Settings{TaskDriver: jobs.DriverRawExec})
	if err != nil {
		t.Fatal(err)
	}
	rt := raw.TaskGroups[0].Tasks[0]
	if rt.Driver != "raw_exec" || rt.Config["command"] != jobs.DefaultBinary ||
		strings.Join(toStrings(rt.Config["args"]), " ") != "worker --model-dir ${NOMAD_TASK_DIR}/model --listen ${NOMAD_ADDR_http}" {
		t.Errorf("raw_exec task %v: want the gantry binary on the advertised address", rt.Config)
	}
}

// A model that needs Python runs where an interpreter is, and its job says
// which: the Python image for docker, GANTRY_PYTHON in the task's
// environment for every task driver, and gantry_runtime in the job's meta.
func TestRenderPythonRuntime(t *testing.T) {
	for _, tc := range []struct {
		name     string
		d        func() orchestrator.Deployment
		settings jobs.Settings
		image    string // docker's; empty for exec drivers
		python   string // GANTRY_PYTHON; empty: none in the job
		runtime  string
	}{
		{"docker default", pythonDeployment, jobs.Settings{}, jobs.DefaultPythonImage, "python3", jobs.RuntimePython},
		{"docker python image", pythonDeployment, jobs.Settings{Image: "w:1", PythonImage: "py:1"}, "py:1", "python3", jobs.RuntimePython},
		// The scheduler's --python is a path on its host or the clients,
		// not in the image.
		{"docker ignores the clients' interpreter", pythonDeployment, jobs.Settings{Python: "/opt/py/bin/python3"}, jobs.DefaultPythonImage, "python3", jobs.RuntimePython},
		{"raw_exec client interpreter", pythonDeployment,
			jobs.Settings{TaskDriver: jobs.DriverRawExec, Python: "/opt/py/bin/python3"}, "", "/opt/py/bin/python3", jobs.RuntimePython},
		{"entity's own interpreter wins", func() orchestrator.Deployment {
			d := pythonDeployment()
			d.Env = map[string]string{"GANTRY_PYTHON": "/opt/envs/churn/bin/python"}
			return d
		}, jobs.Settings{TaskDriver: jobs.DriverExec, Python: "/usr/bin/python3"}, "", "/opt/envs/churn/bin/python", jobs.RuntimePython},
		{"pytorch", func() orchestrator.Deployment {
			d := pythonDeployment()
			d.Flavors = []string{"python_function", "pytorch"}
			return d
		}, jobs.Settings{}, jobs.DefaultPythonImage, "python3", jobs.RuntimePython},
		// xgboost has a native runtime: no Python, the scratch image.
		{"xgboost stays native", func() orchestrator.Deployment {
			d := pythonDeployment()
			d.Flavors = []string{"python_function", "xgboost"}
			return d
		}, jobs.Settings{PythonImage: "py:1"}, jobs.DefaultImage, "", jobs.RuntimeNative},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := tc.d()
			before := len(d.Env)
			job, err := jobs.Render(d, tc.settings)
			if err != nil {
				t.Fatal(err)
			}
			task := job.TaskGroups[0].Tasks[0]
			if tc.image != "" && task.Config["image"] != tc.image {
				t.Errorf("image %v, want %s", task.Config["image"], tc.image)
			}
			if got, ok := task.Env["GANTRY_PYTHON"]; got != tc.python || ok != (tc.python != "") {
				t.Errorf("GANTRY_PYTHON = %q (set %v), want %q", got, ok, tc.python)
			}
			if job.Meta[jobs.MetaRuntime] != tc.runtime {
				t.Errorf("meta %s = %q, want %q", jobs.MetaRuntime, job.Meta[jobs.MetaRuntime], tc.runtime)
			}
			if len(d.Env) != before {
				t.Errorf("Render wrote the deployment's own environment: %v", d.Env)
			}
			if err := nomadtest.Validate(job); err != nil {
				t.Errorf("Nomad would refuse it: %v", err)
			}
		})
	}
}

// A GGUF model runs where llama.cpp's libraries are, and on GPU types
// with its CUDA build and every layer offloaded: the LLM images for
// docker, --llama-lib-dir for exec and raw_exec clients when set, and
// gantry_runtime in the job's meta.
func TestRenderLlama(t *testing.T) {
	const base = "worker --model-dir ${NOMAD_TASK_DIR}/model --listen "
	dirs := jobs.Settings{LlamaLibDir: "/opt/llama/cpu", LlamaCUDALibDir: "/opt/llama/cuda"}
	exec := func(driver string, s jobs.Settings) jobs.Settings { s.TaskDriver = driver; return s }
	images := jobs.Settings{Image: "w:1", PythonImage: "py:1", LLMImage: "llm:1", LLMGPUImage: "llm-gpu:1"}
	for _, tc := range []struct {
		name     string
		d        orchestrator.Deployment
		settings jobs.Settings
		image    string // docker's; empty for exec drivers
		args     string
		runtime  string
		gpus     uint64
	}{
		{"cpu docker default", ggufDeployment("CPU"), jobs.Settings{}, jobs.DefaultLLMImage,
			base + "0.0.0.0:${NOMAD_PORT_http} --llm-threads 1", jobs.RuntimeGGUF, 0},
		{"cpu docker image", ggufDeployment("CPU"), images, "llm:1",
			base + "0.0.0.0:${NOMAD_PORT_http} --llm-threads 1", jobs.RuntimeGGUF, 0},
		// A size-only entity (no workload_type) is a CPU one.
		{"no workload type", ggufDeployment(""), images, "llm:1",
			base + "0.0.0.0:${NOMAD_PORT_http} --llm-threads 1", jobs.RuntimeGGUF, 0},
		// The image knows its libraries: the clients' folders mean nothing
		// in it.
		{"gpu docker", ggufDeployment("GPU_LARGE"), func() jobs.Settings { s := images; s.LlamaCUDALibDir = "/opt/llama/cuda"; return s }(), "llm-gpu:1",
			base + "0.0.0.0:${NOMAD_PORT_http} --llm-gpu-layers -1", jobs.RuntimeGGUFCUDA, 1},
		{"multi-gpu docker default", ggufDeployment("MULTIGPU_MEDIUM"), jobs.Settings{}, jobs.DefaultLLMGPUImage,
			base + "0.0.0.0:${NOMAD_PORT_http} --llm-gpu-layers -1", jobs.RuntimeGGUFCUDA, 4},
		{"cpu exec", ggufDeployment("CPU"), exec(jobs.DriverExec, dirs), "",
			base + "${NOMAD_ADDR_http} --llama-lib-dir /opt/llama/cpu --llm-threads 1", jobs.RuntimeGGUF, 0},
		{"gpu raw_exec", ggufDeployment("GPU_SMALL"), exec(jobs.DriverRawExec, dirs), "",
			base + "${NOMAD_ADDR_http} --llama-lib-dir /opt/llama/cuda --llm-gpu-layers -1", jobs.RuntimeGGUFCUDA, 1},
		// Unset folders leave the worker its own default on the client.
		{"cpu exec no folder", ggufDeployment("CPU"), exec(jobs.DriverExec, jobs.Settings{}), "",
			base + "${NOMAD_ADDR_http} --llm-threads 1", jobs.RuntimeGGUF, 0},
		// The CPU build's folder never stands in for the CUDA build's.
		{"gpu exec cpu folder only", ggufDeployment("GPU_SMALL"), exec(jobs.DriverExec, jobs.Settings{LlamaLibDir: "/opt/llama/cpu"}), "",
			base + "${NOMAD_ADDR_http} --llm-gpu-layers -1", jobs.RuntimeGGUFCUDA, 1},
		// The worker prefers xgboost to gguf: a native model, no llama.cpp.
		{"xgboost wins", func() orchestrator.Deployment {
			d := ggufDeployment("GPU_SMALL")
			d.Flavors = []string{"gguf", "xgboost"}
			return d
		}(), images, "w:1", base + "0.0.0.0:${NOMAD_PORT_http}", jobs.RuntimeNative, 1},
		{"xgboost on exec", gpuDeployment(), exec(jobs.DriverExec, dirs), "",
			base + "${NOMAD_ADDR_http}", jobs.RuntimeNative, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			job, err := jobs.Render(tc.d, tc.settings)
			if err != nil {
				t.Fatal(err)
			}
			task := job.TaskGroups[0].Tasks[0]
			if tc.image != "" && task.Config["image"] != tc.image {
				t.Errorf("image %v, want %s", task.Config["image"], tc.image)
			}
			if tc.image == "" && task.Config["image"] != nil {
				t.Errorf("%s task with an image: %v", task.Driver, task.Config)
			}
			if args := strings.Join(toStrings(task.Config["args"]), " "); args != tc.args {
				t.Errorf("args %q, want %q", args, tc.args)
			}
			if job.Meta[jobs.MetaRuntime] != tc.runtime {
				t.Errorf("meta %s = %q, want %q", jobs.MetaRuntime, job.Meta[jobs.MetaRuntime], tc.runtime)
			}
			var gpus uint64
			for _, dev := range task.Resources.Devices {
				if dev.Name == "nvidia/gpu" {
					gpus += *dev.Count
				}
			}
			if gpus != tc.gpus {
				t.Errorf("%d nvidia/gpu devices, want %d", gpus, tc.gpus)
			}
			if _, ok := task.Env["GANTRY_PYTHON"]; ok {
				t.Errorf("env %v: a GGUF model needs no Python", task.Env)
			}
			if err := nomadtest.Validate(job); err != nil {
				t.Errorf("Nomad would refuse it: %v", err)
			}
		})
	}
}

// A GGUF replica on CPU reserves whole cores, one per 1000 MHz of its
// size, and runs a llama.cpp thread on each; on GPU types it keeps a
// share of CPU in MHz (its layers run on the card).
func TestRenderLlamaCores(t *testing.T) {
	for _, tc := range []struct {
		size, typ string
		cores     int // 0: CPU in MHz
		threads   string
	}{
		{"Small", "CPU", 1, "1"},
		{"Medium", "CPU", 2, "2"},
		{"Large", "", 4, "4"},
		{"Small", "GPU_SMALL", 0, ""},
	} {
		d := ggufDeployment(tc.typ)
		d.WorkloadSize = tc.size
		job, err := jobs.Render(d, jobs.Settings{})
		if err != nil {
			t.Fatal(err)
		}
		task := job.TaskGroups[0].Tasks[0]
		r := task.Resources
		if got := deref(r.Cores); got != tc.cores || (tc.cores > 0) == (r.CPU != nil) {
			t.Errorf("%s %s: cores %d, cpu %v; want %d cores and cpu only without them", tc.size, tc.typ, got, r.CPU, tc.cores)
		}
		args := toStrings(task.Config["args"])
		threads := ""
		if i := slices.Index(args, "--llm-threads"); i >= 0 && i+1 < len(args) {
			threads = args[i+1]
		}
		if threads != tc.threads {
			t.Errorf("%s %s: --llm-threads %q, want %q", tc.size, tc.typ, threads, tc.threads)
		}
		if err := nomadtest.Validate(job); err != nil {
			t.Errorf("Nomad would refuse it: %v", err)
		}
	}
	// The docker driver caps a container's quota, and so its threads, at
	// its engine's CPUs.
	d := ggufDeployment("CPU")
	d.WorkloadSize = "Large"
	if args := strings.Join(jobs.Settings{MaxCores: 2}.LlamaArgs(d), " "); args != "--llm-threads 2" {
		t.Errorf("Large with at most 2 cores: args %q, want --llm-threads 2", args)
	}
}

func deref(p *int) int {
	if p == nil {
		return 0
	}
	return *p
}

func toStrings(v any) []string {
	s, _ := v.([]string)
	return s
}

func TestResourcesFor(t *testing.T) {
	for _, tc := range []struct {
		size, typ  string
		cpu, mem   int
		gpus       int
		gpuMemory  string
		wantErrMsg string
	}{
		{size: "Small", typ: "CPU", cpu: 1000, mem: 1024},
		{size: "Medium", typ: "", cpu: 2000, mem: 2048},
		{size: "Large", typ: "CPU", cpu: 4000, mem: 4096},
		{size: "", typ: "CPU", cpu: 1000, mem: 1024},
		{size: "Small", typ: "GPU_SMALL", cpu: 4000, mem: 16384, gpus: 1},
		{size: "Large", typ: "GPU_MEDIUM", cpu: 8000, mem: 32768, gpus: 1, gpuMemory: "20 GiB"},
		{size: "Small", typ: "GPU_LARGE", cpu: 8000, mem: 65536, gpus: 1, gpuMemory: "40 GiB"},
		{size: "Medium", typ: "MULTIGPU_MEDIUM", cpu: 16000, mem: 65536, gpus: 4, gpuMemory: "20 GiB"},
		{size: "Huge", typ: "CPU", wantErrMsg: "workload_size"},
		{size: "Small", typ: "TPU", wantErrMsg: "workload_type"},
	} {
		r, err := jobs.ResourcesFor(tc.size, tc.typ)
		if tc.wantErrMsg != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErrMsg) {
				t.Errorf("ResourcesFor(%q, %q) error = %v, want one naming %s", tc.size, tc.typ, err, tc.wantErrMsg)
			}
			continue
		}
		want := jobs.Resources{CPU: tc.cpu, MemoryMB: tc.mem, GPUs: tc.gpus, GPUMemory: tc.gpuMemory}
		if err != nil || r != want {
			t.Errorf("ResourcesFor(%q, %q) = %+v, %v; want %+v", tc.size, tc.typ, r, err, want)
		}
	}
}

func TestRenderGPUDevice(t *testing.T) {
	d := cpuDeployment()
	d.WorkloadType = "GPU_SMALL"
	job, err := jobs.Render(d, jobs.Settings{})
	if err != nil {
		t.Fatal(err)
	}
	devs := job.TaskGroups[0].Tasks[0].Resources.Devices
	if len(devs) != 1 || devs[0].Name != "nvidia/gpu" || *devs[0].Count != 1 {
		t.Fatalf("devices = %+v, want one nvidia/gpu", devs)
	}
	d.WorkloadType = "CPU"
	job, _ = jobs.Render(d, jobs.Settings{})
	if devs := job.TaskGroups[0].Tasks[0].Resources.Devices; len(devs) != 0 {
		t.Errorf("a CPU entity asks for devices %+v", devs)
	}
}

func TestRenderRefuses(t *testing.T) {
	for name, tc := range map[string]struct {
		mutate   func(*orchestrator.Deployment)
		settings jobs.Settings
		want     string
	}{
		"task driver":   {settings: jobs.Settings{TaskDriver: "podman"}, want: "podman"},
		"no artifact":   {mutate: func(d *orchestrator.Deployment) { d.ArtifactURL = "" }, want: "artifact URL"},
		"no ID":         {mutate: func(d *orchestrator.Deployment) { d.ID = "" }, want: "no ID"},
		"workload type": {mutate: func(d *orchestrator.Deployment) { d.WorkloadType = "TPU" }, want: "TPU"},
		"replicas":      {mutate: func(d *orchestrator.Deployment) { d.Replicas = -1 }, want: "-1 replicas"},
		"datacenter":    {settings: jobs.Settings{Datacenters: []string{""}}, want: "datacenters"},
		// Issue 19: a config stored before validation refused it.
		"loader env": {mutate: func(d *orchestrator.Deployment) { d.Env = map[string]string{"LD_PRELOAD": "/x.so"} }, want: "LD_PRELOAD"},
	} {
		d := cpuDeployment()
		if tc.mutate != nil {
			tc.mutate(&d)
		}
		_, err := jobs.Render(d, tc.settings)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error = %v, want one mentioning %q", name, err, tc.want)
		}
	}
}

func TestServiceName(t *testing.T) {
	valid := regexp.MustCompile(`^(?i:[a-z0-9]|[a-z0-9][a-z0-9\-]{0,61}[a-z0-9])$`)
	long := strings.Repeat("endpoint_", 7) + "-" + strings.Repeat("entity", 10) + "-1a2b3c4d"
	seen := map[string]string{}
	for _, id := range []string{
		"fraud-model-v2-1a2b3c4d", "my_endpoint-my_model-1-00ff00ff", long, long + "x", "_-_",
		// Endpoint names may hold underscores: my_ep and my-ep are two
		// endpoints and need two services.
		"my_ep-binary-1-00ff00ff", "my-ep-binary-1-00ff00ff",
	} {
		name := jobs.ServiceName(id)
		if !valid.MatchString(name) {
			t.Errorf("ServiceName(%q) = %q, which Nomad refuses", id, name)
		}
		if prev, ok := seen[name]; ok {
			t.Errorf("ServiceName(%q) = ServiceName(%q) = %q", id, prev, name)
		}
		seen[name] = id
	}
	if got := jobs.ServiceName("fraud-model-v2-1a2b3c4d"); got != "fraud-model-v2-1a2b3c4d" {
		t.Errorf("ServiceName of a valid ID = %q, want it unchanged", got)
	}
}

func TestCheckEnvValue(t *testing.T) {
	for _, tc := range []struct{ name, value, want string }{
		{"GANTRY_MAX_BATCH_SIZE", "64", ""},
		{"GANTRY_MAX_BATCH_SIZE", "0", "from 1"},
		{"GANTRY_MAX_BATCH_SIZE", "many", "from 1"},
		{"GANTRY_MAX_BATCH_WAIT", "2ms", ""},
		{"GANTRY_MAX_BATCH_WAIT", "0", ""},
		{"GANTRY_MAX_BATCH_WAIT", "2s", "from 0 to 1s"},
		{"GANTRY_MAX_BATCH_WAIT", "-1ms", "from 0 to 1s"},
		{"GANTRY_PYTHON", "/opt/envs/churn/bin/python", ""},
		{"GANTRY_PYTHON", "", "is empty"},
		{"MODEL_THRESHOLD", "", ""},
	} {
		err := jobs.CheckEnvValue(tc.name, tc.value)
		if (tc.want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tc.want) {
			t.Errorf("CheckEnvValue(%s, %q) = %v; want %q", tc.name, tc.value, err, tc.want)
		}
	}
}

// TestCheckEnv: loader and interpreter variables are refused whatever
// their case; configuration a model reads is not.
func TestCheckEnv(t *testing.T) {
	for _, k := range []string{"LD_PRELOAD", "ld_preload", "LD_LIBRARY_PATH", "LD_AUDIT", "DYLD_INSERT_LIBRARIES",
		"PYTHONPATH", "PYTHONSTARTUP", "GODEBUG", "GOTRACEBACK", "MALLOC_CHECK_", "GLIBC_TUNABLES", "GCONV_PATH",
		"PATH", "HOME", "BASH_ENV", "NODE_OPTIONS", "JAVA_TOOL_OPTIONS", "OPENSSL_CONF", "NVIDIA_VISIBLE_DEVICES",
		"CUDA_VISIBLE_DEVICES", "NOMAD_TOKEN", "GANTRY_MODEL_DIR", "GANTRY_LISTEN", "gantry_python"} {
		if err := jobs.CheckEnv(k); err == nil || !strings.Contains(err.Error(), k) {
			t.Errorf("CheckEnv(%q) = %v; want an error naming it", k, err)
		}
	}
	for _, k := range []string{"MODEL_THRESHOLD", "OMP_NUM_THREADS", "MLFLOW_TRACKING_URI", "GOOGLE_APPLICATION_CREDENTIALS", "HOSTNAME_SUFFIX", "PATHS",
		"GANTRY_PYTHON", "GANTRY_MAX_BATCH_SIZE", "GANTRY_MAX_BATCH_WAIT"} {
		if err := jobs.CheckEnv(k); err != nil {
			t.Errorf("CheckEnv(%q) = %v; want nil", k, err)
		}
	}
}
