package llm

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/internal/llamatest"
	"github.com/gantry/gantry/worker"
)

func newRuntime(t *testing.T, task string) *Runtime {
	t.Helper()
	rt, err := OpenRuntime("testdata/stories", map[string]any{"model_file": "model.gguf", "task": task}, Config{LibDir: llamatest.LibDir(t), Threads: 1, Context: 256})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	return rt
}

func serve(rt *Runtime, body string, header ...string) *httptest.ResponseRecorder {
	r := httptest.NewRequest("POST", "/invocations", strings.NewReader(body))
	for i := 0; i+1 < len(header); i += 2 {
		r.Header.Set(header[i], header[i+1])
	}
	w := httptest.NewRecorder()
	rt.ServeInvocation(w, r)
	return w
}

// Two prompts with n 2 are four choices, each the greedy text of its
// prompt, and usage counts every one.
func TestCompletionsChoices(t *testing.T) {
	rt := newRuntime(t, api.TaskCompletions)
	w := serve(rt, `{"prompt": ["The cat", "One day"], "n": 2, "max_tokens": 12, "temperature": 0}`)
	var got struct {
		Choices []struct {
			Index int    `json:"index"`
			Text  string `json:"text"`
		} `json:"choices"`
		Usage struct {
			CompletionTokens int `json:"completion_tokens"`
		} `json:"usage"`
	}
	if w.Code != 200 || json.Unmarshal(w.Body.Bytes(), &got) != nil || len(got.Choices) != 4 {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
	for i, p := range []string{"The cat", "The cat", "One day", "One day"} {
		res, _ := generate(t, rt.Model(), Request{Prompt: p, MaxTokens: 12})
		if got.Choices[i].Index != i || got.Choices[i].Text != res.Text {
			t.Errorf("choice %d: %+v, want %q", i, got.Choices[i], res.Text)
		}
	}
	if got.Usage.CompletionTokens != 4*12 {
		t.Errorf("usage %+v", got.Usage)
	}
}

// A stream of two choices interleaves their chunks by index and ends
// with a usage chunk of its own and [DONE].
func TestStreamOfTwoChoices(t *testing.T) {
	rt := newRuntime(t, api.TaskChat)
	w := serve(rt, `{"messages": [{"role": "user", "content": "Once upon"}], "n": 2, "max_tokens": 10, "temperature": 0, "stream": true}`)
	if w.Code != 200 || w.Header().Get("Content-Type") != "text/event-stream" {
		t.Fatalf("%d %v", w.Code, w.Header())
	}
	text := map[int]string{}
	var usage, done bool
	for _, ev := range strings.Split(strings.TrimSpace(w.Body.String()), "\n\n") {
		data := strings.TrimPrefix(ev, "data: ")
		if data == "[DONE]" {
			done = true
			continue
		}
		var c struct {
			Choices []struct {
				Index int
				Delta struct{ Content string }
			}
			Usage *struct{ CompletionTokens int } `json:"usage"`
		}
		if err := json.Unmarshal([]byte(data), &c); err != nil {
			t.Fatalf("event %q", ev)
		}
		for _, ch := range c.Choices {
			text[ch.Index] += ch.Delta.Content
		}
		if c.Usage != nil && len(c.Choices) == 0 {
			usage = true
		}
	}
	if len(text) != 2 || text[0] == "" || text[0] != text[1] || !usage || !done {
		t.Fatalf("choices %v, usage chunk %v, [DONE] %v:\n%s", text, usage, done, w.Body)
	}
}

func TestRefusals(t *testing.T) {
	rt := newRuntime(t, api.TaskChat)
	for body, want := range map[string]string{
		`{"prompt": "x"}`: "prompt: not a field",
		`{"messages": [{"role": "user", "content": "x"}], "extra_params": {"top_k": 3}}`:                         "extra_params.top_k",
		`{"messages": [{"role": "user", "content": "x"}], "n": 3, "stream": true, "extra_params": {"top_p": 2}}`: "extra_params.top_p",
	} {
		if w := serve(rt, body); w.Code != 400 || !strings.Contains(w.Body.String(), want) {
			t.Errorf("%s: %d %s, want 400 naming %s", body, w.Code, w.Body, want)
		}
	}
	long := strings.Repeat("the dog ran ", 200)
	if w := serve(rt, `{"messages": [{"role": "user", "content": "`+long+`"}], "stream": true}`); w.Code != 400 || !strings.Contains(w.Body.String(), "the prompt is") {
		t.Errorf("a stream with a prompt over the context: %d %s, want 400 before the stream", w.Code, w.Body)
	}
	w := serve(rt, `{"messages": [{"role": "user", "content": "x"}]}`, worker.TaskHeader, api.TaskEmbeddings)
	if w.Code != http.StatusBadRequest {
		t.Errorf("embeddings path to a chat model: %d %s", w.Code, w.Body)
	}
}

// FirstToken is the runtime's first generated token, for the worker's
// /ping: none before a request, then the first request's arrival and a
// token before its whole answer was back; a second request changes
// nothing.
func TestFirstToken(t *testing.T) {
	rt := newRuntime(t, api.TaskChat)
	if _, _, ok := rt.FirstToken(); ok {
		t.Fatal("a first token before any request")
	}
	sent := time.Now()
	if w := serve(rt, `{"messages": [{"role": "user", "content": "Once upon"}], "max_tokens": 8, "temperature": 0}`); w.Code != 200 {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
	back := time.Now()
	arrived, at, ok := rt.FirstToken()
	if !ok || arrived.Before(sent) || at.Before(arrived) || at.After(back) {
		t.Fatalf("first token %v, arrived %v, at %v after the request was sent; its answer back at %v",
			ok, arrived.Sub(sent), at.Sub(sent), back.Sub(sent))
	}
	serve(rt, `{"messages": [{"role": "user", "content": "One day"}], "max_tokens": 4, "temperature": 0}`)
	if a2, at2, _ := rt.FirstToken(); !a2.Equal(arrived) || !at2.Equal(at) {
		t.Errorf("the second request moved the first token: %v %v, was %v %v", a2, at2, arrived, at)
	}
}
