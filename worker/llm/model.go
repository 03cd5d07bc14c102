// Package llm is the worker's native runtime for GGUF language models:
// llama.cpp, loaded at run time through yzma (no cgo), serving chat,
// completions and embeddings.
//
// Who does what:
//   - Open loads the model and starts one goroutine per llama.cpp
//     context (the engine); nothing else touches a context.
//   - Generate queues a sequence to the engine and waits for its text on
//     the caller's goroutine. The engine runs every admitted sequence in
//     one batch per step (continuous batching): a new request's prompt is
//     evaluated in the same decode call as the next token of the others,
//     each in a KV-cache sequence of its own, up to Config.Sequences at
//     once; the rest wait in order.
//   - Embed runs on its own context with mean pooling, one input at a
//     time.
//
// The engine never waits on a client: it appends text to a sequence's
// buffer and signals; a slow reader holds only its own buffer (bounded by
// its max_tokens).
package llm

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"

	"github.com/gantry/gantry/api"
	"github.com/hybridgroup/yzma/pkg/llama"
)

// Defaults for Config's zero values.
const (
	DefaultContext     = 2048
	DefaultSequences   = 8
	DefaultBatchTokens = 512
	DefaultMaxQueue    = 1024
)

// Config tunes a Model. It works at its zero value.
type Config struct {
	// LibDir holds the llama.cpp libraries (LibDir's default when empty).
	LibDir string
	// Threads runs llama.cpp's matrix work. Default: half the CPUs this
	// process may use, at least 1, which is what llama.cpp's servers take
	// (its physical cores). Its threads spin while they wait for each
	// other, so more threads than free cores crawl: llama.cpp's library
	// default of 4 on a 2-core machine, or 2 threads there beside other
	// work, ran 10 to 40 times slower than 1.
	Threads int
	// Context is the tokens each sequence holds, prompt and answer
	// together. Default DefaultContext, at most the model's training
	// context.
	Context int
	// Sequences is how many requests generate at once, each in its own
	// sequence of one shared batch. Default DefaultSequences.
	Sequences int
	// BatchTokens bounds the tokens of one decode step (prompts are
	// evaluated in chunks of it). Default DefaultBatchTokens.
	BatchTokens int
	// MaxQueue bounds the requests waiting for a sequence; one more is
	// refused with 503. Default DefaultMaxQueue.
	MaxQueue int
	// GPULayers are offloaded to the GPU when the libraries are a CUDA
	// build (-1: all). Default 0: the CPU only.
	GPULayers int
	// Embeddings makes the model serve Embed (a second context with mean
	// pooling) instead of Generate.
	Embeddings bool
}

func (c Config) withDefaults() Config {
	if c.Threads <= 0 {
		c.Threads = max(1, runtime.NumCPU()/2)
	}
	if c.Context <= 0 {
		c.Context = DefaultContext
	}
	if c.Sequences <= 0 {
		c.Sequences = DefaultSequences
	}
	if c.BatchTokens <= 0 {
		c.BatchTokens = DefaultBatchTokens
	}
	if c.MaxQueue <= 0 {
		c.MaxQueue = DefaultMaxQueue
	}
	return c
}

// Model is a loaded GGUF model. Its methods are safe for concurrent use.
type Model struct {
	cfg      Config
	model    llama.Model
	vocab    llama.Vocab
	template string // the model's chat template, or "chatml"
	nCtx     int    // per sequence
	eng      *engine
	emb      *embedder
}

// Open loads the GGUF file at path. A file that is not a GGUF model (or
// one llama.cpp cannot load) is an error saying so.
func Open(path string, cfg Config) (*Model, error) {
	cfg = cfg.withDefaults()
	if err := checkGGUF(path); err != nil {
		return nil, err
	}
	if err := Load(cfg.LibDir); err != nil {
		return nil, err
	}
	// Layers asked for the GPU with a build or a machine that has none
	// would run on the CPU, many times slower, with nothing to say so:
	// a GPU replica given the CPU build, or the CUDA build without the
	// CUDA runtime (ggml skips a backend it cannot load), fails instead.
	if cfg.GPULayers != 0 && !GPU() {
		return nil, fmt.Errorf("%d GPU layers asked for (--llm-gpu-layers), but the llama.cpp build in %s finds no GPU (devices: %s): a GPU replica needs the CUDA build (@node-llama-cpp/linux-x64-cuda@3.21.1), the CUDA 13 runtime (libcudart.so.13, libcublas.so.13) and the NVIDIA driver", cfg.GPULayers, loadedAt, strings.Join(Devices(), ", "))
	}
	mp := llama.ModelDefaultParams()
	mp.NGpuLayers = int32(cfg.GPULayers)
	if cfg.GPULayers < 0 {
		mp.NGpuLayers = 999
	}
	model, err := llama.ModelLoadFromFile(path, mp)
	if err != nil {
		return nil, fmt.Errorf("llama.cpp could not load %s: the file is not a GGUF model of an architecture this build supports, or it is truncated", path)
	}
	m := &Model{cfg: cfg, model: model, vocab: llama.ModelGetVocab(model)}
	m.nCtx = cfg.Context
	if train := int(llama.ModelNCtxTrain(model)); train > 0 && train < m.nCtx {
		m.nCtx = train
	}
	m.template = llama.ModelChatTemplate(model, "")
	if m.template == "" {
		m.template = "chatml"
	}
	// llama.cpp recognizes the common templates by their text; a model
	// with another gets chatml rather than a failure on every request.
	if _, err := m.FormatChat([]Message{{"user", "hi"}}); err != nil {
		m.template = "chatml"
	}
	if cfg.Embeddings {
		m.emb, err = newEmbedder(m)
	} else {
		m.eng, err = newEngine(m)
	}
	if err != nil {
		llama.ModelFree(model)
		return nil, err
	}
	return m, nil
}

// checkGGUF reads the magic number, so that a file that is no GGUF at
// all gets a clear message instead of llama.cpp's generic failure.
func checkGGUF(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("model file: %w", err)
	}
	defer f.Close()
	var magic [4]byte
	if _, err := f.Read(magic[:]); err != nil || string(magic[:]) != "GGUF" {
		return fmt.Errorf("model file %s is not a GGUF file (it does not start with the GGUF magic number)", path)
	}
	return nil
}

// Close stops the engine and frees the model. Requests still running end
// with ErrClosed.
func (m *Model) Close() error {
	if m.eng != nil {
		m.eng.close()
	}
	if m.emb != nil {
		m.emb.close()
	}
	llama.ModelFree(m.model)
	return nil
}

// ErrClosed ends requests that were running when the model closed.
var ErrClosed = errors.New("llm: the model was closed")

// Template is the chat template in use: the model's own, or "chatml".
func (m *Model) Template() string { return m.template }

// Message is one chat message.
type Message struct{ Role, Content string }

// FormatChat renders messages with the model's chat template (or chatml),
// ending with the assistant's turn.
func (m *Model) FormatChat(msgs []Message) (string, error) {
	chat := make([]llama.ChatMessage, len(msgs))
	for i, msg := range msgs {
		if strings.IndexByte(msg.Role, 0) >= 0 || strings.IndexByte(msg.Content, 0) >= 0 {
			return "", invalid("messages[%d]: contains a NUL character", i)
		}
		chat[i] = llama.NewChatMessage(msg.Role, msg.Content)
	}
	size := 256
	for _, msg := range msgs {
		size += len(msg.Role) + len(msg.Content) + 32
	}
	buf := make([]byte, size)
	n := llama.ChatApplyTemplate(m.template, chat, true, buf)
	if int(n) > len(buf) {
		buf = make([]byte, n)
		n = llama.ChatApplyTemplate(m.template, chat, true, buf)
	}
	runtime.KeepAlive(chat)
	if n < 0 {
		return "", fmt.Errorf("chat template %q: llama.cpp could not apply it", m.template)
	}
	return string(buf[:n]), nil
}

// Tokenize is the prompt's tokens, with the model's start token.
func (m *Model) Tokenize(text string) ([]llama.Token, error) {
	if strings.IndexByte(text, 0) >= 0 {
		return nil, invalid("the prompt contains a NUL character")
	}
	if text == "" {
		// yzma hands llama.cpp a nil pointer for an empty string.
		return []llama.Token{llama.VocabBOS(m.vocab)}, nil
	}
	return llama.Tokenize(m.vocab, text, true, true), nil
}

// invalid is a 400 for the client's input.
func invalid(format string, args ...any) *api.Error {
	return api.Errorf(api.ErrInvalidParameterValue, format, args...)
}
