package scheduler

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/gantry/gantry/api"
)

const secretKey = "sk-test-SECRET-0123456789"

const externalBody = `{"name": "chat", "config": {"served_entities": [{
	"external_model": {"name": "gpt-4o-mini", "provider": "openai", "task": "llm/v1/chat",
	                   "openai_config": {"openai_api_key_plaintext": "` + secretKey + `", "openai_api_base": "http://127.0.0.1:9/v1"}}}]}}`

func TestNormalizeExternalDefaults(t *testing.T) {
	c := config(t, `{"served_entities": [{"external_model": {"name": "claude-3.5:sonnet", "provider": "anthropic", "task": "llm/v1/chat",
		"anthropic_config": {"anthropic_api_key_plaintext": "k"}}}]}`)
	if err := normalizeConfig(c); err != nil {
		t.Fatal(err)
	}
	e := c.ServedEntities[0]
	// Databricks' default name: '.' and ':' become '-'; no workload is filled in.
	if e.Name != "claude-3-5-sonnet" || e.WorkloadSize != "" || e.WorkloadType != "" {
		t.Errorf("defaults: name=%q size=%q type=%q", e.Name, e.WorkloadSize, e.WorkloadType)
	}
	if r := c.TrafficConfig.Routes; len(r) != 1 || r[0].ServedModelName != e.Name || r[0].TrafficPercentage != 100 {
		t.Errorf("default route = %+v", r)
	}
}

func TestNormalizeExternalErrors(t *testing.T) {
	ext := func(s string) string { return `{"served_entities": [{"external_model": ` + s + `}]}` }
	okOpenAI := `"openai_config": {"openai_api_key_plaintext": "k"}`
	for _, tc := range []struct{ body, want string }{
		{ext(`{"provider": "openai", "task": "llm/v1/chat", ` + okOpenAI + `}`), "served_entities[0].external_model.name: required"},
		{ext(`{"name": "m", "task": "llm/v1/chat", ` + okOpenAI + `}`), "external_model.provider: required"},
		{ext(`{"name": "m", "provider": "amazon-bedrock", "task": "llm/v1/chat"}`), `"amazon-bedrock" is not supported by this Gantry yet`},
		{ext(`{"name": "m", "provider": "acme", "task": "llm/v1/chat"}`), `"acme" is not one of openai, anthropic, cohere, custom`},
		{ext(`{"name": "m", "provider": "openai", ` + okOpenAI + `}`), "external_model.task: required"},
		{ext(`{"name": "m", "provider": "openai", "task": "llm/v1/rerank", ` + okOpenAI + `}`), `"llm/v1/rerank" is not one of`},
		{ext(`{"name": "m", "provider": "openai", "task": "llm/v1/chat"}`), "external_model.openai_config: required"},
		{ext(`{"name": "m", "provider": "openai", "task": "llm/v1/chat", ` + okOpenAI + `, "cohere_config": {"cohere_api_key_plaintext": "k"}}`), "external_model.cohere_config: does not go with provider"},
		{ext(`{"name": "m", "provider": "openai", "task": "llm/v1/chat", "openai_config": {}}`), "openai_api_key: required (or external_model.openai_config.openai_api_key_plaintext)"},
		{ext(`{"name": "m", "provider": "openai", "task": "llm/v1/chat", "openai_config": {"openai_api_key": "{{secrets/s/k}}", "openai_api_key_plaintext": "k"}}`), "give exactly one"},
		{ext(`{"name": "m", "provider": "openai", "task": "llm/v1/chat", "openai_config": {"openai_api_key": "sk-in-the-wrong-field"}}`), "openai_api_key: takes a secret reference {{secrets/scope/key}}; give a key itself in"},
		{ext(`{"name": "m", "provider": "openai", "task": "llm/v1/chat", "openai_config": {"openai_api_key": "sk-raw"}}`), "give a key itself in external_model.openai_config.openai_api_key_plaintext"},
		{ext(`{"name": "m", "provider": "openai", "task": "llm/v1/chat", "openai_config": {"openai_api_key_plaintext": "k", "openai_api_type": "azure"}}`), "openai_api_base: required with openai_api_type azure"},
		{ext(`{"name": "m", "provider": "openai", "task": "llm/v1/chat", "openai_config": {"openai_api_key_plaintext": "k", "openai_api_type": "azure", "openai_api_base": "https://x.openai.azure.com"}}`), "openai_api_version: required"},
		{ext(`{"name": "m", "provider": "openai", "task": "llm/v1/chat", "openai_config": {"openai_api_key_plaintext": "k", "openai_api_type": "azure", "openai_api_base": "https://x.openai.azure.com", "openai_api_version": "2024-10-21"}}`), "openai_deployment_name: required"},
		{ext(`{"name": "m", "provider": "openai", "task": "llm/v1/chat", "openai_config": {"openai_api_key_plaintext": "k", "openai_api_type": "azuread"}}`), "azuread (Microsoft Entra ID) is not supported"},
		{ext(`{"name": "m", "provider": "openai", "task": "llm/v1/chat", "openai_config": {"openai_api_key_plaintext": "k", "openai_api_base": "ftp://x"}}`), "openai_api_base: \"ftp://x\" must be an http:// or https:// URL"},
		{ext(`{"name": "m", "provider": "openai", "task": "llm/v1/chat", "openai_config": {"openai_api_key_plaintext": "a\nb"}}`), "line break"},
		{ext(`{"name": "m", "provider": "anthropic", "task": "llm/v1/embeddings", "anthropic_config": {"anthropic_api_key_plaintext": "k"}}`), "anthropic has no embeddings"},
		{ext(`{"name": "m", "provider": "cohere", "task": "llm/v1/chat", "cohere_config": {}}`), "cohere_api_key: required"},
		{ext(`{"name": "m", "provider": "custom", "task": "llm/v1/chat", "custom_provider_config": {}}`), "custom_provider_url: required"},
		{ext(`{"name": "m", "provider": "custom", "task": "llm/v1/chat", "custom_provider_config": {"custom_provider_url": "http://h/v1", "api_key_auth": {"key": "X-Key", "value_plaintext": "k"}, "bearer_token_auth": {"token_plaintext": "k"}}}`), "You can only specify one authentication method"},
		{ext(`{"name": "m", "provider": "custom", "task": "llm/v1/chat", "custom_provider_config": {"custom_provider_url": "http://h/v1", "api_key_auth": {"key": "X Key", "value_plaintext": "k"}}}`), `"X Key" is not a valid header name`},
		{`{"served_entities": [{"entity_name": "m", "entity_version": "1", "external_model": {"name": "m", "provider": "openai", "task": "llm/v1/chat", ` + okOpenAI + `}}]}`, "served_entities[0].entity_name: cannot be set with external_model"},
		{`{"served_entities": [{"workload_size": "Small", "external_model": {"name": "m", "provider": "openai", "task": "llm/v1/chat", ` + okOpenAI + `}}]}`, "workload_size: cannot be set with external_model"},
		{`{"served_entities": [{"name": "a", "external_model": {"name": "m", "provider": "openai", "task": "llm/v1/chat", ` + okOpenAI + `}},
		                      {"name": "b", "external_model": {"name": "e", "provider": "openai", "task": "llm/v1/embeddings", ` + okOpenAI + `}}],
		  "traffic_config": {"routes": [{"served_model_name": "a", "traffic_percentage": 50}, {"served_model_name": "b", "traffic_percentage": 50}]}}`,
			"The task type of all external models within an endpoint must be the same."},
		{`{"served_entities": [{"name": "a", "external_model": {"name": "m", "provider": "openai", "task": "llm/v1/chat", ` + okOpenAI + `}},
		                      {"name": "b", "entity_name": "m", "entity_version": "1"}],
		  "traffic_config": {"routes": [{"served_model_name": "a", "traffic_percentage": 50}, {"served_model_name": "b", "traffic_percentage": 50}]}}`,
			"external models or model versions, not both"},
	} {
		err := normalizeConfig(config(t, tc.body))
		ae, ok := err.(*api.Error)
		if !ok || ae.Code != api.ErrInvalidParameterValue || !strings.Contains(ae.Message, tc.want) {
			t.Errorf("%s:\n got %v\nwant INVALID_PARAMETER_VALUE containing %q", tc.body, err, tc.want)
		}
		if ok && strings.Contains(ae.Message, "sk-raw") {
			t.Errorf("the message quotes the key: %s", ae.Message)
		}
	}
}

// An external endpoint is READY at once, hands the driver nothing, is not
// sized by the autoscaler, and the route table carries the provider's
// settings with the key only in memory.
func TestExternalEndpointReadyWithoutDeployment(t *testing.T) {
	h := newHarness(t, t.TempDir())
	var ep api.Endpoint
	if code, e := h.call(t, "POST", "/api/2.0/serving-endpoints", externalBody, &ep); code != 200 {
		t.Fatalf("create: %d %v", code, e)
	}
	h.reconcile()
	if ids := h.orch.ids(); len(ids) != 0 {
		t.Errorf("the driver got deployments %v for an external entity", ids)
	}
	if ts := h.s.Targets(); len(ts) != 0 {
		t.Errorf("autoscaler targets = %+v, want none", ts)
	}
	ep = h.get(t, "chat")
	e := ep.Config.ServedEntities[0]
	if ep.State.Ready != api.EndpointReady || ep.State.ConfigUpdate != api.ConfigNotUpdating ||
		e.State.Deployment != api.DeploymentReady || e.Replicas != nil || e.Name != "gpt-4o-mini" {
		t.Errorf("endpoint = %+v, entity %+v", ep.State, e)
	}
	if e.ExternalModel == nil || e.ExternalModel.OpenAIConfig == nil || e.ExternalModel.OpenAIConfig.OpenAIAPIKeyPlaintext != "" ||
		e.ExternalModel.OpenAIConfig.OpenAIAPIBase != "http://127.0.0.1:9/v1" {
		t.Errorf("external_model in the view = %+v", e.ExternalModel)
	}

	rt := h.routes.Current()
	x := rt.Endpoints[0].Entities[0].External
	if x == nil || x.Provider != "openai" || x.Model != "gpt-4o-mini" || x.BaseURL != "http://127.0.0.1:9/v1" || x.Key != secretKey {
		t.Fatalf("route = %+v", rt.Endpoints[0].Entities[0])
	}

	// No answer holds the key: views, lists and the JSON route table. Only
	// the admins' external-keys path does.
	for _, path := range []string{"/api/2.0/serving-endpoints/chat", "/api/2.0/serving-endpoints", "/api/2.0/gantry/routes",
		"/api/2.0/gantry/deployments", "/api/2.0/gantry/serving-endpoints/chat/deployments"} {
		if b := getBody(t, h.srv.URL+path); strings.Contains(b, secretKey) {
			t.Errorf("GET %s holds the key: %s", path, b)
		}
	}
	var keys api.ExternalKeys
	if err := json.Unmarshal([]byte(getBody(t, h.srv.URL+"/api/2.0/gantry/external-keys")), &keys); err != nil {
		t.Fatal(err)
	}
	if len(keys.Keys) != 1 || keys.Keys[0].Key != secretKey || keys.Keys[0].Deployment != rt.Endpoints[0].Entities[0].Deployment {
		t.Errorf("external-keys = %+v", keys)
	}

	// The scale API knows no deployment of an external entity.
	if err := h.s.Scale(rt.Endpoints[0].Entities[0].Deployment, 3); err == nil {
		t.Error("Scale of an external entity's deployment succeeded")
	}
}

func TestExternalUpdateRules(t *testing.T) {
	h := newHarness(t, t.TempDir())
	h.upload(t, "m")
	if code, e := h.call(t, "POST", "/api/2.0/serving-endpoints", externalBody, nil); code != 200 {
		t.Fatalf("create: %d %v", code, e)
	}
	if code, e := h.call(t, "POST", "/api/2.0/serving-endpoints", createBody, nil); code != 200 {
		t.Fatalf("create: %d %v", code, e)
	}
	h.reconcile()
	h.orch.set("v1", ready("127.0.0.1:9001"))
	h.reconcile()
	code, e := h.call(t, "PUT", "/api/2.0/serving-endpoints/chat/config", `{"served_entities": [{"entity_name": "m", "entity_version": "1"}]}`, nil)
	if code != 400 || !strings.Contains(e.Message, "created with external_model cannot be updated") {
		t.Errorf("external → model: %d %+v", code, e)
	}
	code, e = h.call(t, "PUT", "/api/2.0/serving-endpoints/fraud/config", `{"served_entities": [{"external_model": {"name": "m", "provider": "custom", "task": "llm/v1/chat", "custom_provider_config": {"custom_provider_url": "http://h"}}}]}`, nil)
	if code != 400 || !strings.Contains(e.Message, "created without external_model cannot be updated") {
		t.Errorf("model → external: %d %+v", code, e)
	}

	// A new key and a second provider apply at once: nothing rolls out.
	var ep api.Endpoint
	code, e = h.call(t, "PUT", "/api/2.0/serving-endpoints/chat/config", `{"served_entities": [
		{"name": "a", "external_model": {"name": "gpt-4o-mini", "provider": "openai", "task": "llm/v1/chat", "openai_config": {"openai_api_key_plaintext": "new-key"}}},
		{"name": "b", "external_model": {"name": "claude", "provider": "anthropic", "task": "llm/v1/chat", "anthropic_config": {"anthropic_api_key_plaintext": "ak"}}}],
		"traffic_config": {"routes": [{"served_model_name": "a", "traffic_percentage": 70}, {"served_model_name": "b", "traffic_percentage": 30}]}}`, &ep)
	if code != 200 || ep.PendingConfig != nil || ep.Config.ConfigVersion != 2 || ep.State.ConfigUpdate != api.ConfigNotUpdating {
		t.Fatalf("update: %d %+v pending=%v version=%d", code, e, ep.PendingConfig, ep.Config.ConfigVersion)
	}
	// Fallbacks reach the route table through the AI gateway.
	if code, e := h.call(t, "PUT", "/api/2.0/serving-endpoints/chat/ai-gateway", `{"fallback_config": {"enabled": true}}`, nil); code != 200 {
		t.Fatalf("ai-gateway: %d %+v", code, e)
	}
	h.reconcile()
	var chat *api.EndpointRoute
	for i, r := range h.routes.Current().Endpoints {
		if r.Name == "chat" {
			chat = &h.routes.Current().Endpoints[i]
		}
	}
	if chat == nil || !chat.Fallback || len(chat.Entities) != 2 || chat.Entities[0].External.Key != "new-key" ||
		chat.Entities[1].External.BaseURL != "https://api.anthropic.com" || chat.Entities[1].External.Key != "ak" {
		t.Errorf("route = %+v", chat)
	}

	// Guardrails: checked, then carried by the route table.
	for _, c := range []struct{ body, want string }{
		{`{"guardrails": {"input": {"safety": true}}}`, "guardrails.input.safety: needs a judge model: set guardrails.judge_entity"},
		{`{"guardrails": {"input": {"valid_topics": ["billing"]}}}`, "guardrails.input.valid_topics: needs a judge model"},
		{`{"guardrails": {"output": {"valid_topics": ["billing"]}, "judge_entity": "b"}}`, "guardrails.output.valid_topics: topics are judged on the request only"},
		{`{"guardrails": {"input": {"safety": true}, "judge_entity": "gpt"}}`, `guardrails.judge_entity: "gpt" is not a served entity of endpoint chat; it has a, b`},
		{`{"guardrails": {"output": {"pii": {"behavior": "REDACT"}}}}`, `guardrails.output.pii.behavior: "REDACT" is not one of BLOCK, MASK, NONE`},
		{`{"guardrails": {"input": {"invalid_keywords": ["--"]}}}`, "guardrails.input.invalid_keywords[0]"},
		{`{"guardrails": {"input": {"toxicity": true}}}`, "toxicity"},
	} {
		if code, e := h.call(t, "PUT", "/api/2.0/serving-endpoints/chat/ai-gateway", c.body, nil); code != 400 || !strings.Contains(e.Message, c.want) {
			t.Errorf("%s: %d %+v; want 400 naming %q", c.body, code, e, c.want)
		}
	}
	// A judge: one of the endpoint's external chat entities, which a
	// config update may then not drop.
	if code, e := h.call(t, "PUT", "/api/2.0/serving-endpoints/chat/ai-gateway", `{"guardrails": {"input": {"safety": true, "valid_topics": ["billing"]}, "output": {"safety": true}, "judge_entity": "b"}}`, nil); code != 200 {
		t.Errorf("with a judge: %d %+v", code, e)
	}
	if code, e := h.call(t, "PUT", "/api/2.0/serving-endpoints/chat/config", `{"served_entities": [
		{"name": "a", "external_model": {"name": "gpt-4o-mini", "provider": "openai", "task": "llm/v1/chat", "openai_config": {"openai_api_key_plaintext": "new-key"}}}]}`, nil); code != 400 ||
		!strings.Contains(e.Message, `served_entities: ai_gateway.guardrails.judge_entity: "b" is not a served entity of endpoint chat; it has a; keep the judge`) {
		t.Errorf("dropping the judge: %d %+v", code, e)
	}
	var gw api.AIGateway
	if code, e := h.call(t, "PUT", "/api/2.0/serving-endpoints/chat/ai-gateway", `{"guardrails": {"input": {"safety": false, "pii": {"behavior": "BLOCK"}, "invalid_keywords": ["password"]}, "output": {"pii": {"behavior": "MASK"}}}}`, &gw); code != 200 ||
		gw.Guardrails == nil || gw.Guardrails.Output.PII.Behavior != "MASK" {
		t.Fatalf("guardrails: %d %+v %+v", code, e, gw)
	}
	h.reconcile()
	for _, r := range h.routes.Current().Endpoints {
		if r.Name == "chat" && (r.Guardrails == nil || r.Guardrails.Input.InvalidKeywords[0] != "password" || r.Guardrails.Input.PII.Behavior != "BLOCK") {
			t.Errorf("route guardrails = %+v", r.Guardrails)
		}
	}
}

func getBody(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	return string(b)
}
