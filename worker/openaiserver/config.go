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
	"os"
	"strings"
	"time"

	"github.com/gantry/gantry/worker/openaiserver/flavor"
)

// Flavor is the openai_server flavor's name in MLmodel.
const Flavor = flavor.Name

// Settings are the flavor's settings (package flavor reads them).
type Settings = flavor.Settings

// Parse reads the flavor's settings; see flavor.Parse.
func Parse(dir string, f map[string]any) (Settings, error) { return flavor.Parse(dir, f) }

// Defaults of Options.
const (
	DefaultLoadTimeout = 15 * time.Minute // vLLM takes minutes to load a large model (PEERS.md §8.1)
	DefaultTimeout     = 10 * time.Minute // longest invocation, past the activator's 297 s
)

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
