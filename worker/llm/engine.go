package llm

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/gantry/gantry/api"
	"github.com/hybridgroup/yzma/pkg/llama"
)

// Request is one generation.
type Request struct {
	Prompt string
	// MaxTokens bounds the answer; 0: until the sequence's context is full.
	MaxTokens int
	// Temperature 0 is greedy decoding: the same prompt gives the same
	// text every time.
	Temperature float64
	// TopP keeps the smallest set of tokens whose probabilities reach it;
	// 0 or 1: off.
	TopP float64
	// Seed makes sampling at a temperature repeatable; nil: random.
	Seed *uint32
	// Stop ends the answer before the first of these strings.
	Stop []string
}

// Result is how a generation ended. Text is everything streamed, in
// order; the token counts are the model's own.
type Result struct {
	Text             string
	PromptTokens     int
	CompletionTokens int
	// FinishReason is "stop" (the model's end token or a stop sequence)
	// or "length" (MaxTokens, or the context is full).
	FinishReason string
}

// Generate runs r and calls onText, on the caller's goroutine, with each
// piece of text as the model produces it. It returns when the answer is
// complete, ctx ends, or onText returns an error (then its sequence is
// dropped at the engine's next step).
func (m *Model) Generate(ctx context.Context, r Request, onText func(string) error) (Result, error) {
	if m.eng == nil {
		return Result{}, invalid("this model is served for embeddings; it generates no text")
	}
	toks, err := m.promptTokens(r.Prompt)
	if err != nil {
		return Result{}, err
	}
	s := &seq{req: r, tokens: toks, text: newTextStream(r.Stop), wake: make(chan struct{}, 1), idx: -1}
	if err := m.eng.enqueue(s); err != nil {
		return Result{}, err
	}
	for {
		select {
		case <-s.wake:
		case <-ctx.Done():
			s.cancelled.Store(true)
			return Result{}, ctx.Err()
		}
		out, done, res, err := s.take()
		if len(out) > 1 {
			// The reader fell behind the engine: one piece for what came
			// meanwhile, so that a slow stream costs fewer writes, not more.
			out = []string{strings.Join(out, "")}
		}
		for _, piece := range out {
			if err := onText(piece); err != nil {
				s.cancelled.Store(true)
				return Result{}, err
			}
		}
		if done {
			return res, err
		}
	}
}

// Check reports what Generate would refuse r for before it starts (a
// prompt that does not fit), so that a stream can answer 400 before its
// 200.
func (m *Model) Check(r Request) error {
	if m.eng == nil {
		return invalid("this model is served for embeddings; it generates no text")
	}
	_, err := m.promptTokens(r.Prompt)
	return err
}

func (m *Model) promptTokens(prompt string) ([]llama.Token, error) {
	toks, err := m.Tokenize(prompt)
	if err != nil {
		return nil, err
	}
	if len(toks) >= m.nCtx {
		return nil, invalid("the prompt is %d tokens; this model holds %d per request, prompt and answer together", len(toks), m.nCtx)
	}
	return toks, nil
}

// Tokens is how many tokens the model has generated since Open.
func (m *Model) Tokens() uint64 {
	if m.eng == nil {
		return 0
	}
	return m.eng.generated.Load()
}

// Sequences is how many requests wait for a sequence and how many
// generate now.
func (m *Model) Sequences() (queued, running int) {
	if m.eng == nil {
		return 0, 0
	}
	return int(m.eng.queued.Load()), int(m.eng.running.Load())
}

// seq is one request's sequence. The engine's goroutine owns every field
// above mu; the caller reads only what mu guards.
type seq struct {
	req       Request
	tokens    []llama.Token // the prompt
	prefilled int           // prompt tokens in the KV cache
	pos       llama.Pos     // next position
	ids       []llama.SeqId // its one sequence id, as Batch.Add takes it
	sampler   llama.Sampler
	next      llama.Token // sampled, to feed at pos
	idx       int32       // batch index of its logits this step; -1: none
	text      *textStream
	full      strings.Builder
	nOut      int
	ended     bool // finish was called
	cancelled atomic.Bool

	mu   sync.Mutex // guards out, done, res, err
	out  []string
	done bool
	res  Result
	err  error
	wake chan struct{} // cap 1: "mu's fields changed"
}

func (s *seq) push(piece string, done bool, res Result, err error) {
	s.mu.Lock()
	if piece != "" {
		s.out = append(s.out, piece)
	}
	if done {
		s.done, s.res, s.err = true, res, err
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *seq) take() (out []string, done bool, res Result, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out, s.out = s.out, nil
	return out, s.done, s.res, s.err
}

// engine owns one llama.cpp context: only run's goroutine calls it.
type engine struct {
	m     *Model
	ctx   llama.Context
	mem   llama.Memory
	batch llama.Batch
	nSeq  int
	piece []byte

	submit  chan *seq
	mu      sync.Mutex // guards closed, and sends on submit against close
	closed  bool
	stop    chan struct{}
	stopped chan struct{}

	generated       atomic.Uint64
	queued, running atomic.Int64
}

func newEngine(m *Model) (*engine, error) {
	cfg := m.cfg
	cp := llama.ContextDefaultParams()
	cp.NCtx = uint32(m.nCtx * cfg.Sequences) // split evenly among the sequences
	cp.NBatch = uint32(cfg.BatchTokens)
	cp.NUbatch = uint32(cfg.BatchTokens)
	cp.NSeqMax = uint32(cfg.Sequences)
	cp.NThreads = int32(cfg.Threads)
	cp.NThreadsBatch = int32(cfg.Threads)
	cp.NoPerf = 1
	lctx, err := llama.InitFromModel(m.model, cp)
	if err != nil || lctx == 0 {
		return nil, fmt.Errorf("llama.cpp could not create a context of %d tokens for %d sequences: %v", cp.NCtx, cfg.Sequences, err)
	}
	mem, err := llama.GetMemory(lctx)
	if err != nil {
		llama.Free(lctx)
		return nil, err
	}
	e := &engine{
		m: m, ctx: lctx, mem: mem, nSeq: cfg.Sequences,
		batch:  llama.BatchInit(int32(cfg.BatchTokens), 0, 1),
		piece:  make([]byte, 256),
		submit: make(chan *seq, cfg.MaxQueue),
		stop:   make(chan struct{}), stopped: make(chan struct{}),
	}
	go e.run()
	return e, nil
}

func (e *engine) enqueue(s *seq) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return ErrClosed
	}
	select {
	case e.submit <- s:
		e.queued.Add(1)
		return nil
	default:
		return api.Errorf(api.ErrTemporarilyUnavailable, "%d requests are waiting for this replica already; retry later", cap(e.submit))
	}
}

func (e *engine) close() {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return
	}
	e.closed = true
	e.mu.Unlock()
	close(e.stop)
	<-e.stopped
	llama.BatchFree(e.batch)
	llama.Free(e.ctx)
}

// run is the engine's goroutine: admit waiting sequences to free slots,
// put one step of every running sequence in one batch, decode, sample.
func (e *engine) run() {
	defer close(e.stopped)
	active := make([]*seq, e.nSeq) // by sequence id
	var waiting []*seq
	running := 0
	for {
		if running == 0 && len(waiting) == 0 {
			select {
			case s := <-e.submit:
				waiting = append(waiting, s)
			case <-e.stop:
				e.drain(active, waiting)
				return
			}
		}
	more:
		for {
			select {
			case s := <-e.submit:
				waiting = append(waiting, s)
			case <-e.stop:
				e.drain(active, waiting)
				return
			default:
				break more
			}
		}
		// Sequences whose clients left free their slot first.
		for id, s := range active {
			if s != nil && s.cancelled.Load() {
				e.release(s)
				active[id] = nil
				running--
			}
		}
		for id := range active {
			for active[id] == nil && len(waiting) > 0 {
				s := waiting[0]
				waiting = waiting[1:]
				e.queued.Add(-1)
				if s.cancelled.Load() {
					continue
				}
				s.ids = []llama.SeqId{llama.SeqId(id)}
				s.sampler = newSampler(s.req)
				active[id] = s
				running++
				e.running.Add(1)
			}
		}
		if running == 0 {
			continue
		}
		e.step(active)
		for id, s := range active {
			if s != nil && s.ended {
				e.release(s)
				active[id] = nil
				running--
			}
		}
	}
}

// step decodes one batch: the next token of every generating sequence,
// then as much of the waiting prompts as fits, and samples a token for
// each sequence whose prompt is complete.
func (e *engine) step(active []*seq) {
	b := &e.batch
	b.Clear()
	n := int32(0)
	for _, s := range active {
		if s == nil || s.prefilled < len(s.tokens) {
			continue
		}
		b.Add(s.next, s.pos, s.ids, true)
		s.idx = n
		s.pos++
		n++
	}
	limit := int32(e.m.cfg.BatchTokens)
	for _, s := range active {
		if s == nil || s.prefilled == len(s.tokens) {
			continue
		}
		for s.prefilled < len(s.tokens) && n < limit {
			last := s.prefilled == len(s.tokens)-1
			b.Add(s.tokens[s.prefilled], s.pos, s.ids, last)
			if last {
				s.idx = n
			}
			s.prefilled++
			s.pos++
			n++
		}
	}
	if ret, err := llama.Decode(e.ctx, *b); err != nil || ret != 0 {
		// 1 is "no room in the KV cache", which the per-sequence context
		// bound rules out; anything else is llama.cpp failing.
		err = fmt.Errorf("llama.cpp decode failed (code %d, %v)", ret, err)
		for _, s := range active {
			if s != nil {
				s.finish("", err)
			}
		}
		return
	}
	for _, s := range active {
		if s == nil || s.idx < 0 {
			continue
		}
		tok := llama.SamplerSample(s.sampler, e.ctx, s.idx)
		s.idx = -1
		e.generated.Add(1)
		e.accept(s, tok)
	}
}

// accept takes a sampled token into s: its text, and whether s ends.
func (e *engine) accept(s *seq, tok llama.Token) {
	if llama.VocabIsEOG(e.m.vocab, tok) {
		s.nOut++
		s.finish("stop", nil)
		return
	}
	s.nOut++
	out, stopped := s.text.add(e.tokenText(tok))
	if out != "" {
		s.full.WriteString(out)
		s.push(out, false, Result{}, nil)
	}
	switch {
	case stopped:
		s.finish("stop", nil)
	case s.req.MaxTokens > 0 && s.nOut >= s.req.MaxTokens:
		s.finish("length", nil)
	case int(s.pos) >= e.m.nCtx:
		s.finish("length", nil) // no room to feed tok back
	default:
		s.next = tok
	}
}

// finish ends s with reason, or with err when that is not nil.
func (s *seq) finish(reason string, err error) {
	if s.ended {
		return
	}
	s.ended = true
	var res Result
	if err == nil {
		if rest := s.text.flush(); rest != "" {
			s.full.WriteString(rest)
			s.push(rest, false, Result{}, nil)
		}
		res = Result{Text: s.full.String(), PromptTokens: len(s.tokens), CompletionTokens: s.nOut, FinishReason: reason}
	}
	s.push("", true, res, err)
}

// tokenText is a token's text; control tokens have none.
func (e *engine) tokenText(tok llama.Token) string {
	n := llama.TokenToPiece(e.m.vocab, tok, e.piece, 0, false)
	if n < 0 {
		e.piece = make([]byte, -n)
		n = llama.TokenToPiece(e.m.vocab, tok, e.piece, 0, false)
	}
	if n <= 0 {
		return ""
	}
	return string(e.piece[:n])
}

// release frees s's slot: its KV cache and sampler.
func (e *engine) release(s *seq) {
	llama.MemorySeqRm(e.mem, s.ids[0], -1, -1)
	llama.SamplerFree(s.sampler)
	e.running.Add(-1)
}

// drain ends every sequence when the engine stops.
func (e *engine) drain(active, waiting []*seq) {
	for id, s := range active {
		if s != nil {
			s.finish("", ErrClosed)
			e.release(s)
			active[id] = nil
		}
	}
	for {
		select {
		case s := <-e.submit:
			waiting = append(waiting, s)
			continue
		default:
		}
		break
	}
	for _, s := range waiting {
		e.queued.Add(-1)
		s.finish("", ErrClosed)
	}
}

func newSampler(r Request) llama.Sampler {
	ch := llama.SamplerChainInit(llama.SamplerChainDefaultParams())
	if r.Temperature <= 0 {
		llama.SamplerChainAdd(ch, llama.SamplerInitGreedy())
		return ch
	}
	if r.TopP > 0 && r.TopP < 1 {
		llama.SamplerChainAdd(ch, llama.SamplerInitTopP(float32(r.TopP), 1))
	}
	llama.SamplerChainAdd(ch, llama.SamplerInitTemp(float32(r.Temperature)))
	seed := rand.Uint32()
	if r.Seed != nil {
		seed = *r.Seed
	}
	llama.SamplerChainAdd(ch, llama.SamplerInitDist(seed))
	return ch
}
