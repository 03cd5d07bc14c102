package main

// End-to-end tests of the GGUF runtime: stories260K (llama.cpp's CI
// model) served by real worker processes under gantry dev, called through
// the activator on the invocations and OpenAI paths, compared with the
// same runtime called in this process.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/internal/chtest"
	"github.com/gantry/gantry/internal/eventually"
	"github.com/gantry/gantry/internal/llamatest"
	"github.com/gantry/gantry/loggers"
	"github.com/gantry/gantry/worker/llm"
)

const storiesDir = "../../worker/llm/testdata/stories"

// llamaLibDir is the llama.cpp libraries `make llama-libs` fetched, or
// $GANTRY_LLAMA_LIB_DIR.
func llamaLibDir(t testing.TB) string {
	t.Helper()
	return llamatest.LibDir(t)
}

// llmModelDir writes a model directory for stories260K with task, and
// the GGUF file cut to its first third when corrupt.
func llmModelDir(t testing.TB, task string, corrupt bool) string {
	t.Helper()
	dir := t.TempDir()
	b, err := os.ReadFile(filepath.Join(storiesDir, "model.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	if corrupt {
		b = b[:len(b)/3]
	}
	writeFile(t, filepath.Join(dir, "model.gguf"), string(b))
	writeFile(t, filepath.Join(dir, "MLmodel"), "flavors:\n  gguf:\n    model_file: model.gguf\n    task: "+task+"\n")
	return dir
}

// directRuntime is the runtime the workers run, in this process.
type directRuntime struct{ m *llm.Model }

func (d directRuntime) chat(t testing.TB, content string, maxTokens int) llm.Result {
	t.Helper()
	prompt, err := d.m.FormatChat([]llm.Message{{Role: "user", Content: content}})
	if err != nil {
		t.Fatal(err)
	}
	res, err := d.m.Generate(context.Background(), llm.Request{Prompt: prompt, MaxTokens: maxTokens}, func(string) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	return res
}

type chatAnswer struct {
	Object  string `json:"object"`
	Choices []struct {
		Message      struct{ Content string } `json:"message"`
		Text         string                   `json:"text"`
		FinishReason string                   `json:"finish_reason"`
	} `json:"choices"`
	Usage struct {
		PromptTokens     int `json:"prompt_tokens"`
		CompletionTokens int `json:"completion_tokens"`
	} `json:"usage"`
}

func chatBody(content string, maxTokens int, stream bool) string {
	b, _ := json.Marshal(map[string]any{"messages": []map[string]string{{"role": "user", "content": content}},
		"max_tokens": maxTokens, "temperature": 0, "stream": stream})
	return string(b)
}

func TestLLMEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("runs llama.cpp in worker processes under gantry dev; run without -short")
	}
	libs := llamaLibDir(t)
	direct, err := llm.Open(filepath.Join(storiesDir, "model.gguf"), llm.Config{LibDir: libs, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	rt := directRuntime{direct}

	ch := chtest.Start(t)
	db := chtest.Open(t, ch)
	bin, addr, dataDir := buildGantry(t), freeAddr(t), t.TempDir()
	dev := startDev(t, bin, addr, dataDir, append([]string{"--clickhouse", ch.Addr(), "--llama-lib-dir", libs}, shortWindows...)...)
	a := &answers{base: "http://" + addr}
	c, _ := api.NewClient(&api.Config{Address: "http://" + addr})

	mustCLI(t, bin, addr, "models", "upload", "stories", storiesDir)
	mustCLI(t, bin, addr, "models", "upload", "stories-text", llmModelDir(t, api.TaskCompletions, false))
	mustCLI(t, bin, addr, "models", "upload", "stories-embed", llmModelDir(t, api.TaskEmbeddings, false))
	// One replica at most, of 8 slots: the runtime's 8 sequences.
	entity := func(model string) string {
		return fmt.Sprintf(`{"entity_name": %q, "entity_version": "1", "min_provisioned_concurrency": 0, "max_provisioned_concurrency": 8, "replica_concurrency": 8, "scale_to_zero_enabled": true}`, model)
	}
	a.ok(t, "POST", "/api/2.0/serving-endpoints", `{"name": "llm", "config": {"served_entities": [`+entity("stories")+`],
		"auto_capture_config": {"catalog_name": "ml", "schema_name": "llm", "enabled": true}}}`)
	a.ok(t, "POST", "/api/2.0/serving-endpoints", `{"name": "llm-text", "config": {"served_entities": [`+entity("stories-text")+`]}}`)
	a.ok(t, "POST", "/api/2.0/serving-endpoints", `{"name": "llm-embed", "config": {"served_entities": [`+entity("stories-embed")+`]}}`)
	mustCLI(t, bin, addr, "endpoints", "wait", "llm")
	mustCLI(t, bin, addr, "endpoints", "wait", "llm-text")
	mustCLI(t, bin, addr, "endpoints", "wait", "llm-embed")
	a.ok(t, "PUT", "/api/2.0/serving-endpoints/llm/ai-gateway", `{"usage_tracking_config": {"enabled": true}}`)
	time.Sleep(500 * time.Millisecond) // the route table reaches the activator

	const prompt = "Once upon"
	want := rt.chat(t, prompt, 32)
	wantPrompt, _ := direct.Tokenize(mustFormat(t, direct, prompt))
	var sent, answered []string  // bodies, for the inference table
	var streamID, wholeID string // x-request-id of a stream and of a whole answer

	t.Run("chat: greedy equals the runtime called directly, twice", func(t *testing.T) {
		for range 2 {
			body := chatBody(prompt, 32, false)
			var got chatAnswer
			resp, b := a.do(t, "POST", "/serving-endpoints/llm/invocations", body)
			if resp.StatusCode != 200 {
				t.Fatalf("%d %s", resp.StatusCode, b)
			}
			wholeID = resp.Header.Get("x-request-id")
			sent, answered = append(sent, body), append(answered, b)
			if err := json.Unmarshal([]byte(b), &got); err != nil || got.Object != "chat.completion" || len(got.Choices) != 1 {
				t.Fatalf("answer %s", b)
			}
			if got.Choices[0].Message.Content != want.Text || got.Choices[0].FinishReason != want.FinishReason {
				t.Fatalf("endpoint: %q (%s)\nruntime:  %q (%s)", got.Choices[0].Message.Content, got.Choices[0].FinishReason, want.Text, want.FinishReason)
			}
			if got.Usage.PromptTokens != len(wantPrompt) || got.Usage.CompletionTokens != want.CompletionTokens {
				t.Fatalf("usage %+v, the runtime counts %d prompt and %d completion tokens", got.Usage, len(wantPrompt), want.CompletionTokens)
			}
		}
		t.Logf("%q", want.Text)
	})

	// Those whole answers' replica reports its first token (the
	// runtime's, not the answer's first byte) as its cold start's last
	// phase.
	checkFirstPhase(t, c, "llm", api.PhaseFirstToken)

	t.Run("chat through the OpenAI path", func(t *testing.T) {
		var got chatAnswer
		body := strings.Replace(chatBody(prompt, 32, false), "{", `{"model": "llm", `, 1)
		if err := json.Unmarshal([]byte(a.ok(t, "POST", "/serving-endpoints/chat/completions", body)), &got); err != nil || got.Choices[0].Message.Content != want.Text {
			t.Fatalf("%+v %v", got, err)
		}
		if resp, b := a.do(t, "POST", "/serving-endpoints/completions", `{"model": "llm", "prompt": "x"}`); resp.StatusCode != 400 || !strings.Contains(b, "serves llm/v1/chat") {
			t.Fatalf("completions on a chat endpoint: %d %s", resp.StatusCode, b)
		}
		if resp, b := a.do(t, "POST", "/serving-endpoints/llm/invocations", `{"messages": [{"role": "user", "content": "x"}], "temperature": 9}`); resp.StatusCode != 400 || !strings.Contains(b, "temperature") {
			t.Fatalf("temperature 9: %d %s", resp.StatusCode, b)
		}
	})

	t.Run("chat streams token by token", func(t *testing.T) {
		body := chatBody(prompt, 32, true)
		resp, err := http.Post(a.base+"/serving-endpoints/llm/invocations", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || ct != "text/event-stream" {
			t.Fatalf("status %d, content type %q", resp.StatusCode, ct)
		}
		s := mustChatStream(t, resp.Body)
		streamID = resp.Header.Get("x-request-id")
		sent, answered = append(sent, body), append(answered, s.text)
		if s.text != want.Text || !s.done {
			t.Fatalf("stream %q (done %v), want %q", s.text, s.done, want.Text)
		}
		// One event per token, unless the reader fell behind (pieces that
		// wait are sent together): several, in any case.
		if s.events < 4 {
			t.Errorf("%d events with text for %d tokens: the answer did not stream", s.events, want.CompletionTokens)
		}
		if s.usage == nil || s.usage.Queued != len(wantPrompt) || s.usage.Running != want.CompletionTokens {
			t.Errorf("stream usage %+v", s.usage)
		}
	})

	t.Run("completions", func(t *testing.T) {
		res, err := direct.Generate(context.Background(), llm.Request{Prompt: "The cat", MaxTokens: 20}, func(string) error { return nil })
		if err != nil {
			t.Fatal(err)
		}
		var got chatAnswer
		b := a.ok(t, "POST", "/serving-endpoints/completions", `{"model": "llm-text", "prompt": "The cat", "max_tokens": 20, "temperature": 0}`)
		if err := json.Unmarshal([]byte(b), &got); err != nil || got.Object != "text_completion" || got.Choices[0].Text != res.Text {
			t.Fatalf("completion %s, want text %q", b, res.Text)
		}
	})

	t.Run("embeddings equal the runtime's", func(t *testing.T) {
		em, err := llm.Open(filepath.Join(storiesDir, "model.gguf"), llm.Config{LibDir: libs, Threads: 1, Embeddings: true})
		if err != nil {
			t.Fatal(err)
		}
		defer em.Close()
		inputs := []string{"Once upon a time", "The cat sat"}
		want, tokens, err := em.Embed(context.Background(), inputs)
		if err != nil {
			t.Fatal(err)
		}
		var got struct {
			Object string `json:"object"`
			Data   []struct {
				Index     int       `json:"index"`
				Embedding []float64 `json:"embedding"`
			} `json:"data"`
			Usage struct {
				PromptTokens int `json:"prompt_tokens"`
			} `json:"usage"`
		}
		b := a.ok(t, "POST", "/serving-endpoints/embeddings", `{"model": "llm-embed", "input": ["Once upon a time", "The cat sat"]}`)
		if err := json.Unmarshal([]byte(b), &got); err != nil || got.Object != "list" || len(got.Data) != 2 || got.Usage.PromptTokens != tokens {
			t.Fatalf("embeddings %s, want 2 of %d dimensions and %d tokens", b, len(want[0]), tokens)
		}
		for i := range want {
			if len(got.Data[i].Embedding) != len(want[i]) {
				t.Fatalf("input %d: %d dimensions, the runtime gives %d", i, len(got.Data[i].Embedding), len(want[i]))
			}
			for j, x := range want[i] {
				if d := got.Data[i].Embedding[j] - float64(x); d > 1e-5 || d < -1e-5 {
					t.Fatalf("input %d, dimension %d: %g through the endpoint, %g from the runtime", i, j, got.Data[i].Embedding[j], x)
				}
			}
		}
		if resp, b := a.do(t, "POST", "/serving-endpoints/llm-embed/invocations", `{"messages": [{"role": "user", "content": "x"}]}`); resp.StatusCode != 400 || !strings.Contains(b, "messages") {
			t.Errorf("chat on an embeddings endpoint: %d %s", resp.StatusCode, b)
		}
	})

	t.Run("8 concurrent streams each get their own sequence", func(t *testing.T) {
		prompts := []string{"Once upon", "The cat", "Tom had a ball", "One day", "Sue liked", "The sun was", "A little bird", "Max and Lily"}
		wants := make([]string, len(prompts))
		for i, p := range prompts {
			wants[i] = rt.chat(t, p, 48).Text
		}
		load := workerLoad(t, c, "llm")
		var peak int
		stop := make(chan struct{})
		polled := make(chan struct{})
		go func() {
			defer close(polled)
			for {
				select {
				case <-stop:
					return
				case <-time.After(5 * time.Millisecond):
				}
				if l, ok := load(); ok {
					peak = max(peak, l.Running)
				}
			}
		}()
		got := make([]string, len(prompts))
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i, p := range prompts {
			wg.Go(func() {
				<-start
				resp, err := http.Post(a.base+"/serving-endpoints/llm/invocations", "application/json", strings.NewReader(chatBody(p, 48, true)))
				if err != nil {
					t.Error(err)
					return
				}
				defer resp.Body.Close()
				s, err := readChatStream(resp.Body)
				if err != nil {
					t.Error(err) // not t.Fatal: this goroutine is not the test's
					return
				}
				got[i] = s.text
			})
		}
		close(start)
		wg.Wait()
		close(stop)
		<-polled
		for i := range prompts {
			if got[i] != wants[i] {
				t.Errorf("%q: stream %q, alone %q", prompts[i], got[i], wants[i])
			}
		}
		if peak < 2 {
			t.Errorf("the worker ran at most %d sequences at once", peak)
		}
		t.Logf("peak sequences running in the worker: %d", peak)
	})

	t.Run("a stream from zero replicas waits for the cold start", func(t *testing.T) {
		waitEntity(t, c, "llm", "scaled to zero", 60*time.Second, scaledToZero)
		resp, err := http.Post(a.base+"/serving-endpoints/llm/invocations", "application/json", strings.NewReader(chatBody(prompt, 32, true)))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		s := mustChatStream(t, resp.Body)
		if resp.StatusCode != 200 || s.text != want.Text || !s.done {
			t.Fatalf("from zero: %d %q (done %v), want %q", resp.StatusCode, s.text, s.done, want.Text)
		}
	})

	t.Run("a corrupt GGUF fails the deployment with the reason", func(t *testing.T) {
		mustCLI(t, bin, addr, "models", "upload", "broken", llmModelDir(t, api.TaskChat, true))
		out, err := cli(t, bin, addr, "endpoints", "create", "-f", endpointFile(t, "broken-ep", "broken", "1", "Small"), "--wait", "--timeout", "30s")
		if err == nil || !strings.Contains(out, "GGUF") {
			t.Fatalf("create --wait for a corrupt GGUF: err=%v, want a failure naming GGUF:\n%s", err, out)
		}
		ep, _, err := c.Endpoints().Get("broken-ep", nil)
		if err != nil {
			t.Fatal(err)
		}
		if st := ep.Config.ServedEntities[0].State; st.Deployment != api.DeploymentFailed || !strings.Contains(st.DeploymentStateMessage, "GGUF") {
			t.Errorf("state %+v, want DEPLOYMENT_FAILED naming the GGUF file", st)
		}
		t.Log(ep.Config.ServedEntities[0].State.DeploymentStateMessage)
	})

	t.Run("the inference table holds the requests and the assembled answers", func(t *testing.T) {
		var rows [][]string
		eventually.True(t, 60*time.Second, "the inference rows", func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			res, err := db.Query(ctx, "SELECT status_code, request, response FROM `ml_llm`.`llm_payload` FINAL")
			if err == nil {
				rows = res.Rows
			}
			return len(rows) >= 3+8+1
		})
		// The stream's body is also the one from zero replicas.
		streamed := 0
		for _, r := range rows {
			if r[1] == sent[2] {
				var got chatAnswer
				if json.Unmarshal([]byte(r[2]), &got) != nil || got.Object != "chat.completion" || got.Choices[0].Message.Content != want.Text || got.Usage.CompletionTokens != want.CompletionTokens {
					t.Errorf("a streamed request's row holds %s", r[2])
				}
				streamed++
			}
		}
		if streamed != 2 {
			t.Errorf("%d rows of the streamed requests, want 2", streamed)
		}
		// The usage rows count the runtime's tokens, streamed or not.
		for _, id := range []string{streamID, wholeID} {
			var got []string
			eventually.True(t, 60*time.Second, "the usage row of "+id, func() bool {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				res, err := db.Query(ctx, "SELECT toString(input_tokens), toString(output_tokens), toString(streaming) FROM "+loggers.UsageTable.Quoted()+" FINAL WHERE request_id = '"+id+"'")
				if err == nil && len(res.Rows) == 1 {
					got = res.Rows[0]
				}
				return got != nil
			})
			if got[0] != fmt.Sprint(len(wantPrompt)) || got[1] != fmt.Sprint(want.CompletionTokens) {
				t.Errorf("usage row of %s: %v, the runtime counts %d prompt and %d completion tokens", id, got, len(wantPrompt), want.CompletionTokens)
			}
		}
	})

	t.Run("the CLI's --pt goes through the provisioned-throughput routes", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "pt.json")
		writeFile(t, p, `{"name": "llm-pt", "config": {"served_entities": [{"entity_name": "stories", "entity_version": "1", "workload_size": "Small"}]}}`)
		if out, err := cli(t, bin, addr, "endpoints", "create", "--pt", "-f", p); err == nil || !strings.Contains(out, "provisioned_model_units: required") {
			t.Fatalf("create --pt without units: %v\n%s", err, out)
		}
		writeFile(t, p, `{"name": "llm-pt", "config": {"served_entities": [{"entity_name": "stories", "entity_version": "1", "provisioned_model_units": 1, "burst_scaling_enabled": false}]}}`)
		out := mustCLI(t, bin, addr, "endpoints", "create", "--pt", "-f", p)
		var ep api.Endpoint
		if err := json.Unmarshal([]byte(out), &ep); err != nil || ep.Config == nil || len(ep.Config.ServedEntities) != 1 ||
			ep.Config.ServedEntities[0].ProvisionedModelUnits == nil || *ep.Config.ServedEntities[0].ProvisionedModelUnits != 1 {
			t.Fatalf("create --pt answered %s (%v), want one entity of 1 unit", out, err)
		}
		writeFile(t, p, `{"served_entities": [{"entity_name": "stories", "entity_version": "1", "workload_size": "Small"}]}`)
		if out, err := cli(t, bin, addr, "endpoints", "update-config", "llm-pt", "--pt", "-f", p); err == nil || !strings.Contains(out, "provisioned_model_units: required") {
			t.Errorf("update-config --pt without units: %v\n%s", err, out)
		}
		mustCLI(t, bin, addr, "endpoints", "delete", "llm-pt")
	})
	dev.stop(t)
}

func mustFormat(t testing.TB, m *llm.Model, content string) string {
	t.Helper()
	p, err := m.FormatChat([]llm.Message{{Role: "user", Content: content}})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// workerLoad reads GET /load of the endpoint's one replica.
func workerLoad(t testing.TB, c *api.Client, endpoint string) func() (api.TokenLoad, bool) {
	t.Helper()
	rt, _, err := c.Routes().Get(nil)
	if err != nil {
		t.Fatal(err)
	}
	var worker string
	for _, ep := range rt.Endpoints {
		if ep.Name == endpoint && len(ep.Entities) > 0 && len(ep.Entities[0].Replicas) > 0 {
			worker = ep.Entities[0].Replicas[0].Addr
		}
	}
	if worker == "" {
		t.Fatalf("endpoint %s has no replica", endpoint)
	}
	client := &http.Client{Timeout: time.Second}
	return func() (api.TokenLoad, bool) {
		var l api.TokenLoad
		resp, err := client.Get("http://" + worker + "/load")
		if err != nil {
			return l, false
		}
		defer resp.Body.Close()
		return l, json.NewDecoder(resp.Body).Decode(&l) == nil
	}
}
