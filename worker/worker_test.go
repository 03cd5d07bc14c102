package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gantry/gantry/api"
)

// sumRuntime predicts the sum of each row's features. A missing feature is
// the input's fault, the way a runtime that cannot take NaN would say so.
type sumRuntime struct {
	entered chan struct{} // if set, told when Predict starts
	release chan struct{} // if set, Predict waits for it
}

func (r *sumRuntime) Predict(rows [][]float64) (any, error) {
	if r.entered != nil {
		r.entered <- struct{}{}
	}
	if r.release != nil {
		<-r.release
	}
	out := make([]float64, len(rows))
	for i, row := range rows {
		for _, x := range row {
			if math.IsNaN(x) {
				return nil, api.Errorf(api.ErrInvalidParameterValue, "row %d has a missing value; this model takes none", i)
			}
			out[i] += x
		}
	}
	return out, nil
}

type funcRuntime func([][]float64) (any, error)

func (f funcRuntime) Predict(rows [][]float64) (any, error) { return f(rows) }

func loaderOf(rt Runtime, n int) Loader {
	return func(string, map[string]any) (Runtime, int, error) { return rt, n, nil }
}

const namedModel = `flavors:
  python_function:
    loader_module: mlflow.xgboost
  xgboost:
    data: model.json
signature:
  inputs: '[{"type": "double", "name": "age"}, {"type": "double", "name": "amount"}]'
`

func writeModel(t *testing.T, mlmodel string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "MLmodel"), []byte(mlmodel), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func quietLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// start runs serve on a loopback port and returns its base URL and a
// function that stops it and returns serve's error.
func start(t *testing.T, cfg Config, loaders map[string]Loader) (string, func() error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg.withDefaults(), loaders, ln) }()
	stopped := false
	var result error
	stop := func() error {
		if !stopped {
			stopped = true
			cancel()
			result = <-done
		}
		return result
	}
	t.Cleanup(func() { stop() })
	return "http://" + ln.Addr().String(), stop
}

// waitReady polls /ping until it answers 200.
func waitReady(t *testing.T, base string) {
	t.Helper()
	for range 500 {
		resp, err := http.Get(base + "/ping")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("worker never became ready")
}

func post(t *testing.T, url, contentType, body string) (int, http.Header, string) {
	t.Helper()
	resp, err := http.Post(url, contentType, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

func TestInvocations(t *testing.T) {
	dir := writeModel(t, namedModel)
	panicky := funcRuntime(func([][]float64) (any, error) { panic("index out of range") })
	broken := funcRuntime(func([][]float64) (any, error) { return nil, errors.New("tree 3 is corrupt") })
	unencodable := funcRuntime(func([][]float64) (any, error) { return []float64{math.NaN()}, nil })

	for _, tc := range []struct {
		name        string
		rt          Runtime
		contentType string
		body        string
		status      int
		want        string // the whole body for 200, else error_code + ": " + a part of the message
	}{
		{name: "dataframe_split", contentType: "application/json",
			body:   `{"dataframe_split": {"columns": ["amount", "age"], "data": [[10, 1], [20, 2]]}}`,
			status: 200, want: `{"predictions":[11,22]}`},
		{name: "dataframe_records", contentType: "application/json",
			body:   `{"dataframe_records": [{"age": 1, "amount": 2.5}]}`,
			status: 200, want: `{"predictions":[3.5]}`},
		{name: "instances", contentType: "application/json; charset=utf-8",
			body:   `{"instances": [[1, 2], [3, 4]], "client_request_id": "c1"}`,
			status: 200, want: `{"predictions":[3,7]}`},
		{name: "inputs", contentType: "application/json",
			body:   `{"inputs": {"age": [1, 2], "amount": ["3", true]}, "params": {"k": 1}}`,
			status: 200, want: `{"predictions":[4,3]}`},
		{name: "csv", contentType: "text/csv",
			body:   "amount,age\n1,2\n3,4\n",
			status: 200, want: `{"predictions":[3,7]}`},
		{name: "empty batch", contentType: "application/json",
			body:   `{"instances": []}`,
			status: 200, want: `{"predictions":[]}`},
		{name: "no content type", contentType: "",
			body:   `{"instances": [[1, 2]]}`,
			status: 415, want: `MALFORMED_REQUEST: content type "" is not supported; send application/json or text/csv`},
		{name: "text/plain", contentType: "text/plain",
			body:   `{"instances": [[1, 2]]}`,
			status: 415, want: `MALFORMED_REQUEST: content type "text/plain" is not supported`},
		{name: "broken JSON", contentType: "application/json",
			body:   `{"instances": [[1, 2]`,
			status: 400, want: "MALFORMED_REQUEST: invalid JSON at byte 21"},
		{name: "no format", contentType: "application/json",
			body:   `{"data": [[1, 2]]}`,
			status: 400, want: `INVALID_PARAMETER_VALUE: body has unknown key "data"`},
		{name: "broken CSV", contentType: "text/csv",
			body:   "age,amount\n1,\"2\n",
			status: 400, want: "MALFORMED_REQUEST: invalid CSV"},
		{name: "misspelt column", contentType: "application/json",
			body:   `{"dataframe_records": [{"age": 1, "amt": 2}]}`,
			status: 400, want: "INVALID_PARAMETER_VALUE: missing columns: amount; unexpected columns: amt"},
		{name: "wrong width", contentType: "application/json",
			body:   `{"instances": [[1, 2, 3]]}`,
			status: 400, want: "INVALID_PARAMETER_VALUE: row 0 has 3 values, the model expects 2 features"},
		{name: "not a number", contentType: "application/json",
			body:   `{"instances": [[1, "x"]]}`,
			status: 400, want: `INVALID_PARAMETER_VALUE: row 0, column 1: "x" is not a number`},
		{name: "runtime rejects the input", contentType: "application/json",
			body:   `{"instances": [[1, null]]}`,
			status: 400, want: "INVALID_PARAMETER_VALUE: row 0 has a missing value"},
		{name: "runtime fails", rt: broken, contentType: "application/json",
			body:   `{"instances": [[1, 2]]}`,
			status: 500, want: "INTERNAL_ERROR: predict: tree 3 is corrupt"},
		{name: "runtime panics", rt: panicky, contentType: "application/json",
			body:   `{"instances": [[1, 2]]}`,
			status: 500, want: "INTERNAL_ERROR: predict: xgboost runtime panicked: index out of range"},
		{name: "predictions that JSON cannot hold", rt: unencodable, contentType: "application/json",
			body:   `{"instances": [[1, 2]]}`,
			status: 500, want: "INTERNAL_ERROR: encode predictions: json: unsupported value: NaN"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rt := tc.rt
			if rt == nil {
				rt = &sumRuntime{}
			}
			base, _ := start(t, Config{ModelDir: dir}, map[string]Loader{"xgboost": loaderOf(rt, 2)})
			waitReady(t, base)
			status, h, body := post(t, base+"/invocations", tc.contentType, tc.body)
			if status != tc.status {
				t.Errorf("status = %d, want %d (body %s)", status, tc.status, body)
			}
			if ct := h.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q", ct)
			}
			if tc.status == 200 {
				if body != tc.want {
					t.Errorf("body = %s, want %s", body, tc.want)
				}
				return
			}
			checkErrorBody(t, body, tc.want)
		})
	}
}

// checkErrorBody checks API.md's error shape and that want, "CODE: part of
// the message", matches it.
func checkErrorBody(t *testing.T, body, want string) {
	t.Helper()
	var e api.Error
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		t.Fatalf("error body %q is not API.md's shape: %v", body, err)
	}
	code, msg, _ := strings.Cut(want, ": ")
	if e.Code != code || !strings.Contains(e.Message, msg) {
		t.Errorf("error = %s: %q, want %s containing %q", e.Code, e.Message, code, msg)
	}
}

func TestInvocationsBodyLimit(t *testing.T) {
	dir := writeModel(t, namedModel)
	base, _ := start(t, Config{ModelDir: dir, MaxRequestBodySize: 64},
		map[string]Loader{"xgboost": loaderOf(&sumRuntime{}, 2)})
	waitReady(t, base)
	big := `{"instances": [[1, 2]], "client_request_id": "` + strings.Repeat("x", 100) + `"}`

	// Declared up front: refused before the body is read.
	status, _, body := post(t, base+"/invocations", "application/json", big)
	if status != http.StatusRequestEntityTooLarge {
		t.Errorf("status = %d, want 413", status)
	}
	checkErrorBody(t, body, "PAYLOAD_TOO_LARGE: request body is larger than the limit of 64 bytes")

	// Chunked, so only reading finds out.
	req, _ := http.NewRequest("POST", base+"/invocations", io.MultiReader(strings.NewReader(big)))
	req.Header.Set("Content-Type", "application/json")
	req.ContentLength = -1
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("chunked: status = %d, want 413", resp.StatusCode)
	}
	checkErrorBody(t, string(b), "PAYLOAD_TOO_LARGE: request body is larger than the limit of 64 bytes")

	// Just under the limit still works.
	status, _, body = post(t, base+"/invocations", "application/json", `{"instances": [[1, 2]]}`)
	if status != 200 || body != `{"predictions":[3]}` {
		t.Errorf("small body: %d %s", status, body)
	}
}

func TestDefaultLimitMessage(t *testing.T) {
	s := &server{maxBody: Config{}.withDefaults().MaxRequestBodySize}
	if got := s.tooLarge().Message; !strings.Contains(got, "limit of 16 MiB") {
		t.Errorf("message = %q", got)
	}
}

func TestPingWhileLoading(t *testing.T) {
	dir := writeModel(t, namedModel)
	release := make(chan struct{})
	loader := func(string, map[string]any) (Runtime, int, error) {
		<-release
		return &sumRuntime{}, 2, nil
	}
	base, stop := start(t, Config{ModelDir: dir}, map[string]Loader{"xgboost": loader})

	for _, path := range []string{"/ping", "/health"} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
			t.Errorf("%s while loading: %d, Retry-After %q", path, resp.StatusCode, resp.Header.Get("Retry-After"))
		}
		checkErrorBody(t, string(b), "TEMPORARILY_UNAVAILABLE: the model is loading")
	}
	status, _, body := post(t, base+"/invocations", "application/json", `{"instances": [[1, 2]]}`)
	if status != http.StatusServiceUnavailable {
		t.Errorf("invocation while loading: %d", status)
	}
	checkErrorBody(t, body, "TEMPORARILY_UNAVAILABLE: the model is loading")
	if m := metricsText(t, base); !strings.Contains(m, "gantry_worker_ready 0") {
		t.Errorf("ready gauge while loading:\n%s", grep(m, "gantry_worker_ready"))
	}

	close(release)
	waitReady(t, base)
	for _, path := range []string{"/ping", "/health"} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s after loading: %d", path, resp.StatusCode)
		}
	}
	if err := stop(); err != nil {
		t.Errorf("serve returned %v after a clean stop", err)
	}
}

// A stop during a load does not wait for the load.
func TestStopWhileLoading(t *testing.T) {
	dir := writeModel(t, namedModel)
	block := make(chan struct{})
	defer close(block)
	loader := func(string, map[string]any) (Runtime, int, error) {
		<-block
		return nil, 0, errors.New("unreachable")
	}
	_, stop := start(t, Config{ModelDir: dir}, map[string]Loader{"xgboost": loader})
	if err := stop(); err != nil {
		t.Errorf("stop while loading: %v", err)
	}
}

func TestMetrics(t *testing.T) {
	dir := writeModel(t, namedModel)
	base, _ := start(t, Config{ModelDir: dir}, map[string]Loader{"xgboost": loaderOf(&sumRuntime{}, 2)})
	waitReady(t, base)
	post(t, base+"/invocations", "application/json", `{"instances": [[1, 2]]}`)
	post(t, base+"/invocations", "application/json", `{"instances": [[1, 2]]}`)
	post(t, base+"/invocations", "application/json", `{"instances": [[1]]}`)
	post(t, base+"/invocations", "text/plain", `x`)

	m := metricsText(t, base)
	for _, want := range []string{
		`gantry_worker_requests_total{code="200"} 2`,
		`gantry_worker_requests_total{code="400"} 1`,
		`gantry_worker_requests_total{code="415"} 1`,
		`gantry_worker_request_duration_seconds_count 4`,
		`gantry_worker_ready 1`,
		`gantry_worker_model_load_seconds `,
		`go_goroutines `,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %q:\n%s", want, grep(m, "gantry_"))
		}
	}
}

func metricsText(t *testing.T, base string) string {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("/metrics: %d %s", resp.StatusCode, b)
	}
	return string(b)
}

func grep(text, word string) string {
	var out []string
	for line := range strings.Lines(text) {
		if strings.Contains(line, word) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "")
}

func TestWrongMethod(t *testing.T) {
	dir := writeModel(t, namedModel)
	base, _ := start(t, Config{ModelDir: dir}, map[string]Loader{"xgboost": loaderOf(&sumRuntime{}, 2)})
	waitReady(t, base)
	resp, err := http.Get(base + "/invocations")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "POST" {
		t.Errorf("GET /invocations: %d, Allow %q", resp.StatusCode, resp.Header.Get("Allow"))
	}
	var e api.Error
	if json.Unmarshal(b, &e) != nil || e.Code != api.ErrMalformedRequest || e.Message == "" {
		t.Errorf("GET /invocations: %s, want API.md's error", b)
	}
}

// A path the worker does not serve answers API.md's JSON 404, not Go's
// text/plain "404 page not found".
func TestUnknownPath(t *testing.T) {
	dir := writeModel(t, namedModel)
	base, _ := start(t, Config{ModelDir: dir}, map[string]Loader{"xgboost": loaderOf(&sumRuntime{}, 2)})
	waitReady(t, base)
	for _, p := range []string{"/", "/no/such/path", "/invocations/x"} {
		resp, err := http.Post(base+p, "application/json", strings.NewReader("{}"))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var e api.Error
		if resp.StatusCode != http.StatusNotFound || resp.Header.Get("Content-Type") != "application/json" ||
			json.Unmarshal(b, &e) != nil || e.Code != api.ErrResourceDoesNotExist || e.Message == "" {
			t.Errorf("POST %s: %d %q %s, want API.md's 404", p, resp.StatusCode, resp.Header.Get("Content-Type"), b)
		}
	}
}

// Shutdown lets a request that is being predicted finish and answer.
func TestShutdownFinishesInFlight(t *testing.T) {
	dir := writeModel(t, namedModel)
	rt := &sumRuntime{entered: make(chan struct{}, 1), release: make(chan struct{})}
	base, stop := start(t, Config{ModelDir: dir}, map[string]Loader{"xgboost": loaderOf(rt, 2)})
	waitReady(t, base)

	type answer struct {
		status int
		body   string
	}
	answered := make(chan answer, 1)
	go func() {
		resp, err := http.Post(base+"/invocations", "application/json", strings.NewReader(`{"instances": [[1, 2]]}`))
		if err != nil {
			answered <- answer{body: err.Error()}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		answered <- answer{resp.StatusCode, string(b)}
	}()
	<-rt.entered

	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	select {
	case err := <-stopped:
		t.Fatalf("serve returned (%v) while a request was in flight", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(rt.release)
	if a := <-answered; a.status != 200 || a.body != `{"predictions":[3]}` {
		t.Errorf("in-flight request got %d %s", a.status, a.body)
	}
	if err := <-stopped; err != nil {
		t.Errorf("serve: %v", err)
	}
}

func TestShutdownTimeout(t *testing.T) {
	dir := writeModel(t, namedModel)
	rt := &sumRuntime{entered: make(chan struct{}, 1), release: make(chan struct{})}
	defer close(rt.release)
	base, stop := start(t, Config{ModelDir: dir, ShutdownTimeout: 50 * time.Millisecond},
		map[string]Loader{"xgboost": loaderOf(rt, 2)})
	waitReady(t, base)
	go http.Post(base+"/invocations", "application/json", strings.NewReader(`{"instances": [[1, 2]]}`))
	<-rt.entered
	if err := stop(); err == nil || !strings.Contains(err.Error(), "requests still running after 50ms were cut off") {
		t.Errorf("serve = %v, want the cut-off error", err)
	}
}

func TestRunLoadFailures(t *testing.T) {
	ok := loaderOf(&sumRuntime{}, 2)
	for _, tc := range []struct {
		name    string
		mlmodel string // "" for no MLmodel file
		loaders map[string]Loader
		want    string
	}{
		{
			name: "no MLmodel",
			want: "read MLmodel:",
		},
		{
			name:    "no runtime for the flavors",
			mlmodel: "flavors:\n  sklearn: {pickled_model: model.pkl}\n  python_function: {loader_module: mlflow.sklearn}\n",
			loaders: map[string]Loader{"xgboost": ok},
			want:    "no runtime for flavors [python_function sklearn]: native runtimes: xgboost",
		},
		{
			name:    "no runtimes at all",
			mlmodel: "flavors:\n  sklearn: {pickled_model: model.pkl}\n",
			want:    "no runtime for flavors [sklearn]: native runtimes: none",
		},
		{
			name:    "loader fails",
			mlmodel: namedModel,
			loaders: map[string]Loader{"xgboost": func(string, map[string]any) (Runtime, int, error) {
				return nil, 0, errors.New("model.json: unexpected end of JSON input")
			}},
			want: "xgboost runtime: model.json: unexpected end of JSON input",
		},
		{
			name:    "signature disagrees with the model",
			mlmodel: namedModel,
			loaders: map[string]Loader{"xgboost": loaderOf(&sumRuntime{}, 3)},
			want:    "the signature names 2 inputs but the xgboost model takes 3 features",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.mlmodel != "" {
				dir = writeModel(t, tc.mlmodel)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := Run(ctx, Config{ModelDir: dir, Listen: "127.0.0.1:0", Logger: quietLogger()}, tc.loaders)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Run = %v, want an error containing %q", err, tc.want)
			}
			if !strings.HasPrefix(err.Error(), "load model "+dir+": ") {
				t.Errorf("error %q does not say which model", err)
			}
		})
	}
}

func TestRunListenError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	err = Run(context.Background(), Config{ModelDir: t.TempDir(), Listen: ln.Addr().String(), Logger: quietLogger()}, nil)
	if err == nil || !strings.Contains(err.Error(), "worker: listen:") {
		t.Fatalf("Run = %v, want a listen error", err)
	}
}

func TestPickFlavor(t *testing.T) {
	fake := loaderOf(&sumRuntime{}, 0)
	for _, tc := range []struct {
		flavors []string
		loaders []string
		want    string
	}{
		{[]string{"python_function", "xgboost"}, []string{"python_function", "xgboost"}, "xgboost"},
		{[]string{"python_function", "xgboost"}, []string{"python_function"}, "python_function"},
		{[]string{"lightgbm", "python_function"}, []string{"python_function", "lightgbm"}, "lightgbm"},
		{[]string{"sklearn"}, []string{"xgboost", "onnx"}, "error: no runtime for flavors [sklearn]: native runtimes: onnx, xgboost"},
	} {
		loaders := map[string]Loader{}
		for _, l := range tc.loaders {
			loaders[l] = fake
		}
		got, err := pickFlavor(tc.flavors, loaders)
		if err != nil {
			got = "error: " + err.Error()
		}
		if got != tc.want {
			t.Errorf("pickFlavor(%v, %v) = %s, want %s", tc.flavors, tc.loaders, got, tc.want)
		}
	}
}

// The loader gets the directory and its own flavor's settings.
func TestLoaderArguments(t *testing.T) {
	dir := writeModel(t, namedModel)
	got := make(chan string, 1)
	loader := func(d string, flavor map[string]any) (Runtime, int, error) {
		got <- fmt.Sprintf("%v %v", d == dir, flavor["data"])
		return &sumRuntime{}, 2, nil
	}
	base, _ := start(t, Config{ModelDir: dir}, map[string]Loader{"xgboost": loader})
	waitReady(t, base)
	if g := <-got; g != "true model.json" {
		t.Errorf("loader got %s", g)
	}
}
