package external

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

func newUsage(prompt, completion int) *Usage {
	return &Usage{PromptTokens: prompt, CompletionTokens: &completion, TotalTokens: prompt + completion}
}

type completion struct {
	ID      string   `json:"id"`
	Object  string   `json:"object"`
	Created int64    `json:"created"`
	Model   string   `json:"model"`
	Choices []choice `json:"choices"`
	Usage   *Usage   `json:"usage,omitempty"`
}

// choice is a choice of a chat.completion (Message), a chunk (Delta) or
// a text_completion (Text).
type choice struct {
	Index        int      `json:"index"`
	Message      *Message `json:"message,omitempty"`
	Delta        *delta   `json:"delta,omitempty"`
	Text         *string  `json:"text,omitempty"`
	FinishReason *string  `json:"finish_reason"`
}

type delta struct {
	Role    string  `json:"role,omitempty"`
	Content *string `json:"content,omitempty"`
}

type embeddingList struct {
	Object string      `json:"object"`
	Model  string      `json:"model"`
	Data   []embedding `json:"data"`
	Usage  *Usage      `json:"usage,omitempty"`
}

type embedding struct {
	Object    string          `json:"object"`
	Index     int             `json:"index"`
	Embedding json.RawMessage `json:"embedding"`
}

// Objects of the unified answers.
const (
	objChat      = "chat.completion"
	objChunk     = "chat.completion.chunk"
	objText      = "text_completion"
	objEmbedList = "list"
)

func ptr[T any](v T) *T { return &v }

// Answer is what a call produced, for the activator's record and metrics.
type Answer struct {
	// Body is the unified answer (for a stream: the chunks assembled into
	// one chat.completion or text_completion).
	Body  []byte
	Usage *Usage
}

// assembler builds the whole answer of a stream from its unified chunks,
// for the inference table: the text of each choice, its finish reason,
// and the usage of the last chunk that had one.
type assembler struct {
	id, model, object string
	created           int64
	text              []strings.Builder
	finish            []*string
	usage             *Usage
}

func (a *assembler) add(chunk []byte) {
	var c completion
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
		if ch.Index < 0 || ch.Index > maxN*maxItems {
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

// answer is the assembled answer: a chat.completion for chunks, a
// text_completion for completions.
func (a *assembler) answer() Answer {
	out := completion{ID: a.id, Created: a.created, Model: a.model, Usage: a.usage, Choices: []choice{}}
	text := a.object == objText
	out.Object = objChat
	if text {
		out.Object = objText
	}
	for i := range a.text {
		s := a.text[i].String()
		c := choice{Index: i, FinishReason: a.finish[i]}
		if text {
			c.Text = &s
		} else {
			c.Message = &Message{Role: "assistant", Content: s}
		}
		out.Choices = append(out.Choices, c)
	}
	b, _ := json.Marshal(out)
	return Answer{Body: b, Usage: a.usage}
}
