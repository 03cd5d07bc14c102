package scheduler

import (
	"strings"
	"testing"
)

// TestGuardrailsServedLLM: guardrails and a judge are accepted on an
// endpoint of served LLM entities (openai_server and gguf models whose
// flavor names a task), refused where an entity is not one, and a config
// update may not take them away; all LLM entities of an endpoint share one
// task.
func TestGuardrailsServedLLM(t *testing.T) {
	h := newHarness(t, t.TempDir())
	h.upload(t, "tabular")
	for name, ml := range map[string]string{
		"chat":  "flavors:\n  openai_server:\n    command: [vllm, serve, m]\n    task: llm/v1/chat\n",
		"any":   llmMLmodel, // openai_server without a task: not an LLM entity
		"embed": "flavors:\n  gguf:\n    model_file: m.gguf\n    task: llm/v1/embeddings\n",
		"story": "flavors:\n  gguf:\n    model_file: m.gguf\n", // chat by default
	} {
		if code, body := h.uploadMLmodel(t, name, ml); code != 200 {
			t.Fatalf("upload %s: %d %s", name, code, body)
		}
	}
	entity := func(name, model string) string {
		return `{"name": "` + name + `", "entity_name": "` + model + `", "entity_version": "1"}`
	}
	create := func(name string, routed string, entities ...string) (int, string) {
		body := `{"name": "` + name + `", "config": {"served_entities": [` + strings.Join(entities, ", ") + `]`
		if routed != "" {
			body += `, "traffic_config": {"routes": [{"served_model_name": "` + routed + `", "traffic_percentage": 100}]}`
		}
		code, e := h.call(t, "POST", "/api/2.0/serving-endpoints", body+`}}`, nil)
		return code, e.Message
	}
	for _, c := range []struct {
		name, routed string
		entities     []string
	}{
		{"llm", "a", []string{entity("a", "chat"), entity("judge", "story")}},
		{"embed", "", []string{entity("e", "embed")}},
		{"mixed", "a", []string{entity("a", "chat"), entity("t", "tabular")}},
		{"any", "", []string{entity("a", "any")}},
	} {
		if code, msg := create(c.name, c.routed, c.entities...); code != 200 {
			t.Fatalf("create %s: %d %s", c.name, code, msg)
		}
	}
	if code, msg := create("two-tasks", "a", entity("a", "chat"), entity("e", "embed")); code != 400 ||
		!strings.Contains(msg, "served_entities[1]: its model serves llm/v1/embeddings, served_entities[0]'s llm/v1/chat") {
		t.Errorf("chat and embeddings in one endpoint: %d %s", code, msg)
	}

	const pii = `{"input": {"pii": {"behavior": "MASK"}}, "output": {"invalid_keywords": ["secret"]}`
	for _, c := range []struct {
		ep, guardrails, want string
		code                 int
	}{
		{"llm", pii + `}`, "", 200},
		{"llm", `{"input": {"pii": {"behavior": "MASK"}, "safety": true}, "judge_entity": "judge"}`, "", 200},
		{"embed", pii + `}`, "", 200},
		{"embed", `{"input": {"safety": true}, "judge_entity": "e"}`, "served entity e of endpoint embed is not an LLM entity of task llm/v1/chat", 400},
		{"llm", `{"input": {"safety": true}, "judge_entity": "nobody"}`, `"nobody" is not a served entity of endpoint llm; it has a, judge`, 400},
		{"mixed", pii + `}`, "served entity t of endpoint mixed is not an LLM entity", 400},
		{"any", pii + `}`, "endpoint any serves no LLM entity", 400},
	} {
		code, e := h.call(t, "PUT", "/api/2.0/serving-endpoints/"+c.ep+"/ai-gateway", `{"guardrails": `+c.guardrails+`}`, nil)
		if code != c.code || !strings.Contains(e.Message, c.want) {
			t.Errorf("%s %s: %d %q; want %d naming %q", c.ep, c.guardrails, code, e.Message, c.code, c.want)
		}
	}
	// Token limits count tokens of any body; they are not refused.
	if code, e := h.call(t, "PUT", "/api/2.0/serving-endpoints/llm/ai-gateway", `{"rate_limits": [{"tokens": 100, "renewal_period": "minute"}],
		"guardrails": {"input": {"safety": true}, "judge_entity": "judge"}}`, nil); code != 200 {
		t.Fatalf("token limits and a served judge: %d %v", code, e)
	}
	h.reconcile()
	h.orch.set("a", ready("127.0.0.1:9001"))
	h.orch.set("judge", ready("127.0.0.1:9002"))
	h.reconcile()
	for _, c := range []struct{ entities, want string }{
		{`[` + entity("a", "chat") + `, ` + entity("t", "tabular") + `], "traffic_config": {"routes": [{"served_model_name": "a", "traffic_percentage": 100}]}`,
			"ai_gateway.guardrails: served entity t of endpoint llm is not an LLM entity"},
		{`[` + entity("a", "chat") + `]`, "ai_gateway.guardrails.judge_entity: \"judge\" is not a served entity of endpoint llm"},
		{`[` + entity("a", "chat") + `, ` + entity("judge", "any") + `], "traffic_config": {"routes": [{"served_model_name": "a", "traffic_percentage": 100}]}`,
			"served entity judge of endpoint llm is not an LLM entity"},
	} {
		code, e := h.call(t, "PUT", "/api/2.0/serving-endpoints/llm/config", `{"served_entities": `+c.entities+`}`, nil)
		if code != 400 || !strings.Contains(e.Message, c.want) {
			t.Errorf("update to %s: %d %q; want 400 naming %q", c.entities, code, e.Message, c.want)
		}
	}
	// A config rolling out is checked too: "roll" serves a chat model and
	// is moving to a tabular one.
	if code, msg := create("roll", "", entity("a", "chat")); code != 200 {
		t.Fatalf("create roll: %d %s", code, msg)
	}
	h.reconcile()
	h.orch.set("a", ready("127.0.0.1:9001"))
	h.reconcile()
	if code, e := h.call(t, "PUT", "/api/2.0/serving-endpoints/roll/config", `{"served_entities": [`+entity("a", "tabular")+`]}`, nil); code != 200 {
		t.Fatalf("update roll: %d %v", code, e)
	}
	if ep := h.get(t, "roll"); ep.PendingConfig == nil {
		t.Fatalf("roll has no pending config: %+v", ep.State)
	}
	if code, e := h.call(t, "PUT", "/api/2.0/serving-endpoints/roll/ai-gateway", `{"guardrails": `+pii+`}}`, nil); code != 400 || !strings.Contains(e.Message, "endpoint roll serves no LLM entity") {
		t.Errorf("guardrails while a tabular model rolls out: %d %q", code, e.Message)
	}
	// The judge served by another LLM chat model: accepted.
	if code, e := h.call(t, "PUT", "/api/2.0/serving-endpoints/llm/config", `{"served_entities": [`+entity("a", "chat")+`, `+entity("judge", "chat")+`],
		"traffic_config": {"routes": [{"served_model_name": "a", "traffic_percentage": 100}]}}`, nil); code != 200 {
		t.Errorf("update keeping a chat judge: %d %v", code, e)
	}
}
