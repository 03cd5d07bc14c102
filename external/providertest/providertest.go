// Package providertest is a stand-in for the LLM providers that external
// models call, speaking each one's wire format as its public API reference
// describes it: OpenAI's /v1/chat/completions, /v1/completions and
// /v1/embeddings (and Azure's /openai/deployments/{d}/... with api-key and
// api-version), Anthropic's /v1/messages with its event stream, and
// Cohere's /v2/chat (and its event stream) and /v2/embed.
//
// Tests run it as a process of its own on loopback (Start re-executes the
// test binary, whose TestMain calls Main), so that the activator's calls
// cross a real socket to a real server.
//
// The answer is deterministic: "echo: " and the last user message (or
// prompt), one word per streamed chunk. The model name steers failures,
// so that two entities of one endpoint can behave differently:
//
//	fail-429, fail-500, fail-400  answer that status in the provider's error shape
//	hang                          send nothing until the client gives up
//	slow                          stream one chunk every 50 ms (40 chunks)
//	cut                           stream two chunks, then close the connection
package providertest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Env names the variables that make a test binary serve the double.
const (
	EnvServe = "GANTRY_PROVIDER_DOUBLE"
	EnvKey   = "GANTRY_PROVIDER_DOUBLE_KEY"
)

// Server is the double's handler. Key is the credential it accepts, in
// each provider's header; empty accepts any.
type Server struct {
	Key string

	requests  atomic.Int64
	cancelled atomic.Int64
	mu        sync.Mutex // guards last
	last      map[string]json.RawMessage
}

// Stats is what GET /_double/stats answers: requests seen, streams whose
// client went away before the end (the activator cancelled upstream), and
// the last request body by path family.
type Stats struct {
	Requests  int64                      `json:"requests"`
	Cancelled int64                      `json:"cancelled"`
	Last      map[string]json.RawMessage `json:"last"`
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	if p == "/_double/stats" {
		s.mu.Lock()
		st := Stats{Requests: s.requests.Load(), Cancelled: s.cancelled.Load(), Last: s.last}
		b, _ := json.Marshal(st)
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.Write(b)
		return
	}
	s.requests.Add(1)
	var body map[string]json.RawMessage
	if r.Method != http.MethodPost || json.NewDecoder(r.Body).Decode(&body) != nil {
		openAIError(w, 400, "invalid_request_error", "We could not parse the JSON body of your request.")
		return
	}
	s.mu.Lock()
	if s.last == nil {
		s.last = map[string]json.RawMessage{}
	}
	raw, _ := json.Marshal(body)
	s.last[family(p)] = raw
	s.mu.Unlock()
	switch {
	case p == "/v1/messages":
		s.anthropic(w, r, body)
	case p == "/v2/chat":
		s.cohereChat(w, r, body)
	case p == "/v2/embed":
		s.cohereEmbed(w, r, body)
	case strings.HasPrefix(p, "/openai/deployments/"):
		s.azure(w, r, body)
	case p == "/v1/chat/completions", p == "/v1/completions", p == "/v1/embeddings":
		if !s.bearer(r) {
			openAIError(w, 401, "invalid_request_error", "Incorrect API key provided: "+mask(r.Header.Get("Authorization"))+". You can find your API key at https://platform.openai.com/account/api-keys.")
			return
		}
		s.openAI(w, r, strings.TrimPrefix(p, "/v1"), str(body["model"]), body)
	default:
		openAIError(w, 404, "invalid_request_error", "Invalid URL (POST "+p+")")
	}
}

func family(p string) string {
	switch {
	case strings.HasPrefix(p, "/openai/"):
		return "azure"
	case strings.HasPrefix(p, "/v2/"):
		return "cohere" + strings.TrimPrefix(p, "/v2")
	case p == "/v1/messages":
		return "anthropic"
	}
	return "openai" + strings.TrimPrefix(p, "/v1")
}

func (s *Server) bearer(r *http.Request) bool {
	return s.Key == "" || r.Header.Get("Authorization") == "Bearer "+s.Key
}

// mask shows a key as OpenAI does: its first and last four characters.
func mask(h string) string {
	k := strings.TrimPrefix(h, "Bearer ")
	if len(k) < 10 {
		return "***"
	}
	return k[:4] + "***" + k[len(k)-4:]
}

func str(v json.RawMessage) string {
	var s string
	json.Unmarshal(v, &s)
	return s
}

// fault answers the failures a model name asks for, in writeErr's shape,
// and reports whether it did.
func (s *Server) fault(w http.ResponseWriter, r *http.Request, model string, writeErr func(int, string)) bool {
	switch model {
	case "fail-429":
		w.Header().Set("Retry-After", "1")
		writeErr(429, "Rate limit reached for requests")
	case "fail-500":
		writeErr(500, "The server had an error while processing your request.")
	case "fail-400":
		writeErr(400, "This model's maximum context length is 8 tokens.")
	case "hang":
		<-r.Context().Done()
	default:
		return false
	}
	return true
}

// prompt is the text the answer echoes: the last user message, or the
// prompt.
func prompt(body map[string]json.RawMessage) string {
	var msgs []struct {
		Role    string          `json:"role"`
		Content json.RawMessage `json:"content"`
	}
	if json.Unmarshal(body["messages"], &msgs) == nil {
		for i := len(msgs) - 1; i >= 0; i-- {
			if msgs[i].Role == "user" {
				var c string
				if json.Unmarshal(msgs[i].Content, &c) != nil {
					// Anthropic's content blocks.
					var blocks []struct{ Text string }
					json.Unmarshal(msgs[i].Content, &blocks)
					for _, b := range blocks {
						c += b.Text
					}
				}
				return c
			}
		}
	}
	var p []string
	if json.Unmarshal(body["prompt"], &p) == nil && len(p) > 0 {
		return p[0]
	}
	return str(body["prompt"])
}

// words is the answer cut into chunks: "echo:", then each word with its
// leading space.
func words(model, text string) []string {
	out := []string{"echo:"}
	for _, w := range strings.Fields(text) {
		out = append(out, " "+w)
	}
	if model == "slow" {
		for len(out) < 40 {
			out = append(out, " .")
		}
	}
	return out
}

func count(text string) int { return len(strings.Fields(text)) + 1 }

// sse writes event streams, flushing each event and noticing a client
// that went away.
type sse struct {
	w http.ResponseWriter
	r *http.Request
	s *Server
}

func startSSE(s *Server, w http.ResponseWriter, r *http.Request) *sse {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(200)
	return &sse{w: w, r: r, s: s}
}

// send writes one event; false once the client is gone (counted once).
func (e *sse) send(name string, v any) bool {
	var b []byte
	switch x := v.(type) {
	case string:
		b = []byte(x)
	default:
		b, _ = json.Marshal(v)
	}
	if name != "" {
		fmt.Fprintf(e.w, "event: %s\n", name)
	}
	fmt.Fprintf(e.w, "data: %s\n\n", b)
	e.w.(http.Flusher).Flush()
	if e.r.Context().Err() != nil {
		e.s.cancelled.Add(1)
		return false
	}
	return true
}

// pace waits between chunks of a "slow" model; false if the client left.
func (e *sse) pace(model string) bool {
	if model != "slow" {
		return true
	}
	select {
	case <-time.After(50 * time.Millisecond):
		return true
	case <-e.r.Context().Done():
		e.s.cancelled.Add(1)
		return false
	}
}

// cut ends the connection without the stream's last event.
func cut(w http.ResponseWriter) {
	if hj, ok := w.(http.Hijacker); ok {
		if c, _, err := hj.Hijack(); err == nil {
			c.Close()
		}
	}
}

// Main serves the double when the test binary was started by Start; call
// it first in TestMain. It never returns when it serves.
func Main() {
	if os.Getenv(EnvServe) == "" {
		return
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("listening %s\n", ln.Addr())
	// The parent's end of stdin closes when it exits or kills us.
	go func() {
		bufio.NewReader(os.Stdin).ReadString('\n')
		os.Exit(0)
	}()
	srv := &http.Server{Handler: &Server{Key: os.Getenv(EnvKey)}, ReadHeaderTimeout: 10 * time.Second}
	srv.Serve(ln)
	os.Exit(0)
}

// Start runs the double as a child process of the test binary (whose
// TestMain calls Main) accepting key, and returns its base URL
// (http://127.0.0.1:port). It stops when the test ends.
func Start(t testing.TB, key string) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), EnvServe+"=1", EnvKey+"="+key)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		cmd.Process.Kill()
		cmd.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "listening ")
	if err != nil || !ok {
		t.Fatalf("provider double did not start: %q %v", line, err)
	}
	return "http://" + addr
}
