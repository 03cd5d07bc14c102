// Package openai is the wire of LLM entities: Databricks' unified request
// (chat, completions, embeddings), decoded and checked with the ranges
// Databricks documents, and OpenAI's answer shapes, which Databricks'
// endpoints return and the OpenAI SDK parses. External models (package
// external) and the GGUF runtime (worker/llm) both speak it, so both
// kinds of LLM entity answer the same requests the same way.
package openai

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/gantry/gantry/api"
)

// Limits of the unified request, as Databricks documents them
// (QueryEndpointInput).
const (
	MaxN           = 5 // choices of one request
	maxTemperature = 2.0
	maxStop        = 4 // OpenAI's limit, the tightest of the providers
	maxItems       = 2048
)

// Request is a unified request, decoded and checked for its task.
type Request struct {
	Task string
	// Model is what the OpenAI SDK sends (the endpoint's name); it is not
	// the provider's model and is not sent on.
	Model string

	Messages []Message // chat
	Prompt   []string  // completions; a string is one prompt
	Input    []string  // embeddings; a string is one input

	MaxTokens   *int
	Temperature *float64
	N           *int
	Stop        []string
	Stream      bool
	// IncludeUsage asks for a last chunk with the usage (OpenAI's
	// stream_options.include_usage); Gantry always asks the provider for it.
	IncludeUsage bool
	// ExtraParams go to the provider's body as they are, for parameters
	// the unified shape has no field for (top_p, seed, ...).
	ExtraParams map[string]json.RawMessage

	ClientRequestID string
	UsageContext    map[string]string
}

// Message is one chat message.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

var roles = map[string]bool{"system": true, "user": true, "assistant": true}

// Invalidf is a 400 INVALID_PARAMETER_VALUE.
func Invalidf(format string, args ...any) *api.Error {
	return api.Errorf(api.ErrInvalidParameterValue, format, args...)
}

// fieldsOf are the fields each task takes; the rest are refused by name.
var fieldsOf = map[string][]string{
	api.TaskChat:        {"messages", "max_tokens", "temperature", "n", "stop", "stream", "stream_options", "extra_params", "client_request_id", "usage_context", "model"},
	api.TaskCompletions: {"prompt", "max_tokens", "temperature", "n", "stop", "stream", "stream_options", "extra_params", "client_request_id", "usage_context", "model"},
	api.TaskEmbeddings:  {"input", "extra_params", "client_request_id", "usage_context", "model"},
}

// fieldNames are the fields of every task, in order: Decode decodes them
// in this order, so that of two faults it names the same one every time.
var fieldNames = [...]string{"client_request_id", "extra_params", "input", "max_tokens", "messages", "model",
	"n", "prompt", "stop", "stream", "stream_options", "temperature", "usage_context"}

// fieldIndex is the place of each field in fieldNames.
var fieldIndex = func() map[string]int {
	m := map[string]int{}
	for i, f := range fieldNames {
		m[f] = i
	}
	return m
}()

// Decode reads a unified request for task from body. Every refusal is an
// *api.Error 400 that names the field and never quotes the body.
func Decode(task string, body []byte) (*Request, error) {
	allowed, ok := fieldsOf[task]
	if !ok {
		return nil, api.Errorf(api.ErrInternal, "unknown task %q", task)
	}
	// Every external call comes through here, so the common case is
	// kept cheap: one scan of the body, which checks it as json.Unmarshal
	// does and keeps each field's value, to be decoded below without a
	// map of copies; only a body it refuses takes the Decoder, to say
	// which fault it is. A field sent twice keeps its last value, as in a
	// map.
	var values [len(fieldNames)][]byte
	var unknown string // the first in order of the keys that are not fields of task
	refused := false
	refuse := func(k string) {
		if !refused || k < unknown {
			unknown, refused = k, true
		}
	}
	s := scanner{b: body}
	s.space()
	whole := s.object(maxDepth, func(key, value []byte) {
		i, known := fieldIndex[string(key[1:len(key)-1])]
		if !known {
			// Escaped, or not a field: unescaped, as a map's key is.
			var k string
			json.Unmarshal(key, &k)
			if i, known = fieldIndex[k]; !known {
				refuse(k)
				return
			}
		}
		if !contains(allowed, fieldNames[i]) {
			refuse(fieldNames[i])
			return
		}
		values[i] = value
	})
	if !whole || !s.end() {
		return nil, bodyError(task, body)
	}
	if refused {
		return nil, Invalidf("%s: not a field of %s requests; it takes %s (provider parameters go in extra_params)", Clip(unknown), task, strings.Join(allowed, ", "))
	}
	r := &Request{Task: task}
	for i, v := range values {
		if v == nil {
			continue
		}
		var err *api.Error
		switch k := fieldNames[i]; k {
		case "model":
			err = decodeInto(k, v, &r.Model)
		case "messages":
			err = r.decodeMessages(v)
		case "prompt":
			r.Prompt, err = stringOrList(k, v)
		case "input":
			r.Input, err = stringOrList(k, v)
		case "max_tokens":
			r.MaxTokens, err = positiveInt(k, v)
		case "n":
			if r.N, err = positiveInt(k, v); err == nil && *r.N > MaxN {
				err = Invalidf("n: %d is out of range; an integer between 1 and %d", *r.N, MaxN)
			}
		case "temperature":
			var t float64
			if err = decodeInto(k, v, &t); err == nil && (t < 0 || t > maxTemperature || math.IsNaN(t)) {
				err = Invalidf("temperature: %g is out of range; a float between 0.0 and 2.0", t)
			}
			r.Temperature = &t
		case "stop":
			if r.Stop, err = stringOrList(k, v); err == nil && len(r.Stop) > maxStop {
				err = Invalidf("stop: %d sequences; at most %d", len(r.Stop), maxStop)
			}
		case "stream":
			err = decodeInto(k, v, &r.Stream)
		case "stream_options":
			var so struct {
				IncludeUsage bool `json:"include_usage"`
			}
			err = decodeInto(k, v, &so)
			r.IncludeUsage = so.IncludeUsage
		case "extra_params":
			err = decodeInto(k, v, &r.ExtraParams)
			for p := range r.ExtraParams {
				if field, ok := reservedExtra[p]; ok {
					err = Invalidf("extra_params.%s: set by Gantry from the unified fields; use %s", Clip(p), field)
				}
			}
		case "client_request_id":
			err = decodeInto(k, v, &r.ClientRequestID)
		case "usage_context":
			err = decodeInto(k, v, &r.UsageContext)
		}
		if err != nil {
			return nil, err
		}
	}
	switch task {
	case api.TaskChat:
		if len(r.Messages) == 0 {
			return nil, Invalidf("messages: required; a list of {\"role\", \"content\"}")
		}
	case api.TaskCompletions:
		if len(r.Prompt) == 0 {
			return nil, Invalidf("prompt: required; a string or a list of strings")
		}
	case api.TaskEmbeddings:
		if len(r.Input) == 0 {
			return nil, Invalidf("input: required; a string or a list of strings")
		}
	}
	return r, nil
}

// bodyError says why body is not one JSON object.
func bodyError(task string, body []byte) *api.Error {
	var raw map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&raw); err != nil || raw == nil {
		return api.Errorf(api.ErrMalformedRequest, "request body is not a JSON object; send the fields of %s", task)
	}
	return api.Errorf(api.ErrMalformedRequest, "request body has data after the JSON object")
}

// reservedExtra are provider fields that the unified ones set, each with
// the unified field to use instead. Letting extra_params set them would
// make the record lie about the request, and would pass text to the
// model that input guardrails never read: Anthropic's system prompt
// comes from system messages (when there are none, an extra "system"
// would reach the provider unchecked), Cohere's texts from input, and its
// older chat API's preamble, message and chat_history from messages.
var reservedExtra = map[string]string{"model": "model", "messages": "messages", "prompt": "prompt", "input": "input",
	"stream": "stream", "system": "messages of role system", "preamble": "messages of role system",
	"message": "messages", "chat_history": "messages", "texts": "input"}

// message is one element of messages as sent.
type message struct {
	Role    *string         `json:"role"`
	Content json.RawMessage `json:"content"`
}

func (r *Request) decodeMessages(v json.RawMessage) *api.Error {
	if msgs, ok := plainMessages(v); ok {
		r.Messages = msgs
		return nil
	}
	// One Decoder for the list (unknown fields refused in every
	// element), not one per message; a list it refuses goes through
	// element by element below, to name the one at fault.
	var msgs []message
	dec := json.NewDecoder(bytes.NewReader(v))
	dec.DisallowUnknownFields()
	if dec.Decode(&msgs) == nil && len(msgs) <= maxItems {
		r.Messages = make([]Message, 0, len(msgs))
		for i, msg := range msgs {
			if err := r.addMessage(i, msg); err != nil {
				return err
			}
		}
		return nil
	}
	var list []json.RawMessage
	if err := json.Unmarshal(v, &list); err != nil {
		return Invalidf("messages: must be a list of {\"role\", \"content\"}")
	}
	if len(list) > maxItems {
		return Invalidf("messages: %d messages; at most %d", len(list), maxItems)
	}
	for i, m := range list {
		var msg message
		dec := json.NewDecoder(bytes.NewReader(m))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&msg); err != nil {
			return Invalidf("messages[%d]: must be an object with role and content only", i)
		}
		if err := r.addMessage(i, msg); err != nil {
			return err
		}
	}
	return nil
}

// addMessage checks messages[i] and appends it.
func (r *Request) addMessage(i int, msg message) *api.Error {
	if msg.Role == nil || !roles[*msg.Role] {
		return Invalidf("messages[%d].role: must be one of system, user, assistant", i)
	}
	content, err := messageContent(msg.Content)
	if err != nil {
		return Invalidf("messages[%d].content: %s", i, err)
	}
	r.Messages = append(r.Messages, Message{Role: *msg.Role, Content: content})
	return nil
}

// plainString is the JSON string v without decoding it when it has
// nothing to decode: no escapes, no control characters, valid UTF-8
// (json.Unmarshal would replace invalid bytes), no quote but its ends.
func plainString(v []byte) (string, bool) {
	if len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
		return "", false
	}
	in := v[1 : len(v)-1]
	for _, c := range in {
		if c == '\\' || c == '"' || c < 0x20 {
			return "", false
		}
	}
	if !utf8.Valid(in) {
		return "", false
	}
	return string(in), true
}

// plainMessages reads messages in the shape clients send, a list of
// objects of exactly "role" (one of roles) and "content", both plain
// strings (plainString), without reflection; ok is false for any other
// shape, which decodeMessages reads, and refuses, as it always has.
func plainMessages(v []byte) (msgs []Message, ok bool) {
	msgs = []Message{}
	ok = plainList(v, func(s *scanner) bool {
		m, ok := s.plainMessage()
		msgs = append(msgs, m)
		return ok
	})
	return msgs, ok
}

// plainMessage reads one message of plainMessages.
func (s *scanner) plainMessage() (m Message, ok bool) {
	if !s.skip('{') {
		return m, false
	}
	var role, content bool
	for {
		s.space()
		k := s.i
		if !s.string() {
			return m, false
		}
		key := s.b[k:s.i]
		s.space()
		if !s.skip(':') {
			return m, false
		}
		s.space()
		v := s.i
		if !s.string() {
			return m, false
		}
		str, plain := plainString(s.b[v:s.i])
		switch {
		case !plain:
			return m, false
		case string(key) == `"role"` && !role && roles[str]:
			m.Role, role = str, true
		case string(key) == `"content"` && !content:
			m.Content, content = str, true
		default:
			return m, false
		}
		s.space()
		if s.skip('}') {
			return m, role && content
		}
		if !s.skip(',') {
			return m, false
		}
	}
}

// plainStrings reads a list of plain strings (plainString) without
// reflection; ok is false for anything else.
func plainStrings(v []byte) (list []string, ok bool) {
	list = []string{}
	ok = plainList(v, func(s *scanner) bool {
		k := s.i
		if !s.string() {
			return false
		}
		str, plain := plainString(s.b[k:s.i])
		list = append(list, str)
		return plain
	})
	return list, ok
}

// plainList reads the JSON list v, of at most maxItems elements, each
// read by element; false if v is not such a list or element refuses one.
func plainList(v []byte, element func(s *scanner) bool) bool {
	s := scanner{b: v}
	if !s.skip('[') {
		return false
	}
	s.space()
	if s.skip(']') {
		return s.end()
	}
	for n := 1; n <= maxItems; n++ {
		s.space()
		if !element(&s) {
			return false
		}
		s.space()
		if s.skip(']') {
			return s.end()
		}
		if !s.skip(',') {
			return false
		}
	}
	return false
}

// messageContent takes a string or OpenAI's list of text parts, which the
// OpenAI SDK sends for typed messages.
func messageContent(v json.RawMessage) (string, error) {
	if len(v) == 0 || string(v) == "null" {
		return "", fmt.Errorf("required; a string")
	}
	if s, ok := plainString(v); ok {
		return s, nil
	}
	var s string
	if json.Unmarshal(v, &s) == nil {
		return s, nil
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if json.Unmarshal(v, &parts) != nil {
		return "", fmt.Errorf("must be a string or a list of text parts")
	}
	var b strings.Builder
	for _, p := range parts {
		if p.Type != "text" {
			return "", fmt.Errorf("part type %q is not supported; only text", Clip(p.Type))
		}
		b.WriteString(p.Text)
	}
	return b.String(), nil
}

func decodeInto(field string, v json.RawMessage, dst any) *api.Error {
	var err error
	switch d := dst.(type) {
	case *string:
		var ok bool
		if *d, ok = plainString(v); !ok {
			err = json.Unmarshal(v, d)
		}
	case *bool:
		switch string(v) {
		case "true", "false":
			*d = v[0] == 't'
		default:
			err = json.Unmarshal(v, d)
		}
	case *float64:
		// A number as json.Unmarshal reads one (strconv.ParseFloat).
		var perr error
		if *d, perr = strconv.ParseFloat(string(v), 64); perr != nil {
			err = json.Unmarshal(v, d)
		}
	case *map[string]string, *map[string]json.RawMessage:
		// No fields to refuse: Unmarshal, without a Decoder's buffer.
		err = json.Unmarshal(v, dst)
	default:
		dec := json.NewDecoder(bytes.NewReader(v))
		dec.DisallowUnknownFields()
		err = dec.Decode(dst)
	}
	if err != nil {
		return Invalidf("%s: %s", field, typeName(dst))
	}
	return nil
}

func typeName(dst any) string {
	switch dst.(type) {
	case *string:
		return "must be a string"
	case *bool:
		return "must be true or false"
	case *float64:
		return "must be a number"
	case *map[string]string:
		return "must be an object of strings"
	case *map[string]json.RawMessage:
		return "must be an object"
	}
	return "has the wrong shape"
}

func positiveInt(field string, v json.RawMessage) (*int, *api.Error) {
	// An integer as sent is read as json.Number reads it
	// (strconv.ParseInt); json.Number takes the rest (a quoted number
	// too) or refuses it.
	n := string(v)
	i, err := strconv.ParseInt(n, 10, 64)
	if err != nil {
		var num json.Number
		if err := json.Unmarshal(v, &num); err != nil {
			return nil, Invalidf("%s: must be an integer", field)
		}
		n = num.String()
		i, err = num.Int64()
	}
	if err != nil || i < 1 || i > math.MaxInt32 {
		return nil, Invalidf("%s: %s is out of range; an integer of at least 1", field, Clip(n))
	}
	x := int(i)
	return &x, nil
}

func stringOrList(field string, v json.RawMessage) ([]string, *api.Error) {
	if s, ok := plainString(v); ok {
		return []string{s}, nil
	}
	if list, ok := plainStrings(v); ok {
		return list, nil
	}
	var s string
	if json.Unmarshal(v, &s) == nil {
		return []string{s}, nil
	}
	var list []string
	if err := json.Unmarshal(v, &list); err != nil {
		return nil, Invalidf("%s: must be a string or a list of strings", field)
	}
	if len(list) > maxItems {
		return nil, Invalidf("%s: %d items; at most %d", field, len(list), maxItems)
	}
	return list, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Clip shortens what a client sent before a message quotes it.
func Clip(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return s[:max] + "…"
}
