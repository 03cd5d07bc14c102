package providertest

import (
	"encoding/json"
	"net/http"
	"strings"
)

// --- OpenAI (API reference: Chat, Completions, Embeddings) ---

func openAIError(w http.ResponseWriter, status int, typ, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"message": msg, "type": typ, "param": nil, "code": nil}})
}

func (s *Server) azure(w http.ResponseWriter, r *http.Request, body map[string]json.RawMessage) {
	// /openai/deployments/{deployment}/chat/completions?api-version=...
	rest := strings.TrimPrefix(r.URL.Path, "/openai/deployments/")
	dep, path, ok := strings.Cut(rest, "/")
	if !ok || r.URL.Query().Get("api-version") == "" {
		openAIError(w, 404, "404", "Resource not found")
		return
	}
	if s.Key != "" && r.Header.Get("api-key") != s.Key {
		openAIError(w, 401, "401", "Access denied due to invalid subscription key or wrong API endpoint.")
		return
	}
	if _, has := body["model"]; has {
		openAIError(w, 400, "invalid_request_error", "model is named by the deployment in the path")
		return
	}
	s.openAI(w, r, "/"+path, dep, body)
}

func (s *Server) openAI(w http.ResponseWriter, r *http.Request, path, model string, body map[string]json.RawMessage) {
	if s.fault(w, r, model, func(st int, m string) { openAIError(w, st, "server_error", m) }) {
		return
	}
	if model == "" {
		openAIError(w, 400, "invalid_request_error", "you must provide a model parameter")
		return
	}
	var stream bool
	json.Unmarshal(body["stream"], &stream)
	switch path {
	case "/embeddings":
		var in []string
		if json.Unmarshal(body["input"], &in) != nil {
			in = []string{str(body["input"])}
		}
		data := []map[string]any{}
		tokens := 0
		for i, t := range in {
			data = append(data, map[string]any{"object": "embedding", "index": i, "embedding": vector(t)})
			tokens += count(t) - 1
		}
		writeJSON(w, map[string]any{"object": "list", "data": data, "model": model,
			"usage": map[string]int{"prompt_tokens": tokens, "total_tokens": tokens}})
		return
	case "/chat/completions", "/completions":
	default:
		openAIError(w, 404, "invalid_request_error", "Invalid URL")
		return
	}
	chat := path == "/chat/completions"
	text := prompt(body)
	ws := words(model, text)
	answer := strings.Join(ws, "")
	in, out := count(text), len(ws)
	usage := map[string]int{"prompt_tokens": in, "completion_tokens": out, "total_tokens": in + out}
	id, obj := "chatcmpl-double", "chat.completion"
	if !chat {
		id, obj = "cmpl-double", "text_completion"
	}
	if !stream {
		c := map[string]any{"index": 0, "finish_reason": "stop", "logprobs": nil}
		if chat {
			c["message"] = map[string]any{"role": "assistant", "content": answer, "refusal": nil}
		} else {
			c["text"] = answer
		}
		writeJSON(w, map[string]any{"id": id, "object": obj, "created": 1700000000, "model": model,
			"choices": []any{c}, "usage": usage, "system_fingerprint": "fp_double"})
		return
	}
	if chat {
		obj = "chat.completion.chunk"
	}
	var opts struct {
		IncludeUsage bool `json:"include_usage"`
	}
	json.Unmarshal(body["stream_options"], &opts)
	e := startSSE(s, w, r)
	chunk := func(delta map[string]any, text *string, finish any) map[string]any {
		c := map[string]any{"index": 0, "finish_reason": finish, "logprobs": nil}
		if chat {
			c["delta"] = delta
		} else {
			c["text"] = *text
		}
		return map[string]any{"id": id, "object": obj, "created": 1700000000, "model": model, "choices": []any{c}}
	}
	empty := ""
	if chat && !e.send("", chunk(map[string]any{"role": "assistant", "content": ""}, &empty, nil)) {
		return
	}
	for i, wd := range ws {
		if model == "cut" && i == 2 {
			cut(w)
			return
		}
		if !e.pace(model) || !e.send("", chunk(map[string]any{"content": wd}, &wd, nil)) {
			return
		}
	}
	if !e.send("", chunk(map[string]any{}, &empty, "stop")) {
		return
	}
	if opts.IncludeUsage {
		if !e.send("", map[string]any{"id": id, "object": obj, "created": 1700000000, "model": model, "choices": []any{}, "usage": usage}) {
			return
		}
	}
	e.send("", "[DONE]")
}

// vector is a deterministic 4-float embedding of t.
func vector(t string) []float64 {
	v := []float64{0, 0, 0, 0}
	for i, c := range t {
		v[i%4] += float64(c) / 1000
	}
	return v
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// --- Anthropic (API reference: Messages, Streaming Messages, Errors) ---

func anthropicError(w http.ResponseWriter, status int, msg string) {
	typ := map[int]string{400: "invalid_request_error", 401: "authentication_error", 429: "rate_limit_error", 500: "api_error", 529: "overloaded_error"}[status]
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"type": "error", "error": map[string]any{"type": typ, "message": msg}})
}

func (s *Server) anthropic(w http.ResponseWriter, r *http.Request, body map[string]json.RawMessage) {
	if s.Key != "" && r.Header.Get("x-api-key") != s.Key {
		anthropicError(w, 401, "invalid x-api-key")
		return
	}
	if r.Header.Get("anthropic-version") == "" {
		anthropicError(w, 400, "anthropic-version: header is required")
		return
	}
	model := str(body["model"])
	if s.fault(w, r, model, func(st int, m string) { anthropicError(w, st, m) }) {
		return
	}
	var maxTokens int
	if json.Unmarshal(body["max_tokens"], &maxTokens) != nil || maxTokens < 1 {
		anthropicError(w, 400, "max_tokens: Field required")
		return
	}
	var msgs []struct{ Role string }
	json.Unmarshal(body["messages"], &msgs)
	for _, m := range msgs {
		if m.Role == "system" {
			anthropicError(w, 400, `messages: Unexpected role "system". The Messages API accepts a top-level `+"`system`"+` parameter, not "system" as an input message role.`)
			return
		}
	}
	if t, ok := body["temperature"]; ok {
		var f float64
		if json.Unmarshal(t, &f) != nil || f < 0 || f > 1 {
			anthropicError(w, 400, "temperature: range: 0..1")
			return
		}
	}
	text := prompt(body)
	ws := words(model, text)
	in, out := count(text), len(ws)
	var stream bool
	json.Unmarshal(body["stream"], &stream)
	if !stream {
		writeJSON(w, map[string]any{"id": "msg_double", "type": "message", "role": "assistant", "model": model,
			"content":     []any{map[string]any{"type": "text", "text": strings.Join(ws, "")}},
			"stop_reason": "end_turn", "stop_sequence": nil,
			"usage": map[string]int{"input_tokens": in, "output_tokens": out}})
		return
	}
	e := startSSE(s, w, r)
	if !e.send("message_start", map[string]any{"type": "message_start", "message": map[string]any{
		"id": "msg_double", "type": "message", "role": "assistant", "content": []any{}, "model": model,
		"stop_reason": nil, "stop_sequence": nil, "usage": map[string]int{"input_tokens": in, "output_tokens": 1}}}) {
		return
	}
	e.send("content_block_start", map[string]any{"type": "content_block_start", "index": 0, "content_block": map[string]any{"type": "text", "text": ""}})
	e.send("ping", map[string]any{"type": "ping"})
	for i, wd := range ws {
		if model == "cut" && i == 2 {
			cut(w)
			return
		}
		if !e.pace(model) || !e.send("content_block_delta", map[string]any{"type": "content_block_delta", "index": 0, "delta": map[string]any{"type": "text_delta", "text": wd}}) {
			return
		}
	}
	e.send("content_block_stop", map[string]any{"type": "content_block_stop", "index": 0})
	e.send("message_delta", map[string]any{"type": "message_delta", "delta": map[string]any{"stop_reason": "end_turn", "stop_sequence": nil}, "usage": map[string]int{"output_tokens": out}})
	e.send("message_stop", map[string]any{"type": "message_stop"})
}

// --- Cohere v2 (API reference: Chat, Chat with Streaming, Embed) ---

func cohereError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"message": msg})
}

func (s *Server) cohereAuth(w http.ResponseWriter, r *http.Request) bool {
	if !s.bearer(r) {
		cohereError(w, 401, "invalid api token")
		return false
	}
	return true
}

func (s *Server) cohereChat(w http.ResponseWriter, r *http.Request, body map[string]json.RawMessage) {
	if !s.cohereAuth(w, r) {
		return
	}
	model := str(body["model"])
	if s.fault(w, r, model, func(st int, m string) { cohereError(w, st, m) }) {
		return
	}
	if _, has := body["n"]; has {
		cohereError(w, 400, "invalid request: unknown field n")
		return
	}
	text := prompt(body)
	ws := words(model, text)
	usage := map[string]any{"billed_units": map[string]int{"input_tokens": count(text), "output_tokens": len(ws)},
		"tokens": map[string]int{"input_tokens": count(text) + 10, "output_tokens": len(ws)}}
	var stream bool
	json.Unmarshal(body["stream"], &stream)
	if !stream {
		writeJSON(w, map[string]any{"id": "cohere-double", "finish_reason": "COMPLETE",
			"message": map[string]any{"role": "assistant", "content": []any{map[string]any{"type": "text", "text": strings.Join(ws, "")}}},
			"usage":   usage})
		return
	}
	e := startSSE(s, w, r)
	if !e.send("message-start", map[string]any{"type": "message-start", "id": "cohere-double", "delta": map[string]any{"message": map[string]any{"role": "assistant", "content": []any{}}}}) {
		return
	}
	e.send("content-start", map[string]any{"type": "content-start", "index": 0, "delta": map[string]any{"message": map[string]any{"content": map[string]any{"type": "text", "text": ""}}}})
	for i, wd := range ws {
		if model == "cut" && i == 2 {
			cut(w)
			return
		}
		if !e.pace(model) || !e.send("content-delta", map[string]any{"type": "content-delta", "index": 0, "delta": map[string]any{"message": map[string]any{"content": map[string]any{"text": wd}}}}) {
			return
		}
	}
	e.send("content-end", map[string]any{"type": "content-end", "index": 0})
	e.send("message-end", map[string]any{"type": "message-end", "delta": map[string]any{"finish_reason": "COMPLETE", "usage": usage}})
}

func (s *Server) cohereEmbed(w http.ResponseWriter, r *http.Request, body map[string]json.RawMessage) {
	if !s.cohereAuth(w, r) {
		return
	}
	var texts []string
	json.Unmarshal(body["texts"], &texts)
	if len(texts) == 0 || str(body["input_type"]) == "" {
		cohereError(w, 400, "invalid request: texts and input_type are required")
		return
	}
	vs := [][]float64{}
	tokens := 0
	for _, t := range texts {
		vs = append(vs, vector(t))
		tokens += count(t) - 1
	}
	writeJSON(w, map[string]any{"id": "embed-double", "texts": texts, "embeddings": map[string]any{"float": vs},
		"meta": map[string]any{"api_version": map[string]string{"version": "2"}, "billed_units": map[string]int{"input_tokens": tokens}}})
}
