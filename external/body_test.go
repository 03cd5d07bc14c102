package external

import (
	"bytes"
	"encoding/json"
	"net/url"
	"testing"

	"github.com/gantry/gantry/api"
)

// requestBefore is a provider's request as it was built before body: a
// map[string]any, extra_params merged in where the unified fields left
// room, marshalled. Every request must come out the same, byte for byte.
func requestBefore(p provider, rt *api.ExternalRoute, r *Request) (string, []byte, error) {
	body := map[string]any{}
	common := func(stopName string) {
		if r.MaxTokens != nil {
			body["max_tokens"] = *r.MaxTokens
		}
		if r.Temperature != nil {
			body["temperature"] = *r.Temperature
		}
		if r.N != nil {
			body["n"] = *r.N
		}
		if len(r.Stop) > 0 {
			body[stopName] = r.Stop
		}
	}
	var u string
	switch p.(type) {
	case openAI:
		path := openAIPath(r.Task)
		u = rt.BaseURL + path
		if rt.APIType == "azure" {
			u = rt.BaseURL + "/openai/deployments/" + url.PathEscape(rt.Deployment) + path + "?api-version=" + url.QueryEscape(rt.APIVersion)
		} else {
			body["model"] = rt.Model
		}
		switch r.Task {
		case api.TaskChat:
			body["messages"] = r.Messages
		case api.TaskCompletions:
			body["prompt"] = r.Prompt
		case api.TaskEmbeddings:
			body["input"] = r.Input
		}
		common("stop")
		if r.Stream {
			body["stream"] = true
			body["stream_options"] = map[string]bool{"include_usage": true}
		}
	case anthropic:
		msgs, system, err := chatOf(r, "anthropic")
		if err != nil {
			return "", nil, err
		}
		u = rt.BaseURL + "/v1/messages"
		body = map[string]any{"model": rt.Model, "messages": msgs, "max_tokens": anthropicMaxTokens}
		if system != "" {
			body["system"] = system
		}
		if r.MaxTokens != nil {
			body["max_tokens"] = *r.MaxTokens
		}
		if r.Temperature != nil {
			body["temperature"] = *r.Temperature / 2
		}
		if len(r.Stop) > 0 {
			body["stop_sequences"] = r.Stop
		}
		if r.Stream {
			body["stream"] = true
		}
	case cohere:
		if r.Task == api.TaskEmbeddings {
			u = rt.BaseURL + "/v2/embed"
			body = map[string]any{"model": rt.Model, "texts": r.Input, "embedding_types": []string{"float"}, "input_type": "search_document"}
			break
		}
		msgs, system, err := chatOf(r, "cohere")
		if err != nil {
			return "", nil, err
		}
		if system != "" {
			msgs = append([]Message{{Role: "system", Content: system}}, msgs...)
		}
		u = rt.BaseURL + "/v2/chat"
		body = map[string]any{"model": rt.Model, "messages": msgs}
		common("stop_sequences")
		delete(body, "n")
		if r.Stream {
			body["stream"] = true
		}
	}
	for k, v := range r.ExtraParams {
		if _, set := body[k]; !set {
			body[k] = v
		}
	}
	b, err := json.Marshal(body)
	return u, b, err
}

// routesOf are a route of each provider, and Azure's, for task.
func routesOf(task string) []*api.ExternalRoute {
	return []*api.ExternalRoute{
		{Provider: api.ProviderOpenAI, Task: task, Model: "gpt-<4o>", BaseURL: "http://openai"},
		{Provider: api.ProviderOpenAI, Task: task, Model: "gpt-4o", BaseURL: "http://azure", APIType: "azure", APIVersion: "2024-10-21", Deployment: "my gpt"},
		{Provider: api.ProviderAnthropic, Task: task, Model: "claude", BaseURL: "http://anthropic"},
		{Provider: api.ProviderCohere, Task: task, Model: "command", BaseURL: "http://cohere"},
	}
}

// sameAsBefore checks every provider's request for r against
// requestBefore's.
func sameAsBefore(t *testing.T, r *Request) {
	t.Helper()
	for _, rt := range routesOf(r.Task) {
		p, _ := providerOf(rt.Provider)
		u, got, err := p.request(rt, r)
		wu, want, werr := requestBefore(p, rt, r)
		if (err == nil) != (werr == nil) || u != wu || !bytes.Equal(got, want) {
			t.Fatalf("%s %s: %+v\n got %s %s (%v)\nwant %s %s (%v)", rt.Provider, rt.APIType, r, u, got, err, wu, want, werr)
		}
	}
}

func TestRequestBodiesAsBefore(t *testing.T) {
	for _, tc := range []struct{ task, body string }{
		{api.TaskChat, `{"messages": [{"role": "user", "content": "hi"}]}`},
		{api.TaskChat, `{"model": "chat", "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}, {"role": "assistant", "content": "hi"}], "max_tokens": 16, "temperature": 0.7, "n": 1, "stop": ["END", "STOP"]}`},
		{api.TaskChat, `{"messages": [{"role": "user", "content": "<b>&amp;</b> \u2028\u2029 \n\t\r\b\f \"q\" \\ é 日本 \u0001\u001f \ud800 🙂"}], "stop": "</s>"}`},
		{api.TaskChat, `{"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}], "stream": true, "stream_options": {"include_usage": false}}`},
		{api.TaskChat, `{"messages": [{"role": "user", "content": "x"}], "stream": true}`},
		{api.TaskChat, `{"messages": [{"role": "user", "content": "x"}], "temperature": 0}`},
		{api.TaskChat, `{"messages": [{"role": "user", "content": "x"}], "temperature": 2}`},
		{api.TaskChat, `{"messages": [{"role": "user", "content": "x"}], "temperature": 1e-7}`},
		{api.TaskChat, `{"messages": [{"role": "user", "content": "x"}], "temperature": 0.000001}`},
		{api.TaskChat, `{"messages": [{"role": "user", "content": "x"}], "temperature": 1.0000000000000002}`},
		// extra_params: where their keys fall among the unified ones,
		// dropped where a unified field is set, kept where it is not.
		{api.TaskChat, `{"messages": [{"role": "user", "content": "x"}], "max_tokens": 3, "stop": ["a"], "stream": true,
			"extra_params": {"top_p": 0.5, "seed": 7, "a": {"x": [1, 2], "y": "<&>"}, "max_tokens": 9, "stop": "b", "stream_options": {"include_usage": false}, "n": 2, "temperature": 0.1, "zz": null, "stop_sequences": ["c"], "": 1}}`},
		{api.TaskChat, `{"messages": [{"role": "user", "content": "x"}], "n": 2, "temperature": 0.3, "extra_params": {"n": 3, "temperature": 0.9, "response_format": {"type": "json_object"}, "logit_bias": {"50256": -100}}}`},
		{api.TaskChat, `{"messages": [{"role": "system", "content": "only"}]}`},
		{api.TaskCompletions, `{"prompt": "once upon", "max_tokens": 5, "n": 2, "stop": "."}`},
		{api.TaskCompletions, `{"prompt": ["a", "b"], "stream": true, "extra_params": {"suffix": "z", "echo": true}}`},
		{api.TaskEmbeddings, `{"input": ["a b", "c"], "extra_params": {"dimensions": 8, "encoding_format": "float"}}`},
		{api.TaskEmbeddings, `{"input": "one", "extra_params": {"input_type": "search_query"}}`},
	} {
		sameAsBefore(t, decode(t, tc.task, tc.body))
	}
	// Requests Decode never makes: the judge's, and empty lists.
	zero, one := 0.0, 1
	sameAsBefore(t, &Request{Task: api.TaskChat, MaxTokens: &one, Temperature: &zero})
	sameAsBefore(t, &Request{Task: api.TaskCompletions, Prompt: []string{}})
	sameAsBefore(t, &Request{Task: api.TaskEmbeddings})
}

// appendString must write what json.Marshal writes.
func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "hi", "<a href=\"x\">&</a>", "\u2028\u2029", "\x00\x1f\x7f", "\xff\xfe", "é日本🙂", "\\\"\b\f\n\r\t", "a\xc3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, _ := json.Marshal(s)
		if got := appendString(nil, s); !bytes.Equal(got, want) {
			t.Fatalf("appendString(%q) = %s, json.Marshal %s", s, got, want)
		}
	})
}

// BenchmarkOpenAIRequest builds the OpenAI body of a chat request of
// three messages with the sampling fields, as every call does.
func BenchmarkOpenAIRequest(b *testing.B) {
	r, err := Decode(api.TaskChat, []byte(`{"messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "hello there"},
		{"role": "assistant", "content": "hi"}], "max_tokens": 16, "temperature": 0.2, "stop": ["END"], "client_request_id": "c-1"}`))
	if err != nil {
		b.Fatal(err)
	}
	rt := &api.ExternalRoute{Provider: api.ProviderOpenAI, Task: api.TaskChat, Model: "gpt-4o", BaseURL: "http://openai"}
	b.ReportAllocs()
	for b.Loop() {
		openAI{}.request(rt, r)
	}
}
