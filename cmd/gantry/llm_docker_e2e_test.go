package main

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gantry/gantry/internal/dockertest"
	"github.com/gantry/gantry/scheduler/orchestrator/docker"
	"github.com/gantry/gantry/worker/llm"
)

// stories260K under `gantry dev --driver docker`: its worker runs in the
// LLM image that --llm-image names (the scratch worker image could not
// load llama.cpp), and chat through the activator, whole and streamed,
// gives the greedy text of the same runtime in this process.
func TestDockerLLMEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the LLM worker image and runs a container; run without -short")
	}
	cli := dockertest.Client(t)
	img := dockertest.BuildLLMImage(t)
	direct, err := llm.Open(filepath.Join(storiesDir, "model.gguf"), llm.Config{LibDir: llamaLibDir(t), Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	const prompt, maxTokens = "Once upon", 32
	want := directRuntime{direct}.chat(t, prompt, maxTokens)

	bin, addr, dataDir := buildGantry(t), freeAddr(t), t.TempDir()
	startDockerDev(t, bin, addr, dataDir, append([]string{"--llm-image", img}, shortWindows...)...)
	a := &answers{base: "http://" + addr}
	mustCLI(t, bin, addr, "models", "upload", "stories", storiesDir)
	a.ok(t, "POST", "/api/2.0/serving-endpoints", `{"name": "llm-docker", "config": {"served_entities": [{"entity_name": "stories", "entity_version": "1",
		"workload_size": "Small", "replica_concurrency": 8, "scale_to_zero_enabled": true}]}}`)
	if out := mustCLI(t, bin, addr, "endpoints", "wait", "llm-docker"); !strings.Contains(out, "READY") {
		t.Fatalf("wait: %s", out)
	}
	cs := dockertest.Containers(t, cli, docker.LabelOwner, dataDir)
	if len(cs) != 1 || cs[0].Image != img {
		t.Fatalf("containers %+v, want one from %s", cs, img)
	}

	var got chatAnswer
	resp, b := a.do(t, "POST", "/serving-endpoints/llm-docker/invocations", chatBody(prompt, maxTokens, false))
	if resp.StatusCode != 200 || json.Unmarshal([]byte(b), &got) != nil || len(got.Choices) != 1 {
		t.Fatalf("chat: %d %s", resp.StatusCode, b)
	}
	if got.Choices[0].Message.Content != want.Text || got.Usage.CompletionTokens != want.CompletionTokens {
		t.Errorf("container through the activator: %q (%d tokens)\nruntime in this process:       %q (%d tokens)",
			got.Choices[0].Message.Content, got.Usage.CompletionTokens, want.Text, want.CompletionTokens)
	}

	sresp, err := http.Post(a.base+"/serving-endpoints/llm-docker/invocations", "application/json", strings.NewReader(chatBody(prompt, maxTokens, true)))
	if err != nil {
		t.Fatal(err)
	}
	defer sresp.Body.Close()
	if sresp.StatusCode != 200 || !strings.HasPrefix(sresp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("stream: %d %s", sresp.StatusCode, sresp.Header.Get("Content-Type"))
	}
	s := mustChatStream(t, sresp.Body)
	if s.text != want.Text || !s.done || s.events < 2 {
		t.Errorf("stream: %q in %d events (done %v), want %q in several", s.text, s.events, s.done, want.Text)
	}
	t.Logf("%q", want.Text)
	mustCLI(t, bin, addr, "endpoints", "delete", "llm-docker")
}
