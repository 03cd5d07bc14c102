package external

import (
	"github.com/gantry/gantry/openai"
)

// The unified request and answer shapes live in package openai, which the
// GGUF runtime speaks too; these names keep the provider translations
// short.
type (
	Request       = openai.Request
	Message       = openai.Message
	Usage         = openai.Usage
	completion    = openai.Completion
	choice        = openai.Choice
	delta         = openai.Delta
	embeddingList = openai.EmbeddingList
	embedding     = openai.Embedding
	assembler     = openai.Assembler
)

// Decode reads a unified request for task from body (openai.Decode).
func Decode(task string, body []byte) (*Request, error) { return openai.Decode(task, body) }

const (
	objChat      = openai.ObjChat
	objChunk     = openai.ObjChunk
	objText      = openai.ObjText
	objEmbedList = openai.ObjEmbedList
)

var newUsage = openai.NewUsage

func ptr[T any](v T) *T { return &v }

// Answer is what a call produced, for the activator's record and metrics.
type Answer struct {
	// Body is the unified answer (for a stream: the chunks assembled into
	// one chat.completion or text_completion).
	Body  []byte
	Usage *Usage
}

func answerOf(a *assembler) Answer {
	b, u := a.Answer()
	return Answer{Body: b, Usage: u}
}
