package worker

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/scheduler/orchestrator/probe"
)

// jsonTokenRuntime generates tokens but answers whole, as an LLM does
// for a request without "stream": its first byte is not its first token.
type jsonTokenRuntime struct{}

func (jsonTokenRuntime) Predict([][]float64) (any, error) { return nil, nil }

func (jsonTokenRuntime) ServeInvocation(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, `{"choices": []}`)
}

func (jsonTokenRuntime) TokenLoad(context.Context) (api.TokenLoad, error) {
	return api.TokenLoad{}, nil
}

// knowsFirstToken answers whole, like jsonTokenRuntime, and knows
// when it generated its first token, as the GGUF runtime does: tokenAfter
// into the request, well before the answer leaves.
type knowsFirstToken struct {
	jsonTokenRuntime
	first atomic.Pointer[[2]time.Time]
}

const tokenAfter, answerAfter = 20 * time.Millisecond, 60 * time.Millisecond

func (r *knowsFirstToken) ServeInvocation(w http.ResponseWriter, req *http.Request) {
	arrived := time.Now()
	time.Sleep(tokenAfter)
	r.first.CompareAndSwap(nil, &[2]time.Time{arrived, time.Now()})
	time.Sleep(answerAfter - tokenAfter)
	r.jsonTokenRuntime.ServeInvocation(w, req)
}

func (r *knowsFirstToken) FirstToken() (arrived, at time.Time, ok bool) {
	if f := r.first.Load(); f != nil {
		return f[0], f[1], true
	}
	return time.Time{}, time.Time{}, false
}

// watchFirst runs the drivers' prober on the worker at base, as a driver
// does once it is ready, and returns what it reports of the first
// response.
func watchFirst(t *testing.T, base string) <-chan probe.First {
	t.Helper()
	firsts := make(chan probe.First, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	p := &probe.Prober{Interval: 10 * time.Millisecond, FirstResponse: func(f probe.First) { firsts <- f }}
	go func() { p.Watch(ctx, strings.TrimPrefix(base, "http://"), func(bool) {}); close(done) }()
	return firsts
}

// awaitFirst waits for the prober's report, failing after a second.
func awaitFirst(t *testing.T, firsts <-chan probe.First) probe.First {
	t.Helper()
	select {
	case f := <-firsts:
		return f
	case <-time.After(time.Second):
		t.Fatal("the prober reported no first response")
		return probe.First{}
	}
}

// TestFirstResponseThroughProbe: the worker's first successful answer, as
// the drivers' prober reads it off /ping: named by how it was answered,
// and placed on the prober's clock between the request's sending and its
// answer's arrival. Failed requests before it do not count.
func TestFirstResponseThroughProbe(t *testing.T) {
	const predictFor = 40 * time.Millisecond
	t.Run("native model", func(t *testing.T) {
		rt := &sumRuntime{entered: make(chan struct{}, 1), release: make(chan struct{})}
		base, _ := start(t, Config{ModelDir: writeModel(t, namedModel)}, map[string]Loader{"xgboost": loaderOf(rt, 2)})
		waitReady(t, base)
		firsts := watchFirst(t, base)
		if code, _, _ := post(t, base+"/invocations", "text/plain", "1,2"); code != http.StatusUnsupportedMediaType {
			t.Fatalf("text/plain: %d", code)
		}
		time.Sleep(50 * time.Millisecond) // five pings
		select {
		case f := <-firsts:
			t.Fatalf("a refused request reported as the first response: %+v", f)
		default:
		}
		sent := time.Now()
		go func() { <-rt.entered; time.Sleep(predictFor); close(rt.release) }()
		if code, _, body := post(t, base+"/invocations", "application/json", `{"inputs": [[1, 2]]}`); code != 200 {
			t.Fatalf("invocation: %d %s", code, body)
		}
		got := time.Now()
		f := awaitFirst(t, firsts)
		checkFirst(t, f, api.PhaseFirstResponse, sent, got, predictFor)
	})
	t.Run("stream of tokens", func(t *testing.T) {
		rt := &streamRuntime{next: make(chan struct{})}
		base, _ := start(t, Config{ModelDir: writeModel(t, "flavors:\n  llm: {}\n")}, map[string]Loader{"llm": loaderOf(rt, 0)})
		waitReady(t, base)
		firsts := watchFirst(t, base)
		sent := time.Now()
		resp, err := http.Post(base+"/invocations", "application/json", strings.NewReader(`{"messages":[]}`))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		// The first event has come, the stream has not ended: the first
		// token is reported now, not at the stream's end.
		firstEvent := time.Now()
		f := awaitFirst(t, firsts)
		checkFirst(t, f, api.PhaseFirstToken, sent, firstEvent, 0)
		close(rt.next)
		io.ReadAll(resp.Body)
	})
	t.Run("whole answer of a token runtime", func(t *testing.T) {
		base, _ := start(t, Config{ModelDir: writeModel(t, "flavors:\n  llm: {}\n")}, map[string]Loader{"llm": loaderOf(jsonTokenRuntime{}, 0)})
		waitReady(t, base)
		firsts := watchFirst(t, base)
		sent := time.Now()
		if code, _, body := post(t, base+"/invocations", "application/json", `{"messages":[]}`); code != 200 {
			t.Fatalf("invocation: %d %s", code, body)
		}
		checkFirst(t, awaitFirst(t, firsts), api.PhaseFirstResponse, sent, time.Now(), 0)
	})
	t.Run("whole answer of a runtime that knows its first token", func(t *testing.T) {
		base, _ := start(t, Config{ModelDir: writeModel(t, "flavors:\n  llm: {}\n")}, map[string]Loader{"llm": loaderOf(&knowsFirstToken{}, 0)})
		waitReady(t, base)
		firsts := watchFirst(t, base)
		sent := time.Now()
		if code, _, body := post(t, base+"/invocations", "application/json", `{"messages":[]}`); code != 200 {
			t.Fatalf("invocation: %d %s", code, body)
		}
		f := awaitFirst(t, firsts)
		checkFirst(t, f, api.PhaseFirstToken, sent, time.Now(), tokenAfter)
		// The token's time, not the answer's (answerAfter).
		if took := f.Answered.Sub(f.Arrived); took >= answerAfter {
			t.Errorf("first token took %v, the whole answer's time (%v or more)", took, answerAfter)
		}
	})
}

// checkFirst checks a reported first response against the client's view:
// the request left at sent, the answer's first byte was back by got, and
// the worker took at least took. The prober places the worker's
// durations on its clock when a ping's answer is back, a little late.
func checkFirst(t *testing.T, f probe.First, phase string, sent, got time.Time, took time.Duration) {
	t.Helper()
	const slack = 50 * time.Millisecond // a ping's way back, on a loaded machine
	if f.Phase != phase || f.Arrived.Before(sent.Add(-slack)) || f.Answered.After(got.Add(slack)) ||
		f.Answered.Sub(f.Arrived) < took || f.Answered.Before(f.Arrived) {
		t.Errorf("first response %s: arrived %+v answered %+v after the request was sent (answer back at %v), want %s, at least %v between them",
			f.Phase, f.Arrived.Sub(sent), f.Answered.Sub(sent), got.Sub(sent), phase, took)
	}
}
