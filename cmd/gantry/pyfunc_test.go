package main

// End to end with the Python runtime: gantry dev serves the py_* fixtures
// (scikit-learn, PyTorch and a custom pyfunc model) through real model
// hosts in Debian's Python, and every answer must equal what the model's
// own predict returned in Python when the fixtures were made.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/worker/pyfunc"
)

// testPython is the interpreter with python3-sklearn and python3-torch
// (make test-deps); GANTRY_TEST_PYTHON overrides it. Without them the test
// skips, except under CI.
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

// pyBodies renders rows in the four JSON formats and CSV, with strings and
// missing values as they are.
func pyBodies(t testing.TB, columns []string, data [][]any) map[string][]byte {
	t.Helper()
	records := make([]map[string]any, len(data))
	columnar := map[string][]any{}
	var csv strings.Builder
	csv.WriteString(strings.Join(columns, ",") + "\n")
	for i, row := range data {
		records[i] = map[string]any{}
		cells := make([]string, len(row))
		for j, c := range columns {
			records[i][c] = row[j]
			columnar[c] = append(columnar[c], row[j])
			switch v := row[j].(type) {
			case float64:
				cells[j] = strconv.FormatFloat(v, 'g', -1, 64)
			case string:
				cells[j] = v
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
		"dataframe_split":   enc(map[string]any{"dataframe_split": map[string]any{"columns": columns, "data": data}}),
		"dataframe_records": enc(map[string]any{"dataframe_records": records}),
		"instances":         enc(map[string]any{"instances": data}),
		"inputs":            enc(map[string]any{"inputs": columnar}),
		"csv":               []byte(csv.String()),
	}
}

// pySame compares an answer with Python's: numbers to 1e-6, strings,
// lists and records element by element.
func pySame(got, want any) bool {
	switch w := want.(type) {
	case float64:
		g, ok := got.(float64)
		return ok && math.Abs(g-w) <= 1e-6*math.Max(1, math.Abs(w))
	case string:
		return got == w
	case []any:
		g, ok := got.([]any)
		if !ok || len(g) != len(w) {
			return false
		}
		for i := range w {
			if !pySame(g[i], w[i]) {
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
			if !pySame(g[k], w[k]) {
				return false
			}
		}
		return true
	}
	return false
}

func pyCompare(t testing.TB, what string, want []any, body []byte) {
	t.Helper()
	var got struct {
		Predictions []any `json:"predictions"`
	}
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatalf("%s: answer is not JSON: %v: %s", what, err, body)
	}
	if len(got.Predictions) != len(want) {
		t.Fatalf("%s: %d predictions, want %d: %s", what, len(got.Predictions), len(want), body)
	}
	for i := range want {
		if !pySame(got.Predictions[i], want[i]) {
			t.Fatalf("%s: prediction %d = %v, want %v (Python)", what, i, got.Predictions[i], want[i])
		}
	}
}

// hostPIDs lists the model hosts whose command line names a model under
// dataDir, so that other tests' hosts are never touched.
func hostPIDs(t testing.TB, dataDir string) []int {
	t.Helper()
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if bytes.Contains(b, []byte(pyfunc.HostMarker)) && bytes.Contains(b, []byte(dataDir)) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func TestPythonModelsEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs Python model hosts; run without -short")
	}
	py := testPython(t)
	bin := buildGantry(t)
	addr := freeAddr(t)
	dataDir := t.TempDir()
	startDev(t, bin, addr, dataDir, "--python", py)

	models := []string{"py_sklearn_pipeline", "py_sklearn_regressor", "py_torch_mlp", "py_custom"}
	for _, m := range models {
		mustCLI(t, bin, addr, "models", "upload", m, filepath.Join(fixtures, m))
		// replica_concurrency lets many requests reach the one replica at
		// once, so that the worker merges them into batches.
		p := filepath.Join(t.TempDir(), m+".json")
		writeFile(t, p, fmt.Sprintf(`{"name": %q, "config": {"served_entities": [{"entity_name": %q, "entity_version": "1", "workload_size": "Small", "scale_to_zero_enabled": false, "replica_concurrency": 64}]}}`, m+"-ep", m))
		if out := mustCLI(t, bin, addr, "endpoints", "create", "-f", p, "--wait"); !strings.Contains(out, "READY") {
			t.Fatalf("create %s-ep: %s", m, out)
		}
	}

	t.Run("every format equals Python", func(t *testing.T) {
		for _, m := range models {
			e := readExpected(t, m)
			for format, body := range pyBodies(t, e.Columns, e.Data) {
				ct := "application/json"
				if format == "csv" {
					ct = "text/csv"
				}
				status, h, out := invoke(t, addr, m+"-ep", ct, body)
				if status != 200 {
					t.Fatalf("%s %s: status %d: %s", m, format, status, out)
				}
				if h.Get("served-model-name") != m+"-1" {
					t.Errorf("%s %s: served-model-name=%q", m, format, h.Get("served-model-name"))
				}
				pyCompare(t, m+" "+format, e.Predictions, out)
			}
		}
	})

	t.Run("Open Inference Protocol equals Python", func(t *testing.T) {
		for _, m := range models {
			e := readExpected(t, m)
			var inputs []map[string]any
			for j, c := range e.Columns {
				col := make([]any, len(e.Data))
				dt := "INT64"
				for i, row := range e.Data {
					col[i] = row[j]
					switch v := row[j].(type) {
					case string:
						dt = "BYTES"
					case float64:
						if v != math.Trunc(v) && dt != "BYTES" {
							dt = "FP64"
						}
					}
				}
				inputs = append(inputs, map[string]any{"name": c, "shape": []int{len(col)}, "datatype": dt, "data": col})
			}
			body, _ := json.Marshal(map[string]any{"id": "req-" + m, "inputs": inputs})
			for _, path := range []string{"/v2/models/" + m + "-ep/infer", "/v2/models/" + m + "-ep/versions/" + m + "-1/infer"} {
				resp, err := http.Post("http://"+addr+path, "application/json", bytes.NewReader(body))
				if err != nil {
					t.Fatal(err)
				}
				var got struct {
					ModelName    string `json:"model_name"`
					ModelVersion string `json:"model_version"`
					ID           string `json:"id"`
					Outputs      []struct {
						Name     string
						Shape    []int
						Datatype string
						Data     []any
					}
					Error string
				}
				json.NewDecoder(resp.Body).Decode(&got)
				resp.Body.Close()
				if resp.StatusCode != 200 || got.ModelName != m+"-ep" || got.ModelVersion != m+"-1" || got.ID != "req-"+m {
					t.Fatalf("%s %s: %d %+v", m, path, resp.StatusCode, got)
				}
				// Outputs back into MLflow's shape: one tensor is the list of
				// predictions; several are the fields of records.
				var preds []any
				if len(got.Outputs) == 1 {
					preds = got.Outputs[0].Data
				} else {
					preds = make([]any, len(e.Data))
					for i := range preds {
						rec := map[string]any{}
						for _, o := range got.Outputs {
							rec[o.Name] = o.Data[i]
						}
						preds[i] = rec
					}
				}
				if !pySame(preds, e.Predictions) {
					t.Fatalf("%s %s: %v, want %v (Python)", m, path, preds, e.Predictions)
				}
			}
		}
		for _, tc := range []struct {
			method, path string
			status       int
			want         string
		}{
			{"GET", "/v2/health/live", 200, ""},
			{"GET", "/v2/health/ready", 200, ""},
			{"GET", "/v2/models/py_custom-ep/ready", 200, ""},
			{"GET", "/v2/models/py_custom-ep", 200, `"versions":["py_custom-1"]`},
			{"GET", "/v2/models/py_sklearn_pipeline-ep", 200, `"inputs":[{"datatype":"BYTES","name":"plan","shape":[-1]},{"datatype":"INT64","name":"tenure","shape":[-1]},{"datatype":"FP64","name":"spend","shape":[-1]}],"name":"py_sklearn_pipeline-ep","outputs":[{"datatype":"INT64","name":"predictions","shape":[-1]}]`},
			{"GET", "/v2/models/nope/ready", 404, `{"error":"model nope does not exist"}`},
			{"POST", "/v2/models/py_custom-ep/infer", 400, `{"error":"the body is not an inference request`},
			{"POST", "/v2/models/py_custom-ep/versions/nope/infer", 404, `{"error":"model py_custom-ep has no version nope"}`},
			{"GET", "/v2/models/py_custom-ep/infer", 405, `{"error":"method GET is not allowed`},
			{"GET", "/v2/other", 404, `{"error":"no such path`},
		} {
			req, _ := http.NewRequest(tc.method, "http://"+addr+tc.path, strings.NewReader(`{"rows": []}`))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var b bytes.Buffer
			b.ReadFrom(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status || !strings.Contains(b.String(), tc.want) {
				t.Errorf("%s %s: %d %s, want %d with %s", tc.method, tc.path, resp.StatusCode, b.String(), tc.status, tc.want)
			}
		}
		// A native runtime answers the protocol too: XGBoost, rows of
		// features as one 2-D tensor.
		mustCLI(t, bin, addr, "models", "upload", "binary", filepath.Join(fixtures, "binary"))
		mustCLI(t, bin, addr, "endpoints", "create", "-f", endpointFile(t, "xgb-ep", "binary", "1", "Small"), "--wait")
		e := readExpected(t, "binary")
		var flat []any
		for _, row := range e.Data {
			flat = append(flat, row...)
		}
		tensor, _ := json.Marshal(map[string]any{"inputs": []map[string]any{{"name": "x", "shape": []int{len(e.Data), len(e.Columns)}, "datatype": "FP64", "data": flat}}})
		resp, err := http.Post("http://"+addr+"/v2/models/xgb-ep/infer", "application/json", bytes.NewReader(tensor))
		if err != nil {
			t.Fatal(err)
		}
		var xgb struct {
			Outputs []struct {
				Shape []int `json:"shape"`
				Data  []any `json:"data"`
			} `json:"outputs"`
		}
		json.NewDecoder(resp.Body).Decode(&xgb)
		resp.Body.Close()
		if resp.StatusCode != 200 || len(xgb.Outputs) != 1 || !pySame(xgb.Outputs[0].Data, e.Predictions) {
			t.Errorf("xgboost over OIP: %d %+v, want %v", resp.StatusCode, xgb, e.Predictions)
		}

		// A value the model cannot take is the protocol's 400 naming the column.
		body := `{"inputs": [{"name": "plan", "shape": [1], "datatype": "BYTES", "data": ["pro"]},
			{"name": "tenure", "shape": [1], "datatype": "INT64", "data": [3]},
			{"name": "spend", "shape": [1], "datatype": "BYTES", "data": ["lots"]}]}`
		resp, err = http.Post("http://"+addr+"/v2/models/py_sklearn_pipeline-ep/infer", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		b.ReadFrom(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 400 || !strings.Contains(b.String(), `{"error":"row 0, column \"spend\"`) {
			t.Errorf("a string in a number column: %d %s", resp.StatusCode, b.String())
		}
	})

	t.Run("a string in a number column is a 400 naming it", func(t *testing.T) {
		status, _, out := invoke(t, addr, "py_sklearn_pipeline-ep", "application/json",
			[]byte(`{"dataframe_records": [{"plan": "pro", "tenure": 14, "spend": "lots"}]}`))
		var e api.Error
		json.Unmarshal(out, &e)
		if status != 400 || e.Code != api.ErrInvalidParameterValue || !strings.Contains(e.Message, `"spend"`) {
			t.Errorf("%d %s, want a 400 naming spend", status, out)
		}
	})

	t.Run("200 concurrent requests each get their own rows", func(t *testing.T) {
		e := readExpected(t, "py_sklearn_regressor")
		const n = 200
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for k := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				// Request k asks for rows lo..lo+w of the fixture, so its
				// answer is known and differs from its neighbours'.
				w := 1 + k%3
				lo := (k * 7) % (len(e.Data) - w)
				body := pyBodies(t, e.Columns, e.Data[lo:lo+w])["dataframe_split"]
				status, _, out := invoke(t, addr, "py_sklearn_regressor-ep", "application/json", body)
				if status != 200 {
					errs <- fmt.Errorf("request %d: %d %s", k, status, out)
					return
				}
				var got struct{ Predictions []any }
				json.Unmarshal(out, &got)
				if !pySame(got.Predictions, e.Predictions[lo:lo+w]) {
					errs <- fmt.Errorf("request %d (rows %d..%d): %v, want %v", k, lo, lo+w, got.Predictions, e.Predictions[lo:lo+w])
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})

	t.Run("a host killed with -9 is replaced", func(t *testing.T) {
		before := hostPIDs(t, dataDir)
		if len(before) != len(models) {
			t.Fatalf("model hosts under the data dir: %v, want %d", before, len(models))
		}
		e := readExpected(t, "py_custom")
		body := pyBodies(t, e.Columns, e.Data[:5])["dataframe_split"]
		// Find py_custom's host: the one whose command line names its model.
		var victim int
		for _, pid := range before {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			if bytes.Contains(b, []byte("py_custom")) {
				victim = pid
			}
		}
		if victim == 0 {
			// Registry paths need not hold the model's name; any host will do
			// as long as its endpoint is the one invoked below.
			t.Skip("cannot tell which host serves py_custom from its command line")
		}
		if err := syscall.Kill(victim, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(60 * time.Second)
		for {
			status, _, out := invoke(t, addr, "py_custom-ep", "application/json", body)
			if status == 200 {
				pyCompare(t, "after kill -9", e.Predictions[:5], out)
				break
			}
			if status != 503 {
				t.Fatalf("while the host restarts: %d %s, want 503 or 200", status, out)
			}
			if time.Now().After(deadline) {
				t.Fatalf("no answer 60 s after kill -9: %d %s", status, out)
			}
			time.Sleep(50 * time.Millisecond)
		}
		after := hostPIDs(t, dataDir)
		for _, pid := range after {
			if pid == victim {
				t.Errorf("the killed host %d is still listed", victim)
			}
		}
		if len(after) != len(models) {
			t.Errorf("model hosts after the restart: %v, want %d", after, len(models))
		}
	})

	t.Run("a missing library fails the deployment naming it", func(t *testing.T) {
		mustCLI(t, bin, addr, "models", "upload", "py_missing_lib", filepath.Join(fixtures, "py_missing_lib"))
		start := time.Now()
		out, err := cli(t, bin, addr, "endpoints", "create", "-f", endpointFile(t, "missing-ep", "py_missing_lib", "1", "Small"), "--wait", "--timeout", "60s")
		if err == nil || !strings.Contains(out, "lightgbm") {
			t.Fatalf("create --wait: err=%v, want a failure naming lightgbm:\n%s", err, out)
		}
		if strings.Contains(out, "Traceback") {
			t.Errorf("the failure shows a traceback:\n%s", out)
		}
		c, _ := api.NewClient(&api.Config{Address: "http://" + addr})
		ep, _, err := c.Endpoints().Get("missing-ep", nil)
		if err != nil {
			t.Fatal(err)
		}
		st := ep.Config.ServedEntities[0].State
		if st.Deployment != api.DeploymentFailed || !strings.Contains(st.DeploymentStateMessage, "No module named 'lightgbm'") {
			t.Errorf("entity state = %+v, want DEPLOYMENT_FAILED naming lightgbm", st)
		}
		t.Logf("failed in %s: %s", time.Since(start).Round(time.Millisecond), st.DeploymentStateMessage)
	})

	t.Run("a model logged with other package versions loads and says so", func(t *testing.T) {
		// py_custom as logged with a pandas this interpreter does not have:
		// it still loads, and the entity's state message names the
		// difference (before, only the worker log did).
		dir := filepath.Join(t.TempDir(), "py_old_pandas")
		if err := os.CopyFS(dir, os.DirFS(filepath.Join(fixtures, "py_custom"))); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, "requirements.txt"), "mlflow==2.9.2\npandas==0.25.3\n")
		mustCLI(t, bin, addr, "models", "upload", "py_old_pandas", dir)
		out := mustCLI(t, bin, addr, "endpoints", "create", "-f", endpointFile(t, "old-pandas-ep", "py_old_pandas", "1", "Small"), "--wait")
		if !strings.Contains(out, "READY") {
			t.Fatalf("create --wait: %s", out)
		}
		c, _ := api.NewClient(&api.Config{Address: "http://" + addr})
		ep, _, err := c.Endpoints().Get("old-pandas-ep", nil)
		if err != nil {
			t.Fatal(err)
		}
		st := ep.Config.ServedEntities[0].State
		if st.Deployment != api.DeploymentReady || !strings.Contains(st.DeploymentStateMessage, "pandas 0.25.3 logged, ") ||
			!strings.Contains(st.DeploymentStateMessage, " here") {
			t.Errorf("entity state = %+v, want READY naming pandas 0.25.3 and the version here", st)
		}
		// It serves: the difference is a warning, not a failure.
		e := readExpected(t, "py_custom")
		status, _, body := invoke(t, addr, "old-pandas-ep", "application/json", pyBodies(t, e.Columns, e.Data)["dataframe_split"])
		if status != 200 {
			t.Fatalf("invoke: %d %s", status, body)
		}
		pyCompare(t, "py_old_pandas", e.Predictions, body)
		// A model logged with this interpreter's versions has no message.
		ep, _, err = c.Endpoints().Get("py_custom-ep", nil)
		if err != nil {
			t.Fatal(err)
		}
		if m := ep.Config.ServedEntities[0].State.DeploymentStateMessage; m != "" {
			t.Errorf("py_custom-ep state message %q, want none", m)
		}
	})

	t.Run("a served entity names its own interpreter", func(t *testing.T) {
		// The entity's GANTRY_PYTHON wins over gantry dev's --python: a path
		// that does not exist fails the deployment naming it.
		p := filepath.Join(t.TempDir(), "own.json")
		writeFile(t, p, `{"name": "own-python-ep", "config": {"served_entities": [{"entity_name": "py_custom", "entity_version": "1", "workload_size": "Small",
			"environment_vars": {"GANTRY_PYTHON": "/nonexistent/envs/churn/bin/python", "GANTRY_MAX_BATCH_SIZE": "8"}}]}}`)
		out, err := cli(t, bin, addr, "endpoints", "create", "-f", p, "--wait", "--timeout", "60s")
		if err == nil || !strings.Contains(out, `"/nonexistent/envs/churn/bin/python" not found`) {
			t.Fatalf("create --wait: err=%v, want a failure naming the entity's interpreter:\n%s", err, out)
		}
		writeFile(t, p, `{"name": "bad-batch-ep", "config": {"served_entities": [{"entity_name": "py_custom", "entity_version": "1", "workload_size": "Small",
			"environment_vars": {"GANTRY_MAX_BATCH_SIZE": "0"}}]}}`)
		out, err = cli(t, bin, addr, "endpoints", "create", "-f", p)
		if err == nil || !strings.Contains(out, "GANTRY_MAX_BATCH_SIZE must be a number of rows") {
			t.Errorf("create with GANTRY_MAX_BATCH_SIZE 0: err=%v out=%s, want a 400 saying why", err, out)
		}
	})
}
