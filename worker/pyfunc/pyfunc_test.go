package pyfunc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/worker/mlmodel"
	"github.com/gantry/gantry/worker/scoring"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

const fixtures = "../testdata/models"

// testPython is the interpreter with Debian's python3-sklearn and
// python3-torch (make test-deps installs them); GANTRY_TEST_PYTHON
// overrides it. Without them the tests skip, except under CI.
func testPython(t testing.TB) string {
	t.Helper()
	py := os.Getenv("GANTRY_TEST_PYTHON")
	if py == "" {
		py = "/usr/bin/python3"
	}
	if out, err := exec.Command(py, "-c", "import sklearn, torch, pandas, cloudpickle").CombinedOutput(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s lacks the test libraries (make test-deps): %v\n%s", py, err, out)
		}
		t.Skipf("%s lacks sklearn/torch/pandas/cloudpickle (make test-deps installs them): %s", py, out)
	}
	return py
}

type expected struct {
	Columns     []string `json:"columns"`
	Data        [][]any  `json:"data"`
	Predictions []any    `json:"predictions"`
}

func readExpected(t testing.TB, dir string) expected {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	var e expected
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatal(err)
	}
	return e
}

func load(t testing.TB, dir string, cfg Config) *Runtime {
	t.Helper()
	mm, err := mlmodel.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Python == "" {
		cfg.Python = testPython(t)
	}
	rt, err := Load(dir, mm, cfg)
	if err != nil {
		t.Fatalf("load %s: %v", dir, err)
	}
	t.Cleanup(func() { rt.Close() })
	return rt
}

// frame makes the request frame of rows lo..hi of a fixture, values as
// the JSON parser gives them.
func frame(t testing.TB, e expected, lo, hi int) *scoring.Frame {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"dataframe_split": map[string]any{"columns": e.Columns, "data": e.Data[lo:hi]}})
	req, err := scoring.ParseJSON(b)
	if err != nil {
		t.Fatal(err)
	}
	return &req.Frame
}

// decoded is the predictions as a client reads them.
func decoded(t testing.TB, preds any) []any {
	t.Helper()
	b, err := json.Marshal(preds)
	if err != nil {
		t.Fatal(err)
	}
	var out []any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("predictions %s: %v", b, err)
	}
	return out
}

// same compares a prediction with Python's: numbers to 1e-6, strings,
// lists and records element by element.
func same(got, want any) bool {
	switch w := want.(type) {
	case float64:
		g, ok := got.(float64)
		return ok && math.Abs(g-w) <= 1e-6*math.Max(1, math.Abs(w))
	case string:
		return got == w
	case nil:
		return got == nil
	case []any:
		g, ok := got.([]any)
		if !ok || len(g) != len(w) {
			return false
		}
		for i := range w {
			if !same(g[i], w[i]) {
				return false
			}
		}
		return true
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok || len(g) != len(w) {
			return false
		}
		for k := range w {
			if !same(g[k], w[k]) {
				return false
			}
		}
		return true
	}
	return false
}

func checkRows(t testing.TB, what string, got []any, want []any) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d predictions, want %d", what, len(got), len(want))
	}
	for i := range want {
		if !same(got[i], want[i]) {
			t.Fatalf("%s: prediction %d = %v, want %v (Python)", what, i, got[i], want[i])
		}
	}
}

func TestFixturesMatchPython(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Python model hosts")
	}
	for _, name := range []string{"py_sklearn_pipeline", "py_sklearn_regressor", "py_torch_mlp", "py_custom"} {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(fixtures, name)
			e := readExpected(t, dir)
			rt := load(t, dir, Config{})
			preds, err := rt.PredictFrame(context.Background(), frame(t, e, 0, len(e.Data)))
			if err != nil {
				t.Fatal(err)
			}
			checkRows(t, name, decoded(t, preds), e.Predictions)
			// One row at a time gives the same answers (no state kept
			// between calls, no row mixed into another).
			for i := range 3 {
				preds, err := rt.PredictFrame(context.Background(), frame(t, e, i, i+1))
				if err != nil {
					t.Fatal(err)
				}
				checkRows(t, fmt.Sprintf("%s row %d", name, i), decoded(t, preds), e.Predictions[i:i+1])
			}
		})
	}
}

func TestMissingLibraryFailsLoadNamingIt(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Python model host")
	}
	dir := filepath.Join(fixtures, "py_missing_lib")
	mm, err := mlmodel.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = Load(dir, mm, Config{Python: testPython(t)})
	if err == nil {
		t.Fatal("a model that needs lightgbm loaded without it")
	}
	msg := err.Error()
	if !strings.Contains(msg, "No module named 'lightgbm'") || strings.Contains(msg, "Traceback") {
		t.Errorf("error = %q, want one naming lightgbm, without a traceback", msg)
	}
	if !strings.Contains(msg, "lightgbm 4.1.0 logged, not installed here") {
		t.Errorf("error = %q, want the requirements mismatch", msg)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("failing took %s", d)
	}
}

// TestLoadsWithMLflowWhenImportable: an interpreter that has mlflow loads
// through mlflow.pyfunc.load_model, the reference, even for a flavor the
// host could load itself. mlflow is not packaged for Debian, so a stand-in
// package on PYTHONPATH records the call and answers for the model.
func TestLoadsWithMLflowWhenImportable(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Python model host")
	}
	stub := t.TempDir()
	os.MkdirAll(filepath.Join(stub, "mlflow"), 0o755)
	os.WriteFile(filepath.Join(stub, "mlflow", "__init__.py"), nil, 0o644)
	os.WriteFile(filepath.Join(stub, "mlflow", "pyfunc.py"), []byte(`
class _Model:
    def __init__(self, path):
        self.path = path
    def predict(self, df, params=None):
        return ["mlflow:" + self.path.rstrip("/").split("/")[-1]] * len(df)

def load_model(path):
    return _Model(path)
`), 0o644)
	t.Setenv("PYTHONPATH", stub)
	dir := filepath.Join(fixtures, "py_sklearn_pipeline")
	e := readExpected(t, dir)
	rt := load(t, dir, Config{})
	preds, err := rt.PredictFrame(context.Background(), frame(t, e, 0, 2))
	if err != nil {
		t.Fatal(err)
	}
	if got := decoded(t, preds); len(got) != 2 || got[0] != "mlflow:py_sklearn_pipeline" {
		t.Errorf("predictions = %v, want mlflow's stand-in answering", got)
	}
}

func TestMissingInterpreter(t *testing.T) {
	dir := filepath.Join(fixtures, "py_custom")
	mm, err := mlmodel.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Load(dir, mm, Config{Python: "/nonexistent/python3"})
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/python3") || !strings.Contains(err.Error(), "GANTRY_PYTHON") {
		t.Errorf("err = %v, want one naming the interpreter and GANTRY_PYTHON", err)
	}
}

func TestBadValueIs400NamingColumn(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Python model host")
	}
	rt := load(t, filepath.Join(fixtures, "py_sklearn_pipeline"), Config{})
	for _, tc := range []struct {
		body, want string
	}{
		{`{"dataframe_records": [{"plan": "pro", "tenure": 3, "spend": "lots"}]}`, `column "spend": "lots" is not a number`},
		{`{"dataframe_records": [{"plan": 7, "tenure": 3, "spend": 1.5}]}`, `column "plan": 7 is a number; the signature says string`},
		{`{"dataframe_records": [{"plan": "pro", "tenure": 3.5, "spend": 1.5}]}`, `column "tenure": 3.5 is not an integer`},
		{`{"dataframe_records": [{"plan": "pro", "spend": 1.5}]}`, `missing columns: tenure`},
	} {
		req, err := scoring.ParseJSON([]byte(tc.body))
		if err != nil {
			t.Fatal(err)
		}
		_, err = rt.PredictFrame(context.Background(), &req.Frame)
		var ae *api.Error
		if !errors.As(err, &ae) || ae.Code != api.ErrInvalidParameterValue || !strings.Contains(ae.Message, tc.want) {
			t.Errorf("%s: err = %v, want a 400 containing %q", tc.body, err, tc.want)
		}
	}
}

func TestNoRowsNoPredictions(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Python model host")
	}
	rt := load(t, filepath.Join(fixtures, "py_sklearn_pipeline"), Config{})
	preds, err := rt.PredictFrame(context.Background(), &scoring.Frame{Columns: []string{"plan", "tenure", "spend"}, Rows: [][]any{}})
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := json.Marshal(preds); string(b) != "[]" {
		t.Errorf("predictions = %s, want []", b)
	}
}

// writeModel writes a custom loader_module model whose code is src; the
// model's _load_pyfunc returns it.
func writeModel(t testing.TB, src, signature string) string {
	t.Helper()
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "code"), 0o755)
	mlm := "flavors:\n  python_function:\n    code: code\n    loader_module: testmodel\n"
	if signature != "" {
		mlm += "signature:\n  inputs: '" + signature + "'\n"
	}
	if err := os.WriteFile(filepath.Join(dir, "MLmodel"), []byte(mlm), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "code", "testmodel.py"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// echoModel answers each row's id column back, after sleeping the row's
// sleep column (seconds); a row with id -1 raises ValueError, a row with
// id -2 kills the host's process. It logs each call's row count to
// calls.log in the model directory.
const echoModel = `
import os, time

class Echo:
    def __init__(self, log):
        self.log = log

    def predict(self, df, params=None):
        with open(self.log, "a") as f:
            f.write("%d\n" % len(df))
        if (df["id"] == -1).any():
            raise ValueError("id -1 is not allowed")
        if (df["id"] == -2).any():
            os.kill(os.getpid(), 9)
        s = float(df["sleep"].max())
        if s > 0:
            time.sleep(s)
        return df["id"].to_numpy()

def _load_pyfunc(path):
    return Echo(os.path.join(path, "calls.log"))
`

const echoSignature = `[{"type": "long", "name": "id"}, {"type": "double", "name": "sleep"}]`

func echoFrame(ids []int64, sleep float64) *scoring.Frame {
	f := &scoring.Frame{Columns: []string{"id", "sleep"}}
	for _, id := range ids {
		f.Rows = append(f.Rows, []any{json.Number(fmt.Sprint(id)), sleep})
	}
	return f
}

func TestBatchingKeepsEachRequestsRows(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Python model host")
	}
	rt := load(t, writeModel(t, echoModel, echoSignature), Config{MaxBatchRows: 64})
	// Hold the host with one slow request so the others queue and merge.
	slow := make(chan error, 1)
	go func() {
		_, err := rt.PredictFrame(context.Background(), echoFrame([]int64{999999}, 0.3))
		slow <- err
	}()
	time.Sleep(50 * time.Millisecond)
	const n = 200
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for k := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Request k sends 1 to 3 rows tagged with its own number.
			ids := make([]int64, 1+k%3)
			for r := range ids {
				ids[r] = int64(k*10 + r)
			}
			preds, err := rt.PredictFrame(context.Background(), echoFrame(ids, 0))
			if err != nil {
				errs <- err
				return
			}
			got := decoded(t, preds)
			if len(got) != len(ids) {
				errs <- fmt.Errorf("request %d: %d rows back for %d", k, len(got), len(ids))
				return
			}
			for r, id := range ids {
				if got[r] != float64(id) {
					errs <- fmt.Errorf("request %d row %d = %v, want %d", k, r, got[r], id)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if err := <-slow; err != nil {
		t.Fatal(err)
	}
	calls := hostCalls(t, rt)
	if len(calls) >= n {
		t.Errorf("%d predict calls for %d requests: nothing was batched", len(calls), n)
	}
	for _, c := range calls {
		if c > 64 {
			t.Errorf("a predict call had %d rows, over the maximum of 64", c)
		}
	}
}

// hostCalls reads the echo model's log: the row count of each predict
// call so far.
func hostCalls(t testing.TB, rt *Runtime) []int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(rt.dir, "calls.log"))
	if err != nil {
		t.Fatal(err)
	}
	var calls []int
	for _, line := range strings.Fields(string(b)) {
		var n int
		fmt.Sscan(line, &n)
		calls = append(calls, n)
	}
	return calls
}

func TestBadRowsFailOnlyTheirRequest(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Python model host")
	}
	rt := load(t, writeModel(t, echoModel, echoSignature), Config{})
	go rt.PredictFrame(context.Background(), echoFrame([]int64{5}, 0.3)) // holds the host
	time.Sleep(50 * time.Millisecond)
	var wg sync.WaitGroup
	results := make([]error, 20)
	for k := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := int64(k)
			if k == 7 {
				id = -1
			}
			_, results[k] = rt.PredictFrame(context.Background(), echoFrame([]int64{id}, 0))
		}()
	}
	wg.Wait()
	for k, err := range results {
		var ae *api.Error
		if k == 7 {
			if !errors.As(err, &ae) || ae.Code != api.ErrInvalidParameterValue || !strings.Contains(ae.Message, "id -1 is not allowed") || strings.Contains(ae.Message, "Traceback") {
				t.Errorf("the bad request: err = %v, want a 400 with the model's message", err)
			}
		} else if err != nil {
			t.Errorf("request %d failed with the bad one: %v", k, err)
		}
	}
}

func TestKilledHostIsReplaced(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Python model hosts")
	}
	rt := load(t, writeModel(t, echoModel, echoSignature), Config{})
	first := rt.PID()
	// In flight when the host dies: a 503, not a hang or a 500.
	_, err := rt.PredictFrame(context.Background(), echoFrame([]int64{-2}, 0))
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != api.ErrTemporarilyUnavailable || !strings.Contains(ae.Message, "killed") {
		t.Fatalf("request whose host died: err = %v, want 503 saying the host was killed", err)
	}
	waitReady(t, rt)
	if rt.PID() == first {
		t.Fatal("no new host")
	}
	// kill -9 from outside while idle: replaced, and the next request works.
	second := rt.PID()
	syscall.Kill(second, syscall.SIGKILL)
	deadline := time.Now().Add(30 * time.Second)
	for rt.PID() == second && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	waitReady(t, rt)
	preds, err := rt.PredictFrame(context.Background(), echoFrame([]int64{42}, 0))
	if err != nil {
		t.Fatal(err)
	}
	if got := decoded(t, preds); len(got) != 1 || got[0] != 42.0 {
		t.Errorf("after the restart: %v", got)
	}
	if n := testutil.ToFloat64(rt.metrics.restarts.WithLabelValues("exited")); n != 2 {
		t.Errorf("gantry_worker_model_host_restarts_total{reason=exited} = %v, want 2", n)
	}
}

func waitReady(t testing.TB, rt *Runtime) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for rt.Ready() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("not ready after 30s: %v", rt.Ready())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestStuckHostTimesOutAndIsReplaced(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Python model hosts")
	}
	// 2 s, not less: the new host's first answer must come within it on
	// a machine that CI loads with every other package's tests (it took
	// over 500 ms there once).
	rt := load(t, writeModel(t, echoModel, echoSignature), Config{Timeout: 2 * time.Second})
	first := rt.PID()
	_, err := rt.PredictFrame(context.Background(), echoFrame([]int64{1}, 60))
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != api.ErrDeadlineExceeded {
		t.Fatalf("stuck predict: err = %v, want 504 DEADLINE_EXCEEDED", err)
	}
	waitReady(t, rt)
	if rt.PID() == first {
		t.Error("the stuck host was not replaced")
	}
	if n := testutil.ToFloat64(rt.metrics.restarts.WithLabelValues("timeout")); n != 1 {
		t.Errorf("gantry_worker_model_host_restarts_total{reason=timeout} = %v, want 1", n)
	}
	preds, err := rt.PredictFrame(context.Background(), echoFrame([]int64{3}, 0))
	if err != nil || decoded(t, preds)[0] != 3.0 {
		t.Errorf("after replacing: %v %v", preds, err)
	}
}

// A model whose output rows are not its input rows (one summary row per
// call) cannot have its answers split; batching turns off for it and each
// request gets its own call's answer.
// An optional signature column ("required": false) may be left out: the
// model gets it as missing values, as MLflow gives it.
func TestOptionalColumnMayBeLeftOut(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Python model host")
	}
	src := `
class Model:
    def predict(self, df, params=None):
        return [("missing" if v is None else v) for v in df["note"]]
def _load_pyfunc(path):
    return Model()
`
	rt := load(t, writeModel(t, src, `[{"type": "long", "name": "id"}, {"type": "string", "name": "note", "required": false}]`), Config{})
	preds, err := rt.PredictFrame(context.Background(), &scoring.Frame{Columns: []string{"id"}, Rows: [][]any{{json.Number("1")}}})
	if err != nil {
		t.Fatal(err)
	}
	if got := decoded(t, preds); len(got) != 1 || got[0] != "missing" {
		t.Errorf("predictions = %v, want [missing]", got)
	}
	_, err = rt.PredictFrame(context.Background(), &scoring.Frame{Columns: []string{"note"}, Rows: [][]any{{"x"}}})
	if err == nil || !strings.Contains(err.Error(), "missing columns: id") {
		t.Errorf("a required column left out: err = %v", err)
	}
}

func TestOutputRowsUnlikeInputTurnBatchingOff(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Python model host")
	}
	src := `
import time
class Sum:
    def predict(self, df, params=None):
        time.sleep(float(df["sleep"].max()))
        return [int(df["id"].sum())]
def _load_pyfunc(path):
    return Sum()
`
	rt := load(t, writeModel(t, src, echoSignature), Config{})
	go rt.PredictFrame(context.Background(), echoFrame([]int64{0}, 0.3))
	time.Sleep(50 * time.Millisecond)
	var wg sync.WaitGroup
	for k := 1; k <= 10; k++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			preds, err := rt.PredictFrame(context.Background(), echoFrame([]int64{int64(k), int64(k)}, 0))
			if err != nil {
				t.Error(err)
				return
			}
			if got := decoded(t, preds); len(got) != 1 || got[0] != float64(2*k) {
				t.Errorf("request %d: %v, want [%d]", k, got, 2*k)
			}
		}()
	}
	wg.Wait()
}

// A model that loads with other versions than it was logged with says
// which in its Notice (the deployment's state message): from conda.yaml's
// pip list when it has no requirements.txt, and the Python version from
// python_env.yaml when its major.minor differs. The fixture as logged
// matches Debian's Python and has none.
func TestNoticeNamesVersionMismatches(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Python model host")
	}
	if n := load(t, filepath.Join(fixtures, "py_custom"), Config{}).Notice(); n != "" {
		t.Errorf("py_custom as logged: notice %q, want none", n)
	}
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS(filepath.Join(fixtures, "py_custom"))); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(dir, "requirements.txt"))
	edit := func(name, old, new string) {
		p := filepath.Join(dir, name)
		b, err := os.ReadFile(p)
		if err != nil || !strings.Contains(string(b), old) {
			t.Fatalf("%s: %v, or no %q in it", name, err, old)
		}
		if err := os.WriteFile(p, []byte(strings.ReplaceAll(string(b), old, new)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	edit("conda.yaml", "pandas==1.5.3", "pandas==0.25.3")
	edit("python_env.yaml", "python: 3.11.2", "python: 2.7.18")
	n := load(t, dir, Config{}).Notice()
	if !strings.Contains(n, "pandas 0.25.3 logged, ") || !strings.Contains(n, "python 2.7.18 logged, 3.") || strings.Contains(n, "mlflow") {
		t.Errorf("notice %q, want pandas and python named, mlflow left out", n)
	}
}

func TestMismatchNoticeIsBounded(t *testing.T) {
	var ms []string
	for i := range 200 {
		ms = append(ms, fmt.Sprintf("pkg-é%d 1.0 logged, 2.0 here", i))
	}
	n := mismatchNotice(ms)
	if len(n) > api.MaxNotice || !strings.HasSuffix(n, " …") || !strings.HasPrefix(n, "the model was logged with other package versions") || !utf8.ValidString(n) {
		t.Errorf("notice of %d bytes: %q", len(n), n)
	}
	if mismatchNotice(nil) != "" {
		t.Error("no mismatches made a notice")
	}
}
