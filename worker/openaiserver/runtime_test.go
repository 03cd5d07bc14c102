package openaiserver

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/internal/eventually"
)

// fake is the test server's binary, built once by TestMain.
var fake string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "fakeopenai")
	if err != nil {
		panic(err)
	}
	fake = filepath.Join(dir, "fakeopenai")
	if out, err := exec.Command("go", "build", "-o", fake, "./testdata/fakeopenai").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build fakeopenai: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// load starts the fake with env added to the worker's environment.
func load(t *testing.T, flavor map[string]any, env ...string) (*Runtime, error) {
	t.Helper()
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	if flavor == nil {
		flavor = map[string]any{"command": []any{fake}}
	}
	rt, err := Load(t.TempDir(), flavor, Options{LoadTimeout: 20 * time.Second, Output: io.Discard, Logger: slog.New(slog.DiscardHandler)})
	if err == nil {
		t.Cleanup(func() { rt.Close() })
	}
	return rt, err
}

func serve(t *testing.T, rt *Runtime) string {
	srv := httptest.NewServer(http.HandlerFunc(rt.ServeInvocation))
	t.Cleanup(srv.Close)
	return srv.URL
}

func post(t *testing.T, url, body string) (int, string) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestChatCompletionsEmbeddings(t *testing.T) {
	rt, err := load(t, nil, "FAKE_LOAD_DELAY=300ms")
	if err != nil {
		t.Fatal(err)
	}
	url := serve(t, rt)
	code, body := post(t, url, `{"messages": [{"role": "user", "content": "Once upon"}], "max_tokens": 3}`)
	var chat struct {
		Object  string
		Choices []struct{ Message struct{ Content string } }
		Usage   struct {
			CompletionTokens int `json:"completion_tokens"`
		}
	}
	if code != 200 || json.Unmarshal([]byte(body), &chat) != nil || chat.Object != "chat.completion" ||
		chat.Choices[0].Message.Content != "w0 w1 w2 " || chat.Usage.CompletionTokens != 3 {
		t.Fatalf("chat: %d %s", code, body)
	}
	code, body = post(t, url, `{"prompt": "Once upon", "max_tokens": 2}`)
	if code != 200 || !strings.Contains(body, `"object":"text_completion"`) || !strings.Contains(body, `"text":"w0 w1 "`) {
		t.Fatalf("completions: %d %s", code, body)
	}
	code, body = post(t, url, `{"input": ["a", "b"]}`)
	if code != 200 || !strings.Contains(body, `"index":1`) {
		t.Fatalf("embeddings: %d %s", code, body)
	}
	// The unified request's checks, as for external models.
	code, body = post(t, url, `{"messages": [{"role": "user", "content": "x"}], "temperature": 5}`)
	if code != 400 || !strings.Contains(body, "temperature") {
		t.Errorf("temperature 5: %d %s", code, body)
	}
	code, body = post(t, url, `{"dataframe_split": {"columns": ["a"], "data": [[1]]}}`)
	if code != 400 || !strings.Contains(body, "dataframe_split") {
		t.Errorf("a tabular body: %d %s", code, body)
	}
	l, err := rt.TokenLoad(context.Background())
	if err != nil || l.GeneratedTokens != 5 {
		t.Errorf("TokenLoad = %+v, %v; want 5 generated tokens", l, err)
	}
}

func TestStreamPassesChunkByChunk(t *testing.T) {
	rt, err := load(t, nil, "FAKE_TOKEN_DELAY=400ms", "FAKE_MAX_RUNNING=1")
	if err != nil {
		t.Fatal(err)
	}
	url := serve(t, rt)
	start := time.Now()
	resp, err := http.Post(url, "application/json", strings.NewReader(
		`{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, "stream": true}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	br := bufio.NewReader(resp.Body)
	first, _ := br.ReadString('\n')
	firstAt := time.Since(start)
	if !strings.Contains(first, `"content":"w0 "`) {
		t.Fatalf("first event %q", first)
	}
	// Five tokens take 2 s; the first must come after one delay, not all.
	if firstAt > 1500*time.Millisecond {
		t.Errorf("first event after %s: the stream was held back", firstAt)
	}
	// While it streams, the server reports one running sequence; a
	// second request waits for the one slot.
	go func() {
		resp, err := http.Post(url, "application/json", strings.NewReader(`{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}`))
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}()
	eventually.True(t, 5*time.Second, "TokenLoad reports 1 running and 1 queued", func() bool {
		l, err := rt.TokenLoad(context.Background())
		return err == nil && l.Running == 1 && l.Queued == 1
	})
	rest, _ := io.ReadAll(br)
	if !strings.HasSuffix(string(rest), "data: [DONE]\n\n") {
		t.Errorf("stream ended with %q", rest)
	}
}

func TestExitAtStartFailsTheLoad(t *testing.T) {
	_, err := load(t, nil, "FAKE_EXIT=CUDA out of memory: tried to allocate 20 GiB")
	if err == nil || !strings.Contains(err.Error(), "exited before it answered /health") ||
		!strings.Contains(err.Error(), "CUDA out of memory") || !strings.Contains(err.Error(), "exit status 3") {
		t.Fatalf("err = %v", err)
	}
}

func TestBadCommand(t *testing.T) {
	_, err := load(t, map[string]any{"command": []any{"no-such-llm-server-xyz", "serve"}})
	if err == nil || !strings.Contains(err.Error(), `command "no-such-llm-server-xyz" not found`) {
		t.Fatalf("err = %v", err)
	}
	for _, tc := range []struct {
		flavor map[string]any
		want   string
	}{
		{map[string]any{}, "command must be a non-empty list"},
		{map[string]any{"command": []any{fake}, "health": "health"}, "health must be a path"},
		{map[string]any{"command": []any{fake}, "task": "llm/v1/rerank"}, "task must be"},
		{map[string]any{"command": []any{fake}, "tokens_per_second": -3}, "tokens_per_second must be a positive whole number"},
	} {
		if _, err := Parse("/m", tc.flavor); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%v) = %v, want %q", tc.flavor, err, tc.want)
		}
	}
}

func TestHealthTimeout(t *testing.T) {
	t.Setenv("FAKE_LOAD_DELAY", "1h")
	_, err := Load(t.TempDir(), map[string]any{"command": []any{fake}},
		Options{LoadTimeout: 500 * time.Millisecond, Output: io.Discard, Logger: slog.New(slog.DiscardHandler)})
	if err == nil || !strings.Contains(err.Error(), "did not answer 200 within 500ms") {
		t.Fatalf("err = %v", err)
	}
}

func TestRestartAfterExit(t *testing.T) {
	rt, err := load(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	url := serve(t, rt)
	// The fake exits mid-request: the caller gets an error answer, and the
	// runtime says why it is not ready until the new process answers.
	code, _ := post(t, url, `{"messages": [{"role": "user", "content": "__exit__"}]}`)
	if code == 200 {
		t.Fatalf("a request that killed the server answered 200")
	}
	eventually.True(t, 5*time.Second, "Ready reports the exit", func() bool {
		err := rt.Ready()
		return err != nil && strings.Contains(err.Error(), "exited")
	})
	eventually.True(t, 15*time.Second, "the server is started again", func() bool { return rt.Ready() == nil })
	if code, body := post(t, url, `{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}`); code != 200 {
		t.Fatalf("after the restart: %d %s", code, body)
	}
}

func TestParseLoad(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		want       api.TokenLoad
		err        string
	}{
		{"vllm", `# HELP vllm:num_requests_waiting x
vllm:num_requests_waiting{engine="0",model_name="m"} 4.0
vllm:num_requests_running{engine="0",model_name="m"} 16.0
vllm:num_requests_running{engine="1",model_name="m"} 2.0
vllm:generation_tokens_total{engine="0",model_name="m"} 12345.0
vllm:generation_tokens_total{engine="1",model_name="m"} 5.0 1700000000000
`, api.TokenLoad{GeneratedTokens: 12350, Queued: 4, Running: 18}, ""},
		{"llama.cpp", "llamacpp:requests_deferred 2\nllamacpp:requests_processing 1\nllamacpp:tokens_predicted_total 99\n",
			api.TokenLoad{GeneratedTokens: 99, Queued: 2, Running: 1}, ""},
		{"a label with a brace", `vllm:generation_tokens_total{model_name="a}b"} 7` + "\n", api.TokenLoad{GeneratedTokens: 7}, ""},
		{"no token counter", "process_cpu_seconds_total 3\n", api.TokenLoad{}, "none of"},
	} {
		got, err := parseLoad(strings.NewReader(tc.text))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: err = %v, want %q", tc.name, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s: parseLoad = %+v, %v; want %+v", tc.name, got, err, tc.want)
		}
	}
}

// An OpenAI SDK path's task (X-Gantry-Task) decides where the body goes,
// and a model that serves one task refuses the others.
func TestTaskHeader(t *testing.T) {
	rt, err := load(t, map[string]any{"command": []any{fake}, "task": "llm/v1/chat"})
	if err != nil {
		t.Fatal(err)
	}
	url := serve(t, rt)
	call := func(task, body string) (int, string) {
		req, _ := http.NewRequest("POST", url, strings.NewReader(body))
		req.Header.Set("X-Gantry-Task", task)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := call("llm/v1/chat", `{"messages": [{"role": "user", "content": "x"}], "max_tokens": 1}`); code != 200 || !strings.Contains(body, "chat.completion") {
		t.Errorf("chat: %d %s", code, body)
	}
	if code, body := call("llm/v1/embeddings", `{"input": "x"}`); code != 400 || !strings.Contains(body, "this entity serves llm/v1/chat; this path takes llm/v1/embeddings") {
		t.Errorf("embeddings on a chat model: %d %s", code, body)
	}
	if code, body := call("llm/v1/rerank", `{"input": "x"}`); code != 400 || !strings.Contains(body, "unknown task") {
		t.Errorf("an unknown task: %d %s", code, body)
	}
	// Without the header, a chat model takes the body as chat: a prompt
	// is refused by name.
	if code, body := post(t, url, `{"prompt": "x"}`); code != 400 || !strings.Contains(body, "prompt") {
		t.Errorf("a prompt to a chat model: %d %s", code, body)
	}
}

// The server gets the worker's environment and its port, not the worker
// secret.
func TestChildEnvironment(t *testing.T) {
	rt, err := load(t, nil, "GANTRY_WORKER_SECRET=s3cret", "FAKE_PASSED=yes")
	if err != nil {
		t.Fatal(err)
	}
	c, _ := rt.sv.current()
	for name, want := range map[string]string{"GANTRY_WORKER_SECRET": "", "FAKE_PASSED": "yes", "PORT": c.url.Port()} {
		resp, err := http.Get(c.base + "/env/" + name)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != want {
			t.Errorf("the server's %s = %q, want %q", name, b, want)
		}
	}
}
