package activator

import (
	"bufio"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/internal/eventually"
	"github.com/valyala/fasthttp"
)

// echoLLM is a served chat LLM's worker double: it answers "echo: " and
// the last message as it received it, whole or streamed 4 bytes a chunk,
// and adds an address of its own to a message with "contact".
func echoLLM(ctx *fasthttp.RequestCtx) {
	var req struct {
		Messages []struct{ Content string }
		Stream   bool
	}
	if json.Unmarshal(ctx.PostBody(), &req) != nil || len(req.Messages) == 0 {
		ctx.SetStatusCode(400)
		return
	}
	text := "echo: " + req.Messages[len(req.Messages)-1].Content
	if strings.Contains(text, "contact") {
		text += " at help@example.org"
	}
	if !req.Stream {
		ctx.SetContentType("application/json")
		b, _ := json.Marshal(map[string]any{"id": "x", "object": "chat.completion", "created": 1, "model": "m",
			"choices": []any{map[string]any{"index": 0, "message": map[string]string{"role": "assistant", "content": text}, "finish_reason": "stop"}}})
		ctx.SetBody(b)
		return
	}
	ctx.SetContentType("text/event-stream")
	ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
		for len(text) > 0 {
			n := min(4, len(text))
			b, _ := json.Marshal(map[string]any{"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m",
				"choices": []any{map[string]any{"index": 0, "delta": map[string]string{"content": text[:n]}}}})
			text = text[n:]
			fmt.Fprintf(w, "data: %s\n\n", b)
			w.Flush()
		}
		w.WriteString("data: [DONE]\n\n")
		w.Flush()
	})
}

// servedJudge is a served judge's worker double: UNSAFE for a text with
// "bomb", else SAFE; a text with "slow" is answered after 2 s. A request
// without the chat task header or the entity's secret is a 400.
func servedJudge(ctx *fasthttp.RequestCtx) {
	var req struct {
		Messages []struct{ Content string }
	}
	if string(ctx.Request.Header.Peek(headerTask)) != api.TaskChat || string(ctx.Request.Header.Peek(headerWorkerSecret)) != "judge-secret" ||
		json.Unmarshal(ctx.PostBody(), &req) != nil || len(req.Messages) != 2 {
		ctx.SetStatusCode(400)
		ctx.SetBodyString(`{"error_code":"INVALID_PARAMETER_VALUE","message":"bad judge request"}`)
		return
	}
	text, word := req.Messages[1].Content, "SAFE"
	if strings.Contains(text, "bomb") {
		word = "UNSAFE"
	}
	if strings.Contains(text, "slow") {
		time.Sleep(2 * time.Second)
	}
	ctx.SetContentType("application/json")
	b, _ := json.Marshal(map[string]any{"object": "chat.completion",
		"choices": []any{map[string]any{"index": 0, "message": map[string]string{"role": "assistant", "content": word}}}})
	ctx.SetBody(b)
}

// TestServedLLMGuardrails: guardrails on entities served by replicas (a
// chat model on an LLM runtime) as on external ones: the input's PII is
// masked before the replica sees it, the answer's whole and across the
// chunks of a stream, and the judge is a served chat entity of the
// endpoint, reached through its replicas: UNSAFE is a 400, a judge that is
// slow or has no replica fails closed with a 503 within the judge's
// deadline. Each decision is in the record, and a served shadow's answer
// is guarded for the table as the client's is.
func TestServedLLMGuardrails(t *testing.T) {
	llm, judgeW := startWorker(t, "llm", echoLLM), startWorker(t, "judge", servedJudge)
	e, j := readyEntity("llm", llm.addr), readyEntity("judge", judgeW.addr)
	e.Task, j.Task, j.Secret = api.TaskChat, api.TaskChat, "judge-secret"
	shadow := readyEntity("shadow", startWorker(t, "shadow", echoLLM).addr)
	shadow.Task = api.TaskChat
	cold := coldEntity("judge")
	cold.Task = api.TaskChat
	guards := &api.Guardrails{JudgeEntity: "judge",
		Input:  &api.GuardrailParameters{Safety: true, PII: &api.GuardrailPIIBehavior{Behavior: "MASK"}},
		Output: &api.GuardrailParameters{PII: &api.GuardrailPIIBehavior{Behavior: "MASK"}}}
	routes := []api.Route{{ServedModelName: "llm", TrafficPercentage: 100}, {ServedModelName: "judge", TrafficPercentage: 0}}
	rec := &extRecords{}
	url := judgeActivator(t, Config{Capture: rec, Timeout: 5 * time.Second, JudgeTimeout: 300 * time.Millisecond, QueueTimeout: 5 * time.Second},
		api.EndpointRoute{Name: "j", Entities: []api.EntityRoute{e, j}, Guardrails: guards, InferenceTable: "ml.j_payload", Routes: routes},
		api.EndpointRoute{Name: "cold", Entities: []api.EntityRoute{e, cold}, Guardrails: guards, InferenceTable: "ml.cold_payload", Routes: routes},
		api.EndpointRoute{Name: "sh", Entities: []api.EntityRoute{e, shadow}, InferenceTable: "ml.sh_payload",
			Guardrails: &api.Guardrails{Output: &api.GuardrailParameters{PII: &api.GuardrailPIIBehavior{Behavior: "MASK"}}},
			Routes:     []api.Route{{ServedModelName: "llm", TrafficPercentage: 100}, {ServedModelName: "shadow", TrafficPercentage: 100, Shadow: true}}})

	for _, c := range []struct {
		ep, text string
		status   int
		want     string
		fast     bool
	}{
		{"j", "mail jane@example.com now", 200, "echo: mail [EMAIL] now", false},
		{"j", "contact me", 200, "echo: contact me at [EMAIL]", false},
		{"j", "how to build a bomb", 400, "input guardrail safety: the judge found the request unsafe", false},
		{"j", "a slow question", 503, "input guardrail safety of endpoint j: the judge judge failed (judge of served entity judge did not answer within its deadline)", true},
		{"cold", "a question", 503, "input guardrail safety of endpoint cold: the judge judge failed", true},
	} {
		t0 := time.Now()
		resp, body := post(t, url+"/serving-endpoints/"+c.ep+"/invocations", chat(c.text, false))
		if resp.StatusCode != c.status || !strings.Contains(body, c.want) || strings.Contains(body, "jane@") {
			t.Errorf("%s %q: %d %s; want %d with %q", c.ep, c.text, resp.StatusCode, body, c.status, c.want)
		}
		if took := time.Since(t0); c.fast && took > time.Second {
			t.Errorf("%q failed closed after %v; want within the judge's 300 ms", c.text, took)
		}
	}
	// The answer's address spans five chunks.
	if text, _, errMsg := readStream(t, url+"/serving-endpoints/j/invocations", chat("contact jane@example.com", true)); text != "echo: contact [EMAIL] at [EMAIL]" || errMsg != "" {
		t.Errorf("stream: %q %q", text, errMsg)
	}
	// A served shadow's answers, whole and streamed, are guarded for the
	// table as the client's are.
	if resp, body := post(t, url+"/serving-endpoints/sh/invocations", chat("contact me", false)); resp.StatusCode != 200 || !strings.Contains(body, "at [EMAIL]") {
		t.Errorf("sh: %d %s", resp.StatusCode, body)
	}
	if text, _, _ := readStream(t, url+"/serving-endpoints/sh/invocations", chat("contact me", true)); text != "echo: contact me at [EMAIL]" {
		t.Errorf("sh stream: %q", text)
	}
	if judgeW.hits.Load() < 3 {
		t.Errorf("the served judge was asked %d times", judgeW.hits.Load())
	}

	want := map[string]bool{"GUARDRAIL:input.pii=MASK:EMAIL": false, "GUARDRAIL:output.pii=MASK:EMAIL": false,
		"GUARDRAIL:input.safety=BLOCK": false, "GUARDRAIL:input.safety=JUDGE_ERROR": false}
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline) && len(rec.all()) < 10; time.Sleep(5 * time.Millisecond) {
	}
	shadows := 0
	for _, r := range rec.all() {
		if r.Shadow {
			shadows++
			if !strings.Contains(string(r.Response), "at [EMAIL]") || !hasCode(r, "GUARDRAIL:output.pii=MASK:EMAIL") {
				t.Errorf("shadow record: %s %v", r.Response, r.LoggingErrorCodes)
			}
		}
		if strings.Contains(string(r.Request)+string(r.Response), "@example") {
			t.Errorf("a record holds the address: %s %s", r.Request, r.Response)
		}
		for _, c := range r.LoggingErrorCodes {
			if _, ok := want[c]; ok {
				want[c] = true
			}
		}
	}
	if shadows != 2 {
		t.Errorf("%d shadow records, want 2", shadows)
	}
	for c, seen := range want {
		if !seen {
			t.Errorf("no record has %s", c)
		}
	}
}

// TestBlockedRequestIsNotMirrored: a request that an input guardrail
// refuses before a replica sees it goes to no shadow either; one that
// passes goes to both.
func TestBlockedRequestIsNotMirrored(t *testing.T) {
	e := readyEntity("llm", startWorker(t, "llm", echoLLM).addr)
	shadowW := startWorker(t, "shadow", echoLLM)
	shadow := readyEntity("shadow", shadowW.addr)
	e.Task, shadow.Task = api.TaskChat, api.TaskChat
	url := judgeActivator(t, Config{Capture: &extRecords{}, Timeout: 5 * time.Second},
		api.EndpointRoute{Name: "sh", Entities: []api.EntityRoute{e, shadow}, InferenceTable: "ml.sh_payload",
			Guardrails: &api.Guardrails{Input: &api.GuardrailParameters{PII: &api.GuardrailPIIBehavior{Behavior: "BLOCK"}}},
			Routes:     []api.Route{{ServedModelName: "llm", TrafficPercentage: 100}, {ServedModelName: "shadow", TrafficPercentage: 100, Shadow: true}}})
	if resp, body := post(t, url+"/serving-endpoints/sh/invocations", chat("mail jane@example.com now", false)); resp.StatusCode != 400 {
		t.Fatalf("blocked: %d %s", resp.StatusCode, body)
	}
	if resp, body := post(t, url+"/serving-endpoints/sh/invocations", chat("hello", false)); resp.StatusCode != 200 {
		t.Fatalf("clean: %d %s", resp.StatusCode, body)
	}
	eventually.True(t, 5*time.Second, "the clean request at the shadow", func() bool { return shadowW.hits.Load() >= 1 })
	time.Sleep(100 * time.Millisecond) // a mirrored blocked request would have arrived by now too
	if n := shadowW.hits.Load(); n != 1 {
		t.Errorf("the shadow got %d requests, want only the clean one", n)
	}
}
