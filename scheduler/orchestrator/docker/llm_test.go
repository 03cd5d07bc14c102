package docker

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/internal/dockertest"
	"github.com/gantry/gantry/internal/eventually"
	"github.com/gantry/gantry/internal/llamatest"
	"github.com/gantry/gantry/worker/llm"
)

// stories260K, llama.cpp's CI model, as the GGUF runtime's tests serve it.
const storiesDir = "../../../worker/llm/testdata/stories"

// A GGUF model runs in the LLM image, which has llama.cpp's libraries and
// libstdc++ (the scratch worker image has neither), and its greedy chat
// answer is the text the same runtime gives in this process.
func TestGGUFModelRunsInLLMImage(t *testing.T) {
	img := dockertest.BuildLLMImage(t)
	d, _, cli := newDriver(t, Config{LLMImage: img, PythonImage: "gantry-worker-python:not-this-one"})
	dir, err := filepath.Abs(storiesDir)
	if err != nil {
		t.Fatal(err)
	}
	s := spec("dep-gguf", dir, 1)
	s.Flavors = []string{"gguf"}
	if err := d.Ensure(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, time.Minute, "a ready replica", func() bool {
		if f := d.Status("dep-gguf").Failure; f != "" {
			logs, _ := d.Logs("dep-gguf")
			t.Fatalf("start failed: %s\n%s", f, logs)
		}
		return d.Status("dep-gguf").Ready() == 1
	})
	cs := running(t, cli, "dep-gguf")
	if len(cs) != 1 || cs[0].Image != img {
		t.Fatalf("containers %+v, want one from %s", cs, img)
	}
	if strings.Contains(cs[0].Command, "--llm-gpu-layers") {
		t.Errorf("command %q offloads layers on a CPU workload", cs[0].Command)
	}

	const content, maxTokens = "Once upon a time", 32
	req, _ := json.Marshal(map[string]any{
		"messages":   []map[string]string{{"role": "user", "content": content}},
		"max_tokens": maxTokens, "temperature": 0,
	})
	resp, err := http.Post("http://"+d.Status("dep-gguf").Instances[0].Addr+"/invocations", "application/json", bytes.NewReader(req))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var got struct {
		Object  string `json:"object"`
		Choices []struct {
			Message struct{ Content string } `json:"message"`
		} `json:"choices"`
		Usage struct {
			PromptTokens     int `json:"prompt_tokens"`
			CompletionTokens int `json:"completion_tokens"`
		} `json:"usage"`
	}
	if resp.StatusCode != 200 || json.Unmarshal(body, &got) != nil || len(got.Choices) != 1 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}

	// The same runtime, libraries and settings (the worker's defaults,
	// one thread as on these 2 cores) in this process.
	m, err := llm.Open(filepath.Join(dir, "model.gguf"), llm.Config{LibDir: llamatest.BuildDir(t), Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	prompt, err := m.FormatChat([]llm.Message{{Role: "user", Content: content}})
	if err != nil {
		t.Fatal(err)
	}
	want, err := m.Generate(context.Background(), llm.Request{Prompt: prompt, MaxTokens: maxTokens}, func(string) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	if want.Text == "" {
		t.Fatal("the runtime in this process generated nothing")
	}
	if g := got.Choices[0].Message.Content; got.Object != "chat.completion" || g != want.Text {
		t.Errorf("the container answered %s %q, the runtime in this process %q", got.Object, g, want.Text)
	}
	if got.Usage.PromptTokens != want.PromptTokens || got.Usage.CompletionTokens != want.CompletionTokens {
		t.Errorf("usage %+v, the runtime in this process counted %d prompt and %d completion tokens", got.Usage, want.PromptTokens, want.CompletionTokens)
	}
	t.Logf("greedy answer from the container: %q", got.Choices[0].Message.Content)
}

// Without the LLM images, a GGUF model fails naming the image it needs and
// how to build it: the CPU image on CPU, the CUDA one on a GPU type. The
// scratch worker image would fail later and less clearly (no libstdc++).
func TestGGUFModelMissingImage(t *testing.T) {
	d, _, _ := newDriver(t, Config{LLMImage: "gantry-worker-llm:no-such-tag", LLMGPUImage: "gantry-worker-llm-gpu:no-such-tag"})
	dir, err := filepath.Abs(storiesDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		id, workloadType, image, make string
	}{
		{"dep-gguf-cpu", api.WorkloadCPU, "gantry-worker-llm:no-such-tag", "make llm-image"},
		{"dep-gguf-gpu", api.WorkloadGPUSmall, "gantry-worker-llm-gpu:no-such-tag", "make llm-gpu-image"},
	} {
		s := spec(c.id, dir, 1)
		s.Flavors, s.WorkloadType = []string{"gguf"}, c.workloadType
		d.Ensure(context.Background(), s)
		eventually.True(t, 30*time.Second, "a failed start", func() bool { return d.Status(c.id).Failures >= 1 })
		if f := d.Status(c.id).Failure; !strings.Contains(f, c.image) || !strings.Contains(f, c.make) {
			t.Errorf("%s: Failure = %q, want it to name %s and `%s`", c.id, f, c.image, c.make)
		}
	}
}
