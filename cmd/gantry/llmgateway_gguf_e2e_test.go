package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gantry/gantry/internal/eventually"
)

// TestGatewayGGUFEndToEnd: the AI gateway on a GGUF entity (stories260K on
// llama.cpp in a worker under gantry dev). Input guardrails block PII and
// keywords before the runtime sees them, a clean greedy answer passes the
// output guardrails unchanged, whole and streamed; a tokens/minute limit
// takes back what the runtime's usage did not use, so that two calls and
// a stream fit in a budget that three reservations would not, and the
// next call is a 429 with Retry-After.
func TestGatewayGGUFEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("runs llama.cpp in a worker process under gantry dev; run without -short")
	}
	libs := llamaLibDir(t)
	bin, addr := buildGantry(t), freeAddr(t)
	startDev(t, bin, addr, t.TempDir(), "--llama-lib-dir", libs)
	a := &answers{base: "http://" + addr}
	mustCLI(t, bin, addr, "models", "upload", "stories", storiesDir)
	a.ok(t, "POST", "/api/2.0/serving-endpoints", `{"name": "story", "config": {"served_entities": [{"entity_name": "stories", "entity_version": "1",
		"min_provisioned_concurrency": 0, "max_provisioned_concurrency": 8, "replica_concurrency": 8}]}}`)
	mustCLI(t, bin, addr, "endpoints", "wait", "story")
	url := "/serving-endpoints/story/invocations"
	call := func(body string) (int, string) {
		resp, b := a.do(t, "POST", url, body)
		return resp.StatusCode, b
	}
	type answer struct {
		Choices []struct {
			Message struct{ Content string }
		}
		Usage struct {
			TotalTokens int `json:"total_tokens"`
		}
	}
	whole := func(body string) answer {
		t.Helper()
		code, b := call(body)
		var ans answer
		if code != 200 || json.Unmarshal([]byte(b), &ans) != nil || len(ans.Choices) != 1 || ans.Usage.TotalTokens == 0 {
			t.Fatalf("%s: %d %s", body, code, b)
		}
		return ans
	}
	streamed := func(body string) string {
		t.Helper()
		resp, err := http.Post(a.base+url, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("stream: %d", resp.StatusCode)
		}
		s := mustChatStream(t, resp.Body)
		if !s.done {
			t.Fatal("the stream ended without [DONE]")
		}
		return s.text
	}
	body := chatBody("Once upon", 32, false)
	want := whole(body) // greedy: the same answer every time

	t.Run("guardrails", func(t *testing.T) {
		a.ok(t, "PUT", "/api/2.0/serving-endpoints/story/ai-gateway", `{"guardrails": {
			"input": {"pii": {"behavior": "BLOCK"}, "invalid_keywords": ["dragon"]}, "output": {"pii": {"behavior": "MASK"}, "invalid_keywords": ["zzyzx"]}}}`)
		eventually.True(t, 10*time.Second, "the guardrails in effect", func() bool {
			code, _ := call(chatBody("a dragon story", 8, false))
			return code == 400
		})
		if code, b := call(chatBody("my card is 4111 1111 1111 1111", 8, false)); code != 400 || !strings.Contains(b, "input guardrail pii blocked the request: it holds CREDIT_CARD") {
			t.Errorf("PII: %d %s", code, b)
		}
		if got := whole(body); got.Choices[0].Message.Content != want.Choices[0].Message.Content {
			t.Errorf("guarded answer %q, unguarded %q", got.Choices[0].Message.Content, want.Choices[0].Message.Content)
		}
		if got := streamed(chatBody("Once upon", 32, true)); got != want.Choices[0].Message.Content {
			t.Errorf("guarded stream %q, whole answer %q", got, want.Choices[0].Message.Content)
		}
	})

	t.Run("token limit", func(t *testing.T) {
		// The chat template makes the prompt longer than its estimate: a
		// stop at the first sentence's end keeps the answer's use below
		// its reservation of 64.
		b, _ := json.Marshal(map[string]any{"messages": []map[string]string{{"role": "user", "content": "Once upon"}},
			"max_tokens": 64, "temperature": 0, "stop": []string{"."}})
		body := string(b)
		used := whole(body).Usage.TotalTokens
		stream := strings.TrimSuffix(body, "}") + `, "stream": true, "stream_options": {"include_usage": true}}`
		reserve := func(b string) int { return (len(b)+1)/4 + 64 }
		// Room for two answers' usage and a third reservation; three
		// reservations do not fit.
		limit := 2*used + reserve(body)
		if reserve(body)+reserve(stream)+reserve(body) <= limit {
			t.Fatalf("the limit %d does not tell refunds apart (usage %d, reservations %d and %d)", limit, used, reserve(body), reserve(stream))
		}
		a.ok(t, "PUT", "/api/2.0/serving-endpoints/story/ai-gateway", fmt.Sprintf(`{"rate_limits": [{"tokens": %d, "key": "endpoint", "renewal_period": "minute"}]}`, limit))
		eventually.True(t, 10*time.Second, "the limit in effect", func() bool {
			code, _ := call(chatBody("x", 10000, false))
			return code == 429
		})
		for try := 0; ; try++ {
			minute := time.Now().Truncate(time.Minute)
			whole(body)
			streamed(stream)
			code3, b3 := call(body)
			resp, b4 := a.do(t, "POST", url, body)
			if !time.Now().Truncate(time.Minute).Equal(minute) && try == 0 {
				time.Sleep(time.Until(minute.Add(2 * time.Minute))) // past the windows both touched
				continue
			}
			if code3 != 200 {
				t.Fatalf("third call (fits only after the refunds): %d %s", code3, b3)
			}
			ra, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
			if resp.StatusCode != 429 || !strings.Contains(b4, "REQUEST_LIMIT_EXCEEDED") || ra < 1 || ra > 60 {
				t.Errorf("fourth call: %d %s, Retry-After %q", resp.StatusCode, b4, resp.Header.Get("Retry-After"))
			}
			return
		}
	})
}
