package llm

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/internal/llamatest"
)

// The tests run llama.cpp for real on stories260K (llama.cpp's own CI
// model, 1.2 MB), with the libraries `make llama-libs` puts in bin/llama.

const testModel = "testdata/stories/model.gguf"

var (
	shared     *Model
	sharedOnce sync.Once
	sharedErr  error
)

// model is one stories260K shared by the tests: loading is cheap, but
// each context costs its KV cache.
func model(t testing.TB) *Model {
	t.Helper()
	sharedOnce.Do(func() {
		shared, sharedErr = Open(testModel, Config{LibDir: llamatest.LibDir(t), Threads: 1, Context: 256})
	})
	if sharedErr != nil {
		t.Fatal(sharedErr)
	}
	return shared
}

func generate(t testing.TB, m *Model, r Request) (Result, []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var pieces []string
	res, err := m.Generate(ctx, r, func(s string) error {
		pieces = append(pieces, s)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return res, pieces
}

func TestGreedyIsRepeatable(t *testing.T) {
	m := model(t)
	r := Request{Prompt: "Once upon a time", MaxTokens: 40}
	a, pieces := generate(t, m, r)
	b, _ := generate(t, m, r)
	if a.Text == "" || a.CompletionTokens == 0 {
		t.Fatalf("no text: %+v", a)
	}
	if a.Text != b.Text {
		t.Fatalf("greedy decoding differs:\n%q\n%q", a.Text, b.Text)
	}
	if got := strings.Join(pieces, ""); got != a.Text {
		t.Fatalf("streamed pieces %q, result %q", got, a.Text)
	}
	if a.FinishReason != "length" || a.CompletionTokens != 40 {
		t.Fatalf("finish %q after %d tokens, want length after 40", a.FinishReason, a.CompletionTokens)
	}
	t.Logf("%q", a.Text)
}

func TestUsageIsTheModelsTokenCount(t *testing.T) {
	m := model(t)
	prompt := "Lily went to the park"
	toks, err := m.Tokenize(prompt)
	if err != nil {
		t.Fatal(err)
	}
	before := m.Tokens()
	res, _ := generate(t, m, Request{Prompt: prompt, MaxTokens: 17})
	if res.PromptTokens != len(toks) {
		t.Errorf("prompt tokens = %d, the tokenizer says %d", res.PromptTokens, len(toks))
	}
	if got := int(m.Tokens() - before); got != res.CompletionTokens {
		t.Errorf("completion tokens = %d, the engine generated %d", res.CompletionTokens, got)
	}
}

func TestSamplingWithASeedIsRepeatable(t *testing.T) {
	m := model(t)
	seed := uint32(7)
	r := Request{Prompt: "The dog", MaxTokens: 30, Temperature: 1.5, TopP: 0.95, Seed: &seed}
	a, _ := generate(t, m, r)
	b, _ := generate(t, m, r)
	if a.Text != b.Text {
		t.Fatalf("same seed, different text:\n%q\n%q", a.Text, b.Text)
	}
	greedy, _ := generate(t, m, Request{Prompt: "The dog", MaxTokens: 30})
	other := uint32(8)
	r.Seed = &other
	c, _ := generate(t, m, r)
	if a.Text == greedy.Text && c.Text == greedy.Text {
		t.Fatalf("temperature 1.5 gave the greedy text for two seeds: %q", a.Text)
	}
}

func TestStopSequence(t *testing.T) {
	m := model(t)
	full, _ := generate(t, m, Request{Prompt: "Once upon a time", MaxTokens: 40})
	// Stop at a word from the middle of the greedy answer.
	words := strings.Fields(full.Text)
	if len(words) < 6 {
		t.Fatalf("answer too short to cut: %q", full.Text)
	}
	stop := words[4]
	want := full.Text[:strings.Index(full.Text, stop)]
	res, pieces := generate(t, m, Request{Prompt: "Once upon a time", MaxTokens: 40, Stop: []string{"zzz", stop}})
	if res.Text != want || res.FinishReason != "stop" {
		t.Fatalf("stop %q: got %q (%s), want %q", stop, res.Text, res.FinishReason, want)
	}
	if strings.Join(pieces, "") != want {
		t.Fatalf("streamed %q, want %q", strings.Join(pieces, ""), want)
	}
}

// Eight sequences in one batch give each the text it gets alone: the
// batch keeps them apart.
func TestConcurrentSequencesAreIndependent(t *testing.T) {
	m := model(t)
	prompts := []string{"Once upon a time", "The cat", "Tom had a ball", "One day", "Sue liked", "The sun was", "A little bird", "Max and Lily"}
	want := make([]string, len(prompts))
	for i, p := range prompts {
		r, _ := generate(t, m, Request{Prompt: p, MaxTokens: 24})
		want[i] = r.Text
	}
	var wg sync.WaitGroup
	got := make([]string, len(prompts))
	var peak int
	var mu sync.Mutex
	start := make(chan struct{})
	for i, p := range prompts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			res, err := m.Generate(ctx, Request{Prompt: p, MaxTokens: 24}, func(string) error {
				_, running := m.Sequences()
				mu.Lock()
				peak = max(peak, running)
				mu.Unlock()
				return nil
			})
			if err != nil {
				t.Error(err)
			}
			got[i] = res.Text
		}()
	}
	close(start)
	wg.Wait()
	for i := range prompts {
		if got[i] != want[i] {
			t.Errorf("%q batched: %q, alone: %q", prompts[i], got[i], want[i])
		}
	}
	if peak < 2 {
		t.Errorf("at most %d sequences ran at once; the batch should hold several", peak)
	}
	t.Logf("peak running sequences: %d", peak)
}

func TestCancelledRequestFreesItsSequence(t *testing.T) {
	m := model(t)
	ctx, cancel := context.WithCancel(context.Background())
	n := 0
	_, err := m.Generate(ctx, Request{Prompt: "Once", MaxTokens: 200}, func(string) error {
		n++
		if n == 3 {
			cancel()
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if q, r := m.Sequences(); q == 0 && r == 0 {
			break
		}
		if time.Now().After(deadline) {
			q, r := m.Sequences()
			t.Fatalf("queued %d, running %d after the client left", q, r)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// And the model still answers.
	generate(t, m, Request{Prompt: "Once", MaxTokens: 5})
}

func TestPromptLongerThanTheContext(t *testing.T) {
	m := model(t)
	_, err := m.Generate(context.Background(), Request{Prompt: strings.Repeat("the dog ran ", 200)}, func(string) error { return nil })
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != api.ErrInvalidParameterValue {
		t.Fatalf("err = %v, want a 400", err)
	}
	if _, err := m.Generate(context.Background(), Request{Prompt: "a\x00b"}, func(string) error { return nil }); !errors.As(err, &ae) {
		t.Fatalf("NUL in the prompt: err = %v, want a 400", err)
	}
}

func TestChatTemplate(t *testing.T) {
	m := model(t)
	p, err := m.FormatChat([]Message{{"system", "Be brief."}, {"user", "Once upon"}})
	if err != nil {
		t.Fatal(err)
	}
	// stories260K has no template of its own.
	want := "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nOnce upon<|im_end|>\n<|im_start|>assistant\n"
	if m.Template() != "chatml" || p != want {
		t.Fatalf("template %q rendered %q, want chatml's %q", m.Template(), p, want)
	}
}

func TestCorruptGGUF(t *testing.T) {
	dir := t.TempDir()
	good, err := os.ReadFile(testModel)
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{
		"not-gguf":  []byte("this is not a model"),
		"truncated": good[:len(good)/3],
	} {
		p := filepath.Join(dir, name+".gguf")
		os.WriteFile(p, data, 0o644)
		_, err := Open(p, Config{LibDir: llamatest.LibDir(t), Threads: 1})
		if err == nil {
			t.Fatalf("%s: Open succeeded", name)
		}
		if !strings.Contains(err.Error(), "GGUF") {
			t.Errorf("%s: %v; the message should say the file is no usable GGUF", name, err)
		}
		t.Logf("%s: %v", name, err)
	}
}

// GPU layers with the CPU build (or a CUDA build that finds no GPU) are a
// load failure that says what is missing, not a silent run on the CPU.
// On a machine where this build finds a GPU the test has nothing to check.
func TestGPULayersWithoutGPU(t *testing.T) {
	model(t) // loads the libraries
	if GPU() {
		t.Skipf("this build finds a GPU: %v", Devices())
	}
	_, err := Open(testModel, Config{LibDir: llamatest.LibDir(t), Threads: 1, Context: 256, GPULayers: -1})
	if err == nil {
		t.Fatal("Open with GPU layers and no GPU succeeded")
	}
	for _, want := range []string{"finds no GPU", "linux-x64-cuda@3.21.1", "libcudart.so.13"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

func TestEmbeddings(t *testing.T) {
	m, err := Open(testModel, Config{LibDir: llamatest.LibDir(t), Threads: 2, Context: 128, Embeddings: true})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	vecs, tokens, err := m.Embed(context.Background(), []string{"Once upon a time", "The cat sat", "Once upon a time"})
	if err != nil {
		t.Fatal(err)
	}
	if len(vecs) != 3 || len(vecs[0]) == 0 || tokens == 0 {
		t.Fatalf("%d vectors of %d, %d tokens", len(vecs), len(vecs[0]), tokens)
	}
	var norm float64
	for _, x := range vecs[0] {
		norm += float64(x) * float64(x)
	}
	if math.Abs(norm-1) > 1e-4 {
		t.Errorf("|v|² = %g, want 1", norm)
	}
	if !equal(vecs[0], vecs[2]) || equal(vecs[0], vecs[1]) {
		t.Errorf("same input should give the same vector and another input another")
	}
	if _, err := m.Generate(context.Background(), Request{Prompt: "x"}, func(string) error { return nil }); err == nil {
		t.Error("an embeddings model generated text")
	}
}

func equal(a, b []float32) bool {
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return len(a) == len(b)
}
