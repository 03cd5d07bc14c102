package main

// End-to-end tests of `gantry dev --driver docker`: workers run as
// containers of the worker image on a real Docker engine
// (deploy/docker/start-dockerd.sh starts one).

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/client"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/internal/dockertest"
	"github.com/gantry/gantry/scheduler/orchestrator/docker"
)

// startDockerDev runs `gantry dev --driver docker` with the test image.
func startDockerDev(t testing.TB, bin, addr, dataDir string, flags ...string) *proc {
	t.Helper()
	flags = append([]string{"--driver", "docker", "--docker-image", dockertest.BuildImage(t)}, flags...)
	return startDev(t, bin, addr, dataDir, flags...)
}

// containerIDs lists the IDs of the containers that the gantry dev with
// dataDir owns.
func containerIDs(t testing.TB, cli *client.Client, dataDir string) []string {
	t.Helper()
	var ids []string
	for _, c := range dockertest.Containers(t, cli, docker.LabelOwner, dataDir) {
		ids = append(ids, c.ID)
	}
	return ids
}

func waitContainers(t testing.TB, cli *client.Client, dataDir, what string, cond func(ids []string) bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ids := containerIDs(t, cli, dataDir)
		if cond(ids) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not reached after 30 s: containers %v", what, ids)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestDockerEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the worker image and runs containers; run without -short")
	}
	cli := dockertest.Client(t)
	bin := buildGantry(t)
	addr := freeAddr(t)
	dataDir := t.TempDir() // absolute: it is the owner label's value
	dev := startDockerDev(t, bin, addr, dataDir, shortWindows...)
	c, _ := api.NewClient(&api.Config{Address: "http://" + addr})
	mustCLI(t, bin, addr, "models", "upload", "binary", filepath.Join(fixtures, "binary"))
	out := mustCLI(t, bin, addr, "endpoints", "create", "-f", endpointFile(t, "docker-ep", "binary", "1", "Small"), "--wait")
	if !strings.Contains(out, "READY") {
		t.Fatalf("create: %s", out)
	}

	body, want := oneRow(t)
	check := func(what string) {
		t.Helper()
		status, h, out := invoke(t, addr, "docker-ep", "application/json", body)
		if status != 200 || h.Get("served-model-name") != "binary-1" {
			t.Fatalf("%s: %d served-model-name=%q %s", what, status, h.Get("served-model-name"), out)
		}
		comparePredictions(t, what, []any{want}, out)
	}
	check("invoke")
	cs := dockertest.Containers(t, cli, docker.LabelOwner, dataDir)
	if len(cs) != 1 || cs[0].Labels[docker.LabelEndpoint] != "docker-ep" || cs[0].Labels[docker.LabelEntity] != "binary-1" {
		t.Fatalf("containers: %+v, want one of docker-ep's binary-1", cs)
	}

	// Idle, the entity scales to zero and its container goes; a request
	// brings one back.
	waitEntity(t, c, "docker-ep", "scaled to zero", 30*time.Second, scaledToZero)
	waitContainers(t, cli, dataDir, "no container at zero", func(ids []string) bool { return len(ids) == 0 })
	check("invoke at zero")
	waitEntity(t, c, "docker-ep", "one ready replica", 10*time.Second, func(e api.ServedEntity) bool { return e.Replicas.Ready == 1 })

	// A gantry killed without a chance to stop its containers leaves them
	// running; the next start with the same data dir removes them.
	left := containerIDs(t, cli, dataDir)
	if len(left) != 1 {
		t.Fatalf("containers before the kill: %v, want one", left)
	}
	dev.cmd.Process.Kill()
	dev.cmd.Wait()
	if ids := containerIDs(t, cli, dataDir); len(ids) != 1 || ids[0] != left[0] {
		t.Fatalf("containers after SIGKILL: %v, want %v still there", ids, left)
	}
	dev = startDockerDev(t, bin, addr, dataDir, shortWindows...)
	waitContainers(t, cli, dataDir, "the leftover removed", func(ids []string) bool {
		for _, id := range ids {
			if id == left[0] {
				return false
			}
		}
		return true
	})
	mustCLI(t, bin, addr, "endpoints", "wait", "docker-ep")
	check("invoke after restart")

	mustCLI(t, bin, addr, "endpoints", "delete", "docker-ep")
	waitContainers(t, cli, dataDir, "no container after delete", func(ids []string) bool { return len(ids) == 0 })

	// A clean stop leaves nothing either.
	mustCLI(t, bin, addr, "endpoints", "create", "-f", endpointFile(t, "docker-ep2", "binary", "1", "Small"), "--wait")
	dev.stop(t)
	if ids := containerIDs(t, cli, dataDir); len(ids) != 0 {
		t.Errorf("containers after gantry dev stopped: %v", ids)
	}
}

// BenchmarkColdStartDocker is BenchmarkColdStart with the docker driver:
// zero to first response, each trial after the entity scaled to zero.
// Trials come from GANTRY_BENCH_TRIALS (default 10); `make bench-docker`
// runs it next to the local driver's.
func BenchmarkColdStartDocker(b *testing.B) {
	dockertest.Client(b)
	trials := envInt("GANTRY_BENCH_TRIALS", 10)
	bin := buildGantry(b)
	addr := freeAddr(b)
	startDockerDev(b, bin, addr, b.TempDir(), minimalWindows...)
	c, _ := api.NewClient(&api.Config{Address: "http://" + addr})
	mustCLI(b, bin, addr, "models", "upload", "binary", filepath.Join(fixtures, "binary"))
	mustCLI(b, bin, addr, "endpoints", "create", "-f", endpointFile(b, "cold-ep", "binary", "1", "Small"), "--wait")
	b.ResetTimer()
	coldStarts(b, addr, c, "cold-ep", trials)
}
