package activator

import (
	"bytes"
	"encoding/json"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/external"
	"github.com/gantry/gantry/guardrail"
	"github.com/gantry/gantry/internal/apierr"
	"github.com/valyala/fasthttp"
)

// Guardrails (ai_gateway.guardrails) apply to calls of external entities:
//
//   - input: after the request is decoded and before any provider sees
//     it, each message's content (or prompt, or embeddings input) is
//     checked. An invalid keyword or PII with BLOCK answers 400 naming
//     the guardrail; PII with MASK is replaced ([EMAIL], ...) in what is
//     sent on, and in the request the inference record keeps.
//   - output: a whole answer's choices are checked before it is written
//     (BLOCK: 400, MASK: masked); a stream's text goes through a
//     guardrail.Stream per choice, which holds back a bounded tail, so a
//     match split across chunks is still masked, and a block ends the
//     stream with an in-stream error event.
//
// Each decision that acted is a GUARDRAIL:... entry of the record's
// logging_error_codes (guardrail.Decision.Code).

// guardKey is the RequestCtx user value holding *[]string, the guardrail
// decisions of the request, for capture.
type guardKey struct{}

// noteGuard records decision code c for ctx's inference record.
func noteGuard(ctx *fasthttp.RequestCtx, c string) {
	p, _ := ctx.UserValue(guardKey{}).(*[]string)
	if p == nil {
		p = new([]string)
		ctx.SetUserValue(guardKey{}, p)
	}
	*p = append(*p, c)
}

// guardCodes are the decisions noted for ctx.
func guardCodes(ctx *fasthttp.RequestCtx) []string {
	if p, _ := ctx.UserValue(guardKey{}).(*[]string); p != nil {
		return *p
	}
	return nil
}

// guardInput applies ep's input guardrails to req; false when it answered
// (blocked).
func guardInput(ctx *fasthttp.RequestCtx, ep *endpoint, req *external.Request) bool {
	g := ep.input
	if g == nil {
		return true
	}
	var kinds []guardrail.Kind
	check := func(s *string) bool {
		out, d := g.Check(*s)
		if d.Guardrail == "" {
			return true
		}
		if d.Block {
			noteGuard(ctx, d.Code("input"))
			fail(ctx, api.ErrInvalidParameterValue, "%s", d.Message("input", "the request"))
			return false
		}
		*s = out
		kinds = mergeKinds(kinds, d.Kinds)
		return true
	}
	for i := range req.Messages {
		if !check(&req.Messages[i].Content) {
			return false
		}
	}
	for i := range req.Prompt {
		if !check(&req.Prompt[i]) {
			return false
		}
	}
	for i := range req.Input {
		if !check(&req.Input[i]) {
			return false
		}
	}
	if len(kinds) > 0 {
		noteGuard(ctx, guardrail.Decision{Guardrail: "pii", Kinds: kinds}.Code("input"))
		// The record keeps the request as masked, not as sent.
		ctx.Request.SetBody(maskJSON(ctx.PostBody()))
	}
	return true
}

// maskJSON masks the PII in every string of a JSON document (escapes
// decoded, so that a mask never lands inside one); b as it is if it does
// not decode.
func maskJSON(b []byte) []byte {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if dec.Decode(&v) != nil {
		return b
	}
	var walk func(v any) any
	walk = func(v any) any {
		switch x := v.(type) {
		case string:
			return guardrail.Mask(x, guardrail.Find(x))
		case []any:
			for i := range x {
				x[i] = walk(x[i])
			}
		case map[string]any:
			for k := range x {
				x[k] = walk(x[k])
			}
		}
		return v
	}
	out, err := json.Marshal(walk(v))
	if err != nil {
		return b
	}
	return out
}

func mergeKinds(a, b []guardrail.Kind) []guardrail.Kind {
	for _, k := range b {
		seen := false
		for _, x := range a {
			seen = seen || x == k
		}
		if !seen {
			a = append(a, k)
		}
	}
	return a
}

// guardAnswer applies ep's output guardrails to a whole unified answer
// (chat.completion or text_completion; embeddings have no text). It
// returns the body to write, or the 400 of a block.
func guardAnswer(ctx *fasthttp.RequestCtx, ep *endpoint, body []byte) ([]byte, *api.Error) {
	g := ep.output
	if g == nil || !guardFinds(g, body) {
		return body, nil
	}
	var ans map[string]json.RawMessage
	var choices []map[string]json.RawMessage
	if json.Unmarshal(body, &ans) != nil || json.Unmarshal(ans["choices"], &choices) != nil {
		return body, nil
	}
	var kinds []guardrail.Kind
	changed := false
	for _, c := range choices {
		var text string
		var msg map[string]json.RawMessage
		field := "text"
		if raw, ok := c["message"]; ok {
			if json.Unmarshal(raw, &msg) != nil || json.Unmarshal(msg["content"], &text) != nil {
				continue
			}
			field = "message"
		} else if json.Unmarshal(c["text"], &text) != nil {
			continue
		}
		out, d := g.Check(text)
		if d.Guardrail == "" {
			continue
		}
		if d.Block {
			noteGuard(ctx, d.Code("output"))
			return nil, api.Errorf(api.ErrInvalidParameterValue, "%s", d.Message("output", "the answer"))
		}
		kinds = mergeKinds(kinds, d.Kinds)
		b, _ := json.Marshal(out)
		if field == "message" {
			msg["content"] = b
			c["message"], _ = json.Marshal(msg)
		} else {
			c["text"] = b
		}
		changed = true
	}
	if !changed {
		return body, nil
	}
	noteGuard(ctx, guardrail.Decision{Guardrail: "pii", Kinds: kinds}.Code("output"))
	ans["choices"], _ = json.Marshal(choices)
	out, _ := json.Marshal(ans)
	return out, nil
}

// guardFinds reports whether g finds anything in the texts of a whole
// unified answer. Most answers hold nothing to mask: one typed decode
// that skips every other field tells so with 15 allocations (760 B) for
// a 400-byte chat answer, where decoding it into maps to rewrite it takes
// 62 (2,960 B); guardAnswer does that only when this finds something. A content that
// is not a string is skipped here as there.
func guardFinds(g *guardrail.Guard, body []byte) bool {
	var ans struct {
		Choices []struct {
			Message *struct {
				Content json.RawMessage `json:"content"`
			} `json:"message"`
			Text json.RawMessage `json:"text"`
		} `json:"choices"`
	}
	if json.Unmarshal(body, &ans) != nil {
		return true // let guardAnswer decide on what it can read
	}
	for _, c := range ans.Choices {
		raw := c.Text
		if c.Message != nil {
			raw = c.Message.Content
		}
		var text string
		if json.Unmarshal(raw, &text) != nil {
			continue
		}
		if _, d := g.Check(text); d.Guardrail != "" {
			return true
		}
	}
	return false
}

// writeGuarded writes a whole answer through ep's output guardrails.
func writeGuarded(ctx *fasthttp.RequestCtx, ep *endpoint, body []byte) {
	body, err := guardAnswer(ctx, ep, body)
	if err != nil {
		apierr.WriteFast(ctx, err)
		return
	}
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetContentType("application/json")
	ctx.SetBody(body)
}

// guardBlocked ends a stream that an output guardrail blocked.
type guardBlocked struct {
	err *api.Error
	d   guardrail.Decision
}

func blocked(d guardrail.Decision) *guardBlocked {
	return &guardBlocked{api.Errorf(api.ErrInvalidParameterValue, "%s", d.Message("output", "the answer")), d}
}

func (g *guardBlocked) Error() string { return g.err.Error() }

// streamGuard applies output guardrails to a stream's unified chunks:
// one guardrail.Stream per choice. Not safe for concurrent use (the body
// stream writer is one goroutine).
type streamGuard struct {
	g       *guardrail.Guard
	choices map[int]*guardrail.Stream
	// last is the newest chunk's envelope, for a closing chunk.
	id, model, object string
	created           int64
}

func newStreamGuard(g *guardrail.Guard) *streamGuard {
	return &streamGuard{g: g, choices: map[int]*guardrail.Stream{}}
}

type chunkChoice struct {
	Index        int                        `json:"index"`
	Delta        map[string]json.RawMessage `json:"delta,omitempty"`
	Text         *string                    `json:"text,omitempty"`
	FinishReason *string                    `json:"finish_reason"`
}

// chunk rewrites one unified chunk; a blocked stream is a *guardBlocked.
func (s *streamGuard) chunk(b []byte) ([]byte, error) {
	var c map[string]json.RawMessage
	var choices []chunkChoice
	if json.Unmarshal(b, &c) != nil || json.Unmarshal(c["choices"], &choices) != nil || len(choices) == 0 {
		return b, nil
	}
	json.Unmarshal(c["id"], &s.id)
	json.Unmarshal(c["model"], &s.model)
	json.Unmarshal(c["object"], &s.object)
	json.Unmarshal(c["created"], &s.created)
	for i := range choices {
		ch := &choices[i]
		st := s.choices[ch.Index]
		if st == nil {
			st = guardrail.NewStream(s.g)
			s.choices[ch.Index] = st
		}
		var text string
		switch {
		case ch.Text != nil:
			text = *ch.Text
		case ch.Delta != nil && ch.Delta["content"] != nil:
			json.Unmarshal(ch.Delta["content"], &text)
		}
		out, d := st.Write(text)
		if d.Block {
			return nil, blocked(d)
		}
		if ch.FinishReason != nil {
			rest, d := st.Flush()
			if d.Block {
				return nil, blocked(d)
			}
			out += rest
		}
		if ch.Text != nil {
			ch.Text = &out
		} else if ch.Delta != nil || out != "" {
			if ch.Delta == nil {
				ch.Delta = map[string]json.RawMessage{}
			}
			ch.Delta["content"], _ = json.Marshal(out)
		}
	}
	c["choices"], _ = json.Marshal(choices)
	return json.Marshal(c)
}

// end flushes what every choice holds as one last chunk (nil if none):
// for a stream that ended without finish reasons.
func (s *streamGuard) end() ([]byte, error) {
	var choices []chunkChoice
	for i, st := range s.choices {
		out, d := st.Flush()
		if d.Block {
			return nil, blocked(d)
		}
		if out == "" {
			continue
		}
		ch := chunkChoice{Index: i}
		if s.object == "text_completion" {
			ch.Text = &out
		} else {
			b, _ := json.Marshal(out)
			ch.Delta = map[string]json.RawMessage{"content": b}
		}
		choices = append(choices, ch)
	}
	if len(choices) == 0 {
		return nil, nil
	}
	return json.Marshal(map[string]any{"id": s.id, "object": s.object, "created": s.created, "model": s.model, "choices": choices})
}

// kinds are the PII kinds masked in the stream, over all choices.
func (s *streamGuard) kinds() []guardrail.Kind {
	var ks []guardrail.Kind
	for _, st := range s.choices {
		ks = mergeKinds(ks, st.Kinds)
	}
	return ks
}
