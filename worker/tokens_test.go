package worker

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/gantry/gantry/api"
)

// streamRuntime answers every invocation with two SSE events, the second
// only once the test has read the first: a worker that buffered the
// answer would never send the first.
type streamRuntime struct {
	next      chan struct{}
	generated atomic.Uint64
	gotBody   atomic.Value
}

func (r *streamRuntime) Predict([][]float64) (any, error) {
	return nil, api.Errorf(api.ErrInvalidParameterValue, "this model takes chat bodies")
}

func (r *streamRuntime) ServeInvocation(w http.ResponseWriter, req *http.Request) {
	b, _ := io.ReadAll(req.Body)
	r.gotBody.Store(string(b))
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	io.WriteString(w, "data: one\n\n")
	rc.Flush()
	<-r.next
	io.WriteString(w, "data: [DONE]\n\n")
	r.generated.Add(2)
}

func (r *streamRuntime) TokenLoad(context.Context) (api.TokenLoad, error) {
	return api.TokenLoad{GeneratedTokens: r.generated.Load(), Queued: 3, Running: 1}, nil
}

func TestHTTPRuntimeStreamsAndReportsTokens(t *testing.T) {
	rt := &streamRuntime{next: make(chan struct{})}
	base, _ := start(t, Config{ModelDir: writeModel(t, "flavors:\n  llm: {}\n")}, map[string]Loader{"llm": loaderOf(rt, 0)})
	waitReady(t, base)

	resp, err := http.Post(base+"/invocations", "application/json", strings.NewReader(`{"messages":[]}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("status %d, content type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	br := bufio.NewReader(resp.Body)
	line, err := br.ReadString('\n')
	if err != nil || line != "data: one\n" {
		t.Fatalf("first line %q, %v: the first event must arrive before the answer ends", line, err)
	}
	close(rt.next)
	rest, _ := io.ReadAll(br)
	if !strings.Contains(string(rest), "data: [DONE]") {
		t.Fatalf("rest of the stream %q", rest)
	}
	if got := rt.gotBody.Load(); got != `{"messages":[]}` {
		t.Errorf("runtime got body %q", got)
	}

	code, _, body := get(t, base+"/load")
	var l api.TokenLoad
	if code != 200 || json.Unmarshal([]byte(body), &l) != nil {
		t.Fatalf("/load: %d %s", code, body)
	}
	if l != (api.TokenLoad{GeneratedTokens: 2, Queued: 3, Running: 1}) {
		t.Errorf("/load = %+v", l)
	}
	_, _, metrics := get(t, base+"/metrics")
	for _, want := range []string{"gantry_worker_llm_generated_tokens_total 2", "gantry_worker_llm_sequences_queued 3",
		"gantry_worker_llm_sequences_running 1", `gantry_worker_requests_total{code="200"} 1`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func TestHTTPRuntimeBodyLimit(t *testing.T) {
	rt := &streamRuntime{next: make(chan struct{})}
	close(rt.next)
	base, _ := start(t, Config{ModelDir: writeModel(t, "flavors:\n  llm: {}\n"), MaxRequestBodySize: 10},
		map[string]Loader{"llm": loaderOf(rt, 0)})
	waitReady(t, base)
	code, _, body := post(t, base+"/invocations", "application/json", strings.Repeat("x", 11))
	if code != http.StatusRequestEntityTooLarge || !strings.Contains(body, "REQUEST_ENTITY_TOO_LARGE") && !strings.Contains(body, "limit") {
		t.Errorf("over the limit: %d %s", code, body)
	}
}

func TestLoadOfModelWithoutTokens(t *testing.T) {
	base, _ := start(t, Config{ModelDir: writeModel(t, namedModel)}, map[string]Loader{"xgboost": loaderOf(&sumRuntime{}, 2)})
	waitReady(t, base)
	code, _, body := get(t, base+"/load")
	if code != http.StatusNotFound || !strings.Contains(body, "does not generate tokens") {
		t.Errorf("/load of an xgboost model: %d %s", code, body)
	}
}

func get(t *testing.T, url string) (int, http.Header, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}
