package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/gantry/gantry/api"
)

// chatStream is what a chat completion's server-sent events carried.
type chatStream struct {
	text   string
	events int // the events that carried text
	// usage is the last chunk's usage, when one had it: prompt tokens in
	// Queued, completion tokens in Running (a pair of ints without a type
	// of its own).
	usage *api.TokenLoad
	done  bool      // whether [DONE] came
	first time.Time // when the first event came
}

// readChatStream reads a chat stream up to [DONE] or the end of r. An
// event other than a chat.completion.chunk is an error. It calls no
// testing.T, so goroutines other than the test's may call it.
func readChatStream(r io.Reader) (chatStream, error) {
	var s chatStream
	var text strings.Builder
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if s.first.IsZero() {
			s.first = time.Now()
		}
		if data == "[DONE]" {
			s.done = true
			break
		}
		var c struct {
			Object  string `json:"object"`
			Choices []struct {
				Delta struct{ Content string } `json:"delta"`
			} `json:"choices"`
			Usage *struct {
				PromptTokens     int `json:"prompt_tokens"`
				CompletionTokens int `json:"completion_tokens"`
			} `json:"usage"`
		}
		if err := json.Unmarshal([]byte(data), &c); err != nil || c.Object != "chat.completion.chunk" {
			return s, fmt.Errorf("event %s", data)
		}
		for _, ch := range c.Choices {
			if ch.Delta.Content != "" {
				s.events++
			}
			text.WriteString(ch.Delta.Content)
		}
		if c.Usage != nil {
			s.usage = &api.TokenLoad{Queued: c.Usage.PromptTokens, Running: c.Usage.CompletionTokens}
		}
	}
	s.text = text.String()
	if err := sc.Err(); err != nil {
		return s, fmt.Errorf("read the stream: %w", err)
	}
	return s, nil
}

// mustChatStream is readChatStream that fails t on a bad event or a read
// error.
func mustChatStream(t testing.TB, r io.Reader) chatStream {
	t.Helper()
	s, err := readChatStream(r)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
