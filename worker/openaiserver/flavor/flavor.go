// Package flavor reads the openai_server flavor of an MLmodel file: the
// command that serves the model and how to reach it. The worker's runtime
// (package openaiserver) starts what it names; the model registry checks it
// at upload. It has no dependencies beyond the API types, so that the
// registry need not import the worker.
package flavor

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/gantry/gantry/api"
)

// Name is the flavor's name in MLmodel.
const Name = "openai_server"

// Defaults of the flavor's settings.
const (
	DefaultPortEnv = "PORT"
	DefaultHealth  = "/health"
	DefaultMetrics = "/metrics"
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
		return s, fmt.Errorf("openai_server: %w", err)
	}
	s.TokensPerSecond = tps
	return s, nil
}

// TokensPerSecond reads an LLM flavor's tokens_per_second (openai_server's,
// gguf's): 0 when absent. The model registry reads it for the throughput
// chunk.
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
		return 0, fmt.Errorf("tokens_per_second must be a positive whole number")
	}
	if n < 1 || n != float64(int(n)) || n > 1e9 {
		return 0, fmt.Errorf("tokens_per_second must be a positive whole number, got %v", v)
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
