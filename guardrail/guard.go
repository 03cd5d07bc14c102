package guardrail

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/gantry/gantry/api"
)

// PII behaviors (api.GuardrailPIIBehavior.Behavior).
const (
	Block = "BLOCK"
	MaskB = "MASK"
	None  = "NONE"
)

// Limits of invalid_keywords: a keyword is at most MaxKeyword bytes, so
// that Stream's held-back tail always holds a whole one.
const (
	MaxKeywords = 100
	MaxKeyword  = 64
	// MaxTopics bounds valid_topics, which go into every judge prompt.
	MaxTopics = 20
)

// Validate checks an ai_gateway.guardrails block and returns what is
// wrong with it, naming the field, or "".
func Validate(g *api.Guardrails) string {
	if g == nil {
		return ""
	}
	for _, side := range []struct {
		name string
		p    *api.GuardrailParameters
	}{{"input", g.Input}, {"output", g.Output}} {
		p := side.p
		if p == nil {
			continue
		}
		f := "guardrails." + side.name
		const judge = "needs a judge model: set guardrails.judge_entity to a served entity of this endpoint that is an external model of task llm/v1/chat (route it 0 % of the traffic)"
		if p.Safety && g.JudgeEntity == "" {
			return f + ".safety: " + judge
		}
		if len(p.ValidTopics) > 0 {
			if side.name == "output" {
				return f + ".valid_topics: topics are judged on the request only; put them under guardrails.input"
			}
			if g.JudgeEntity == "" {
				return f + ".valid_topics: " + judge
			}
			if len(p.ValidTopics) > MaxTopics {
				return fmt.Sprintf("%s.valid_topics: %d topics; at most %d", f, len(p.ValidTopics), MaxTopics)
			}
			for i, t := range p.ValidTopics {
				if len(t) > MaxKeyword || strings.TrimSpace(t) == "" || strings.ContainsAny(t, "\n\r") {
					return fmt.Sprintf("%s.valid_topics[%d]: %q must be 1-%d bytes on one line", f, i, clip(t), MaxKeyword)
				}
			}
		}
		if p.PII != nil {
			switch p.PII.Behavior {
			case Block, MaskB, None:
			default:
				return fmt.Sprintf("%s.pii.behavior: %q is not one of BLOCK, MASK, NONE", f, clip(p.PII.Behavior))
			}
		}
		if len(p.InvalidKeywords) > MaxKeywords {
			return fmt.Sprintf("%s.invalid_keywords: %d keywords; at most %d", f, len(p.InvalidKeywords), MaxKeywords)
		}
		for i, k := range p.InvalidKeywords {
			if len(k) > MaxKeyword {
				return fmt.Sprintf("%s.invalid_keywords[%d]: %d bytes; at most %d", f, i, len(k), MaxKeyword)
			}
			if len(words(k)) == 0 {
				return fmt.Sprintf("%s.invalid_keywords[%d]: %q has no word (letters or digits)", f, i, clip(k))
			}
		}
	}
	return ""
}

func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// Guard applies one side's guardrails. A nil *Guard does nothing.
type Guard struct {
	// Side is "input" or "output", for decisions and messages.
	Side     string
	pii      string     // Block or MaskB; "" when off
	keywords [][]string // each keyword's words, lower case
	raw      []string
}

// New is the guard of p for side ("input" or "output"), or nil when p
// asks for nothing.
func New(side string, p *api.GuardrailParameters) *Guard {
	if p == nil {
		return nil
	}
	g := &Guard{Side: side}
	if p.PII != nil && (p.PII.Behavior == Block || p.PII.Behavior == MaskB) {
		g.pii = p.PII.Behavior
	}
	for _, k := range p.InvalidKeywords {
		if w := words(k); len(w) > 0 {
			g.keywords = append(g.keywords, w)
			g.raw = append(g.raw, k)
		}
	}
	if g.pii == "" && len(g.keywords) == 0 {
		return nil
	}
	return g
}

// Decision is what a guard did to a text. Block is set when the text must
// not pass; Kinds are the PII kinds found (masked unless Block).
type Decision struct {
	Guardrail string // "pii" or "invalid_keywords"; "" when nothing matched
	Block     bool
	Kinds     []Kind
	Keyword   string
}

// Code is the decision as a LoggingErrorCodes entry of the inference
// record: GUARDRAIL:input.pii=MASK:EMAIL,PHONE,
// GUARDRAIL:output.pii=BLOCK:CREDIT_CARD or
// GUARDRAIL:input.invalid_keywords=BLOCK.
func (d Decision) Code(side string) string {
	c := "GUARDRAIL:" + side + "." + d.Guardrail + "="
	if d.Block {
		c += Block
	} else {
		c += MaskB
	}
	if len(d.Kinds) > 0 {
		ks := make([]string, len(d.Kinds))
		for i, k := range d.Kinds {
			ks[i] = string(k)
		}
		c += ":" + strings.Join(ks, ",")
	}
	return c
}

// Message is the 400's message for a blocking decision; where says what
// was checked ("the request", "the answer").
func (d Decision) Message(side, where string) string {
	if d.Guardrail == "invalid_keywords" {
		return fmt.Sprintf("%s guardrail invalid_keywords blocked %s: it holds the invalid keyword %q", side, where, d.Keyword)
	}
	ks := make([]string, len(d.Kinds))
	for i, k := range d.Kinds {
		ks[i] = string(k)
	}
	return fmt.Sprintf("%s guardrail pii blocked %s: it holds %s", side, where, strings.Join(ks, ", "))
}

// Check applies g to text: invalid keywords first (they block), then PII.
// It returns the text to pass on (masked when the PII behavior is MASK)
// and the decision.
func (g *Guard) Check(text string) (string, Decision) {
	if g == nil {
		return text, Decision{}
	}
	if k, ok := g.keyword(text, true); ok {
		return text, Decision{Guardrail: "invalid_keywords", Block: true, Keyword: k}
	}
	if g.pii == "" {
		return text, Decision{}
	}
	ms := Find(text)
	if len(ms) == 0 {
		return text, Decision{}
	}
	d := Decision{Guardrail: "pii", Block: g.pii == Block, Kinds: kinds(ms)}
	if d.Block {
		return text, d
	}
	return Mask(text, ms), d
}

// MasksPII reports whether g masks PII.
func (g *Guard) MasksPII() bool { return g != nil && g.pii == MaskB }

func kinds(ms []Match) []Kind {
	var out []Kind
	for _, m := range ms {
		seen := false
		for _, k := range out {
			seen = seen || k == m.Kind
		}
		if !seen {
			out = append(out, m.Kind)
		}
	}
	return out
}

// keyword finds an invalid keyword in text's words; with complete false
// the last word is left out when text ends inside it (more may follow).
func (g *Guard) keyword(text string, complete bool) (string, bool) {
	if len(g.keywords) == 0 {
		return "", false
	}
	ws := words(text)
	if !complete && len(ws) > 0 {
		r, _ := utf8.DecodeLastRuneInString(text)
		if isWordRune(r) {
			ws = ws[:len(ws)-1]
		}
	}
	for i := range ws {
		for j, k := range g.keywords {
			if i+len(k) > len(ws) {
				continue
			}
			match := true
			for n := range k {
				if ws[i+n] != k[n] {
					match = false
					break
				}
			}
			if match {
				return g.raw[j], true
			}
		}
	}
	return "", false
}

func isWordRune(r rune) bool { return unicode.IsLetter(r) || unicode.IsDigit(r) }

// words are the maximal runs of letters and digits of s, in lower case.
func words(s string) []string {
	return strings.FieldsFunc(strings.ToLower(s), func(r rune) bool { return !isWordRune(r) })
}
