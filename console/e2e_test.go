package console_test

// End to end in a real browser: builds the gantry binary, starts `gantry
// dev` with real workers (and ClickHouse, when it is installed, for the
// charts), and runs web/e2e/console.e2e.mjs, which drives Debian's headless
// Chromium with playwright-core through the console the way a user does.
// The script asserts; this test starts and stops what it needs and
// passes the script's output through.

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

const chromium = "/usr/bin/chromium"

// need skips when a tool is missing, or fails under CI=true, where
// `make test` (make console-deps) installs it.
func need(t *testing.T, what string, ok bool) {
	t.Helper()
	if ok {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is missing; `make console-deps` installs it", what)
	}
	t.Skipf("%s is missing; `make console-deps` installs it", what)
}

func TestConsoleInBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("runs gantry dev, workers and Chromium; run without -short")
	}
	_, err := exec.LookPath("node")
	need(t, "node", err == nil)
	_, err = os.Stat(chromium)
	need(t, chromium, err == nil)
	_, err = os.Stat("web/node_modules/playwright-core")
	need(t, "console/web/node_modules (npm ci)", err == nil)
	_, err = exec.LookPath("clickhouse-server")
	need(t, "clickhouse-server (the charts read the inference table)", err == nil)

	dir := t.TempDir()
	bin := filepath.Join(dir, "gantry")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/gantry").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	addr := freeAddr(t)
	dataDir := filepath.Join(dir, "data")
	// Short autoscaling windows: an idle entity scales to zero within
	// seconds, so that the test sees a cold start's phases from zero.
	dev := exec.Command(bin, "dev", "--listen", addr, "--data-dir", dataDir,
		"--stable-window", "3s", "--panic-window", "1s", "--scale-to-zero-grace", "1s")
	var log bytes.Buffer
	dev.Stdout, dev.Stderr = &log, &log
	if err := dev.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		dev.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { dev.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(40 * time.Second):
			dev.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("gantry dev:\n%s", log.String())
		}
	}()
	waitHealthy(t, addr)

	// The model the browser uploads: the XGBoost fixture as tar.gz, and
	// the prediction Python's xgboost made for its first row.
	model := "../worker/testdata/models/binary"
	tgz := filepath.Join(dir, "binary.tar.gz")
	packDir(t, model, tgz)
	var want struct {
		Columns     []string `json:"columns"`
		Data        [][]any  `json:"data"`
		Predictions []any    `json:"predictions"`
	}
	b, err := os.ReadFile(filepath.Join(model, "expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatal(err)
	}
	example, _ := json.Marshal(map[string]any{"columns": want.Columns, "row": want.Data[0], "prediction": want.Predictions[0]})

	shots := os.Getenv("GANTRY_CONSOLE_SCREENSHOTS")
	if shots == "" {
		shots = filepath.Join("web", "e2e", "screenshots") // gitignored
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	node := exec.CommandContext(ctx, "node", "web/e2e/console.e2e.mjs")
	node.Env = append(os.Environ(),
		"GANTRY_URL=http://"+addr,
		"GANTRY_TOKEN_FILE="+filepath.Join(dataDir, "admin-token"),
		"GANTRY_MODEL_TGZ="+tgz,
		"GANTRY_EXAMPLE="+string(example),
		"GANTRY_CHROMIUM="+chromium,
		"GANTRY_SCREENSHOTS="+shots,
	)
	out, err := node.CombinedOutput()
	t.Logf("console.e2e.mjs:\n%s", out)
	if err != nil {
		t.Fatalf("console.e2e.mjs: %v", err)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func waitHealthy(t *testing.T, addr string) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("gantry dev did not come up: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// packDir writes src as a tar.gz with its files at the top, as `gantry
// models upload` sends it.
func packDir(t *testing.T, src, dst string) {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if strings.HasPrefix(rel, "expected") {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if err := tw.WriteHeader(&tar.Header{Name: filepath.ToSlash(rel), Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err = tw.Write(b)
		return err
	})
	if err == nil {
		err = tw.Close()
	}
	if err == nil {
		err = zw.Close()
	}
	if err == nil {
		err = os.WriteFile(dst, buf.Bytes(), 0o644)
	}
	if err != nil {
		t.Fatal(fmt.Errorf("pack %s: %w", src, err))
	}
}
