package llm

import (
	"context"
	"fmt"
	"math"

	"github.com/hybridgroup/yzma/pkg/llama"
)

// embedder owns the context that computes embeddings: llama.cpp pools
// the last hidden states of a sequence's tokens by their mean. Inputs run
// one at a time on its goroutine.
type embedder struct {
	m     *Model
	ctx   llama.Context
	mem   llama.Memory
	batch llama.Batch
	nEmbd int32
	jobs  chan embedJob
	stop  chan struct{}
	done  chan struct{}
}

type embedJob struct {
	tokens []llama.Token
	reply  chan embedReply
}

type embedReply struct {
	vec []float32
	err error
}

func newEmbedder(m *Model) (*embedder, error) {
	cp := llama.ContextDefaultParams()
	cp.NCtx = uint32(m.nCtx)
	cp.NBatch = uint32(m.nCtx) // a whole input in one decode: pooling needs it
	cp.NUbatch = uint32(m.nCtx)
	cp.NSeqMax = 1
	cp.NThreads = int32(m.cfg.Threads)
	cp.NThreadsBatch = int32(m.cfg.Threads)
	cp.Embeddings = 1
	cp.PoolingType = llama.PoolingTypeMean
	cp.NoPerf = 1
	lctx, err := llama.InitFromModel(m.model, cp)
	if err != nil || lctx == 0 {
		return nil, fmt.Errorf("llama.cpp could not create an embeddings context: %v", err)
	}
	mem, err := llama.GetMemory(lctx)
	if err != nil {
		llama.Free(lctx)
		return nil, err
	}
	e := &embedder{m: m, ctx: lctx, mem: mem, nEmbd: llama.ModelNEmbd(m.model),
		batch: llama.BatchInit(int32(m.nCtx), 0, 1),
		jobs:  make(chan embedJob), stop: make(chan struct{}), done: make(chan struct{})}
	go e.run()
	return e, nil
}

// Embed returns one L2-normalized, mean-pooled embedding per input (the
// unit vectors OpenAI's embeddings are) and the tokens read.
func (m *Model) Embed(ctx context.Context, inputs []string) ([][]float32, int, error) {
	if m.emb == nil {
		return nil, 0, invalid("this model is served for text generation; it has no embeddings task")
	}
	out := make([][]float32, len(inputs))
	tokens := 0
	for i, in := range inputs {
		toks, err := m.Tokenize(in)
		if err != nil {
			return nil, 0, invalid("input[%d]: %v", i, err)
		}
		if len(toks) > m.nCtx {
			return nil, 0, invalid("input[%d] is %d tokens; this model takes at most %d", i, len(toks), m.nCtx)
		}
		reply := make(chan embedReply, 1)
		select {
		case m.emb.jobs <- embedJob{toks, reply}:
		case <-m.emb.done:
			return nil, 0, ErrClosed
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		}
		var r embedReply
		select {
		case r = <-reply:
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		}
		if r.err != nil {
			return nil, 0, r.err
		}
		out[i] = r.vec
		tokens += len(toks)
	}
	return out, tokens, nil
}

func (e *embedder) run() {
	defer close(e.done)
	for {
		select {
		case j := <-e.jobs:
			vec, err := e.embed(j.tokens)
			j.reply <- embedReply{vec, err}
		case <-e.stop:
			return
		}
	}
}

func (e *embedder) embed(toks []llama.Token) ([]float32, error) {
	defer llama.MemoryClear(e.mem, true)
	e.batch.Clear()
	ids := []llama.SeqId{0}
	for i, t := range toks {
		e.batch.Add(t, llama.Pos(i), ids, true)
	}
	if ret, err := llama.Decode(e.ctx, e.batch); err != nil || ret != 0 {
		return nil, fmt.Errorf("llama.cpp decode failed (code %d, %v)", ret, err)
	}
	v, err := llama.GetEmbeddingsSeq(e.ctx, 0, e.nEmbd)
	if err != nil || v == nil {
		return nil, fmt.Errorf("llama.cpp gave no pooled embedding for this model")
	}
	out := make([]float32, len(v))
	var sum float64
	for _, x := range v {
		sum += float64(x) * float64(x)
	}
	norm := float32(math.Sqrt(sum))
	for i, x := range v {
		if norm > 0 {
			x /= norm
		}
		out[i] = x
	}
	return out, nil
}

func (e *embedder) close() {
	close(e.stop)
	<-e.done
	llama.BatchFree(e.batch)
	llama.Free(e.ctx)
}
