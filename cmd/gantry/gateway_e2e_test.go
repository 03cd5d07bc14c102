package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/external/providertest"
	"github.com/gantry/gantry/internal/chtest"
	"github.com/gantry/gantry/internal/eventually"
)

// TestGatewayGuardrailsAndUsageEndToEnd: gantry dev with ClickHouse and
// its Kafka in front of the provider double. An endpoint with guardrails
// (input keywords, output PII MASK) and usage tracking: blocked, masked
// and streamed calls answer as they should, the inference table rows
// name the guardrail decisions and hold no PII, and the usage table
// (through Kafka and the logger) has one row per call with the tokens the
// provider reported, which GET /api/2.0/gantry/usage sums.
func TestGatewayGuardrailsAndUsageEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("runs ClickHouse, a provider double and gantry dev; run without -short")
	}
	const key = "sk-e2e-GATEWAY-5a4b3c2d1e0f"
	base := providertest.Start(t, key)
	ch := chtest.Start(t)
	db := chtest.Open(t, ch)
	bin, addr, dataDir := buildGantry(t), freeAddr(t), t.TempDir()
	dev := startDev(t, bin, addr, dataDir, "--clickhouse", ch.Addr())
	a := &answers{base: "http://" + addr}
	a.ok(t, "POST", "/api/2.0/serving-endpoints", `{"name": "gw", "config": {"served_entities": [{"name": "gpt", "external_model": {"name": "gpt-4o-mini", "provider": "openai", "task": "llm/v1/chat",
		"openai_config": {"openai_api_key_plaintext": "`+key+`", "openai_api_base": "`+base+`/v1"}}}],
		"auto_capture_config": {"catalog_name": "ml", "schema_name": "gw", "enabled": true}}}`)
	mustCLI(t, bin, addr, "endpoints", "wait", "gw")
	a.ok(t, "PUT", "/api/2.0/serving-endpoints/gw/ai-gateway", `{"usage_tracking_config": {"enabled": true},
		"guardrails": {"input": {"invalid_keywords": ["password"]}, "output": {"pii": {"behavior": "MASK"}}}}`)
	time.Sleep(500 * time.Millisecond) // the route table reaches the activator

	msg := func(content string, stream bool) string {
		b, _ := json.Marshal(map[string]any{"messages": []map[string]string{{"role": "user", "content": content}}, "stream": stream})
		return string(b)
	}
	// The client's request id and usage context go into its usage row.
	withContext := strings.TrimSuffix(msg("mail jane@example.com now", false), "}") + `, "client_request_id": "c-7", "usage_context": {"team": "risk", "project": "p-1"}}`
	if b := a.ok(t, "POST", "/serving-endpoints/gw/invocations", withContext); !strings.Contains(b, "echo: mail [EMAIL] now") {
		t.Fatalf("masked: %s", b)
	}
	if resp, b := a.do(t, "POST", "/serving-endpoints/gw/invocations", msg("my password", false)); resp.StatusCode != 400 || !strings.Contains(b, "input guardrail invalid_keywords") {
		t.Fatalf("blocked: %d %s", resp.StatusCode, b)
	}
	req, _ := http.NewRequest("POST", a.base+"/serving-endpoints/gw/invocations", strings.NewReader(msg("card 4111 1111 1111 1111 ok", true)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if s := mustChatStream(t, strings.NewReader(string(raw))); s.text != "echo: card [CREDIT_CARD] ok" || !s.done || strings.Contains(string(raw), "4111") {
		t.Fatalf("stream: %q %v %s", s.text, s.done, raw)
	}

	var rows [][]string
	eventually.True(t, 60*time.Second, "the inference rows", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		res, err := db.Query(ctx, "SELECT status_code, logging_error_codes, request, response FROM `ml_gw`.`gw_payload` FINAL")
		if err == nil {
			rows = res.Rows
		}
		return len(rows) >= 3
	})
	all, answers := "", ""
	for _, r := range rows {
		all += strings.Join(r, "\t") + "\n"
		answers += r[3] + "\n"
	}
	for _, want := range []string{"GUARDRAIL:output.pii=MASK:EMAIL", "GUARDRAIL:input.invalid_keywords=BLOCK", "GUARDRAIL:output.pii=MASK:CREDIT_CARD"} {
		if !strings.Contains(all, want) {
			t.Errorf("no row names %s:\n%s", want, all)
		}
	}
	// Input PII is not guarded here: the requests hold it, the answers not.
	if strings.Contains(answers, "4111") || strings.Contains(answers, "jane@") || !strings.Contains(answers, "echo: card [CREDIT_CARD] ok") {
		t.Errorf("answers:\n%s", answers)
	}

	// The usage rows: the provider double counts words plus one.
	var u api.UsageResponse
	eventually.True(t, 60*time.Second, "the usage rows", func() bool {
		_, b := a.do(t, "GET", "/api/2.0/gantry/usage?since=1h&by=endpoint", "")
		return json.Unmarshal([]byte(b), &u) == nil && len(u.Rows) == 1 && u.Rows[0].Requests >= 3
	})
	t.Logf("usage: %+v", u.Rows)
	r := u.Rows[0]
	if r.Key != "gw" || r.Requests != 3 || r.Errors != 1 || r.InputTokens < 8 || r.OutputTokens < 8 {
		t.Errorf("usage = %+v", u.Rows)
	}
	// gantry usage prints the same.
	if out := mustCLI(t, bin, addr, "usage", "--since", "1h", "--by", "endpoint"); !regexp.MustCompile(`(?m)^gw\s+3\s+1\s+` + itoa(r.InputTokens) + `\s+` + itoa(r.OutputTokens) + `\s`).MatchString(out) {
		t.Errorf("gantry usage:\n%s", out)
	}
	if out := mustCLI(t, bin, addr, "usage", "--since", "1h", "--by", "usage_context.team"); !regexp.MustCompile(`(?m)^risk\s+1\s+0\s`).MatchString(out) {
		t.Errorf("gantry usage --by usage_context.team:\n%s", out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := db.Query(ctx, "SELECT client_request_id, usage_context, visitParamExtractString(usage_context, 'team') FROM `default`.`gantry_usage` FINAL ORDER BY client_request_id")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range res.Rows {
		got = append(got, strings.Join(r, "|"))
	}
	if want := `|{}| |{}| c-7|{"project":"p-1","team":"risk"}|risk`; strings.Join(got, " ") != want {
		t.Errorf("usage rows' client_request_id, usage_context, team: %q; want %q", got, want)
	}
	dev.stop(t)
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
