package activator

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/external/providertest"
	"github.com/valyala/fasthttp"
)

// startJudge is a judge model double that speaks OpenAI's chat API. As a
// safety classifier it answers UNSAFE for a text with "bomb", or an
// answer ("echo: ...") with "boom"; as a topic classifier YES for a text
// with "invoice". A text with "slow" gets its answer after 2 s, one with
// "garbled" the answer "maybe".
func startJudge(t *testing.T) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Messages []struct{ Role, Content string }
		}
		if r.Header.Get("Authorization") != "Bearer "+extKey || json.NewDecoder(r.Body).Decode(&req) != nil || len(req.Messages) != 2 {
			http.Error(w, `{"error": {"message": "bad judge request"}}`, 400)
			return
		}
		system, text := req.Messages[0].Content, req.Messages[1].Content
		word := "SAFE"
		switch {
		case strings.Contains(text, "garbled"):
			word = "maybe"
		case strings.Contains(system, "topic classifier") && strings.Contains(system, "billing") && strings.Contains(text, "invoice"):
			word = "YES"
		case strings.Contains(system, "topic classifier"):
			word = "NO"
		case strings.Contains(text, "bomb"), strings.HasPrefix(text, "echo:") && strings.Contains(text, "boom"):
			word = "UNSAFE."
		}
		if strings.Contains(text, "slow") {
			select {
			case <-time.After(2 * time.Second):
			case <-r.Context().Done():
				return
			}
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"id": "j", "object": "chat.completion", "created": 1, "model": "judge",
			"choices": []any{map[string]any{"index": 0, "message": map[string]string{"role": "assistant", "content": word}, "finish_reason": "stop"}},
			"usage":   map[string]int{"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11}})
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func judgeActivator(t *testing.T, cfg Config, eps ...api.EndpointRoute) string {
	a := New(cfg, oneTable{&api.RouteTable{Index: 1, Endpoints: eps}})
	ctx, cancel := context.WithCancel(context.Background())
	go a.Run(ctx)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: a.Handler}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown(); cancel() })
	for !a.Ready() {
		time.Sleep(time.Millisecond)
	}
	return "http://" + ln.Addr().String()
}

// TestJudgeGuardrails: safety and valid_topics asked of the endpoint's
// judge entity (a double): a safe, on-topic call passes both ways; an
// unsafe or off-topic request, or an unsafe answer, is a 400 naming the
// guardrail; a judge that is slow, answers nonsense or is not served
// fails closed with a 503 within the judge's deadline; a stream cannot
// have its answer judged (400); the judge is never a fallback; each
// decision is in the record.
func TestJudgeGuardrails(t *testing.T) {
	base, judgeBase := providertest.Start(t, extKey), startJudge(t)
	gpt, judge := extEntity("gpt", api.ProviderOpenAI, api.TaskChat, "m", base), extEntity("judge", api.ProviderOpenAI, api.TaskChat, "j", judgeBase)
	judge.External.BaseURL = judgeBase + "/v1"
	guards := &api.Guardrails{JudgeEntity: "judge", Input: &api.GuardrailParameters{Safety: true, ValidTopics: []string{"billing", "invoices"}},
		Output: &api.GuardrailParameters{Safety: true}}
	rec := &extRecords{}
	url := judgeActivator(t, Config{Capture: rec, Timeout: 5 * time.Second, JudgeTimeout: 300 * time.Millisecond},
		api.EndpointRoute{Name: "j", Entities: []api.EntityRoute{gpt, judge}, Guardrails: guards, Fallback: true, InferenceTable: "ml.j_payload",
			Routes: []api.Route{{ServedModelName: "gpt", TrafficPercentage: 100}, {ServedModelName: "judge", TrafficPercentage: 0}}},
		api.EndpointRoute{Name: "gone", Entities: []api.EntityRoute{gpt}, Guardrails: guards})

	for _, c := range []struct {
		ep, text string
		status   int
		want     string
		fast     bool
	}{
		{"j", "How do I pay my invoice?", 200, "echo: How do I pay my invoice?", false},
		{"j", "an invoice for a bomb", 400, "input guardrail safety: the judge found the request unsafe", false},
		{"j", "what is the weather", 400, "input guardrail valid_topics: the request is not about billing, invoices", false},
		{"j", "my invoice went boom", 400, "output guardrail safety: the judge found the answer unsafe", false},
		{"j", "a slow invoice", 503, "input guardrail safety of endpoint j: the judge judge failed (no answer within its deadline), so the request was not sent on", true},
		{"j", "a garbled invoice", 503, "the judge judge failed (it answered MAYBE, neither SAFE nor UNSAFE)", true},
		{"gone", "an invoice", 503, "the judge judge failed (it is not a chat LLM entity this endpoint serves)", true},
	} {
		t0 := time.Now()
		resp, body := post(t, url+"/serving-endpoints/"+c.ep+"/invocations", chat(c.text, false))
		if resp.StatusCode != c.status || !strings.Contains(body, c.want) {
			t.Errorf("%s %q: %d %s; want %d with %q", c.ep, c.text, resp.StatusCode, body, c.status, c.want)
		}
		if took := time.Since(t0); c.fast && took > time.Second {
			t.Errorf("%q failed closed after %v; want within the judge's 300 ms", c.text, took)
		}
		if c.status == 200 && resp.Header.Get(headerServedModel) != "gpt" {
			t.Errorf("served by %q", resp.Header.Get(headerServedModel))
		}
	}
	if resp, body := post(t, url+"/serving-endpoints/j/invocations", chat("an invoice", true)); resp.StatusCode != 400 || !strings.Contains(body, "stream: endpoint j judges the safety of whole answers") {
		t.Errorf("stream: %d %s", resp.StatusCode, body)
	}

	var codes []string
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline) && len(rec.all()) < 7; time.Sleep(5 * time.Millisecond) {
	}
	for _, r := range rec.all() {
		codes = append(codes, strings.Join(r.LoggingErrorCodes, "+"))
	}
	got := strings.Join(codes, " ")
	for _, want := range []string{"GUARDRAIL:input.safety=BLOCK", "GUARDRAIL:input.valid_topics=BLOCK", "GUARDRAIL:output.safety=BLOCK", "GUARDRAIL:input.safety=JUDGE_ERROR"} {
		if !strings.Contains(got, want) {
			t.Errorf("no record has %s: %q", want, got)
		}
	}

	// The judge is never a fallback.
	g, j := &entity{name: "gpt", external: gpt.External}, &entity{name: "judge", external: judge.External}
	ep := &endpoint{order: []*entity{g, j}, entities: map[string]*entity{"gpt": g, "judge": j}}
	ep.judge = newJudge(guards, ep)
	if ep.judge == nil || ep.judge.en != j || ep.next(g) != nil {
		t.Errorf("judge %+v; the fallback after gpt is %+v, want none", ep.judge, ep.next(g))
	}
}
