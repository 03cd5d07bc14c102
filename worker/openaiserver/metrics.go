package openaiserver

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"

	"github.com/gantry/gantry/api"
)

// The servers' metric names, by what they count. Each server exposes one
// name of each; a series with labels (vLLM labels by model and engine) is
// summed.
var (
	generatedNames = []string{"vllm:generation_tokens_total", "llamacpp:tokens_predicted_total", "sglang:generation_tokens_total"}
	queuedNames    = []string{"vllm:num_requests_waiting", "llamacpp:requests_deferred", "sglang:num_queue_reqs"}
	runningNames   = []string{"vllm:num_requests_running", "llamacpp:requests_processing", "sglang:num_running_reqs"}
)

// maxMetricsBytes bounds what TokenLoad reads of the server's metrics.
const maxMetricsBytes = 4 << 20

// TokenLoad reads the server's Prometheus metrics: generated tokens, and
// sequences waiting and running.
func (r *Runtime) TokenLoad(ctx context.Context) (api.TokenLoad, error) {
	c, err := r.sv.current()
	if err != nil {
		return api.TokenLoad{}, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+r.s.Metrics, nil)
	if err != nil {
		return api.TokenLoad{}, err
	}
	resp, err := r.client.Do(req)
	if err != nil {
		return api.TokenLoad{}, fmt.Errorf("read the server's metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return api.TokenLoad{}, fmt.Errorf("the server's %s answered %d", r.s.Metrics, resp.StatusCode)
	}
	return parseLoad(io.LimitReader(resp.Body, maxMetricsBytes))
}

// parseLoad reads the three figures from Prometheus text. A server that
// has none of the generated-token names is not one the autoscaler can
// size on tokens: that is an error, not a zero.
func parseLoad(rd io.Reader) (api.TokenLoad, error) {
	sums := map[string]float64{}
	sc := bufio.NewScanner(rd)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, rest := line, ""
		if i := strings.IndexAny(line, "{ "); i >= 0 {
			name, rest = line[:i], line[i:]
		}
		if !wanted(name) {
			continue
		}
		if strings.HasPrefix(rest, "{") {
			// Label values are quoted and may hold "}"; the value follows
			// the last one.
			i := strings.LastIndexByte(rest, '}')
			if i < 0 {
				continue
			}
			rest = rest[i+1:]
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil || math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
			continue
		}
		sums[name] += v
	}
	if err := sc.Err(); err != nil {
		return api.TokenLoad{}, fmt.Errorf("read the server's metrics: %w", err)
	}
	var l api.TokenLoad
	found := false
	for _, n := range generatedNames {
		if v, ok := sums[n]; ok {
			l.GeneratedTokens, found = uint64(v), true
		}
	}
	if !found {
		return api.TokenLoad{}, fmt.Errorf("the server's metrics have none of %s", strings.Join(generatedNames, ", "))
	}
	for _, n := range queuedNames {
		l.Queued += int(sums[n])
	}
	for _, n := range runningNames {
		l.Running += int(sums[n])
	}
	return l, nil
}

func wanted(name string) bool {
	for _, list := range [][]string{generatedNames, queuedNames, runningNames} {
		for _, n := range list {
			if n == name {
				return true
			}
		}
	}
	return false
}
