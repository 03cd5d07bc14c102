package main

// End-to-end test of `gantry dev --driver nomad` against the Nomad API
// double (internal/nomadtest), which runs each allocation as a real
// `gantry worker` process with the model it fetched from the artifact URL,
// so the whole path runs: register → allocation → service → activator →
// worker.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/gantry/gantry/internal/nomadtest"
	nomadapi "github.com/hashicorp/nomad/api"
	"github.com/spf13/cobra"
)

func TestNomadEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs worker processes; run without -short")
	}
	bin := buildGantry(t)
	srv, err := nomadtest.New(nomadtest.Config{Token: "s3cret", DockerEntrypoint: bin})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	nc, _ := nomadapi.NewClient(&nomadapi.Config{Address: srv.URL, SecretID: "s3cret"})

	addr := freeAddr(t)
	dev := startDev(t, bin, addr, t.TempDir(), "--driver", "nomad", "--nomad-addr", srv.URL, "--nomad-token", "s3cret",
		"--task-driver", "raw_exec", "--worker-binary", bin)
	mustCLI(t, bin, addr, "models", "upload", "binary", filepath.Join(fixtures, "binary"))
	// A secret reference in the worker's environment: Nomad gets it
	// through a Variable and a template, never in the job.
	const secretValue = "sk-nomad-e2e-5e1f0c"
	for _, c := range []struct{ path, body string }{
		{"/api/2.0/secrets/scopes/create", `{"scope": "prod"}`},
		{"/api/2.0/secrets/put", `{"scope": "prod", "key": "api", "string_value": "` + secretValue + `"}`},
	} {
		resp, err := http.Post("http://"+addr+c.path, "application/json", strings.NewReader(c.body))
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("POST %s: %v %v", c.path, resp.Status, err)
		}
		resp.Body.Close()
	}
	epFile := filepath.Join(t.TempDir(), "nomad-ep.json")
	writeFile(t, epFile, `{"name": "nomad-ep", "config": {"served_entities": [{"entity_name": "binary", "entity_version": "1", "workload_size": "Small",
		"scale_to_zero_enabled": true, "environment_vars": {"API_KEY": "{{secrets/prod/api}}"}}]}}`)
	out := mustCLI(t, bin, addr, "endpoints", "create", "-f", epFile, "--wait")
	if !strings.Contains(out, "READY") {
		t.Fatalf("create: %s\n%s", out, dev.log)
	}

	e := readExpected(t, "binary")
	status, h, body := invoke(t, addr, "nomad-ep", "application/json", bodies(t, e)["dataframe_split"])
	if status != 200 || h.Get("served-model-name") != "binary-1" {
		t.Fatalf("invoke: %d served-model-name=%q %s", status, h.Get("served-model-name"), body)
	}
	comparePredictions(t, "invoke through Nomad", e.Predictions, body)

	// The job in Nomad is the one `gantry jobs render` prints.
	jobs, _, err := nc.Jobs().List(nil)
	if err != nil || len(jobs) != 1 {
		t.Fatalf("Nomad jobs = %v, %v; want one", jobs, err)
	}
	v := srv.Variable("", "nomad/jobs/"+jobs[0].ID)
	if v == nil || v.Items["API_KEY"] != secretValue || v.Items["GANTRY_WORKER_SECRET"] == "" {
		t.Errorf("the job's Nomad Variable is missing or lacks API_KEY or GANTRY_WORKER_SECRET (values not shown)")
	}
	held, _, err := nc.Jobs().Info(jobs[0].ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	heldJSON, _ := json.Marshal(held)
	if strings.Contains(string(heldJSON), secretValue) || v != nil && strings.Contains(string(heldJSON), v.Items["GANTRY_WORKER_SECRET"]) {
		t.Errorf("the job Nomad holds has a secret value (not shown)")
	}
	if pids := srv.Processes(); len(pids) == 1 {
		environ, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pids[0]))
		if !bytes.Contains(environ, []byte("\x00API_KEY="+secretValue+"\x00")) {
			t.Error("the worker's environment lacks API_KEY")
		}
	} else {
		t.Errorf("worker processes %v, want one", pids)
	}
	// Without job flags the scheduler's own job is printed (the scheduler
	// runs raw_exec, the CLI's default is docker); with them, the CLI
	// renders it.
	for _, flags := range [][]string{nil, {"--task-driver", "raw_exec", "--worker-binary", bin}} {
		rendered := mustCLI(t, bin, addr, append([]string{"jobs", "render", "nomad-ep", "binary-1"}, flags...)...)
		if strings.Contains(rendered, secretValue) {
			t.Errorf("jobs render %v shows the secret value (output not shown)", flags)
		} else if !strings.Contains(rendered, `nomadVar \"nomad/jobs/`) {
			t.Errorf("jobs render %v shows no template reading the variable:\n%s", flags, rendered)
		}
		var req struct{ Job *nomadapi.Job }
		if err := json.NewDecoder(strings.NewReader(rendered)).Decode(&req); err != nil || req.Job == nil {
			t.Fatalf("jobs render %v printed no job: %v\n%s", flags, err, rendered)
		}
		if *req.Job.ID != jobs[0].ID || *req.Job.TaskGroups[0].Count != 1 || req.Job.TaskGroups[0].Tasks[0].Driver != "raw_exec" {
			t.Errorf("jobs render %v: job %s count %d driver %s, want Nomad's %s with 1 raw_exec replica", flags,
				*req.Job.ID, *req.Job.TaskGroups[0].Count, req.Job.TaskGroups[0].Tasks[0].Driver, jobs[0].ID)
		}
	}
	// A model without a native runtime: the job says it runs Python and
	// with which interpreter (the scheduler's raw_exec job), or in which
	// image (rendered for the docker task driver). The scheduler knows
	// the flavors from the registry; nothing here runs the model.
	mustCLI(t, bin, addr, "models", "upload", "py_custom", filepath.Join(fixtures, "py_custom"))
	mustCLI(t, bin, addr, "endpoints", "create", "-f", endpointFile(t, "nomad-py", "py_custom", "1", "Small"))
	for _, tc := range []struct {
		flags         []string
		driver, image string
	}{
		{nil, "raw_exec", ""},
		{[]string{"--task-driver", "docker", "--python-image", "gantry-worker-python:9"}, "docker", "gantry-worker-python:9"},
	} {
		rendered := mustCLI(t, bin, addr, append([]string{"jobs", "render", "nomad-py"}, tc.flags...)...)
		var req struct{ Job *nomadapi.Job }
		if err := json.NewDecoder(strings.NewReader(rendered)).Decode(&req); err != nil || req.Job == nil {
			t.Fatalf("jobs render nomad-py %v printed no job: %v\n%s", tc.flags, err, rendered)
		}
		task := req.Job.TaskGroups[0].Tasks[0]
		if task.Driver != tc.driver || req.Job.Meta["gantry_runtime"] != "python" || task.Env["GANTRY_PYTHON"] != "python3" ||
			(tc.image != "" && task.Config["image"] != tc.image) {
			t.Errorf("jobs render nomad-py %v: driver %s meta %v env %v config %v; want %s, runtime python, GANTRY_PYTHON python3, image %q",
				tc.flags, task.Driver, req.Job.Meta, task.Env, task.Config, tc.driver, tc.image)
		}
	}
	mustCLI(t, bin, addr, "endpoints", "delete", "nomad-py")

	// A GGUF model on a GPU type: llama.cpp's CUDA build with every layer
	// offloaded and a device "nvidia/gpu", from the LLM GPU image or the
	// clients' folder. This Nomad has no GPU node, so the job stays
	// pending and nothing runs; the job is what is checked.
	mustCLI(t, bin, addr, "models", "upload", "stories", storiesDir)
	llmFile := filepath.Join(t.TempDir(), "nomad-llm.json")
	writeFile(t, llmFile, `{"name": "nomad-llm", "config": {"served_entities": [{"entity_name": "stories", "entity_version": "1",
		"workload_size": "Small", "workload_type": "GPU_SMALL", "scale_to_zero_enabled": true}]}}`)
	mustCLI(t, bin, addr, "endpoints", "create", "-f", llmFile)
	for _, tc := range []struct {
		flags         []string
		driver, image string
		args          string // after the worker's --listen ADDR
	}{
		{nil, "raw_exec", "", "--llm-gpu-layers -1"},
		{[]string{"--task-driver", "raw_exec", "--worker-binary", bin, "--llama-cuda-lib-dir", "/opt/llama/cuda"}, "raw_exec", "",
			"--llama-lib-dir /opt/llama/cuda --llm-gpu-layers -1"},
		{[]string{"--task-driver", "docker", "--llm-gpu-image", "gantry-worker-llm-gpu:9"}, "docker", "gantry-worker-llm-gpu:9",
			"--llm-gpu-layers -1"},
	} {
		rendered := mustCLI(t, bin, addr, append([]string{"jobs", "render", "nomad-llm"}, tc.flags...)...)
		var req struct{ Job *nomadapi.Job }
		if err := json.NewDecoder(strings.NewReader(rendered)).Decode(&req); err != nil || req.Job == nil {
			t.Fatalf("jobs render nomad-llm %v printed no job: %v\n%s", tc.flags, err, rendered)
		}
		task := req.Job.TaskGroups[0].Tasks[0]
		args, _ := task.Config["args"].([]any)
		var flags []string
		for i, a := range args {
			if a == "--listen" {
				for _, f := range args[i+2:] {
					flags = append(flags, fmt.Sprint(f))
				}
			}
		}
		devs := task.Resources.Devices
		if task.Driver != tc.driver || req.Job.Meta["gantry_runtime"] != "gguf-cuda" || strings.Join(flags, " ") != tc.args ||
			(tc.image != "" && task.Config["image"] != tc.image) ||
			len(devs) != 1 || devs[0].Name != "nvidia/gpu" || devs[0].Count == nil || *devs[0].Count != 1 {
			t.Errorf("jobs render nomad-llm %v: driver %s meta %v config %v devices %v; want %s, runtime gguf-cuda, args ending %q, image %q, one nvidia/gpu",
				tc.flags, task.Driver, req.Job.Meta, task.Config, devs, tc.driver, tc.args, tc.image)
		}
	}
	mustCLI(t, bin, addr, "endpoints", "delete", "nomad-llm")

	if out, err := cli(t, bin, addr, "jobs", "render", "nomad-ep", "nope"); err == nil || !strings.Contains(out, "binary-1") {
		t.Errorf("render an unknown entity: err=%v out=%s, want a failure listing binary-1", err, out)
	}

	mustCLI(t, bin, addr, "endpoints", "delete", "nomad-ep")
	deadline := time.Now().Add(15 * time.Second)
	for len(srv.Processes()) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("workers still running after delete: %v\n%s", srv.Processes(), dev.log)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if jobs, _, err := nc.Jobs().List(nil); err != nil || len(jobs) != 0 {
		t.Errorf("Nomad jobs after delete = %v, %v; want none (purged)", jobs, err)
	}
	if srv.Variable("", "nomad/jobs/"+jobs[0].ID) != nil {
		t.Error("the job's Nomad Variable outlived the endpoint")
	}
	if strings.Contains(dev.log.String(), secretValue) {
		t.Error("gantry dev's log holds the secret value")
	}
	status, _, body = invoke(t, addr, "nomad-ep", "application/json", []byte(`{"instances": [[1]]}`))
	if status != 404 || !bytes.Contains(body, []byte("RESOURCE_DOES_NOT_EXIST")) {
		t.Errorf("invoke a deleted endpoint: %d %s", status, body)
	}
}

func TestNomadJobFlags(t *testing.T) {
	var o controlPlaneOptions
	c := &cobra.Command{Use: "x"}
	o.flags(c, "127.0.0.1:0")
	err := c.Flags().Parse([]string{
		"--constraint", "${attr.kernel.name} = linux",
		"--constraint", "${meta.rack}  regexp  r1|r 2",
		"--constraint", "${attr.nvidia.driver} is_set",
		"--worker-image", "worker:1",
		"--python-image", "py:1",
		"--llm-image", "llm:1",
		"--llm-gpu-image", "llm-gpu:1",
		"--llama-cuda-lib-dir", "/opt/llama/cuda",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []*nomadapi.Constraint{
		{LTarget: "${attr.kernel.name}", Operand: "=", RTarget: "linux"},
		{LTarget: "${meta.rack}", Operand: "regexp", RTarget: "r1|r 2"},
		{LTarget: "${attr.nvidia.driver}", Operand: "is_set"},
	}
	if got := o.nomad.settings().Constraints; !reflect.DeepEqual(got, want) {
		t.Errorf("constraints = %s, want %s", fmtConstraints(got), fmtConstraints(want))
	}
	if err := c.Flags().Set("constraint", "linux"); err == nil {
		t.Error("--constraint linux was accepted; want ATTR OPERATOR VALUE")
	}
	// One image flag for both drivers.
	if o.workerImage() != "worker:1" || o.nomad.settings().Image != "worker:1" {
		t.Errorf("images: docker %q, nomad %q, want worker:1 for both", o.workerImage(), o.nomad.settings().Image)
	}
	// --python-image too, for models that need Python.
	if o.nomad.settings().PythonImage != "py:1" || o.nomad.pythonImage != "py:1" {
		t.Errorf("python image: nomad %q, want py:1", o.nomad.settings().PythonImage)
	}
	// The LLM images and the CUDA build's folder on the clients, for GGUF
	// models.
	if s := o.nomad.settings(); s.LLMImage != "llm:1" || s.LLMGPUImage != "llm-gpu:1" || s.LlamaCUDALibDir != "/opt/llama/cuda" {
		t.Errorf("LLM settings %q %q %q, want llm:1, llm-gpu:1 and /opt/llama/cuda", s.LLMImage, s.LLMGPUImage, s.LlamaCUDALibDir)
	}
	// --docker-image still works, deprecated.
	if err := c.Flags().Parse([]string{"--docker-image", "old:1"}); err != nil || o.workerImage() != "old:1" {
		t.Errorf("--docker-image old:1: %v, image %q", err, o.workerImage())
	}
	if f := c.Flags().Lookup("docker-image"); f == nil || f.Deprecated == "" {
		t.Error("--docker-image is not marked deprecated")
	}
}

func fmtConstraints(cs []*nomadapi.Constraint) string {
	var out []string
	for _, c := range cs {
		out = append(out, fmt.Sprintf("%+v", *c))
	}
	return strings.Join(out, ", ")
}
