package guardrail

import (
	"strings"
	"testing"

	"github.com/gantry/gantry/api"
)

func TestFind(t *testing.T) {
	for _, tc := range []struct {
		text string
		want []Kind // nil: a near miss, nothing found
	}{
		// emails
		{"write to jane.doe+x@mail.example.com today", []Kind{Email}},
		{"a@b.co", []Kind{Email}},
		{"user@localhost", nil},
		{"@example.com", nil},
		{".jane@example.com", nil},
		{"jane..doe@example.com", nil},
		{"jane@example.c", nil},
		// phones
		{"call (555) 234-5678 now", []Kind{Phone}},
		{"call 555-234-5678", []Kind{Phone}},
		{"call 555.234.5678", []Kind{Phone}},
		{"call +1 555 234 5678", []Kind{Phone}},
		{"call +44 20 7946 0958", []Kind{Phone}},
		{"call 055-234-5678", nil}, // area code starts with 0
		{"call 555-134-5678", nil}, // exchange starts with 1
		{"on 2024-01-15", nil},     // a date
		{"version 1.2.3.4", nil},   // a version
		{"call +44 20", nil},       // too few digits
		{"id 5552345678901", nil},  // a long id (Luhn fails too)
		// credit cards
		{"card 4111 1111 1111 1111.", []Kind{CreditCard}},
		{"card 4111-1111-1111-1111", []Kind{CreditCard}},
		{"card 4111111111111111", []Kind{CreditCard}},
		{"amex 378282246310005", []Kind{CreditCard}},
		{"card 4111 1111 1111 1112", nil}, // Luhn fails
		{"card 4111-1111 1111-1111", nil}, // mixed separators
		{"order 41111111111111110", nil},  // 17 digits, Luhn fails
		{"x4111111111111111", nil},        // glued to a letter
		{"card 1111 1111 1111 1117", nil}, // no network starts with 1
		// IBANs
		{"IBAN DE89 3704 0044 0532 0130 00 OK", []Kind{IBAN}},
		{"GB82WEST12345698765432", []Kind{IBAN}},
		{"DE88 3704 0044 0532 0130 00", nil}, // check digits wrong
		{"GB82WEST1234569876543X", nil},
		{"DE89 37", nil},
		// SSNs
		{"ssn 123-45-6789", []Kind{SSN}},
		{"ssn 123 45 6789", []Kind{SSN}},
		{"ssn 000-45-6789", nil},
		{"ssn 666-45-6789", nil},
		{"ssn 912-45-6789", nil},
		{"ssn 123-00-6789", nil},
		{"ssn 123-45-0000", nil},
		{"ssn 123-45 6789", nil},
		{"ssn 1123-45-6789", nil},
		// several
		{"jane@example.com, 123-45-6789", []Kind{Email, SSN}},
	} {
		t.Run(tc.text, func(t *testing.T) {
			var got []Kind
			for _, m := range Find(tc.text) {
				got = append(got, m.Kind)
			}
			if strings.Join(kindStrings(got), ",") != strings.Join(kindStrings(tc.want), ",") {
				t.Errorf("Find(%q) = %v, want %v", tc.text, got, tc.want)
			}
		})
	}
}

func kindStrings(ks []Kind) []string {
	var s []string
	for _, k := range ks {
		s = append(s, string(k))
	}
	return s
}

func TestMask(t *testing.T) {
	s := "mail jane@example.com or call (555) 234-5678, card 4111 1111 1111 1111."
	got := Mask(s, Find(s))
	want := "mail [EMAIL] or call [PHONE], card [CREDIT_CARD]."
	if got != want {
		t.Errorf("Mask = %q, want %q", got, want)
	}
}

func TestCheck(t *testing.T) {
	g := New("input", &api.GuardrailParameters{PII: &api.GuardrailPIIBehavior{Behavior: "MASK"}, InvalidKeywords: []string{"Password", "secret plan"}})
	for _, tc := range []struct {
		text, out, code string
	}{
		{"hello", "hello", ""},
		{"my PASSWORD is", "my PASSWORD is", "GUARDRAIL:input.invalid_keywords=BLOCK"},
		{"passwords are fine", "passwords are fine", ""},
		{"the Secret, plan!", "the Secret, plan!", "GUARDRAIL:input.invalid_keywords=BLOCK"},
		{"secretplan", "secretplan", ""},
		{"jane@example.com", "[EMAIL]", "GUARDRAIL:input.pii=MASK:EMAIL"},
	} {
		out, d := g.Check(tc.text)
		code := ""
		if d.Guardrail != "" {
			code = d.Code("input")
		}
		if out != tc.out || code != tc.code {
			t.Errorf("Check(%q) = %q, %q; want %q, %q", tc.text, out, code, tc.out, tc.code)
		}
	}
	b := New("output", &api.GuardrailParameters{PII: &api.GuardrailPIIBehavior{Behavior: "BLOCK"}})
	if _, d := b.Check("ssn 123-45-6789"); !d.Block || d.Message("output", "the answer") != "output guardrail pii blocked the answer: it holds US_SSN" {
		t.Errorf("BLOCK: %+v %q", d, d.Message("output", "the answer"))
	}
	if New("input", &api.GuardrailParameters{PII: &api.GuardrailPIIBehavior{Behavior: "NONE"}}) != nil {
		t.Error("NONE and no keywords: want a nil guard")
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		g    api.Guardrails
		want string
	}{
		{api.Guardrails{Input: &api.GuardrailParameters{PII: &api.GuardrailPIIBehavior{Behavior: "MASK"}}}, ""},
		{api.Guardrails{Input: &api.GuardrailParameters{Safety: true}}, "guardrails.input.safety: needs a judge model: set guardrails.judge_entity"},
		{api.Guardrails{Input: &api.GuardrailParameters{ValidTopics: []string{"x"}}}, "guardrails.input.valid_topics: needs a judge model"},
		{api.Guardrails{Output: &api.GuardrailParameters{ValidTopics: []string{"x"}}, JudgeEntity: "j"}, "guardrails.output.valid_topics: topics are judged on the request only"},
		{api.Guardrails{Input: &api.GuardrailParameters{ValidTopics: []string{"a\nb"}}, JudgeEntity: "j"}, "guardrails.input.valid_topics[0]: \"a\\nb\" must be 1-64 bytes on one line"},
		{api.Guardrails{Input: &api.GuardrailParameters{Safety: true, ValidTopics: []string{"billing"}}, Output: &api.GuardrailParameters{Safety: true}, JudgeEntity: "j"}, ""},
		{api.Guardrails{Output: &api.GuardrailParameters{PII: &api.GuardrailPIIBehavior{Behavior: "mask"}}}, `guardrails.output.pii.behavior: "mask" is not one of`},
		{api.Guardrails{Input: &api.GuardrailParameters{InvalidKeywords: []string{"ok", "!!"}}}, `guardrails.input.invalid_keywords[1]: "!!" has no word`},
		{api.Guardrails{Input: &api.GuardrailParameters{InvalidKeywords: []string{strings.Repeat("a", 65)}}}, "guardrails.input.invalid_keywords[0]: 65 bytes; at most 64"},
	} {
		got := Validate(&tc.g)
		if (tc.want == "") != (got == "") || !strings.HasPrefix(got, tc.want) {
			t.Errorf("Validate = %q, want prefix %q", got, tc.want)
		}
	}
}

// TestStream splits texts at every byte (and in pieces of 3) and checks
// that what is sent equals the whole text checked at once.
func TestStream(t *testing.T) {
	g := New("output", &api.GuardrailParameters{PII: &api.GuardrailPIIBehavior{Behavior: "MASK"}, InvalidKeywords: []string{"forbidden word"}})
	long := strings.Repeat("lorem ipsum dolor ", 20)
	for _, text := range []string{
		long + "mail jane@example.com and card 4111 1111 1111 1111 " + long + "IBAN DE89 3704 0044 0532 0130 00 end",
		"short 123-45-6789",
		long + strings.Repeat("x", 300) + " jane@example.com " + long,
		"héllo wörld " + long + " (555) 234-5678 ünïcode " + long,
	} {
		want, _ := g.Check(text)
		for _, size := range []int{1, 3, 17, 200} {
			s := NewStream(g)
			var got strings.Builder
			for i := 0; i < len(text); i += size {
				out, d := s.Write(text[i:min(i+size, len(text))])
				if d.Block {
					t.Fatalf("size %d: blocked %+v", size, d)
				}
				got.WriteString(out)
				if len(text[:min(i+size, len(text))])-got.Len() > 3*Tail && got.Len() > 0 {
					t.Fatalf("size %d: holds more than the bound", size)
				}
			}
			out, _ := s.Flush()
			got.WriteString(out)
			if got.String() != want {
				t.Errorf("size %d:\n got %q\nwant %q", size, got.String(), want)
			}
		}
	}
	// A keyword split across pieces blocks before any of it is sent.
	text := long + "this is a forbidden word here"
	s := NewStream(g)
	var sent strings.Builder
	blocked := false
	for i := 0; i < len(text) && !blocked; i++ {
		out, d := s.Write(text[i : i+1])
		sent.WriteString(out)
		blocked = d.Block
	}
	if _, d := s.Flush(); !blocked && !d.Block {
		t.Fatal("keyword split across pieces: not blocked")
	}
	if strings.Contains(sent.String(), "forbidden") {
		t.Errorf("sent %q before blocking", sent.String())
	}
}
