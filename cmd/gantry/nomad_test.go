package main

// End-to-end test of `gantry dev --driver nomad` against the Nomad API
// double (internal/nomadtest), which runs each allocation as a real
// `gantry worker` process with the model it fetched from the artifact URL,
// so the whole path runs: register → allocation → service → activator →
// worker.

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gantry/gantry/internal/nomadtest"
	nomadapi "github.com/hashicorp/nomad/api"
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
	out := mustCLI(t, bin, addr, "endpoints", "create", "-f", endpointFile(t, "nomad-ep", "binary", "1", "Small"), "--wait")
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
	rendered := mustCLI(t, bin, addr, "jobs", "render", "nomad-ep", "binary-1", "--task-driver", "raw_exec", "--worker-binary", bin)
	var req struct{ Job *nomadapi.Job }
	if err := json.NewDecoder(strings.NewReader(rendered)).Decode(&req); err != nil {
		t.Fatalf("jobs render printed no job: %v\n%s", err, rendered)
	}
	if *req.Job.ID != jobs[0].ID || *req.Job.TaskGroups[0].Count != 1 || req.Job.TaskGroups[0].Tasks[0].Driver != "raw_exec" {
		t.Errorf("rendered job %s count %d driver %s, want Nomad's %s with 1 raw_exec replica",
			*req.Job.ID, *req.Job.TaskGroups[0].Count, req.Job.TaskGroups[0].Tasks[0].Driver, jobs[0].ID)
	}
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
	status, _, body = invoke(t, addr, "nomad-ep", "application/json", []byte(`{"instances": [[1]]}`))
	if status != 404 || !bytes.Contains(body, []byte("RESOURCE_DOES_NOT_EXIST")) {
		t.Errorf("invoke a deleted endpoint: %d %s", status, body)
	}
}
