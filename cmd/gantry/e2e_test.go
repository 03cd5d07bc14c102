package main

// End-to-end test: builds the gantry binary, runs `gantry dev` with a temp
// data dir, and drives it the way a user does: the CLI to upload models and
// create endpoints, plain HTTP to invoke them. Workers are real processes
// serving the committed XGBoost fixtures, whose expected predictions came
// from the Python library.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/external/providertest"
)

// expected is a fixture's expected.json.
type expected struct {
	Columns     []string `json:"columns"`
	Data        [][]any  `json:"data"`
	Predictions []any    `json:"predictions"`
}

const fixtures = "../../worker/testdata/models"

// The binary the tests run is built once per test run of this package,
// by the first test that needs it, into a folder TestMain removes.
var (
	binDir    string
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

func TestMain(m *testing.M) {
	providertest.Main() // the external models' provider doubles (external_e2e_test.go)
	if os.Getenv(nomadDoubleEnv) != "" {
		runNomadDouble() // the soak test's child; never returns
	}
	dir, err := os.MkdirTemp("", "gantry-test-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	http.DefaultTransport = tokenTransport{base: http.DefaultTransport}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// buildGantry returns the path of the gantry binary built from this tree.
func buildGantry(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		bin := filepath.Join(binDir, "gantry")
		if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
			return
		}
		binPath = bin
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// proc is a running gantry component.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  *syncBuffer
}

// syncBuffer is a bytes.Buffer that the process's output and the test's
// failure messages may use at once.
type syncBuffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// adminTokens holds the admin token of every gantry dev and gantry
// scheduler the tests started (the one Bootstrap wrote to the data dir),
// by the host:port it serves, and of activators by theirs.
var adminTokens sync.Map

// tokenTransport is http.DefaultTransport in these tests: a request to a
// Gantry the tests started, without an Authorization header of its own,
// carries that Gantry's admin token, as a user's curl with -H would. A
// test that wants to send no token, or another, sets the header itself
// (see noToken).
type tokenTransport struct{ base http.RoundTripper }

func (t tokenTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if _, set := r.Header["Authorization"]; !set {
		if tok, ok := adminTokens.Load(r.URL.Host); ok {
			r = r.Clone(r.Context())
			r.Header.Set("Authorization", "Bearer "+tok.(string))
		}
	}
	return t.base.RoundTrip(r)
}

// noToken marks req to go without a token: an empty Authorization header
// is no credential (the server answers it as a missing one), and it keeps
// tokenTransport from adding one.
func noToken(req *http.Request) { req.Header["Authorization"] = []string{""} }

// learnToken reads the admin token that gantry dev or scheduler wrote to
// dataDir on its first start, for requests and CLI calls to addr; with
// --auth=false there is none.
func learnToken(t testing.TB, addr, dataDir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dataDir, api.AdminTokenFile))
	if errors.Is(err, os.ErrNotExist) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	tok := strings.TrimSpace(string(b))
	adminTokens.Store(addr, tok)
	return tok
}

// componentsToken reads the components' token that gantry dev or
// scheduler wrote to dataDir on its first start: what activators,
// autoscalers and loggers run apart are given.
func componentsToken(t testing.TB, dataDir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dataDir, api.ComponentsTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// tokenOf is the admin token of the Gantry at addr ("" if none).
func tokenOf(addr string) string {
	tok, _ := adminTokens.Load(addr)
	s, _ := tok.(string)
	return s
}

// startProc runs `gantry args...`, waits until it answers /healthz at addr
// and stops it with SIGTERM when the test ends (components started later
// stop first).
func startProc(t testing.TB, bin, addr string, args ...string) *proc {
	t.Helper()
	p := &proc{name: args[0], cmd: exec.Command(bin, args...), log: &syncBuffer{}}
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.stop(t) })
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if i := slices.Index(args, "--data-dir"); i > 0 && i+1 < len(args) && (args[0] == "dev" || args[0] == "scheduler") {
				learnToken(t, addr, args[i+1])
			}
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("gantry %s did not come up: %v\n%s", p.name, err, p.log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (p *proc) stop(t testing.TB) {
	if p.cmd.ProcessState != nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("gantry %s exited with %v\n%s", p.name, err, p.log)
		}
	case <-time.After(40 * time.Second):
		p.cmd.Process.Kill()
		t.Errorf("gantry %s did not stop on SIGTERM\n%s", p.name, p.log)
	}
}

// startDev runs `gantry dev` on addr with dataDir and extra flags.
func startDev(t testing.TB, bin, addr, dataDir string, flags ...string) *proc {
	t.Helper()
	return startProc(t, bin, addr, append([]string{"dev", "--listen", addr, "--data-dir", dataDir}, flags...)...)
}

// cli runs a gantry client command against the dev server.
func cli(t testing.TB, bin, addr string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "GANTRY_ADDR=http://"+addr, "GANTRY_TOKEN="+tokenOf(addr))
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func mustCLI(t testing.TB, bin, addr string, args ...string) string {
	t.Helper()
	out, err := cli(t, bin, addr, args...)
	if err != nil {
		t.Fatalf("gantry %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// invoke posts a body and returns status, headers and body.
func invoke(t testing.TB, addr, endpoint, contentType string, body []byte) (int, http.Header, []byte) {
	t.Helper()
	resp, err := http.Post("http://"+addr+"/serving-endpoints/"+endpoint+"/invocations", contentType, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	buf.ReadFrom(resp.Body)
	return resp.StatusCode, resp.Header, buf.Bytes()
}

// bodies renders a fixture's rows in the four JSON formats and CSV.
func bodies(t testing.TB, e expected) map[string][]byte {
	t.Helper()
	records := make([]map[string]any, len(e.Data))
	columnar := map[string][]any{}
	for i, row := range e.Data {
		records[i] = map[string]any{}
		for j, c := range e.Columns {
			records[i][c] = row[j]
			columnar[c] = append(columnar[c], row[j])
		}
	}
	var csv strings.Builder
	csv.WriteString(strings.Join(e.Columns, ",") + "\n")
	for _, row := range e.Data {
		cells := make([]string, len(row))
		for j, v := range row {
			if v != nil {
				cells[j] = strconv.FormatFloat(v.(float64), 'g', -1, 64)
			}
		}
		csv.WriteString(strings.Join(cells, ",") + "\n")
	}
	enc := func(v any) []byte {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	return map[string][]byte{
		"dataframe_split":   enc(map[string]any{"dataframe_split": map[string]any{"columns": e.Columns, "data": e.Data}}),
		"dataframe_records": enc(map[string]any{"dataframe_records": records}),
		"instances":         enc(map[string]any{"instances": e.Data}),
		"inputs":            enc(map[string]any{"inputs": columnar}),
		"csv":               []byte(csv.String()),
	}
}

func comparePredictions(t testing.TB, what string, want []any, body []byte) {
	t.Helper()
	var got struct {
		Predictions []any `json:"predictions"`
	}
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatalf("%s: answer is not JSON: %v: %s", what, err, body)
	}
	if len(got.Predictions) != len(want) {
		t.Fatalf("%s: %d predictions, want %d", what, len(got.Predictions), len(want))
	}
	for i := range want {
		if !approxEqual(got.Predictions[i], want[i]) {
			t.Fatalf("%s: prediction %d = %v, want %v (Python)", what, i, got.Predictions[i], want[i])
		}
	}
}

// approxEqual compares numbers (or lists of numbers) to 1e-6.
func approxEqual(a, b any) bool {
	switch b := b.(type) {
	case float64:
		a, ok := a.(float64)
		return ok && math.Abs(a-b) <= 1e-6*math.Max(1, math.Abs(b))
	case []any:
		a, ok := a.([]any)
		if !ok || len(a) != len(b) {
			return false
		}
		for i := range b {
			if !approxEqual(a[i], b[i]) {
				return false
			}
		}
		return true
	}
	return false
}

func readExpected(t testing.TB, model string) expected {
	t.Helper()
	var e expected
	b, err := os.ReadFile(filepath.Join(fixtures, model, "expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatal(err)
	}
	return e
}

// endpointFile writes a create-endpoint body for one scale-to-zero entity.
func endpointFile(t testing.TB, name, model, version, size string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name+".json")
	body := fmt.Sprintf(`{"name": %q, "config": {"served_entities": [{"entity_name": %q, "entity_version": %q, "workload_size": %q, "scale_to_zero_enabled": true}]}}`, name, model, version, size)
	writeFile(t, p, body)
	return p
}

func TestEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs worker processes; run without -short")
	}
	bin := buildGantry(t)
	addr := freeAddr(t)
	dataDir := t.TempDir()
	dev := startDev(t, bin, addr, dataDir)

	models := []string{"binary", "multiclass", "regressor", "classifier_sklearn"}
	for _, m := range models {
		out := mustCLI(t, bin, addr, "models", "upload", m, filepath.Join(fixtures, m))
		if !strings.Contains(out, "version 1") {
			t.Fatalf("upload %s: %s", m, out)
		}
		out = mustCLI(t, bin, addr, "endpoints", "create", "-f", endpointFile(t, m+"-ep", m, "1", "Small"), "--wait")
		if !strings.Contains(out, "READY") {
			t.Fatalf("create %s-ep: %s", m, out)
		}
	}

	checkAll := func(t *testing.T) {
		for _, m := range models {
			e := readExpected(t, m)
			for format, body := range bodies(t, e) {
				ct := "application/json"
				if format == "csv" {
					ct = "text/csv"
				}
				status, h, out := invoke(t, addr, m+"-ep", ct, body)
				if status != 200 {
					t.Fatalf("%s %s: status %d: %s", m, format, status, out)
				}
				if h.Get("served-model-name") != m+"-1" || len(h.Get("x-request-id")) < 16 {
					t.Errorf("%s %s: headers served-model-name=%q x-request-id=%q", m, format, h.Get("served-model-name"), h.Get("x-request-id"))
				}
				comparePredictions(t, m+" "+format, e.Predictions, out)
			}
		}
	}
	t.Run("predictions", checkAll)
	t.Run("bad input", func(t *testing.T) { checkBadInput(t, bin, addr) })
	t.Run("corrupt model", func(t *testing.T) { checkCorruptModel(t, bin, addr) })

	// Endpoints and models survive a restart, and their workers come back.
	dev.stop(t)
	dev = startDev(t, bin, addr, dataDir)
	for _, m := range models {
		mustCLI(t, bin, addr, "endpoints", "wait", m+"-ep")
	}
	t.Run("predictions after restart", checkAll)

	t.Run("delete stops workers", func(t *testing.T) {
		c, _ := api.NewClient(&api.Config{Address: "http://" + addr})
		rt, _, err := c.Routes().Get(nil)
		if err != nil {
			t.Fatal(err)
		}
		var workers []string
		for _, ep := range rt.Endpoints {
			if ep.Name == "binary-ep" {
				for _, r := range ep.Entities[0].Replicas {
					workers = append(workers, r.Addr)
				}
			}
		}
		if len(workers) != 1 {
			t.Fatalf("binary-ep replicas = %v, want one", workers)
		}
		mustCLI(t, bin, addr, "endpoints", "delete", "binary-ep")
		// The route table follows the store on the scheduler's next pass,
		// which the delete asks for at once (a driver call of the pass
		// before, a worker draining, runs on meanwhile); the activator then
		// follows the table.
		var status int
		var out []byte
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if status, _, out = invoke(t, addr, "binary-ep", "application/json", []byte(`{"instances": [[1]]}`)); status == 404 {
				break
			}
		}
		if status != 404 || !bytes.Contains(out, []byte("RESOURCE_DOES_NOT_EXIST")) {
			t.Errorf("invoke deleted endpoint: %d %s", status, out)
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			_, err := http.Get("http://" + workers[0] + "/ping")
			if err != nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("worker %s still answers after delete", workers[0])
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

func checkBadInput(t *testing.T, bin, addr string) {
	rows := `[[1, 2, 3, 4, 5, 6]]`
	for _, tc := range []struct {
		name, endpoint, body string
		status               int
		code, message        string
	}{
		{"malformed JSON", "binary-ep", `{"instances": [[1, 2`, 400, api.ErrMalformedRequest, ""},
		{"no format", "binary-ep", `{"rows": ` + rows + `}`, 400, "", "dataframe_split"},
		{"two formats", "binary-ep", `{"instances": ` + rows + `, "inputs": ` + rows + `}`, 400, api.ErrMalformedRequest, ""},
		{"wrong feature names", "binary-ep", `{"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2]]}}`, 400, api.ErrInvalidParameterValue, "mean_radius"},
		{"wrong feature count", "binary-ep", `{"instances": [[1, 2, 3]]}`, 400, api.ErrInvalidParameterValue, "6"},
		{"unknown endpoint", "nope", `{"instances": ` + rows + `}`, 404, api.ErrResourceDoesNotExist, "nope"},
	} {
		status, _, out := invoke(t, addr, tc.endpoint, "application/json", []byte(tc.body))
		var e api.Error
		json.Unmarshal(out, &e)
		if status != tc.status || (tc.code != "" && e.Code != tc.code) || !strings.Contains(e.Message, tc.message) || e.Message == "" {
			t.Errorf("%s: %d %s, want %d %s mentioning %q", tc.name, status, out, tc.status, tc.code, tc.message)
		}
	}

	big := append([]byte(`{"instances": [[`), bytes.Repeat([]byte("1,"), 9<<20)...)
	big = append(big, []byte("1]]}")...)
	// With Expect: 100-continue, as clients send large bodies, the 413
	// comes before any of the body is sent (without it, a client still
	// writing may see the connection close instead).
	req, _ := http.NewRequest("POST", "http://"+addr+"/serving-endpoints/binary-ep/invocations", bytes.NewReader(big))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Expect", "100-continue")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("17 MiB body: %v", err)
	}
	refused, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 413 {
		t.Errorf("17 MiB body: %d %s, want 413", resp.StatusCode, refused)
	}

	out, err := cli(t, bin, addr, "endpoints", "create", "-f", endpointFile(t, "binary-ep", "binary", "1", "Small"))
	if err == nil || !strings.Contains(out, "already exists") {
		t.Errorf("duplicate create: err=%v out=%s, want a failure saying it exists", err, out)
	}
	out, err = cli(t, bin, addr, "endpoints", "create", "-f", endpointFile(t, "ghost-ep", "binary", "9", "Small"))
	if err == nil || !strings.Contains(out, "version 9 does not exist") {
		t.Errorf("create with a missing model version: err=%v out=%s", err, out)
	}
}

// checkCorruptModel uploads a model whose MLmodel is fine but whose weights
// are not: the entity must fail with the reason and invocations get a 503
// that says it.
func checkCorruptModel(t *testing.T, bin, addr string) {
	mustCLI(t, bin, addr, "models", "upload", "corrupt", corruptModel(t))
	out, err := cli(t, bin, addr, "endpoints", "create", "-f", endpointFile(t, "corrupt-ep", "corrupt", "1", "Small"), "--wait", "--timeout", "30s")
	if err == nil || !strings.Contains(out, "model.json") {
		t.Fatalf("create --wait for a corrupt model: err=%v, want a failure naming model.json:\n%s", err, out)
	}
	c, _ := api.NewClient(&api.Config{Address: "http://" + addr})
	ep, _, err := c.Endpoints().Get("corrupt-ep", nil)
	if err != nil {
		t.Fatal(err)
	}
	st := ep.Config.ServedEntities[0].State
	if st.Deployment != api.DeploymentFailed || !strings.Contains(st.DeploymentStateMessage, "model.json") {
		t.Errorf("entity state = %+v, want DEPLOYMENT_FAILED naming model.json", st)
	}
	status, _, body := invoke(t, addr, "corrupt-ep", "application/json", []byte(`{"instances": [[1, 2, 3, 4, 5, 6]]}`))
	if status != 503 || !bytes.Contains(body, []byte("model.json")) {
		t.Errorf("invoke corrupt-ep: %d %s, want 503 with the reason", status, body)
	}
	var ue *api.UnexpectedResponseError
	if _, err := c.Endpoints().Delete("corrupt-ep", nil); errors.As(err, &ue) {
		t.Errorf("delete corrupt-ep: %v", err)
	}
}

// corruptModel writes the binary fixture with its model.json cut in half:
// the upload is valid, the model cannot load.
func corruptModel(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	for _, f := range []string{"MLmodel", "model.json"} {
		b, err := os.ReadFile(filepath.Join(fixtures, "binary", f))
		if err != nil {
			t.Fatal(err)
		}
		if f == "model.json" {
			b = b[:len(b)/2]
		}
		writeFile(t, filepath.Join(dir, f), string(b))
	}
	return dir
}

func writeFile(t testing.TB, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}
