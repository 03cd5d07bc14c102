package openai

import (
	"encoding/json"
	"strings"
)

// The unified answer shapes are OpenAI's, which Databricks' external
// models return and the OpenAI SDK parses.

// Usage counts tokens; CompletionTokens is absent for embeddings.
type Usage struct {
	PromptTokens     int  `json:"prompt_tokens"`
	CompletionTokens *int `json:"completion_tokens,omitempty"`
	TotalTokens      int  `json:"total_tokens"`
}

// NewUsage is the usage of a generation.
func NewUsage(prompt, completion int) *Usage {
	return &Usage{PromptTokens: prompt, CompletionTokens: &completion, TotalTokens: prompt + completion}
}

// Completion is a chat.completion, a chat.completion.chunk or a
// text_completion.
type Completion struct {
	ID      string   `json:"id"`
	Object  string   `json:"object"`
	Created int64    `json:"created"`
	Model   string   `json:"model"`
	Choices []Choice `json:"choices"`
	Usage   *Usage   `json:"usage,omitempty"`
}

// Choice is a choice of a chat.completion (Message), a chunk (Delta) or
// a text_completion (Text).
type Choice struct {
	Index        int      `json:"index"`
	Message      *Message `json:"message,omitempty"`
	Delta        *Delta   `json:"delta,omitempty"`
	Text         *string  `json:"text,omitempty"`
	FinishReason *string  `json:"finish_reason"`
}

// Delta is a chunk's part of the message.
type Delta struct {
	Role    string  `json:"role,omitempty"`
	Content *string `json:"content,omitempty"`
}

// EmbeddingList is an embeddings answer.
type EmbeddingList struct {
	Object string      `json:"object"`
	Model  string      `json:"model"`
	Data   []Embedding `json:"data"`
	Usage  *Usage      `json:"usage,omitempty"`
}

// Embedding is one input's vector.
type Embedding struct {
	Object    string          `json:"object"`
	Index     int             `json:"index"`
	Embedding json.RawMessage `json:"embedding"`
}

// Objects of the unified answers.
const (
	ObjChat      = "chat.completion"
	ObjChunk     = "chat.completion.chunk"
	ObjText      = "text_completion"
	ObjEmbedList = "list"
)

// Assembler builds the whole answer of a stream from its unified chunks,
// for the inference table: the text of each choice, its finish reason,
// and the usage of the last chunk that had one.
type Assembler struct {
	id, model, object string
	created           int64
	text              []strings.Builder
	finish            []*string
	usage             *Usage
}

// Started says a chunk with an id arrived.
func (a *Assembler) Started() bool { return a.id != "" }

// Add takes one chunk (an SSE event's data).
func (a *Assembler) Add(chunk []byte) {
	var c Completion
	if json.Unmarshal(chunk, &c) != nil {
		return
	}
	if a.id == "" {
		a.id, a.model, a.created, a.object = c.ID, c.Model, c.Created, c.Object
	}
	if c.Usage != nil {
		a.usage = c.Usage
	}
	for _, ch := range c.Choices {
		if ch.Index < 0 || ch.Index > MaxN*maxItems {
			continue
		}
		for len(a.text) <= ch.Index {
			a.text = append(a.text, strings.Builder{})
			a.finish = append(a.finish, nil)
		}
		switch {
		case ch.Delta != nil && ch.Delta.Content != nil:
			a.text[ch.Index].WriteString(*ch.Delta.Content)
		case ch.Text != nil:
			a.text[ch.Index].WriteString(*ch.Text)
		}
		if ch.FinishReason != nil {
			a.finish[ch.Index] = ch.FinishReason
		}
	}
}

// Answer is the assembled answer, a chat.completion for chunks or a
// text_completion for completions, and the usage of the last chunk that
// had one.
func (a *Assembler) Answer() ([]byte, *Usage) {
	out := Completion{ID: a.id, Created: a.created, Model: a.model, Usage: a.usage, Choices: []Choice{}}
	text := a.object == ObjText
	out.Object = ObjChat
	if text {
		out.Object = ObjText
	}
	for i := range a.text {
		s := a.text[i].String()
		c := Choice{Index: i, FinishReason: a.finish[i]}
		if text {
			c.Text = &s
		} else {
			c.Message = &Message{Role: "assistant", Content: s}
		}
		out.Choices = append(out.Choices, c)
	}
	b, _ := json.Marshal(out)
	return b, a.usage
}
