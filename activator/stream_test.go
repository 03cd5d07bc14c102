package activator

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/internal/eventually"
	"github.com/valyala/fasthttp"
)

// sseWorker streams two events, the second only once next is closed: an
// activator that buffered the answer would hold the first.
func sseWorker(next chan struct{}) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		if !bytes.Contains(ctx.PostBody(), []byte(`"stream": true`)) {
			ctx.SetStatusCode(http.StatusBadRequest)
			ctx.SetContentType("application/json")
			ctx.SetBodyString(`{"error_code":"INVALID_PARAMETER_VALUE","message":"no stream"}`)
			return
		}
		ctx.SetContentType("text/event-stream")
		ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
			w.WriteString("data: {\"choices\":[{\"delta\":{\"content\":\"Once\"}}]}\n\n")
			w.Flush()
			<-next
			w.WriteString("data: {\"choices\":[{\"delta\":{\"content\":\" upon\"}}]}\n\ndata: [DONE]\n\n")
			w.Flush()
		})
	}
}

const streamBody = `{"messages": [{"role": "user", "content": "hi"}], "stream": true}`

// openStream posts a streaming request and returns its reader once the
// headers are in.
func openStream(t *testing.T, h *harness) (*http.Response, *bufio.Reader) {
	t.Helper()
	resp, err := h.client.Post(h.base+"/serving-endpoints/ep/invocations", "application/json", strings.NewReader(streamBody))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp, bufio.NewReader(resp.Body)
}

func firstEvent(t *testing.T, br *bufio.Reader) {
	t.Helper()
	done := make(chan string, 1)
	go func() {
		line, _ := br.ReadString('\n')
		done <- line
	}()
	select {
	case line := <-done:
		if !strings.Contains(line, `"Once"`) {
			t.Fatalf("first line %q", line)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the first event did not arrive while the worker held the second: the stream was buffered")
	}
}

func TestWorkerStreamPassesThrough(t *testing.T) {
	h := newHarness(t, Config{})
	next := make(chan struct{})
	w := startWorker(t, "w", sseWorker(next))
	e := readyEntity("m", w.addr)
	e.Concurrency = 1
	h.push(oneEndpoint(1, "ep", nil, e))

	resp, br := openStream(t, h)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" || resp.Header.Get("served-model-name") != "m" {
		t.Fatalf("status %d, headers %v", resp.StatusCode, resp.Header)
	}
	firstEvent(t, br)
	// The stream holds the replica's one slot until it ends: a second
	// request waits.
	second := h.invokeAsync("ep", []byte(streamBody))
	h.waitQueued("ep", "m", 1)
	close(next)
	rest, _ := io.ReadAll(br)
	if !strings.Contains(string(rest), `" upon"`) || !strings.HasSuffix(string(rest), "data: [DONE]\n\n") {
		t.Fatalf("rest of the stream %q", rest)
	}
	if got := receive(t, second); got.status != 200 || !strings.Contains(string(got.body), "[DONE]") {
		t.Errorf("second stream: %d %s", got.status, got.body)
	}
	// Asked for no stream, the worker's whole answer passes as before.
	got := receive(t, h.invokeAsync("ep", []byte(`{"messages": []}`)))
	if got.status != http.StatusBadRequest || !strings.Contains(string(got.body), "no stream") {
		t.Errorf("a whole answer: %d %s", got.status, got.body)
	}
}

func TestColdStartHoldsStream(t *testing.T) {
	h := newHarness(t, Config{})
	h.push(oneEndpoint(1, "ep", nil, coldEntity("m")))
	type opened struct {
		resp *http.Response
		br   *bufio.Reader
	}
	ch := make(chan opened, 1)
	go func() {
		resp, err := h.client.Post(h.base+"/serving-endpoints/ep/invocations", "application/json", strings.NewReader(streamBody))
		if err != nil {
			ch <- opened{}
			return
		}
		ch <- opened{resp, bufio.NewReader(resp.Body)}
	}()
	h.waitQueued("ep", "m", 1)

	next := make(chan struct{})
	w := startWorker(t, "w", sseWorker(next))
	e := coldEntity("m")
	e.State, e.Replicas = api.DeploymentReady, []api.Replica{{ID: "a", Addr: w.addr}}
	h.push(oneEndpoint(2, "ep", nil, e))

	var o opened
	select {
	case o = <-ch:
	case <-time.After(10 * time.Second):
		t.Fatal("the held stream got no answer once the replica was ready")
	}
	if o.resp == nil {
		t.Fatal("the held stream failed")
	}
	defer o.resp.Body.Close()
	if o.resp.StatusCode != 200 || o.resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("held stream: %d %v", o.resp.StatusCode, o.resp.Header)
	}
	firstEvent(t, o.br)
	close(next)
	if rest, _ := io.ReadAll(o.br); !strings.HasSuffix(string(rest), "data: [DONE]\n\n") {
		t.Errorf("rest %q", rest)
	}
}

func TestAsksStream(t *testing.T) {
	for body, want := range map[string]bool{
		`{"messages": [], "stream": true}`:          true,
		`{"messages": [], "stream": false}`:         false,
		`{"messages": [{"content": "\"stream\""}]}`: false,
		`{"inputs": [1]}`:                           false,
		`{"stream": true`:                           false,
	} {
		if got := asksStream([]byte(body)); got != want {
			t.Errorf("asksStream(%s) = %v, want %v", body, got, want)
		}
	}
}

// The OpenAI SDK's paths reach an entity served by replicas: the body goes
// to the worker as an invocation, with the path's task in X-Gantry-Task,
// and a stream passes as on /invocations.
func TestOpenAIPathToWorkerEntity(t *testing.T) {
	h := newHarness(t, Config{})
	next := make(chan struct{})
	close(next)
	sse := sseWorker(next)
	w := startWorker(t, "w", func(ctx *fasthttp.RequestCtx) {
		if task := string(ctx.Request.Header.Peek(headerTask)); task != api.TaskChat {
			ctx.SetStatusCode(http.StatusBadRequest)
			ctx.SetBodyString("task " + task)
			return
		}
		sse(ctx)
	})
	h.push(oneEndpoint(1, "ep", nil, readyEntity("m", w.addr)))
	resp, err := h.client.Post(h.base+"/serving-endpoints/chat/completions", "application/json",
		strings.NewReader(`{"model": "ep", "messages": [{"role": "user", "content": "hi"}], "stream": true}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("served-model-name") != "m" || !strings.HasSuffix(string(body), "data: [DONE]\n\n") {
		t.Fatalf("chat/completions: %d %v %s", resp.StatusCode, resp.Header, body)
	}
	resp, err = h.client.Post(h.base+"/serving-endpoints/embeddings", "application/json", strings.NewReader(`{"model": "ep", "input": "x"}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || string(body) != "task llm/v1/embeddings" {
		t.Errorf("embeddings: %d %s, want the worker to get the path's task", resp.StatusCode, body)
	}
	// The header is the activator's word to the worker, not the client's:
	// an invocation's own never reaches it.
	req, _ := http.NewRequest("POST", h.base+"/serving-endpoints/ep/invocations", strings.NewReader(`{"messages": [{"role": "user", "content": "hi"}]}`))
	req.Header.Set(headerTask, api.TaskChat)
	resp, err = h.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || string(body) != "task " {
		t.Errorf("invocations with the client's %s: %d %s, want the worker to get none", headerTask, resp.StatusCode, body)
	}
}

// endlessWorker streams an event every 5 ms until the activator stops
// reading (its flush fails: the connection to it was closed), then
// closes gone.
func endlessWorker(gone chan struct{}) fasthttp.RequestHandler {
	var once sync.Once
	return func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("text/event-stream")
		ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
			for range 2000 {
				w.WriteString("data: {\"choices\":[{\"delta\":{\"content\":\"Once\"}}]}\n\n")
				if w.Flush() != nil {
					once.Do(func() { close(gone) })
					return
				}
				time.Sleep(5 * time.Millisecond)
			}
			w.WriteString("data: [DONE]\n\n")
		})
	}
}

// TestClientGoneEndsWorkerStream: a client that goes away mid-stream ends
// the worker's generation (the activator closes its connection to the
// worker) and gives back the replica's slot, whether the activator passes
// the bytes unparsed or parses each event for an inference table; the
// parsed stream's record is written, saying so.
func TestClientGoneEndsWorkerStream(t *testing.T) {
	for _, table := range []string{"", "ml.ep_payload"} {
		t.Run("table="+table, func(t *testing.T) {
			rec := &extRecords{}
			h := newHarness(t, Config{Capture: rec})
			gone := make(chan struct{})
			w := startWorker(t, "w", endlessWorker(gone))
			e := readyEntity("m", w.addr)
			e.Concurrency = 1
			rt := oneEndpoint(1, "ep", nil, e)
			rt.Endpoints[0].InferenceTable = table
			h.push(rt)

			resp, br := openStream(t, h)
			firstEvent(t, br)
			resp.Body.Close()
			select {
			case <-gone:
			case <-time.After(5 * time.Second):
				t.Fatal("the worker kept streaming after the client went away")
			}
			// The one slot is free again: a second stream starts.
			_, br = openStream(t, h)
			firstEvent(t, br)
			if table != "" {
				eventually.True(t, 5*time.Second, "a record of the abandoned stream", func() bool { return len(rec.all()) >= 1 })
				// The status was sent; the codes say the answer is cut short.
				if r := rec.all()[0]; r.StatusCode != 200 || !strings.Contains(string(r.Response), "Once") || !slices.Contains(r.LoggingErrorCodes, "STREAM_ERROR:CLIENT_GONE") {
					t.Errorf("record: status %d, codes %v, response %s", r.StatusCode, r.LoggingErrorCodes, r.Response)
				}
			}
		})
	}
}
