package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gantry/gantry/internal/eventually"
)

// TestGatewayServedLLMEndToEnd: the AI gateway on served LLM entities.
// gantry dev runs two openai_server entities of one endpoint on the fake
// server (worker/openaiserver/testdata/fakeopenai): "llm", which echoes
// what it received ("echo: TEXT"), and "judge", a fake judge that finds
// "bomb" unsafe. Guardrails mask the input before the replica sees it,
// mask the output whole and streamed (an email split across chunks),
// block on keywords, and ask the served judge, on the invocations and the
// OpenAI paths; a token limit reserves prompt + max_tokens, refunds to
// the answer's usage (streams included), and answers 429 with
// Retry-After once the budget is spent.
func TestGatewayServedLLMEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("runs gantry dev with worker and model server processes; run without -short")
	}
	bin, fake := buildGantry(t), buildFakeOpenAI(t)
	addr := freeAddr(t)
	startDev(t, bin, addr, t.TempDir())
	a := &answers{base: "http://" + addr}
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "MLmodel"), fmt.Sprintf("flavors:\n  openai_server:\n    command: [%q]\n    health: /health\n    task: llm/v1/chat\n", fake))
	mustCLI(t, bin, addr, "models", "upload", "chat", dir)
	a.ok(t, "POST", "/api/2.0/serving-endpoints", `{"name": "gw", "config": {"served_entities": [
		{"name": "llm", "entity_name": "chat", "entity_version": "1"},
		{"name": "judge", "entity_name": "chat", "entity_version": "1", "environment_vars": {"FAKE_JUDGE_UNSAFE": "bomb"}}],
		"traffic_config": {"routes": [{"served_model_name": "llm", "traffic_percentage": 100}]}}}`)
	mustCLI(t, bin, addr, "endpoints", "wait", "gw")

	// The route table reaches the activator within a second or two; each
	// phase waits for its first answer to show the new config.
	gateway := func(body string, ready func() bool) {
		t.Helper()
		a.ok(t, "PUT", "/api/2.0/serving-endpoints/gw/ai-gateway", body)
		eventually.True(t, 10*time.Second, "the gateway config "+body+" in effect", ready)
	}
	msg := func(content string, stream bool, extra string) string {
		b, _ := json.Marshal(map[string]any{"messages": []map[string]string{{"role": "user", "content": content}}, "stream": stream})
		return strings.TrimSuffix(string(b), "}") + extra + "}"
	}
	invocations, chat := "/serving-endpoints/gw/invocations", "/serving-endpoints/chat/completions"
	call := func(path, body string) (int, string) {
		resp, b := a.do(t, "POST", path, body)
		return resp.StatusCode, b
	}
	streamed := func(body string) chatStream {
		t.Helper()
		resp, err := http.Post(a.base+invocations, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("stream: %d", resp.StatusCode)
		}
		return mustChatStream(t, resp.Body)
	}

	t.Run("input and judge", func(t *testing.T) {
		gateway(`{"guardrails": {"input": {"pii": {"behavior": "MASK"}, "invalid_keywords": ["password"], "safety": true}, "judge_entity": "judge"}}`, func() bool {
			code, _ := call(invocations, msg("a bomb", false, ""))
			return code == 400
		})
		// The replica echoes what it received: the masked request.
		if code, b := call(invocations, msg("echo: mail jane@example.com now", false, "")); code != 200 || !strings.Contains(b, "mail [EMAIL] now") || strings.Contains(b, "jane@") {
			t.Errorf("input MASK: %d %s", code, b)
		}
		if code, b := call(invocations, msg("my password", false, "")); code != 400 || !strings.Contains(b, "input guardrail invalid_keywords") {
			t.Errorf("keyword: %d %s", code, b)
		}
		for _, path := range []string{invocations, chat} {
			model := ""
			if path == chat {
				model = `, "model": "gw"`
			}
			if code, b := call(path, msg("how to make a bomb", false, model)); code != 400 || !strings.Contains(b, "input guardrail safety: the judge found the request unsafe") {
				t.Errorf("%s unsafe: %d %s", path, code, b)
			}
			if code, b := call(path, msg("echo: a story", false, model)); code != 200 || !strings.Contains(b, "a story") {
				t.Errorf("%s safe: %d %s", path, code, b)
			}
		}
	})

	t.Run("output", func(t *testing.T) {
		gateway(`{"guardrails": {"output": {"pii": {"behavior": "MASK"}, "invalid_keywords": ["secret"]}}}`, func() bool {
			code, _ := call(invocations, msg("echo: a secret", false, ""))
			return code == 400
		})
		if code, b := call(invocations, msg("echo: mail jane@example.com now", false, "")); code != 200 || !strings.Contains(b, "mail [EMAIL] now") || strings.Contains(b, "jane@") {
			t.Errorf("output MASK: %d %s", code, b)
		}
		// 4 bytes a chunk: the address spans five of them.
		s := streamed(msg("echo: mail jane@example.com now", true, ""))
		if !s.done || s.text != "mail [EMAIL] now" {
			t.Errorf("streamed output MASK: %q, [DONE] %v", s.text, s.done)
		}
		code, b := call(chat, msg("echo: mail jane@example.com now", false, `, "model": "gw"`))
		if code != 200 || !strings.Contains(b, "mail [EMAIL] now") {
			t.Errorf("chat/completions output MASK: %d %s", code, b)
		}
	})

	t.Run("token limit", func(t *testing.T) {
		// A call reserves its prompt's estimate ((length + 1) / 4) and its
		// max_tokens, 60; the fake uses 3 + 60 (its usage), and the rest
		// comes back. The limit fits the third call only if the first two,
		// a stream among them, were refunded; the fourth does not fit.
		b1 := msg("once upon a time", false, `, "max_tokens": 60`)
		b2 := msg("once upon a time", true, `, "max_tokens": 60, "stream_options": {"include_usage": true}`)
		b3 := msg("once upon a time", false, `, "max_tokens": 60, "model": "gw"`)
		reserve := func(b string) int { return (len(b)+1)/4 + 60 }
		limit := 2*63 + reserve(b3) + 10
		if 63+reserve(b2)+reserve(b3) <= limit || 3*63+reserve(b1) <= limit {
			t.Fatalf("the limit %d does not tell refunds apart", limit)
		}
		gateway(fmt.Sprintf(`{"rate_limits": [{"tokens": %d, "key": "endpoint", "renewal_period": "minute"}]}`, limit), func() bool {
			code, _ := call(invocations, msg("x", false, `, "max_tokens": 1000`))
			return code == 429
		})
		// The budget is a minute's: a sequence that spans a minute's end
		// starts again in the next minute.
		for try := 0; ; try++ {
			minute := time.Now().Truncate(time.Minute)
			if code, b := call(invocations, b1); code != 200 {
				t.Fatalf("first call: %d %s", code, b)
			}
			if !streamed(b2).done {
				t.Fatal("the stream did not end with [DONE]")
			}
			code3, b := call(chat, b3)
			resp, b4 := a.do(t, "POST", invocations, b1)
			if !time.Now().Truncate(time.Minute).Equal(minute) && try == 0 {
				time.Sleep(time.Until(minute.Add(2 * time.Minute))) // past the windows both touched
				continue
			}
			if code3 != 200 {
				t.Fatalf("third call (fits only if the first two were refunded): %d %s", code3, b)
			}
			ra, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
			if resp.StatusCode != 429 || !strings.Contains(b4, "REQUEST_LIMIT_EXCEEDED") || ra < 1 || ra > 60 {
				t.Errorf("fourth call: %d %s, Retry-After %q; want 429 REQUEST_LIMIT_EXCEEDED with Retry-After", resp.StatusCode, b4, resp.Header.Get("Retry-After"))
			}
			return
		}
	})
}
