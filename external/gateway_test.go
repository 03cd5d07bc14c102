package external

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/external/providertest"
)

func TestMain(m *testing.M) {
	providertest.Main() // serves, and never returns, in the double's process
	os.Exit(m.Run())
}

const key = "sk-double-KEY-0123456789abcdef"

var (
	doubleOnce sync.Once
	doubleURL  string
)

// double is one provider double process for the package's tests.
func double(t *testing.T) string {
	doubleOnce.Do(func() { doubleURL = providertest.Start(&testing.T{}, key) })
	if doubleURL == "" {
		t.Fatal("provider double did not start")
	}
	return doubleURL
}

func routeFor(t *testing.T, provider, task, model string) *api.ExternalRoute {
	base := double(t)
	rt := &api.ExternalRoute{Provider: provider, Task: task, Model: model, Key: key}
	switch provider {
	case api.ProviderOpenAI, api.ProviderCustom:
		rt.BaseURL = base + "/v1"
	default:
		rt.BaseURL = base
	}
	return rt
}

func gateway(t *testing.T) *Gateway {
	g, err := NewGateway(Config{Timeout: 5 * time.Second, Clock: func() time.Time { return time.Unix(1700000001, 0) }})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func decode(t *testing.T, task, body string) *Request {
	t.Helper()
	r, err := Decode(task, []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

const chatBody = `{"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}], "max_tokens": 64, "temperature": 1.0}`

// Every provider's chat answer comes back as OpenAI's chat.completion with
// the same text and its token counts.
func TestChatEveryProvider(t *testing.T) {
	g := gateway(t)
	for _, p := range []string{api.ProviderOpenAI, api.ProviderAnthropic, api.ProviderCohere, api.ProviderCustom} {
		t.Run(p, func(t *testing.T) {
			rt := routeFor(t, p, api.TaskChat, "m1")
			a, err := g.Call(context.Background(), rt, decode(t, api.TaskChat, chatBody))
			if err != nil {
				t.Fatal(err)
			}
			var c struct {
				Object  string `json:"object"`
				Model   string `json:"model"`
				Choices []struct {
					Message      Message `json:"message"`
					FinishReason string  `json:"finish_reason"`
				} `json:"choices"`
				Usage Usage `json:"usage"`
			}
			if err := json.Unmarshal(a.Body, &c); err != nil {
				t.Fatalf("%s: %s", err, a.Body)
			}
			if c.Object != "chat.completion" || c.Model != "m1" || len(c.Choices) != 1 ||
				c.Choices[0].Message.Content != "echo: hello there" || c.Choices[0].Message.Role != "assistant" || c.Choices[0].FinishReason != "stop" {
				t.Errorf("answer = %s", a.Body)
			}
			if a.Usage == nil || a.Usage.PromptTokens == 0 || *a.Usage.CompletionTokens != 3 || a.Usage.TotalTokens != a.Usage.PromptTokens+3 {
				t.Errorf("usage = %+v", a.Usage)
			}
		})
	}
}

// What each provider received: the translation on the way out.
func TestRequestTranslation(t *testing.T) {
	g := gateway(t)
	for _, p := range []string{api.ProviderOpenAI, api.ProviderAnthropic, api.ProviderCohere} {
		rt := routeFor(t, p, api.TaskChat, "m1")
		r := decode(t, api.TaskChat, `{"messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"}], "max_tokens": 7, "temperature": 1.5, "stop": ["END"], "extra_params": {"top_p": 0.5}}`)
		if _, err := g.Call(context.Background(), rt, r); err != nil {
			t.Fatal(p, err)
		}
	}
	st := stats(t)
	for fam, want := range map[string]string{
		"openai/chat/completions": `{"max_tokens":7,"messages":[{"role":"system","content":"sys"},{"role":"user","content":"hi"}],"model":"m1","stop":["END"],"temperature":1.5,"top_p":0.5}`,
		// Anthropic: system at the top, temperature halved onto its 0-1 range, stop_sequences.
		"anthropic":   `{"max_tokens":7,"messages":[{"role":"user","content":"hi"}],"model":"m1","stop_sequences":["END"],"system":"sys","temperature":0.75,"top_p":0.5}`,
		"cohere/chat": `{"max_tokens":7,"messages":[{"role":"system","content":"sys"},{"role":"user","content":"hi"}],"model":"m1","stop_sequences":["END"],"temperature":1.5,"top_p":0.5}`,
	} {
		if got := string(st.Last[fam]); got != want {
			t.Errorf("%s got\n %s\nwant\n %s", fam, got, want)
		}
	}
}

func stats(t *testing.T) providertest.Stats {
	resp, err := http.Get(double(t) + "/_double/stats")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st providertest.Stats
	json.NewDecoder(resp.Body).Decode(&st)
	return st
}

func TestCompletionsAndEmbeddings(t *testing.T) {
	g := gateway(t)
	for _, p := range []string{api.ProviderOpenAI, api.ProviderAnthropic, api.ProviderCohere} {
		a, err := g.Call(context.Background(), routeFor(t, p, api.TaskCompletions, "m2"), decode(t, api.TaskCompletions, `{"prompt": "once upon", "max_tokens": 5}`))
		if err != nil {
			t.Fatal(p, err)
		}
		var c struct {
			Object  string                  `json:"object"`
			Choices []struct{ Text string } `json:"choices"`
		}
		json.Unmarshal(a.Body, &c)
		if c.Object != "text_completion" || len(c.Choices) != 1 || c.Choices[0].Text != "echo: once upon" {
			t.Errorf("%s completions = %s", p, a.Body)
		}
	}
	for _, p := range []string{api.ProviderOpenAI, api.ProviderCohere} {
		a, err := g.Call(context.Background(), routeFor(t, p, api.TaskEmbeddings, "e1"), decode(t, api.TaskEmbeddings, `{"input": ["a b", "c"]}`))
		if err != nil {
			t.Fatal(p, err)
		}
		var l embeddingList
		json.Unmarshal(a.Body, &l)
		if l.Object != "list" || len(l.Data) != 2 || l.Data[1].Index != 1 || len(l.Data[0].Embedding) == 0 || l.Usage == nil || l.Usage.PromptTokens != 3 {
			t.Errorf("%s embeddings = %s", p, a.Body)
		}
	}
}

func TestAzure(t *testing.T) {
	g := gateway(t)
	rt := &api.ExternalRoute{Provider: api.ProviderOpenAI, Task: api.TaskChat, Model: "gpt-4o", BaseURL: double(t),
		APIType: "azure", APIVersion: "2024-10-21", Deployment: "my-gpt", Key: key}
	a, err := g.Call(context.Background(), rt, decode(t, api.TaskChat, chatBody))
	if err != nil || !strings.Contains(string(a.Body), `"model":"my-gpt"`) {
		t.Fatalf("azure: %v %s", err, a.Body)
	}
}

// Streams arrive chunk by chunk as chat.completion.chunk events, in order,
// and assemble into the whole answer with its usage.
func TestStreamEveryProvider(t *testing.T) {
	g := gateway(t)
	for _, p := range []string{api.ProviderOpenAI, api.ProviderAnthropic, api.ProviderCohere} {
		t.Run(p, func(t *testing.T) {
			rt := routeFor(t, p, api.TaskChat, "m3")
			s, err := g.Open(context.Background(), rt, decode(t, api.TaskChat, `{"messages": [{"role": "user", "content": "one two three"}], "stream": true}`))
			if err != nil {
				t.Fatal(err)
			}
			var text strings.Builder
			var finish string
			n := 0
			a, err := s.Run(func(c []byte) error {
				var ch completion
				if err := json.Unmarshal(c, &ch); err != nil || ch.Object != "chat.completion.chunk" {
					t.Errorf("chunk %s", c)
				}
				for _, x := range ch.Choices {
					if x.Delta != nil && x.Delta.Content != nil {
						text.WriteString(*x.Delta.Content)
					}
					if x.FinishReason != nil {
						finish = *x.FinishReason
					}
				}
				n++
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if text.String() != "echo: one two three" || finish != "stop" || n < 5 {
				t.Errorf("stream text %q finish %q in %d chunks", text.String(), finish, n)
			}
			var whole completion
			json.Unmarshal(a.Body, &whole)
			if whole.Object != "chat.completion" || whole.Choices[0].Message.Content != "echo: one two three" ||
				a.Usage == nil || *a.Usage.CompletionTokens != 4 {
				t.Errorf("assembled = %s", a.Body)
			}
		})
	}
}

func TestProviderErrors(t *testing.T) {
	g := gateway(t)
	g.cfg.Timeout = 300 * time.Millisecond
	for _, tc := range []struct {
		provider, model string
		status          int
		retry           bool
		msg             string
	}{
		{api.ProviderOpenAI, "fail-400", 400, false, "provider openai answered 400: This model's maximum context length"},
		{api.ProviderAnthropic, "fail-429", 429, true, "provider anthropic answered 429: Rate limit"},
		{api.ProviderCohere, "fail-500", 502, true, "provider cohere answered 500: The server had an error"},
		{api.ProviderOpenAI, "hang", 504, true, "provider openai did not answer in time"},
	} {
		_, err := g.Call(context.Background(), routeFor(t, tc.provider, api.TaskChat, tc.model), decode(t, api.TaskChat, chatBody))
		var e *Error
		if !errors.As(err, &e) || e.Status != tc.status || e.Retryable != tc.retry || !strings.Contains(e.Err.Message, tc.msg) {
			t.Errorf("%s %s: %v, want %d %q", tc.provider, tc.model, err, tc.status, tc.msg)
		}
	}
	// A wrong key is the provider's 401, its message without the key.
	rt := routeFor(t, api.ProviderOpenAI, api.TaskChat, "m")
	rt.Key = "sk-wrong-key-abcdefghijklmnop"
	_, err := g.Call(context.Background(), rt, decode(t, api.TaskChat, chatBody))
	var e *Error
	if !errors.As(err, &e) || e.Status != 401 || e.Err.Code != api.ErrUnauthenticated || strings.Contains(e.Err.Message, rt.Key) || !strings.Contains(e.Err.Message, "Incorrect API key") {
		t.Errorf("wrong key: %v", err)
	}
	// Nobody listening: 502, naming no address.
	rt = &api.ExternalRoute{Provider: api.ProviderOpenAI, Task: api.TaskChat, Model: "m", BaseURL: "http://127.0.0.1:1/v1", Key: key}
	_, err = g.Call(context.Background(), rt, decode(t, api.TaskChat, chatBody))
	if !errors.As(err, &e) || e.Status != 502 || strings.Contains(e.Err.Message, "127.0.0.1") {
		t.Errorf("refused: %v", err)
	}
	// A stream cut in the middle is an error after what came.
	s, err := g.Open(context.Background(), routeFor(t, api.ProviderAnthropic, api.TaskChat, "cut"), decode(t, api.TaskChat, `{"messages": [{"role": "user", "content": "a b c d"}], "stream": true}`))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	if _, err := s.Run(func([]byte) error { n++; return nil }); err == nil || n == 0 {
		t.Errorf("cut stream: %d chunks, err %v", n, err)
	}
}

// A request a provider cannot serve is a 400 naming the field.
func TestProviderLimits(t *testing.T) {
	g := gateway(t)
	_, err := g.Call(context.Background(), routeFor(t, api.ProviderAnthropic, api.TaskChat, "m"), decode(t, api.TaskChat, `{"messages": [{"role": "user", "content": "x"}], "n": 2}`))
	var e *Error
	if !errors.As(err, &e) || e.Status != 400 || !strings.HasPrefix(e.Err.Message, "n: anthropic answers one choice") {
		t.Errorf("n=2 on anthropic: %v", err)
	}
	_, err = g.Call(context.Background(), routeFor(t, api.ProviderOpenAI, api.TaskEmbeddings, "m"), decode(t, api.TaskChat, chatBody))
	if !errors.As(err, &e) || e.Status != 400 || !strings.Contains(e.Err.Message, "serves llm/v1/embeddings") {
		t.Errorf("wrong task: %v", err)
	}
}

// A plain http:// provider's whole calls go through the fasthttp client,
// within MaxConns connections: calls beyond them wait for one, and a call
// that cannot get one before its deadline is a 504. https:// providers
// keep net/http (HTTP/2, TLS checked).
func TestFastClientConnLimit(t *testing.T) {
	var mu sync.Mutex
	open, most := 0, 0
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(50 * time.Millisecond)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id": "x", "object": "chat.completion", "created": 1, "model": "m", "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}`)
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		mu.Lock()
		defer mu.Unlock()
		switch s {
		case http.StateNew:
			open++
			most = max(most, open)
		case http.StateClosed, http.StateHijacked:
			open--
		}
	}
	srv.Start()
	defer srv.Close()
	g, err := NewGateway(Config{MaxConns: 2, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if g.upstream(srv.URL+"/v1").fast == nil || g.upstream("https://api.openai.com/v1").fast != nil {
		t.Fatal("want the fasthttp client for http:// only")
	}
	rt := &api.ExternalRoute{Provider: api.ProviderOpenAI, Task: api.TaskChat, Model: "m", BaseURL: srv.URL + "/v1", Key: key}
	var wg sync.WaitGroup
	errs := make(chan error, 6)
	for range 6 {
		wg.Go(func() {
			a, err := g.Call(context.Background(), rt, decode(t, api.TaskChat, chatBody))
			if err == nil && !strings.Contains(string(a.Body), `"hi"`) {
				err = fmt.Errorf("answer %s", a.Body)
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if most > 2 {
		t.Errorf("%d connections at once, want at most 2", most)
	}
	// Both connections busy past a call's deadline: 504.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	for range 2 {
		wg.Go(func() { g.Call(context.Background(), rt, decode(t, api.TaskChat, chatBody)) })
	}
	time.Sleep(5 * time.Millisecond)
	_, err = g.Call(ctx, rt, decode(t, api.TaskChat, chatBody))
	var e *Error
	if !errors.As(err, &e) || e.Status != 504 {
		t.Errorf("no free connection: %v, want 504", err)
	}
	wg.Wait()
}
