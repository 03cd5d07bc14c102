package clients

// The OpenAI Go SDK (github.com/openai/openai-go/v3) against `gantry dev`
// with base_url = <gantry>/serving-endpoints and model = the endpoint's
// name, as Databricks documents it: chat, a stream, completions and
// embeddings on external endpoints backed by the provider double
// (external/providertest/double, a process of its own).

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// startDouble builds and runs the provider double accepting key, and
// returns its base URL.
func startDouble(t *testing.T, key string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "double")
	build := exec.Command("go", "build", "-o", bin, "./external/providertest/double")
	build.Dir = repoRoot
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build the double: %v\n%s", err, out)
	}
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "GANTRY_PROVIDER_DOUBLE_KEY="+key)
	stdin, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); cmd.Process.Kill(); cmd.Wait() })
	line, _ := bufio.NewReader(out).ReadString('\n')
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "listening ")
	if !ok {
		t.Fatalf("the double said %q", line)
	}
	return "http://" + addr
}

func TestOpenAISDK(t *testing.T) {
	if testing.Short() {
		t.Skip("builds gantry and the provider double and runs gantry dev; run without -short")
	}
	const key = "sk-openai-sdk-test-31c7e0"
	double := startDouble(t, key)
	bin := buildGantry(t)
	addr, devLog, dataDir := startDev(t, bin)
	base := "http://" + addr
	token := adminToken(t, dataDir)
	post := func(path, body string) (int, string) {
		req, _ := http.NewRequest("POST", base+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	for _, ep := range []struct{ name, task string }{{"chat", "chat"}, {"comp", "completions"}, {"emb", "embeddings"}} {
		body := `{"name": "` + ep.name + `", "config": {"served_entities": [{"name": "m", "external_model": {"name": "gpt-x", "provider": "openai",
			"task": "llm/v1/` + ep.task + `", "openai_config": {"openai_api_key_plaintext": "` + key + `", "openai_api_base": "` + double + `/v1"}}}]}}`
		if st, b := post("/api/2.0/serving-endpoints", body); st != 200 {
			t.Fatalf("create %s: %d %s", ep.name, st, b)
		}
		// The activator knows the endpoint once the route table that names
		// it is published: until then its invocations are 404.
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			if st, _ := post("/serving-endpoints/"+ep.name+"/invocations", `{}`); st != 404 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("endpoint %s not routed after 30 s", ep.name)
			}
		}
	}

	client := openai.NewClient(option.WithBaseURL(base+"/serving-endpoints/"), option.WithAPIKey(token), option.WithMaxRetries(0))
	ctx := context.Background()

	t.Run("Chat.Completions.New", func(t *testing.T) {
		r, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
			Model: "chat", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hello there")},
			MaxTokens: openai.Int(64),
		})
		if ae := (*openai.Error)(nil); errors.As(err, &ae) {
			t.Fatalf("%v\n%s", err, ae.DumpResponse(true))
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Choices) != 1 || r.Choices[0].Message.Content != "echo: hello there" || r.Usage.TotalTokens == 0 {
			t.Fatalf("%+v", r)
		}
	})
	t.Run("Chat.Completions.NewStreaming", func(t *testing.T) {
		s := client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
			Model: "chat", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("a b c")},
		})
		acc, chunks := openai.ChatCompletionAccumulator{}, 0
		for s.Next() {
			acc.AddChunk(s.Current())
			chunks++
		}
		if err := s.Err(); err != nil {
			t.Fatal(err)
		}
		if chunks < 4 || len(acc.Choices) != 1 || acc.Choices[0].Message.Content != "echo: a b c" {
			t.Fatalf("%d chunks, %+v", chunks, acc.ChatCompletion)
		}
	})
	t.Run("Completions.New", func(t *testing.T) {
		r, err := client.Completions.New(ctx, openai.CompletionNewParams{
			Model: "comp", Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("once upon")}, MaxTokens: openai.Int(16),
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Choices) != 1 || !strings.Contains(r.Choices[0].Text, "once upon") {
			t.Fatalf("%+v", r)
		}
	})
	t.Run("Embeddings.New", func(t *testing.T) {
		r, err := client.Embeddings.New(ctx, openai.EmbeddingNewParams{
			Model: "emb", Input: openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: []string{"a", "b"}},
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Data) != 2 || len(r.Data[0].Embedding) == 0 {
			t.Fatalf("%+v", r)
		}
	})
	t.Run("wrong model", func(t *testing.T) {
		_, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
			Model: "nope", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("x")},
		})
		var ae *openai.Error
		if !errors.As(err, &ae) || ae.StatusCode != 404 {
			t.Fatalf("%v", err)
		}
	})
	if strings.Contains(devLog.String(), key) {
		t.Error("gantry dev's log holds the key")
	}
}
