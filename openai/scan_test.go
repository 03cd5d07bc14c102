package openai

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// DecodeMember and UsageOf must agree with json.Unmarshal into a struct
// of one field: the same verdict on every document, the same value when
// both take it. The seeds, and what fuzzing found, are in
// testdata/fuzz/FuzzDecodeMember.
func FuzzDecodeMember(f *testing.F) {
	f.Fuzz(func(t *testing.T, doc []byte) {
		var u struct {
			Usage *Usage `json:"usage"`
		}
		var m struct {
			Model string `json:"model"`
		}
		wantU, wantM := json.Unmarshal(doc, &u), json.Unmarshal(doc, &m)
		usage, gotU := UsageOf(doc)
		var member *Usage
		var model string
		gotMember, gotM := DecodeMember(doc, "usage", &member), DecodeMember(doc, "model", &model)
		if (gotU == nil) != (wantU == nil) || (gotMember == nil) != (wantU == nil) || (gotM == nil) != (wantM == nil) {
			t.Fatalf("%q: UsageOf %v, DecodeMember usage %v, model %v; json.Unmarshal %v, %v", doc, gotU, gotMember, gotM, wantU, wantM)
		}
		if wantU == nil && (!reflect.DeepEqual(usage, u.Usage) || !reflect.DeepEqual(member, u.Usage)) {
			t.Fatalf("%q: UsageOf %s, DecodeMember %s; json.Unmarshal %s", doc, show(usage), show(member), show(u.Usage))
		}
		if wantM == nil && model != m.Model {
			t.Fatalf("%q: model %q; json.Unmarshal %q", doc, model, m.Model)
		}
	})
}

func show(u *Usage) string {
	b, _ := json.Marshal(u)
	return string(b)
}

// The nesting limit is encoding/json's, which fuzzing does not reach.
func TestDecodeMemberDepth(t *testing.T) {
	for _, depth := range []int{maxDepth - 1, maxDepth, maxDepth + 1} {
		doc := []byte(`{"x": ` + strings.Repeat("[", depth-1) + strings.Repeat("]", depth-1) + `, "model": "m"}`)
		var s struct {
			Model string `json:"model"`
		}
		want := json.Unmarshal(doc, &s)
		var model string
		if got := DecodeMember(doc, "model", &model); (got == nil) != (want == nil) || model != s.Model {
			t.Errorf("depth %d: %v %q; json.Unmarshal %v %q", depth, got, model, want, s.Model)
		}
	}
}

// BenchmarkUsageOf reads the usage of an OpenAI chat answer, which
// the gateway does for every whole call.
func BenchmarkUsageOf(b *testing.B) {
	answer := []byte(`{"id":"chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG","object":"chat.completion","created":1741570283,"model":"gpt-4o-2024-08-06",` +
		`"choices":[{"index":0,"message":{"role":"assistant","content":"The image shows a wooden boardwalk path running through a lush green field or meadow.","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],` +
		`"usage":{"prompt_tokens":1117,"completion_tokens":46,"total_tokens":1163,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},` +
		`"service_tier":"default","system_fingerprint":"fp_fc9f1d7035"}`)
	b.Run("json.Unmarshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var a struct {
				Usage *Usage `json:"usage"`
			}
			if json.Unmarshal(answer, &a) != nil || a.Usage == nil {
				b.Fatal("no usage")
			}
		}
	})
	b.Run("UsageOf", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if u, err := UsageOf(answer); err != nil || u == nil {
				b.Fatal("no usage")
			}
		}
	})
}
