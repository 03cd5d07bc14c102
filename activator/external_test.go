package activator

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/external/providertest"
	"github.com/gantry/gantry/loggers"
	"github.com/valyala/fasthttp"
)

func TestMain(m *testing.M) {
	providertest.Main() // serves, and never returns, in the provider double's process
	os.Exit(m.Run())
}

const extKey = "sk-activator-KEY-9f8e7d6c5b4a"

// oneTable serves one route table and then blocks, as a scheduler would.
type oneTable struct{ rt *api.RouteTable }

func (o oneTable) Wait(ctx context.Context, index uint64) (*api.RouteTable, error) {
	if index < o.rt.Index {
		return o.rt, nil
	}
	<-ctx.Done()
	return nil, ctx.Err()
}

// extRecords keeps what Capture gets.
type extRecords struct {
	mu    sync.Mutex
	rs    []loggers.Record
	usage []loggers.UsageRow
}

func (r *extRecords) Capture(rec *loggers.Record) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := *rec
	c.Request, c.Response = append([]byte(nil), rec.Request...), append([]byte(nil), rec.Response...)
	r.rs = append(r.rs, c)
	return true
}

func (r *extRecords) all() []loggers.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]loggers.Record(nil), r.rs...)
}

// externalActivator serves an activator whose endpoints are external
// entities at the provider double, and returns its base URL.
func externalActivator(t testing.TB, eps ...api.EndpointRoute) (string, *extRecords) {
	t.Helper()
	rec := &extRecords{}
	a := New(Config{Capture: rec, Timeout: 3 * time.Second}, oneTable{&api.RouteTable{Index: 1, Endpoints: eps}})
	ctx, cancel := context.WithCancel(context.Background())
	go a.Run(ctx)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: a.Handler, StreamRequestBody: true}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown(); cancel() })
	for !a.Ready() {
		time.Sleep(time.Millisecond)
	}
	return "http://" + ln.Addr().String(), rec
}

func extEntity(name, provider, task, model, base string) api.EntityRoute {
	if provider == api.ProviderOpenAI {
		base += "/v1"
	}
	return api.EntityRoute{Name: name, Deployment: "d-" + name, State: api.DeploymentReady, Replicas: []api.Replica{},
		External: &api.ExternalRoute{Provider: provider, Task: task, Model: model, BaseURL: base, Key: extKey}}
}

func post(t *testing.T, url, body string) (*http.Response, string) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestExternalChatThroughActivator(t *testing.T) {
	base := providertest.Start(t, extKey)
	url, rec := externalActivator(t, api.EndpointRoute{Name: "chat", InferenceTable: "db.chat_payload",
		Routes:   []api.Route{{ServedModelName: "claude", TrafficPercentage: 100}},
		Entities: []api.EntityRoute{extEntity("claude", api.ProviderAnthropic, api.TaskChat, "claude-x", base)}})

	resp, body := post(t, url+"/serving-endpoints/chat/invocations", `{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 64, "client_request_id": "c-1"}`)
	if resp.StatusCode != 200 || resp.Header.Get("served-model-name") != "claude" || !strings.Contains(body, `"content":"echo: hi"`) || !strings.Contains(body, `"object":"chat.completion"`) {
		t.Fatalf("invocation: %d %s %v", resp.StatusCode, body, resp.Header)
	}
	// The OpenAI SDK's path, the endpoint named by model.
	resp, body = post(t, url+"/serving-endpoints/chat/completions", `{"model": "chat", "messages": [{"role": "user", "content": "sdk"}]}`)
	if resp.StatusCode != 200 || !strings.Contains(body, "echo: sdk") {
		t.Fatalf("openai path: %d %s", resp.StatusCode, body)
	}
	for _, tc := range []struct{ path, body, want string }{
		{"/serving-endpoints/chat/invocations", `{"messages": [{"role": "user", "content": "x"}], "temperature": 3}`, "temperature: 3 is out of range"},
		{"/serving-endpoints/embeddings", `{"model": "chat", "input": "x"}`, "endpoint chat serves llm/v1/chat; this path takes llm/v1/embeddings"},
		{"/serving-endpoints/chat/completions", `{"model": "nope", "messages": []}`, "endpoint nope does not exist"},
	} {
		resp, body := post(t, url+tc.path, tc.body)
		var e api.Error
		if json.Unmarshal([]byte(body), &e); resp.StatusCode/100 != 4 || !strings.Contains(e.Message, tc.want) {
			t.Errorf("%s %s: %d %s, want a 4xx saying %q", tc.path, tc.body, resp.StatusCode, body, tc.want)
		}
	}
	rs := rec.all()
	if len(rs) < 2 || rs[0].ServedEntity != "claude" || rs[0].StatusCode != 200 || !strings.Contains(string(rs[0].Response), "echo: hi") {
		t.Fatalf("extRecords = %+v", rs)
	}
	for _, r := range rs {
		if strings.Contains(string(r.Request)+string(r.Response), extKey) {
			t.Errorf("a record holds the key: %+v", r)
		}
	}
}

// A stream reaches the client event by event, ends with [DONE], and its
// record holds the assembled answer with the usage.
func TestExternalStreamThroughActivator(t *testing.T) {
	base := providertest.Start(t, extKey)
	url, rec := externalActivator(t, api.EndpointRoute{Name: "s", InferenceTable: "db.s_payload",
		Entities: []api.EntityRoute{extEntity("co", api.ProviderCohere, api.TaskChat, "command", base)}})
	resp, err := http.Post(url+"/serving-endpoints/s/invocations", "application/json",
		strings.NewReader(`{"messages": [{"role": "user", "content": "a b c"}], "stream": true}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stream: %d %v", resp.StatusCode, resp.Header)
	}
	sc := bufio.NewScanner(resp.Body)
	var text strings.Builder
	var events []string
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		events = append(events, line)
		if line == "[DONE]" {
			break
		}
		var c struct {
			Object  string `json:"object"`
			Choices []struct {
				Delta struct{ Content string } `json:"delta"`
			} `json:"choices"`
		}
		if json.Unmarshal([]byte(line), &c); c.Object != "chat.completion.chunk" {
			t.Errorf("event %s", line)
		}
		for _, ch := range c.Choices {
			text.WriteString(ch.Delta.Content)
		}
	}
	if text.String() != "echo: a b c" || events[len(events)-1] != "[DONE]" {
		t.Fatalf("streamed %q in %d events", text.String(), len(events))
	}
	var r loggers.Record
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if rs := rec.all(); len(rs) == 1 {
			r = rs[0]
			break
		}
	}
	if r.StatusCode != 200 || !strings.Contains(string(r.Response), `"content":"echo: a b c"`) || !strings.Contains(string(r.Response), `"completion_tokens":4`) {
		t.Errorf("record = %+v %s", r, r.Response)
	}
}

// With fallbacks on, a 429 or 5xx of one entity goes to the next in the
// config's order; the header and the record name what was tried.
func TestExternalFallback(t *testing.T) {
	base := providertest.Start(t, extKey)
	eps := func(fallback bool) api.EndpointRoute {
		return api.EndpointRoute{Name: "fb", InferenceTable: "db.fb", Fallback: fallback,
			Routes: []api.Route{{ServedModelName: "a", TrafficPercentage: 100}, {ServedModelName: "b", TrafficPercentage: 0}, {ServedModelName: "c", TrafficPercentage: 0}},
			Entities: []api.EntityRoute{
				extEntity("a", api.ProviderOpenAI, api.TaskChat, "fail-429", base),
				extEntity("b", api.ProviderAnthropic, api.TaskChat, "fail-500", base),
				extEntity("c", api.ProviderCohere, api.TaskChat, "good", base),
			}}
	}
	url, _ := externalActivator(t, eps(true))
	resp, body := post(t, url+"/serving-endpoints/fb/invocations", `{"messages": [{"role": "user", "content": "x"}]}`)
	if resp.StatusCode != 200 || resp.Header.Get("served-model-name") != "c" || resp.Header.Get("x-gantry-fallbacks") != "a=429,b=502" || !strings.Contains(body, "echo: x") {
		t.Errorf("fallback: %d %s %v", resp.StatusCode, body, resp.Header)
	}
	url, _ = externalActivator(t, eps(false))
	resp, body = post(t, url+"/serving-endpoints/fb/invocations", `{"messages": [{"role": "user", "content": "x"}]}`)
	if resp.StatusCode != 429 || resp.Header.Get("served-model-name") != "a" || !strings.Contains(body, "REQUEST_LIMIT_EXCEEDED") {
		t.Errorf("no fallback: %d %s", resp.StatusCode, body)
	}
}

// A client that leaves mid-stream ends the provider's call.
func TestExternalClientDisconnectCancelsUpstream(t *testing.T) {
	base := providertest.Start(t, extKey)
	url, _ := externalActivator(t, api.EndpointRoute{Name: "slow",
		Entities: []api.EntityRoute{extEntity("o", api.ProviderOpenAI, api.TaskChat, "slow", base)}})
	resp, err := http.Post(url+"/serving-endpoints/slow/invocations", "application/json",
		strings.NewReader(`{"messages": [{"role": "user", "content": "x"}], "stream": true}`))
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(resp.Body)
	if _, err := br.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close() // 40 chunks at 50 ms: the stream has ~2 s to go
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		r, err := http.Get(base + "/_double/stats")
		if err != nil {
			t.Fatal(err)
		}
		var st providertest.Stats
		json.NewDecoder(r.Body).Decode(&st)
		r.Body.Close()
		if st.Cancelled == 1 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the provider saw no cancel: %+v", st)
		}
	}
}

// A shadow route to an external entity mirrors the endpoint's calls to
// that entity's provider: invocations, streams (recorded as the assembled
// answer) and the OpenAI SDK's paths. The client sees the live entity's
// answers only, a fallback never reaches the shadow entity, and a request
// refused before any provider saw it is not mirrored.
func TestExternalShadowRoute(t *testing.T) {
	base := providertest.Start(t, extKey)
	route := func(live string, fallback bool) api.EndpointRoute {
		return api.EndpointRoute{Name: "sh", InferenceTable: "db.sh_payload", Fallback: fallback,
			Routes: []api.Route{{ServedModelName: "live", TrafficPercentage: 100}, {ServedModelName: "shadow", TrafficPercentage: 100, Shadow: true}},
			Entities: []api.EntityRoute{
				extEntity("live", api.ProviderOpenAI, api.TaskChat, live, base),
				extEntity("shadow", api.ProviderAnthropic, api.TaskChat, "claude-shadow", base),
			}}
	}
	url, rec := externalActivator(t, route("gpt-live", false))

	resp, body := post(t, url+"/serving-endpoints/sh/invocations", `{"messages": [{"role": "user", "content": "one"}]}`)
	if resp.StatusCode != 200 || resp.Header.Get("served-model-name") != "live" || !strings.Contains(body, `"model":"gpt-live"`) {
		t.Fatalf("invocation: %d %s %v", resp.StatusCode, body, resp.Header)
	}
	resp, body = post(t, url+"/serving-endpoints/chat/completions", `{"model": "sh", "messages": [{"role": "user", "content": "two"}]}`)
	if resp.StatusCode != 200 || !strings.Contains(body, "echo: two") || !strings.Contains(body, `"model":"gpt-live"`) {
		t.Fatalf("openai path: %d %s", resp.StatusCode, body)
	}
	resp, body = post(t, url+"/serving-endpoints/sh/invocations", `{"messages": [{"role": "user", "content": "three four"}], "stream": true}`)
	if resp.StatusCode != 200 || !strings.Contains(body, "data: [DONE]") || strings.Contains(body, "claude-shadow") {
		t.Fatalf("stream: %d %s", resp.StatusCode, body)
	}
	// Refused before a provider saw it: nothing to mirror.
	if resp, body := post(t, url+"/serving-endpoints/sh/invocations", `{"messages": [{"role": "user", "content": "x"}], "temperature": 3}`); resp.StatusCode != 400 {
		t.Fatalf("bad request: %d %s", resp.StatusCode, body)
	}

	shadowsOf := func(rs []loggers.Record) map[string]loggers.Record {
		out := map[string]loggers.Record{}
		for _, r := range rs {
			if r.Shadow {
				out[r.RequestID] = r
			}
		}
		return out
	}
	var rs []loggers.Record
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if rs = rec.all(); len(shadowsOf(rs)) >= 3 && len(rs) >= 7 {
			break
		}
	}
	shadows := shadowsOf(rs)
	want := map[string]string{"one": "echo: one", "two": "echo: two", "three four": "echo: three four"}
	live := 0
	for _, r := range rs {
		if r.Shadow {
			continue
		}
		live++
		if r.StatusCode != 200 {
			continue // the refused request's own record
		}
		s, ok := shadows[r.RequestID+loggers.ShadowSuffix]
		if !ok {
			t.Errorf("no shadow record for %s (%s)", r.RequestID, r.Request)
			continue
		}
		var q struct {
			Messages []struct{ Content string } `json:"messages"`
		}
		json.Unmarshal(r.Request, &q)
		text := want[q.Messages[0].Content]
		if s.ServedEntity != "shadow" || s.StatusCode != 200 || string(s.Request) != string(r.Request) ||
			!strings.Contains(string(s.Response), `"content":"`+text+`"`) || !strings.Contains(string(s.Response), `"object":"chat.completion"`) ||
			!strings.Contains(string(s.Response), "claude-shadow") {
			t.Errorf("shadow record %+v\n%s", s, s.Response)
		}
		delete(want, q.Messages[0].Content)
	}
	if len(shadows) != 3 || live != 4 || len(want) != 0 {
		t.Errorf("%d shadow records for %d live ones, unmatched %v; want 3 for the 3 calls that reached a provider", len(shadows), live, want)
	}
	for _, r := range rs {
		if strings.Contains(string(r.Request)+string(r.Response), extKey) {
			t.Errorf("a record holds the key: %+v", r)
		}
	}

	// With fallbacks on, the live entity's 500 is the client's answer:
	// the shadow entity is not next in line, and still gets its mirror.
	url, rec = externalActivator(t, route("fail-500", true))
	resp, body = post(t, url+"/serving-endpoints/sh/invocations", `{"messages": [{"role": "user", "content": "five"}]}`)
	if resp.StatusCode != 502 || resp.Header.Get("served-model-name") != "live" || resp.Header.Get("x-gantry-fallbacks") != "" {
		t.Fatalf("fallback past the shadow: %d %s %v", resp.StatusCode, body, resp.Header)
	}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline) && len(shadowsOf(rec.all())) == 0; time.Sleep(5 * time.Millisecond) {
	}
	if s := shadowsOf(rec.all()); len(s) != 1 {
		t.Errorf("shadow records after a failed live call: %+v", s)
	}
}
