package external

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/openai"
)

// provider translates between the unified shapes and one provider's wire
// format. Its methods do no I/O; the Gateway makes the calls.
type provider interface {
	// request returns the URL and the JSON body of the call for r.
	request(rt *api.ExternalRoute, r *Request) (string, []byte, error)
	// authorize sets the credential headers.
	authorize(h headerSetter, rt *api.ExternalRoute)
	// answer translates a 2xx body into the unified answer.
	answer(rt *api.ExternalRoute, r *Request, body []byte, now int64) (Answer, error)
	// stream returns a translator of the provider's events into unified
	// chunks.
	stream(rt *api.ExternalRoute, r *Request, now int64) translator
}

// translator turns one upstream event into the data of zero or more
// unified chunk events. done is set by the event that ends the stream.
type translator interface {
	event(ev Event) (chunks [][]byte, done bool, err error)
}

func providerOf(name string) (provider, bool) {
	switch name {
	case api.ProviderOpenAI, api.ProviderCustom:
		return openAI{}, true
	case api.ProviderAnthropic:
		return anthropic{}, true
	case api.ProviderCohere:
		return cohere{}, true
	}
	return nil, false
}

// --- OpenAI, Azure OpenAI and OpenAI-compatible servers ---

// openAI speaks OpenAI's chat/completions, completions and embeddings,
// which are the unified shapes: bodies pass with the model set, answers
// pass through untouched.
type openAI struct{}

func (openAI) request(rt *api.ExternalRoute, r *Request) (string, []byte, error) {
	path := openAIPath(r.Task)
	u := rt.BaseURL + path
	azure := rt.APIType == "azure"
	if azure {
		// Azure names the deployment in the path, not the body.
		u = rt.BaseURL + "/openai/deployments/" + url.PathEscape(rt.Deployment) + path + "?api-version=" + url.QueryEscape(rt.APIVersion)
	}
	// In key order (see body).
	w := newBody(sizeOf(r.Messages, r.Prompt, r.Input, r.Stop), r.ExtraParams)
	if r.Task == api.TaskEmbeddings {
		w.strings("input", r.Input)
	}
	if r.MaxTokens != nil {
		w.int("max_tokens", *r.MaxTokens)
	}
	if r.Task == api.TaskChat {
		w.messages("messages", r.Messages)
	}
	if !azure {
		w.string("model", rt.Model)
	}
	if r.N != nil {
		w.int("n", *r.N)
	}
	if r.Task == api.TaskCompletions {
		w.strings("prompt", r.Prompt)
	}
	if len(r.Stop) > 0 {
		w.strings("stop", r.Stop)
	}
	if r.Stream {
		w.raw("stream", "true")
		// Usage comes in a last chunk only when asked for; the record
		// needs it whether or not the client asked.
		w.raw("stream_options", `{"include_usage":true}`)
	}
	if r.Temperature != nil {
		w.float("temperature", *r.Temperature)
	}
	b, err := w.bytes()
	return u, b, err
}

// openAIPath is the API path of a task (a switch: a map literal here
// was a map built on every call).
func openAIPath(task string) string {
	switch task {
	case api.TaskChat:
		return "/chat/completions"
	case api.TaskCompletions:
		return "/completions"
	case api.TaskEmbeddings:
		return "/embeddings"
	}
	return ""
}

func (openAI) authorize(h headerSetter, rt *api.ExternalRoute) {
	switch {
	case rt.Key == "":
	case rt.APIType == "azure":
		h.Set("api-key", rt.Key)
	case rt.KeyHeader != "":
		h.Set(rt.KeyHeader, rt.Key)
	default:
		h.Set("Authorization", "Bearer "+rt.Key)
	}
	if rt.Organization != "" {
		h.Set("OpenAI-Organization", rt.Organization)
	}
}

func (openAI) answer(_ *api.ExternalRoute, r *Request, body []byte, _ int64) (Answer, error) {
	// The answer passes as it is: only its usage is read (and the whole
	// of it checked), not decoded whole.
	u, err := openai.UsageOf(body)
	if err != nil {
		return Answer{}, fmt.Errorf("the answer is not JSON")
	}
	return Answer{Body: body, Usage: u}, nil
}

func (openAI) stream(*api.ExternalRoute, *Request, int64) translator { return openAIStream{} }

// openAIStream passes OpenAI's chunks through as they are.
type openAIStream struct{}

func (openAIStream) event(ev Event) ([][]byte, bool, error) {
	if string(ev.Data) == "[DONE]" {
		return nil, true, nil
	}
	if ev.Name == "error" || isStreamError(ev.Data) {
		return nil, false, streamError(ev.Data)
	}
	return [][]byte{ev.Data}, false, nil
}

// isStreamError spots OpenAI's in-stream error object.
func isStreamError(data []byte) bool {
	return len(data) > 0 && strings.HasPrefix(strings.TrimSpace(string(data[:min(len(data), 16)])), `{"error"`)
}

func streamError(data []byte) error {
	return fmt.Errorf("the provider ended the stream with an error: %s", openai.Clip(providerMessage(data)))
}

// --- Anthropic Messages API ---

type anthropic struct{}

// anthropicVersion is the API version Gantry speaks (the header Anthropic
// requires).
const anthropicVersion = "2023-06-01"

// anthropicMaxTokens is max_tokens when the request has none: Anthropic
// requires one, and MLflow's gateway sends 8192, so that answers are not
// cut short by a default the client never chose.
const anthropicMaxTokens = 8192

func (anthropic) request(rt *api.ExternalRoute, r *Request) (string, []byte, error) {
	msgs, system, err := chatOf(r, "anthropic")
	if err != nil {
		return "", nil, err
	}
	maxTokens := anthropicMaxTokens
	if r.MaxTokens != nil {
		maxTokens = *r.MaxTokens
	}
	// In key order (see body).
	w := newBody(sizeOf(msgs, []string{system}, r.Stop), r.ExtraParams)
	w.int("max_tokens", maxTokens)
	w.messages("messages", msgs)
	w.string("model", rt.Model)
	if len(r.Stop) > 0 {
		w.strings("stop_sequences", r.Stop)
	}
	if r.Stream {
		w.raw("stream", "true")
	}
	if system != "" {
		w.string("system", system)
	}
	if r.Temperature != nil {
		// Anthropic's range is 0-1 where the unified one is 0-2; halve it,
		// as MLflow's gateway does, so that 1.0 means "default" on both.
		w.float("temperature", *r.Temperature/2)
	}
	b, err := w.bytes()
	return rt.BaseURL + "/v1/messages", b, err
}

// chatOf turns a chat or completions request into chat messages for a
// provider that answers one choice, with system messages pulled out.
func chatOf(r *Request, name string) ([]Message, string, error) {
	if r.N != nil && *r.N != 1 {
		return nil, "", openai.Invalidf("n: %s answers one choice per request; leave n out or set it to 1", name)
	}
	if r.Task == api.TaskCompletions {
		if len(r.Prompt) != 1 {
			return nil, "", openai.Invalidf("prompt: %s takes one prompt per request; send a string", name)
		}
		return []Message{{Role: "user", Content: r.Prompt[0]}}, "", nil
	}
	var system []string
	msgs := make([]Message, 0, len(r.Messages))
	for _, m := range r.Messages {
		if m.Role == "system" {
			system = append(system, m.Content)
			continue
		}
		msgs = append(msgs, m)
	}
	if len(msgs) == 0 {
		return nil, "", openai.Invalidf("messages: %s needs a user message besides system messages", name)
	}
	return msgs, strings.Join(system, "\n"), nil
}

func (anthropic) authorize(h headerSetter, rt *api.ExternalRoute) {
	h.Set("x-api-key", rt.Key)
	h.Set("anthropic-version", anthropicVersion)
}

// anthropicFinish maps stop_reason to OpenAI's finish_reason.
func anthropicFinish(s string) string {
	switch s {
	case "max_tokens":
		return "length"
	case "tool_use":
		return "tool_calls"
	}
	return "stop" // end_turn, stop_sequence, pause_turn, refusal
}

func (anthropic) answer(_ *api.ExternalRoute, r *Request, body []byte, now int64) (Answer, error) {
	var m struct {
		ID      string `json:"id"`
		Model   string `json:"model"`
		Content []struct {
			Type string `json:"type"`
			Text string `json:"text"`
		} `json:"content"`
		StopReason string `json:"stop_reason"`
		Usage      struct {
			InputTokens  int `json:"input_tokens"`
			OutputTokens int `json:"output_tokens"`
		} `json:"usage"`
	}
	if err := json.Unmarshal(body, &m); err != nil {
		return Answer{}, fmt.Errorf("the answer is not a message")
	}
	var text strings.Builder
	for _, c := range m.Content {
		if c.Type == "text" {
			text.WriteString(c.Text)
		}
	}
	return oneChoice(r.Task, m.ID, m.Model, now, text.String(), anthropicFinish(m.StopReason), newUsage(m.Usage.InputTokens, m.Usage.OutputTokens))
}

// oneChoice builds a unified answer of one choice.
func oneChoice(task, id, model string, now int64, text, finish string, u *Usage) (Answer, error) {
	out := completion{ID: id, Object: objChat, Created: now, Model: model, Usage: u,
		Choices: []choice{{Index: 0, FinishReason: &finish}}}
	if task == api.TaskCompletions {
		out.Object = objText
		out.Choices[0].Text = &text
	} else {
		out.Choices[0].Message = &Message{Role: "assistant", Content: text}
	}
	b, err := json.Marshal(out)
	return Answer{Body: b, Usage: u}, err
}

func (anthropic) stream(_ *api.ExternalRoute, r *Request, now int64) translator {
	return &anthropicStream{chunker: chunker{task: r.Task, created: now}}
}

// chunker makes unified chunks of one choice.
type chunker struct {
	task, id, model string
	created         int64
	usage           *Usage
}

func (c *chunker) chunk(role string, text *string, finish *string, u *Usage) []byte {
	ch := choice{Index: 0, FinishReason: finish}
	out := completion{ID: c.id, Object: objChunk, Created: c.created, Model: c.model, Usage: u, Choices: []choice{ch}}
	if c.task == api.TaskCompletions {
		out.Object = objText
		if text == nil {
			text = ptr("")
		}
		out.Choices[0].Text = text
	} else {
		out.Choices[0].Delta = &delta{Role: role, Content: text}
	}
	b, _ := json.Marshal(out)
	return b
}

type anthropicStream struct {
	chunker
	inputTokens int
}

func (s *anthropicStream) event(ev Event) ([][]byte, bool, error) {
	var e struct {
		Type    string `json:"type"`
		Message struct {
			ID    string `json:"id"`
			Model string `json:"model"`
			Usage struct {
				InputTokens int `json:"input_tokens"`
			} `json:"usage"`
		} `json:"message"`
		Delta struct {
			Type       string `json:"type"`
			Text       string `json:"text"`
			StopReason string `json:"stop_reason"`
		} `json:"delta"`
		Usage struct {
			OutputTokens int `json:"output_tokens"`
		} `json:"usage"`
	}
	if err := json.Unmarshal(ev.Data, &e); err != nil {
		return nil, false, fmt.Errorf("an event is not JSON")
	}
	switch e.Type {
	case "message_start":
		s.id, s.model, s.inputTokens = e.Message.ID, e.Message.Model, e.Message.Usage.InputTokens
		return [][]byte{s.chunk("assistant", ptr(""), nil, nil)}, false, nil
	case "content_block_delta":
		if e.Delta.Type == "text_delta" {
			return [][]byte{s.chunk("", &e.Delta.Text, nil, nil)}, false, nil
		}
	case "message_delta":
		if e.Delta.StopReason != "" {
			return [][]byte{s.chunk("", nil, ptr(anthropicFinish(e.Delta.StopReason)), newUsage(s.inputTokens, e.Usage.OutputTokens))}, false, nil
		}
	case "message_stop":
		return nil, true, nil
	case "error":
		return nil, false, streamError(ev.Data)
	}
	// ping, content_block_start, content_block_stop, and event types
	// Anthropic may add: nothing to say.
	return nil, false, nil
}

// --- Cohere v2 ---

type cohere struct{}

func (cohere) request(rt *api.ExternalRoute, r *Request) (string, []byte, error) {
	// Bodies in key order (see body).
	if r.Task == api.TaskEmbeddings {
		w := newBody(sizeOf(nil, r.Input), r.ExtraParams)
		w.raw("embedding_types", `["float"]`)
		w.raw("input_type", `"search_document"`)
		w.string("model", rt.Model)
		w.strings("texts", r.Input)
		b, err := w.bytes()
		return rt.BaseURL + "/v2/embed", b, err
	}
	msgs, system, err := chatOf(r, "cohere")
	if err != nil {
		return "", nil, err
	}
	if system != "" {
		// Cohere v2 takes system messages in the list.
		msgs = append([]Message{{Role: "system", Content: system}}, msgs...)
	}
	w := newBody(sizeOf(msgs, r.Stop), r.ExtraParams)
	if r.MaxTokens != nil {
		w.int("max_tokens", *r.MaxTokens)
	}
	w.messages("messages", msgs)
	w.string("model", rt.Model)
	if len(r.Stop) > 0 {
		w.strings("stop_sequences", r.Stop)
	}
	if r.Stream {
		w.raw("stream", "true")
	}
	if r.Temperature != nil {
		w.float("temperature", *r.Temperature)
	}
	b, err := w.bytes()
	return rt.BaseURL + "/v2/chat", b, err
}

func (cohere) authorize(h headerSetter, rt *api.ExternalRoute) {
	h.Set("Authorization", "Bearer "+rt.Key)
}

func cohereFinish(s string) string {
	switch s {
	case "MAX_TOKENS":
		return "length"
	case "TOOL_CALL":
		return "tool_calls"
	}
	return "stop" // COMPLETE, STOP_SEQUENCE, ERROR
}

type cohereUsage struct {
	BilledUnits struct {
		InputTokens  int `json:"input_tokens"`
		OutputTokens int `json:"output_tokens"`
	} `json:"billed_units"`
	Tokens struct {
		InputTokens  int `json:"input_tokens"`
		OutputTokens int `json:"output_tokens"`
	} `json:"tokens"`
}

// usage prefers the tokens the model saw over the billed ones, which
// leave out the prompt template.
func (u *cohereUsage) usage() *Usage {
	in, out := u.Tokens.InputTokens, u.Tokens.OutputTokens
	if in == 0 && out == 0 {
		in, out = u.BilledUnits.InputTokens, u.BilledUnits.OutputTokens
	}
	return newUsage(in, out)
}

func (cohere) answer(rt *api.ExternalRoute, r *Request, body []byte, now int64) (Answer, error) {
	if r.Task == api.TaskEmbeddings {
		var e struct {
			Embeddings struct {
				Float []json.RawMessage `json:"float"`
			} `json:"embeddings"`
			Meta struct {
				BilledUnits struct {
					InputTokens int `json:"input_tokens"`
				} `json:"billed_units"`
			} `json:"meta"`
		}
		if err := json.Unmarshal(body, &e); err != nil {
			return Answer{}, fmt.Errorf("the answer is not an embedding list")
		}
		n := e.Meta.BilledUnits.InputTokens
		out := embeddingList{Object: objEmbedList, Model: rt.Model, Data: make([]embedding, len(e.Embeddings.Float)),
			Usage: &Usage{PromptTokens: n, TotalTokens: n}}
		for i, v := range e.Embeddings.Float {
			out.Data[i] = embedding{Object: "embedding", Index: i, Embedding: v}
		}
		b, err := json.Marshal(out)
		return Answer{Body: b, Usage: out.Usage}, err
	}
	var m struct {
		ID           string `json:"id"`
		FinishReason string `json:"finish_reason"`
		Message      struct {
			Content []struct {
				Type string `json:"type"`
				Text string `json:"text"`
			} `json:"content"`
		} `json:"message"`
		Usage cohereUsage `json:"usage"`
	}
	if err := json.Unmarshal(body, &m); err != nil {
		return Answer{}, fmt.Errorf("the answer is not a chat response")
	}
	var text strings.Builder
	for _, c := range m.Message.Content {
		if c.Type == "text" {
			text.WriteString(c.Text)
		}
	}
	// Cohere's answer does not name the model; the route does.
	return oneChoice(r.Task, m.ID, rt.Model, now, text.String(), cohereFinish(m.FinishReason), m.Usage.usage())
}

func (cohere) stream(rt *api.ExternalRoute, r *Request, now int64) translator {
	return &cohereStream{chunker: chunker{task: r.Task, created: now, model: rt.Model}}
}

type cohereStream struct{ chunker }

func (s *cohereStream) event(ev Event) ([][]byte, bool, error) {
	var e struct {
		Type  string `json:"type"`
		ID    string `json:"id"`
		Delta struct {
			Message struct {
				// An object in content-delta, a list in message-start.
				Content json.RawMessage `json:"content"`
			} `json:"message"`
			FinishReason string      `json:"finish_reason"`
			Usage        cohereUsage `json:"usage"`
			Error        string      `json:"error"`
		} `json:"delta"`
	}
	if err := json.Unmarshal(ev.Data, &e); err != nil {
		return nil, false, fmt.Errorf("an event is not JSON")
	}
	switch e.Type {
	case "message-start":
		s.id = e.ID
		return [][]byte{s.chunk("assistant", ptr(""), nil, nil)}, false, nil
	case "content-delta":
		var c struct {
			Text string `json:"text"`
		}
		if err := json.Unmarshal(e.Delta.Message.Content, &c); err != nil {
			return nil, false, fmt.Errorf("a content-delta has no text")
		}
		return [][]byte{s.chunk("", &c.Text, nil, nil)}, false, nil
	case "message-end":
		if e.Delta.Error != "" {
			return nil, false, fmt.Errorf("the provider ended the stream with an error: %s", openai.Clip(e.Delta.Error))
		}
		return [][]byte{s.chunk("", nil, ptr(cohereFinish(e.Delta.FinishReason)), e.Delta.Usage.usage())}, true, nil
	}
	return nil, false, nil
}

// providerMessage pulls the message out of a provider's error body:
// OpenAI's {"error": {"message"}}, Anthropic's {"type": "error",
// "error": {"message"}}, Cohere's {"message"}; else the body, clipped.
func providerMessage(body []byte) string {
	var e struct {
		Error   json.RawMessage `json:"error"`
		Message string          `json:"message"`
	}
	if json.Unmarshal(body, &e) == nil {
		var inner struct {
			Message string `json:"message"`
		}
		var s string
		switch {
		case json.Unmarshal(e.Error, &inner) == nil && inner.Message != "":
			return inner.Message
		case json.Unmarshal(e.Error, &s) == nil && s != "":
			return s
		case e.Message != "":
			return e.Message
		}
	}
	return strings.TrimSpace(string(body[:min(len(body), 256)]))
}
