// Command fakeopenai is a small OpenAI-compatible server for tests: it
// answers /v1/chat/completions, /v1/completions and /v1/embeddings, streams
// with server-sent events, and exposes vLLM's metric names. Each request
// generates max_tokens words (default 8), one every FAKE_TOKEN_DELAY, with
// at most FAKE_MAX_RUNNING (default 4) sequences running at once; the rest
// wait, counted in vllm:num_requests_waiting.
//
// Environment: PORT (required), FAKE_LOAD_DELAY (time before /health
// answers 200), FAKE_EXIT (exit at start with this message and status 3),
// FAKE_TOKEN_DELAY, FAKE_MAX_RUNNING. A user message "__exit__" makes the
// process exit at once, for supervision tests; GET /env/NAME answers the
// variable's value, for the tests of what the server's environment holds.
//
// For the AI gateway's tests: a last message "echo: TEXT" is answered with
// TEXT as the server received it, 4 bytes a token (so that a word spans
// chunks of a stream); with FAKE_JUDGE_UNSAFE=WORD the server is a judge
// that answers UNSAFE to a request whose messages contain WORD, else SAFE.
package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

var (
	loaded            atomic.Bool
	waiting, running  atomic.Int64
	generated, served atomic.Int64
	tokenDelay        time.Duration
	slots             chan struct{}
)

func main() {
	if msg := os.Getenv("FAKE_EXIT"); msg != "" {
		fmt.Fprintln(os.Stderr, msg)
		os.Exit(3)
	}
	port := os.Getenv("PORT")
	if port == "" {
		fmt.Fprintln(os.Stderr, "fakeopenai: PORT is not set")
		os.Exit(2)
	}
	tokenDelay, _ = time.ParseDuration(os.Getenv("FAKE_TOKEN_DELAY"))
	n, _ := strconv.Atoi(os.Getenv("FAKE_MAX_RUNNING"))
	if n < 1 {
		n = 4
	}
	slots = make(chan struct{}, n)
	delay, _ := time.ParseDuration(os.Getenv("FAKE_LOAD_DELAY"))
	time.AfterFunc(delay, func() { loaded.Store(true) })

	http.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		if !loaded.Load() {
			http.Error(w, `{"error":{"code":503,"message":"Loading model"}}`, 503)
			return
		}
		fmt.Fprint(w, `{"status":"ok"}`)
	})
	http.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{model_name=\"fake\"} %d\n", waiting.Load())
		fmt.Fprintf(w, "# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{model_name=\"fake\"} %d\n", running.Load())
		fmt.Fprintf(w, "# TYPE vllm:generation_tokens_total counter\nvllm:generation_tokens_total{model_name=\"fake\"} %d\n", generated.Load())
		fmt.Fprintf(w, "fake_requests_total %d\n", served.Load())
	})
	http.HandleFunc("GET /env/{name}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, os.Getenv(r.PathValue("name")))
	})
	http.HandleFunc("POST /v1/chat/completions", func(w http.ResponseWriter, r *http.Request) { generate(w, r, true) })
	http.HandleFunc("POST /v1/completions", func(w http.ResponseWriter, r *http.Request) { generate(w, r, false) })
	http.HandleFunc("POST /v1/embeddings", embeddings)
	fmt.Fprintln(os.Stderr, "fakeopenai: listening on", port)
	if err := http.ListenAndServe("127.0.0.1:"+port, nil); err != nil {
		fmt.Fprintln(os.Stderr, "fakeopenai:", err)
		os.Exit(1)
	}
}

type request struct {
	Model    string `json:"model"`
	Messages []struct {
		Role    string `json:"role"`
		Content string `json:"content"`
	} `json:"messages"`
	Prompt        any  `json:"prompt"`
	MaxTokens     *int `json:"max_tokens"`
	Stream        bool `json:"stream"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
}

func generate(w http.ResponseWriter, r *http.Request, chat bool) {
	var req request
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, `{"error":{"message":"bad json"}}`, 400)
		return
	}
	for _, m := range req.Messages {
		if m.Content == "__exit__" {
			os.Exit(1)
		}
	}
	n := 8
	if req.MaxTokens != nil {
		n = *req.MaxTokens
	}
	var fixed []string // the tokens of a fixed answer, when not "wN "
	if word := os.Getenv("FAKE_JUDGE_UNSAFE"); word != "" {
		fixed = []string{"SAFE"}
		for _, m := range req.Messages {
			if strings.Contains(m.Content, word) {
				fixed = []string{"UNSAFE"}
			}
		}
	} else if k := len(req.Messages); k > 0 && strings.HasPrefix(req.Messages[k-1].Content, "echo: ") {
		text := strings.TrimPrefix(req.Messages[k-1].Content, "echo: ")
		for len(text) > 4 {
			fixed, text = append(fixed, text[:4]), text[4:]
		}
		fixed = append(fixed, text)
	}
	if fixed != nil {
		n = len(fixed)
	}
	token := func(i int) string {
		if fixed != nil {
			return fixed[i]
		}
		return fmt.Sprintf("w%d ", i)
	}
	served.Add(1)
	waiting.Add(1)
	select {
	case slots <- struct{}{}:
	case <-r.Context().Done():
		waiting.Add(-1)
		return
	}
	waiting.Add(-1)
	running.Add(1)
	defer func() { running.Add(-1); <-slots }()

	prompt := 3
	obj, chunkObj := "text_completion", "text_completion"
	if chat {
		obj, chunkObj = "chat.completion", "chat.completion.chunk"
	}
	if req.Stream {
		w.Header().Set("Content-Type", "text/event-stream")
		rc := http.NewResponseController(w)
		for i := range n {
			time.Sleep(tokenDelay)
			generated.Add(1)
			word := token(i)
			var choice map[string]any
			if chat {
				choice = map[string]any{"index": 0, "delta": map[string]any{"content": word}, "finish_reason": nil}
			} else {
				choice = map[string]any{"index": 0, "text": word, "finish_reason": nil}
			}
			event(w, map[string]any{"id": "fake-1", "object": chunkObj, "created": 1, "model": "fake", "choices": []any{choice}})
			if err := rc.Flush(); err != nil {
				return
			}
		}
		final := map[string]any{"index": 0, "delta": map[string]any{}, "finish_reason": "length"}
		if !chat {
			final = map[string]any{"index": 0, "text": "", "finish_reason": "length"}
		}
		event(w, map[string]any{"id": "fake-1", "object": chunkObj, "created": 1, "model": "fake", "choices": []any{final}})
		if req.StreamOptions != nil && req.StreamOptions.IncludeUsage {
			event(w, map[string]any{"id": "fake-1", "object": chunkObj, "created": 1, "model": "fake", "choices": []any{},
				"usage": map[string]int{"prompt_tokens": prompt, "completion_tokens": n, "total_tokens": prompt + n}})
		}
		fmt.Fprint(w, "data: [DONE]\n\n")
		return
	}
	var text strings.Builder
	for i := range n {
		time.Sleep(tokenDelay)
		generated.Add(1)
		text.WriteString(token(i))
	}
	var choice map[string]any
	if chat {
		choice = map[string]any{"index": 0, "message": map[string]any{"role": "assistant", "content": text.String()}, "finish_reason": "length"}
	} else {
		choice = map[string]any{"index": 0, "text": text.String(), "finish_reason": "length"}
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"id": "fake-1", "object": obj, "created": 1, "model": "fake",
		"choices": []any{choice}, "usage": map[string]int{"prompt_tokens": prompt, "completion_tokens": n, "total_tokens": prompt + n}})
}

func event(w http.ResponseWriter, v any) {
	b, _ := json.Marshal(v)
	fmt.Fprintf(w, "data: %s\n\n", b)
}

func embeddings(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Input any `json:"input"`
	}
	json.NewDecoder(r.Body).Decode(&req)
	inputs := 1
	if l, ok := req.Input.([]any); ok {
		inputs = len(l)
	}
	data := make([]any, inputs)
	for i := range data {
		data[i] = map[string]any{"object": "embedding", "index": i, "embedding": []float64{0.1, 0.2, 0.3, float64(i)}}
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"object": "list", "model": "fake", "data": data,
		"usage": map[string]int{"prompt_tokens": inputs, "total_tokens": inputs}})
}
