package main

// End-to-end tests of openai_server entities: `gantry dev` runs real worker
// processes, each starting the fake OpenAI-compatible server that
// worker/openaiserver/testdata/fakeopenai builds (vLLM's metric names, one
// word per token every FAKE_TOKEN_DELAY, FAKE_MAX_RUNNING sequences at
// once), and the autoscaler sizes the entity on the tokens it reports.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gantry/gantry/api"
)

var (
	fakeOnce sync.Once
	fakePath string
	fakeErr  error
)

// buildFakeOpenAI builds the fake server once per test run.
func buildFakeOpenAI(t testing.TB) string {
	t.Helper()
	fakeOnce.Do(func() {
		bin := filepath.Join(binDir, "fakeopenai")
		if out, err := exec.Command("go", "build", "-o", bin, "../../worker/openaiserver/testdata/fakeopenai").CombinedOutput(); err != nil {
			fakeErr = fmt.Errorf("go build fakeopenai: %v\n%s", err, out)
			return
		}
		fakePath = bin
	})
	if fakeErr != nil {
		t.Fatal(fakeErr)
	}
	return fakePath
}

// llmModel writes a model directory whose MLmodel runs the fake server.
func llmModel(t testing.TB, fake string, tokensPerSecond int) string {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "MLmodel"), fmt.Sprintf(
		"flavors:\n  openai_server:\n    command: [%q]\n    health: /health\n    tokens_per_second: %d\n", fake, tokensPerSecond))
	return dir
}

func llmEndpoint(t testing.TB, name, fields string, env map[string]string) string {
	envJSON, _ := json.Marshal(env)
	p := filepath.Join(t.TempDir(), name+".json")
	writeFile(t, p, fmt.Sprintf(`{"name": %q, "config": {"served_entities": [{"name": "llm", "entity_name": "stories", "entity_version": "1", %s, "environment_vars": %s}]}}`,
		name, fields, envJSON))
	return p
}

func post(t testing.TB, url, body string) (int, []byte) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// stream posts a streaming chat request and returns when its first event
// arrived and when it ended, and the events' text.
func stream(url string, maxTokens int) (first, total time.Duration, text string, err error) {
	start := time.Now()
	resp, err := http.Post(url, "application/json", strings.NewReader(fmt.Sprintf(
		`{"messages": [{"role": "user", "content": "Once upon"}], "max_tokens": %d, "stream": true}`, maxTokens)))
	if err != nil {
		return 0, 0, "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		b, _ := io.ReadAll(resp.Body)
		return 0, 0, "", fmt.Errorf("status %d, content type %q: %s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	s, err := readChatStream(resp.Body)
	if err != nil {
		return 0, 0, "", err
	}
	if !s.done {
		return 0, 0, "", errors.New("the stream ended without [DONE]")
	}
	return s.first.Sub(start), time.Since(start), s.text, nil
}

func TestOpenAIServerEntityE2E(t *testing.T) {
	if testing.Short() {
		t.Skip("runs gantry dev with worker and model server processes; run without -short")
	}
	bin, fake := buildGantry(t), buildFakeOpenAI(t)
	addr := freeAddr(t)
	startDev(t, bin, addr, t.TempDir(), shortWindows...)
	c, _ := api.NewClient(&api.Config{Address: "http://" + addr})
	// One replica generates 100 tokens/s: 2 sequences at once, 20 ms a
	// token each.
	mustCLI(t, bin, addr, "models", "upload", "stories", llmModel(t, fake, 100))

	var info api.ModelOptimizationInfo
	if err := getJSON("http://"+addr+"/api/2.0/serving-endpoints/get-model-optimization-info/stories/1", &info); err != nil ||
		info != (api.ModelOptimizationInfo{Optimizable: true, ModelType: "openai_server", ThroughputChunkSize: 100}) {
		t.Fatalf("optimization info = %+v, %v", info, err)
	}
	out, err := cli(t, bin, addr, "endpoints", "create", "-f", llmEndpoint(t, "bad-pt", `"max_provisioned_throughput": 250`, nil))
	if err == nil || !strings.Contains(out, "max_provisioned_throughput: 250 is not a multiple") {
		t.Errorf("a throughput off the chunk: %v %s", err, out)
	}

	env := map[string]string{"FAKE_TOKEN_DELAY": "20ms", "FAKE_MAX_RUNNING": "2"}
	// replica_concurrency 16: the activators' concurrency alone (8 of 16)
	// would keep one replica; only the tokens can ask for more.
	mustCLI(t, bin, addr, "endpoints", "create", "-f", llmEndpoint(t, "llm",
		`"min_provisioned_throughput": 100, "max_provisioned_throughput": 300, "replica_concurrency": 16`, env), "--wait")
	url := "http://" + addr + "/serving-endpoints/llm/invocations"

	t.Run("chat", func(t *testing.T) {
		code, body := post(t, url, `{"messages": [{"role": "user", "content": "Once upon"}], "max_tokens": 3}`)
		var chat struct {
			Object  string
			Choices []struct {
				Message struct{ Role, Content string }
			}
			Usage struct {
				CompletionTokens int `json:"completion_tokens"`
			}
		}
		if code != 200 || json.Unmarshal(body, &chat) != nil || chat.Object != "chat.completion" ||
			len(chat.Choices) != 1 || chat.Choices[0].Message.Content != "w0 w1 w2 " || chat.Usage.CompletionTokens != 3 {
			t.Fatalf("chat: %d %s", code, body)
		}
		code, body = post(t, url, `{"messages": [{"role": "user", "content": "x"}], "temperature": 5}`)
		if code != 400 || !strings.Contains(string(body), "temperature") {
			t.Errorf("temperature 5: %d %s", code, body)
		}
		code, body = post(t, url, `{"input": ["a", "b"]}`)
		if code != 200 || !strings.Contains(string(body), `"object":"list"`) {
			t.Errorf("embeddings: %d %s", code, body)
		}
		// The OpenAI SDK's paths, the endpoint named by model.
		code, body = post(t, "http://"+addr+"/serving-endpoints/chat/completions", `{"model": "llm", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}`)
		if code != 200 || !strings.Contains(string(body), `"content":"w0 w1 "`) {
			t.Errorf("chat/completions: %d %s", code, body)
		}
		code, body = post(t, "http://"+addr+"/serving-endpoints/completions", `{"model": "llm", "prompt": "Once", "max_tokens": 1}`)
		if code != 200 || !strings.Contains(string(body), `"object":"text_completion"`) {
			t.Errorf("completions: %d %s", code, body)
		}
	})

	t.Run("stream", func(t *testing.T) {
		// 50 tokens take a second; the first must arrive long before.
		first, total, text, err := stream(url, 50)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(text, "w0 w1 ") || strings.Count(text, " ") != 50 {
			t.Errorf("streamed text %q", text)
		}
		if first > total/2 {
			t.Errorf("first event after %s of %s: the stream was held back", first, total)
		}
		t.Logf("stream of 50 tokens: first event %s, whole %s", first, total)
	})

	t.Run("replicas rise under token load", func(t *testing.T) {
		// 8 clients stream back to back: one replica runs 2 at its 100
		// tokens/s with 6 waiting, a demand of 400 tokens/s.
		loadStart := time.Now()
		stop := make(chan struct{})
		var wg sync.WaitGroup
		var failed atomic.Value
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					if _, _, _, err := stream(url, 20); err != nil {
						failed.Store(err.Error())
						return
					}
				}
			}()
		}
		e := waitEntity(t, c, "llm", "two or more ready replicas", 60*time.Second, func(e api.ServedEntity) bool {
			return e.Replicas != nil && e.Replicas.Ready >= 2
		})
		rose := time.Since(loadStart)
		// A few more seconds of load, for the capacity measurement: the
		// ticks while the first replica ramped up undercount it.
		time.Sleep(3 * time.Second)
		metrics := getText(t, "http://"+addr+"/metrics")
		close(stop)
		wg.Wait()
		if f := failed.Load(); f != nil {
			t.Errorf("a stream under load failed: %s", f)
		}
		if e.Replicas.Desired > 3 {
			t.Errorf("desired %d replicas, above max_provisioned_throughput 300 / 100", e.Replicas.Desired)
		}
		if !strings.Contains(metrics, "gantry_autoscaler_observed_tokens_per_second{") {
			t.Errorf("/metrics lacks gantry_autoscaler_observed_tokens_per_second")
		}
		// The fake's replica sustains 100 tokens/s (2 sequences, 20 ms a
		// token); the autoscaler measures it from a replica with
		// sequences waiting.
		sat := metricValue(metrics, "gantry_autoscaler_saturated_tokens_per_second{")
		if sat < 60 || sat > 130 {
			t.Errorf("measured %v tokens/s for a saturated replica, want about 100", sat)
		}
		t.Logf("measured capacity of one replica: %.0f tokens/s", sat)
		t.Logf("under token load: %d ready of %d desired after %s", e.Replicas.Ready, e.Replicas.Desired, rose.Round(time.Millisecond))
	})
}

func TestOpenAIServerFromZeroAndFailures(t *testing.T) {
	if testing.Short() {
		t.Skip("runs gantry dev with worker and model server processes; run without -short")
	}
	bin, fake := buildGantry(t), buildFakeOpenAI(t)
	addr := freeAddr(t)
	startDev(t, bin, addr, t.TempDir(), shortWindows...)
	c, _ := api.NewClient(&api.Config{Address: "http://" + addr})
	mustCLI(t, bin, addr, "models", "upload", "stories", llmModel(t, fake, 100))

	t.Run("a stream held while scaling from zero", func(t *testing.T) {
		// The server takes a second to load, as a model would.
		mustCLI(t, bin, addr, "endpoints", "create", "-f", llmEndpoint(t, "cold",
			`"max_provisioned_throughput": 100, "scale_to_zero_enabled": true`, map[string]string{"FAKE_LOAD_DELAY": "1s", "FAKE_TOKEN_DELAY": "10ms"}), "--wait")
		waitEntity(t, c, "cold", "scaled to zero", 60*time.Second, scaledToZero)
		first, total, text, err := stream("http://"+addr+"/serving-endpoints/cold/invocations", 10)
		if err != nil {
			t.Fatal(err)
		}
		if text != "w0 w1 w2 w3 w4 w5 w6 w7 w8 w9 " {
			t.Errorf("text %q", text)
		}
		if first < time.Second {
			t.Errorf("first event after %s: the cold start (a 1 s load) was not waited for", first)
		}
		t.Logf("stream from zero: first event %s, whole %s", first, total)
		checkFirstPhase(t, c, "cold", api.PhaseFirstToken)
	})

	t.Run("a server that exits at start fails the deployment", func(t *testing.T) {
		out, err := cli(t, bin, addr, "endpoints", "create", "-f", llmEndpoint(t, "oom",
			`"max_provisioned_throughput": 100`, map[string]string{"FAKE_EXIT": "CUDA out of memory: tried to allocate 20 GiB"}), "--wait", "--timeout", "30s")
		if err == nil {
			t.Fatalf("create --wait of a server that exits succeeded:\n%s", out)
		}
		e := waitEntity(t, c, "oom", "a failure message", 30*time.Second, func(e api.ServedEntity) bool {
			return e.State != nil && strings.Contains(e.State.DeploymentStateMessage, "CUDA out of memory")
		})
		if !strings.Contains(e.State.DeploymentStateMessage, "exited before it answered /health") {
			t.Errorf("deployment_state_message %q", e.State.DeploymentStateMessage)
		}
	})
}

func getJSON(url string, out any) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("%s: %d %s", url, resp.StatusCode, b)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

func getText(t testing.TB, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// metricValue is the value of the first series whose line starts with
// prefix, or -1.
func metricValue(text, prefix string) float64 {
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, prefix) {
			f := strings.Fields(line)
			var v float64
			if _, err := fmt.Sscan(f[len(f)-1], &v); err == nil {
				return v
			}
		}
	}
	return -1
}
