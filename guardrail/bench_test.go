package guardrail

import (
	"strings"
	"testing"

	"github.com/gantry/gantry/api"
)

// BenchmarkCheck is the guardrails' cost on a 1 KiB chat message with PII
// MASK and 10 keywords (what the activator adds per message and side).
func BenchmarkCheck(b *testing.B) {
	g := New("input", &api.GuardrailParameters{PII: &api.GuardrailPIIBehavior{Behavior: "MASK"},
		InvalidKeywords: []string{"password", "secret plan", "k3", "k4", "k5", "k6", "k7", "k8", "k9", "k10"}})
	text := strings.Repeat("The quick brown fox jumps over the lazy dog, 2024-01-15. ", 17) + "mail jane@example.com"
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		g.Check(text)
	}
}

// BenchmarkStream streams the same text a word at a time.
func BenchmarkStream(b *testing.B) {
	g := New("output", &api.GuardrailParameters{PII: &api.GuardrailPIIBehavior{Behavior: "MASK"}})
	words := strings.SplitAfter(strings.Repeat("The quick brown fox jumps over the lazy dog, 2024-01-15. ", 17)+"mail jane@example.com", " ")
	for b.Loop() {
		s := NewStream(g)
		for _, w := range words {
			s.Write(w)
		}
		s.Flush()
	}
}
