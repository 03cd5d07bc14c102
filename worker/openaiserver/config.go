// Package openaiserver serves an LLM through any OpenAI-compatible server
// (vLLM, llama.cpp's llama-server, SGLang, a server of one's own) as a
// Gantry served entity: the worker starts the command the model's MLmodel
// names, supervises it, and proxies invocations to it.
//
// The flavor, in the model directory's MLmodel:
//
//	flavors:
//	  openai_server:
//	    command: [vllm, serve, /models/llama, --port, "${PORT}"]
//	    port_env: PORT          # the child's port is in this variable; default PORT
//	    health: /health         # 200 once the model is loaded; default /health
//	    metrics: /metrics       # Prometheus text; default /metrics
//	    task: llm/v1/chat       # optional: what /invocations bodies are; default: told by the body
//	    tokens_per_second: 800  # optional: one replica's rate, the throughput chunk
//
// ${VAR} in command takes the variable from the child's environment, so a
// server that takes its port as a flag gets it. A relative program path
// (./serve.sh) is the model directory's; the child runs in the model
// directory with the worker's environment plus port_env.
//
// What the worker does with it:
//   - Load starts the command and waits for health to answer 200; /ping
//     answers 503 until then, so the model_load phase lasts until the
//     server can answer. A command that is not found, or that exits first,
//     fails the load with its exit status and last line of output, which
//     the deployment's state message shows.
//   - Once ready, a child that exits is started again (1 s, doubling to
//     30 s, between tries); /ping answers 503 while it is down, so the
//     activator sends its requests to other replicas or holds them.
//   - Invocations are checked as external models' are (external.Decode:
//     the unified fields, 400 naming a bad one) and proxied, body as sent,
//     to /v1/chat/completions, /v1/completions or /v1/embeddings; a stream
//     passes through event by event.
//   - TokenLoad reads the child's metrics (vLLM's vllm:* or llama.cpp's
//     llamacpp:* names) for the autoscaler.
package openaiserver

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gantry/gantry/api"
)

// Flavor is the openai_server flavor's name in MLmodel.
const Flavor = "openai_server"

// Defaults of the flavor's settings and of Options.
const (
	DefaultPortEnv     = "PORT"
	DefaultHealth      = "/health"
	DefaultMetrics     = "/metrics"
	DefaultLoadTimeout = 15 * time.Minute // vLLM takes minutes to load a large model (PEERS.md §8.1)
	DefaultTimeout     = 10 * time.Minute // longest invocation, past the activator's 297 s
)

// Settings are the flavor's settings, read from MLmodel.
type Settings struct {
	Command []string
	PortEnv string
	Health  string
	Metrics string
	// Task is the task of every invocation; empty: each body says.
	Task string
	// TokensPerSecond is one replica's generation rate as the model's
	// author measured it; 0 when not given.
	TokensPerSecond int
}

// Parse reads the flavor's settings. dir is the model directory, against
// which a relative program path is resolved.
func Parse(dir string, flavor map[string]any) (Settings, error) {
	s := Settings{PortEnv: DefaultPortEnv, Health: DefaultHealth, Metrics: DefaultMetrics}
	raw, ok := flavor["command"].([]any)
	if !ok || len(raw) == 0 {
		return s, fmt.Errorf("openai_server: command must be a non-empty list of strings, the server's program and arguments")
	}
	for i, a := range raw {
		v, ok := scalar(a)
		if !ok {
			return s, fmt.Errorf("openai_server: command[%d] must be a string", i)
		}
		s.Command = append(s.Command, v)
	}
	if s.Command[0] == "" {
		return s, fmt.Errorf("openai_server: command[0] must name the program")
	}
	if strings.Contains(s.Command[0], "/") && !filepath.IsAbs(s.Command[0]) {
		s.Command[0] = filepath.Join(dir, s.Command[0])
	}
	for key, dst := range map[string]*string{"port_env": &s.PortEnv, "health": &s.Health, "metrics": &s.Metrics, "task": &s.Task} {
		v, present := flavor[key]
		if !present {
			continue
		}
		str, ok := v.(string)
		if !ok || str == "" {
			return s, fmt.Errorf("openai_server: %s must be a non-empty string", key)
		}
		*dst = str
	}
	for key, p := range map[string]string{"health": s.Health, "metrics": s.Metrics} {
		if !strings.HasPrefix(p, "/") {
			return s, fmt.Errorf("openai_server: %s must be a path starting with /, got %q", key, p)
		}
	}
	switch s.Task {
	case "", api.TaskChat, api.TaskCompletions, api.TaskEmbeddings:
	default:
		return s, fmt.Errorf("openai_server: task must be %s, %s or %s, got %q", api.TaskChat, api.TaskCompletions, api.TaskEmbeddings, s.Task)
	}
	tps, err := TokensPerSecond(flavor)
	if err != nil {
		return s, err
	}
	s.TokensPerSecond = tps
	return s, nil
}

// TokensPerSecond reads the flavor's tokens_per_second: 0 when absent. The
// model registry reads it too, for the throughput chunk.
func TokensPerSecond(flavor map[string]any) (int, error) {
	v, present := flavor["tokens_per_second"]
	if !present {
		return 0, nil
	}
	var n float64
	switch x := v.(type) {
	case int:
		n = float64(x)
	case int64:
		n = float64(x)
	case uint64:
		n = float64(x)
	case float64:
		n = x
	default:
		return 0, fmt.Errorf("openai_server: tokens_per_second must be a positive whole number")
	}
	if n < 1 || n != float64(int(n)) || n > 1e9 {
		return 0, fmt.Errorf("openai_server: tokens_per_second must be a positive whole number, got %v", v)
	}
	return int(n), nil
}

// scalar takes a YAML scalar as a command argument: `--port 8000` written
// without quotes is a number in YAML, and still an argument.
func scalar(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, true
	case int, int64, uint64, float64, bool:
		return fmt.Sprint(x), true
	}
	return "", false
}

// expand replaces ${VAR} in the arguments with the child's environment.
func expand(args []string, env []string) []string {
	vals := make(map[string]string, len(env))
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok {
			vals[k] = v
		}
	}
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = os.Expand(a, func(k string) string {
			if v, ok := vals[k]; ok {
				return v
			}
			return "${" + k + "}" // left as written: not ours to expand
		})
	}
	return out
}
