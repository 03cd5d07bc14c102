package activator

import (
	"bufio"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/external/providertest"
	"github.com/gantry/gantry/loggers"
)

func pii(b string) *api.GuardrailPIIBehavior { return &api.GuardrailPIIBehavior{Behavior: b} }

// guarded serves endpoint "g" (chat, at provider of the double) with gr.
func guarded(t *testing.T, provider string, gr *api.Guardrails) (string, *extRecords) {
	base := providertest.Start(t, extKey)
	return externalActivator(t, api.EndpointRoute{Name: "g", InferenceTable: "db.g_payload", Guardrails: gr,
		Entities: []api.EntityRoute{extEntity("e", provider, api.TaskChat, "m", base)}})
}

// lastRecord waits for the n-th record.
func lastRecord(t *testing.T, rec *extRecords, n int) loggers.Record {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if rs := rec.all(); len(rs) >= n {
			return rs[n-1]
		}
	}
	t.Fatalf("no record %d", n)
	return loggers.Record{}
}

func chat(text string, stream bool) string {
	b, _ := json.Marshal(map[string]any{"messages": []map[string]string{{"role": "user", "content": text}}, "stream": stream})
	return string(b)
}

// readStream returns the streamed text, every event, and the in-stream
// error's message if any.
func readStream(t *testing.T, url, body string) (text string, events []string, errMsg string) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("stream: %d", resp.StatusCode)
	}
	sc := bufio.NewScanner(resp.Body)
	var b strings.Builder
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		events = append(events, line)
		if line == "[DONE]" {
			break
		}
		var c struct {
			Choices []struct {
				Delta struct{ Content string } `json:"delta"`
			} `json:"choices"`
			Error *struct{ Message string } `json:"error"`
		}
		json.Unmarshal([]byte(line), &c)
		if c.Error != nil {
			errMsg = c.Error.Message
		}
		for _, ch := range c.Choices {
			b.WriteString(ch.Delta.Content)
		}
	}
	return b.String(), events, errMsg
}

func hasCode(r loggers.Record, code string) bool {
	for _, c := range r.LoggingErrorCodes {
		if c == code {
			return true
		}
	}
	return false
}

func TestGuardrailsInput(t *testing.T) {
	url, rec := guarded(t, api.ProviderOpenAI, &api.Guardrails{Input: &api.GuardrailParameters{
		PII: pii("BLOCK"), InvalidKeywords: []string{"Password"}}})
	inv := url + "/serving-endpoints/g/invocations"

	resp, body := post(t, inv, chat("my ssn is 123-45-6789", false))
	if resp.StatusCode != 400 || !strings.Contains(body, "input guardrail pii blocked the request: it holds US_SSN") || strings.Contains(body, "6789") {
		t.Fatalf("pii BLOCK: %d %s", resp.StatusCode, body)
	}
	if r := lastRecord(t, rec, 1); r.StatusCode != 400 || !hasCode(r, "GUARDRAIL:input.pii=BLOCK:US_SSN") {
		t.Errorf("record: %d %v", r.StatusCode, r.LoggingErrorCodes)
	}
	resp, body = post(t, inv, chat("what is the PASSWORD?", true)) // a stream is refused before it starts
	if resp.StatusCode != 400 || !strings.Contains(body, `input guardrail invalid_keywords blocked the request: it holds the invalid keyword \"Password\"`) {
		t.Fatalf("keyword: %d %s", resp.StatusCode, body)
	}
	if r := lastRecord(t, rec, 2); !hasCode(r, "GUARDRAIL:input.invalid_keywords=BLOCK") {
		t.Errorf("record: %v", r.LoggingErrorCodes)
	}
	resp, body = post(t, inv, chat("passwords, 123-45-67890", false)) // near misses pass
	if resp.StatusCode != 200 || !strings.Contains(body, "echo: passwords, 123-45-67890") {
		t.Fatalf("near misses: %d %s", resp.StatusCode, body)
	}
	if r := lastRecord(t, rec, 3); len(r.LoggingErrorCodes) != 0 {
		t.Errorf("record: %v", r.LoggingErrorCodes)
	}

	// MASK: the provider sees the masked text (the double echoes it), and
	// the record keeps it masked.
	url, rec = guarded(t, api.ProviderAnthropic, &api.Guardrails{Input: &api.GuardrailParameters{PII: pii("MASK")}})
	resp, body = post(t, url+"/serving-endpoints/g/invocations", chat("mail\njane@example.com or call (555) 234-5678", false))
	if resp.StatusCode != 200 || !strings.Contains(body, "echo: mail [EMAIL] or call [PHONE]") {
		t.Fatalf("MASK: %d %s", resp.StatusCode, body)
	}
	r := lastRecord(t, rec, 1)
	if !hasCode(r, "GUARDRAIL:input.pii=MASK:EMAIL,PHONE") || strings.Contains(string(r.Request)+string(r.Response), "jane@") ||
		!strings.Contains(string(r.Request), `mail\n[EMAIL]`) || !json.Valid(r.Request) {
		t.Errorf("record: %v %s %s", r.LoggingErrorCodes, r.Request, r.Response)
	}
}

func TestGuardrailsOutput(t *testing.T) {
	// Longer than guardrail.Tail, so that text is sent before the end.
	lorem := strings.Repeat("lorem ipsum ", 20)
	secret := lorem + "card 4111 1111 1111 1111 and IBAN DE89 3704 0044 0532 0130 00 and " + lorem + "mail jane@example.com ok"
	masked := "echo: " + lorem + "card [CREDIT_CARD] and IBAN [IBAN] and " + lorem + "mail [EMAIL] ok"
	for _, provider := range []string{api.ProviderOpenAI, api.ProviderAnthropic, api.ProviderCohere} {
		t.Run(provider, func(t *testing.T) {
			url, rec := guarded(t, provider, &api.Guardrails{Output: &api.GuardrailParameters{PII: pii("MASK"), InvalidKeywords: []string{"forbidden word"}}})
			inv := url + "/serving-endpoints/g/invocations"
			resp, body := post(t, inv, chat(secret, false))
			if resp.StatusCode != 200 || !strings.Contains(body, `"content":"`+masked+`"`) {
				t.Fatalf("whole: %d %s", resp.StatusCode, body)
			}
			if r := lastRecord(t, rec, 1); !hasCode(r, "GUARDRAIL:output.pii=MASK:CREDIT_CARD,IBAN,EMAIL") || strings.Contains(string(r.Response), "4111") {
				t.Errorf("record: %v %s", r.LoggingErrorCodes, r.Response)
			}
			// The double streams a word per chunk: every match is split
			// across chunks, and none of it may leave.
			text, events, errMsg := readStream(t, inv, chat(secret, true))
			if text != masked || errMsg != "" || events[len(events)-1] != "[DONE]" {
				t.Fatalf("stream: %q %q %v", text, errMsg, events)
			}
			for _, e := range events {
				if strings.Contains(e, "4111") || strings.Contains(e, "jane") || strings.Contains(e, "3704") {
					t.Errorf("event leaks: %s", e)
				}
			}
			r := lastRecord(t, rec, 2)
			if !hasCode(r, "GUARDRAIL:output.pii=MASK:CREDIT_CARD,IBAN,EMAIL") || strings.Contains(string(r.Response), "4111") || !strings.Contains(string(r.Response), masked) {
				t.Errorf("stream record: %v %s", r.LoggingErrorCodes, r.Response)
			}
			// A keyword split across chunks ends the stream before it is sent.
			text, _, errMsg = readStream(t, inv, chat("this is a Forbidden  word indeed", true))
			if strings.Contains(text, "Forbidden") || !strings.Contains(errMsg, `output guardrail invalid_keywords blocked the answer: it holds the invalid keyword "forbidden word"`) {
				t.Fatalf("keyword stream: %q %q", text, errMsg)
			}
			// The record keeps what the client got: not the blocked text.
			if r := lastRecord(t, rec, 3); !hasCode(r, "GUARDRAIL:output.invalid_keywords=BLOCK") || r.StatusCode != 400 ||
				strings.Contains(string(r.Response), "Forbidden") || !hasCode(r, "STREAM_ERROR:INVALID_PARAMETER_VALUE") {
				t.Errorf("keyword record: %d %v %s", r.StatusCode, r.LoggingErrorCodes, r.Response)
			}
			resp, body = post(t, inv, chat("the forbidden word", false))
			if resp.StatusCode != 400 || !strings.Contains(body, "output guardrail invalid_keywords") {
				t.Fatalf("keyword whole: %d %s", resp.StatusCode, body)
			}
		})
	}
}

// A shadow entity's call is guarded as the client's: its provider sees
// the masked text, and its record holds no PII.
func TestGuardrailsShadow(t *testing.T) {
	base := providertest.Start(t, extKey)
	url, rec := externalActivator(t, api.EndpointRoute{Name: "g", InferenceTable: "db.g_payload",
		Guardrails: &api.Guardrails{Input: &api.GuardrailParameters{PII: pii("MASK")}, Output: &api.GuardrailParameters{PII: pii("MASK")}},
		Routes:     []api.Route{{ServedModelName: "e", TrafficPercentage: 100}, {ServedModelName: "s", TrafficPercentage: 100, Shadow: true}},
		Entities: []api.EntityRoute{extEntity("e", api.ProviderOpenAI, api.TaskChat, "m", base),
			extEntity("s", api.ProviderAnthropic, api.TaskChat, "m2", base)}})
	resp, body := post(t, url+"/serving-endpoints/g/invocations", chat("mail jane@example.com", false))
	if resp.StatusCode != 200 || !strings.Contains(body, "echo: mail [EMAIL]") {
		t.Fatalf("MASK: %d %s", resp.StatusCode, body)
	}
	var shadow loggers.Record
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline) && shadow.RequestID == ""; time.Sleep(5 * time.Millisecond) {
		for _, r := range rec.all() {
			if r.Shadow {
				shadow = r
			}
		}
	}
	if shadow.ServedEntity != "s" || shadow.StatusCode != 200 || !strings.Contains(string(shadow.Response), "echo: mail [EMAIL]") ||
		strings.Contains(string(shadow.Request)+string(shadow.Response), "jane@") {
		t.Errorf("shadow record %+v: %s %s", shadow, shadow.Request, shadow.Response)
	}
}
