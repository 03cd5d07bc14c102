// Package dockertest connects tests to the real Docker engine and builds
// the worker image they run.
package dockertest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"
)

// Image is the tag the tests build, apart from `make image`'s
// gantry-worker:dev so that a test run never replaces a user's image.
const Image = "gantry-worker:test"

// Client returns a client of the engine that DOCKER_HOST names (the
// default socket without it), closed when the test ends. Without an engine
// the test fails under CI (CI set, where .ci/run starts dockerd) and is
// skipped elsewhere with how to start one.
func Client(t testing.TB) *client.Client {
	t.Helper()
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cli.Ping(ctx); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI must provide a Docker engine: %v", err)
		}
		t.Skipf("needs a Docker engine: %v (start one with deploy/docker/start-dockerd.sh)", err)
	}
	return cli
}

// imageBuild builds one image once per test process: a stale image
// would test old worker code, and one build serves every test after.
type imageBuild struct {
	once sync.Once
	err  error
}

// image returns tag once build has made it, failing t if it could not.
func (b *imageBuild) image(t testing.TB, tag string, build func() error) string {
	t.Helper()
	b.once.Do(func() { b.err = build() })
	if b.err != nil {
		t.Fatal(b.err)
	}
	return tag
}

var buildWorker imageBuild

// BuildImage builds Image from this checkout, as `make image` does, once
// per test process.
func BuildImage(t testing.TB) string {
	t.Helper()
	return buildWorker.image(t, Image, buildImage)
}

// gantryBinary builds gantry (CGO_ENABLED=0) from this checkout into a new temporary
// directory, which the caller removes, and returns the module root too.
func gantryBinary() (root, dir string, err error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", "", fmt.Errorf("find the module root: %w", err)
	}
	root = filepath.Dir(strings.TrimSpace(string(out)))
	dir, err = os.MkdirTemp("", "gantry-image-")
	if err != nil {
		return "", "", err
	}
	gobuild := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(dir, "gantry"), "./cmd/gantry")
	gobuild.Dir = root
	gobuild.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := gobuild.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return "", "", fmt.Errorf("build the gantry binary: %v\n%s", err, out)
	}
	return root, dir, nil
}

func buildImage() error {
	root, dir, err := gantryBinary()
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	// The image holds the binary and the libc files its loader needs, laid
	// out by the script `make image` uses.
	ctx := filepath.Join(dir, "context")
	if out, err := exec.Command(filepath.Join(root, "deploy/docker/image-context.sh"), filepath.Join(dir, "gantry"), ctx).CombinedOutput(); err != nil {
		return fmt.Errorf("image-context.sh: %v\n%s", err, out)
	}
	return dockerBuild(filepath.Join(root, "deploy/docker/Dockerfile"), Image, ctx)
}

// dockerBuild builds tag from dockerfile in the context directory ctx,
// then prunes the worker images it left untagged.
func dockerBuild(dockerfile, tag, ctx string) error {
	return locked(func() error {
		// The legacy builder: Debian's docker.io has no buildx.
		dbuild := exec.Command("docker", "build", "-q", "-f", dockerfile, "-t", tag, ctx)
		dbuild.Env = append(os.Environ(), "DOCKER_BUILDKIT=0")
		if out, err := dbuild.CombinedOutput(); err != nil {
			return fmt.Errorf("docker build: %v\n%s", err, out)
		}
		return nil
	})
}

// locked runs build, then prunes the worker images left untagged, under a
// lock across processes: go test runs packages in parallel processes, and
// one's prune would take another's image between its build and its tag
// ("failed to get digest").
func locked(build func() error) error {
	lock, err := os.OpenFile(filepath.Join(os.TempDir(), "gantry-dockertest-build.lock"), os.O_CREATE|os.O_RDONLY, 0o666) // flock needs no write access: other users may share the file
	if err != nil {
		return err
	}
	defer lock.Close() // which releases the lock
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("lock the image builds: %w", err)
	}
	if err := build(); err != nil {
		return err
	}
	pruneWorkerImages()
	return nil
}

// pruneWorkerImages removes the worker images a build left untagged: each
// code change leaves the previous one behind, and with vfs storage every
// one is a full copy on disk. Failing to prune fails no test.
func pruneWorkerImages() {
	exec.Command("docker", "image", "prune", "-f", "--filter", "label=io.gantry.worker-image").Run()
}

// PythonImage is the tag of the Python worker image the tests build,
// apart from `make python-image`'s gantry-worker-python:dev.
const PythonImage = "gantry-worker-python:test"

// PythonPackages are the Debian packages in PythonImage: enough for the
// scikit-learn fixtures.
var PythonPackages = []string{"python3-numpy", "python3-pandas", "python3-sklearn"}

var buildPython imageBuild

// BuildPythonImage builds PythonImage from this checkout with
// deploy/docker/python-image.sh, as `make python-image` does, once per
// test process. The Debian base it starts from is built only when the
// engine lacks it: that needs the Debian mirror and a minute or two.
func BuildPythonImage(t testing.TB) string {
	t.Helper()
	return buildPython.image(t, PythonImage, buildPythonImage)
}

func buildPythonImage() error {
	root, dir, err := gantryBinary()
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	args := append([]string{filepath.Join(root, "deploy/docker/python-image.sh"), PythonImage, filepath.Join(dir, "gantry")}, PythonPackages...)
	return locked(func() error {
		if out, err := exec.Command("bash", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("python-image.sh: %v\n%s", err, out)
		}
		return nil
	})
}

// LLMImage is the tag of the LLM worker image the tests build, apart
// from `make llm-image`'s gantry-worker-llm:dev.
const LLMImage = "gantry-worker-llm:test"

var buildLLM imageBuild

// BuildLLMImage builds LLMImage from this checkout, as `make llm-image`
// does, once per test process: the gantry binary and llama.cpp's CPU
// libraries from bin/llama (`make llama-libs`, which `make test` runs,
// fetches them), laid out by deploy/docker/image-context.sh and built
// with deploy/docker/Dockerfile.llm. Local files only.
func BuildLLMImage(t testing.TB) string {
	t.Helper()
	return buildLLM.image(t, LLMImage, buildLLMImage)
}

func buildLLMImage() error {
	root, dir, err := gantryBinary()
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	llama := filepath.Join(root, "bin", "llama")
	if _, err := os.Stat(filepath.Join(llama, "libllama.so")); err != nil {
		return fmt.Errorf("no llama.cpp libraries in %s: run `make llama-libs`", llama)
	}
	ctx := filepath.Join(dir, "context")
	if out, err := exec.Command(filepath.Join(root, "deploy/docker/image-context.sh"), filepath.Join(dir, "gantry"), ctx, llama).CombinedOutput(); err != nil {
		return fmt.Errorf("image-context.sh: %v\n%s", err, out)
	}
	return dockerBuild(filepath.Join(root, "deploy/docker/Dockerfile.llm"), LLMImage, ctx)
}

// Containers lists the containers, running or not, that carry label=value.
func Containers(t testing.TB, cli *client.Client, label, value string) []container.Summary {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cs, err := cli.ContainerList(ctx, container.ListOptions{
		All:     true,
		Filters: filters.NewArgs(filters.Arg("label", label+"="+value)),
	})
	if err != nil {
		t.Fatal(err)
	}
	return cs
}
