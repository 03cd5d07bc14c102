package activator

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/external/providertest"
	"github.com/gantry/gantry/loggers"
)

// Usage makes extRecords a usage capturer too.
func (r *extRecords) Usage(u *loggers.UsageRow) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.usage = append(r.usage, *u)
	return true
}

func (r *extRecords) usageRows() []loggers.UsageRow {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]loggers.UsageRow(nil), r.usage...)
}

// TestUsageRows: an endpoint with usage tracking gets a row per answered
// invocation, whole, streamed or refused, with the provider's tokens; an
// endpoint without gets none.
func TestUsageRows(t *testing.T) {
	base := providertest.Start(t, extKey)
	url, rec := externalActivator(t,
		api.EndpointRoute{Name: "u", Usage: true, Entities: []api.EntityRoute{extEntity("gpt", api.ProviderOpenAI, api.TaskChat, "m", base)}},
		api.EndpointRoute{Name: "n", Entities: []api.EntityRoute{extEntity("gpt", api.ProviderOpenAI, api.TaskChat, "m", base)}})
	if resp, body := post(t, url+"/serving-endpoints/u/invocations", `{"messages": [{"role": "user", "content": "a b c"}], "client_request_id": "c-1", "usage_context": {"team": "risk", "project": "p"}}`); resp.StatusCode != 200 ||
		!strings.Contains(body, `"usage":{"completion_tokens":4,"prompt_tokens":4,`) {
		t.Fatalf("whole: %d %s", resp.StatusCode, body)
	}
	text, _, _ := readStream(t, url+"/serving-endpoints/u/invocations", `{"messages": [{"role": "user", "content": "a b"}], "stream": true, "client_request_id": "s-1", "usage_context": {"team": "ops"}}`)
	if text != "echo: a b" {
		t.Fatalf("stream %q", text)
	}
	if resp, _ := post(t, url+"/serving-endpoints/u/invocations", `{"messages": [{"role": "user", "content": "x"}], "temperature": 9}`); resp.StatusCode != 400 {
		t.Fatalf("bad request: %d", resp.StatusCode)
	}
	post(t, url+"/serving-endpoints/n/invocations", chat("x", false))
	http.Get(url + "/serving-endpoints/n/invocations")
	var rows []loggers.UsageRow
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if rows = rec.usageRows(); len(rows) >= 3 {
			break
		}
	}
	time.Sleep(50 * time.Millisecond)
	rows = rec.usageRows()
	if len(rows) != 3 {
		t.Fatalf("%d usage rows %+v; want 3", len(rows), rows)
	}
	byStatus := map[int32][]loggers.UsageRow{}
	for _, u := range rows {
		byStatus[u.StatusCode] = append(byStatus[u.StatusCode], u)
		if u.Endpoint != "u" || u.RequestID == "" || u.TimestampMs == 0 {
			t.Errorf("row %+v", u)
		}
	}
	// The rows hold what the provider reported (the double counts words
	// plus one).
	var whole, stream *loggers.UsageRow
	for i := range byStatus[200] {
		if u := &byStatus[200][i]; u.Streaming {
			stream = u
		} else {
			whole = u
		}
	}
	if whole == nil || whole.ServedEntity != "gpt" || whole.InputTokens != 4 || whole.OutputTokens != 4 || whole.ClientRequestID != "c-1" ||
		fmt.Sprint(whole.UsageContext) != "map[project:p team:risk]" {
		t.Errorf("whole row %+v", whole)
	}
	if stream == nil || stream.InputTokens != 3 || stream.OutputTokens != 3 || stream.ClientRequestID != "s-1" || fmt.Sprint(stream.UsageContext) != "map[team:ops]" {
		t.Errorf("stream row %+v", stream)
	}
	if len(byStatus[400]) != 1 || byStatus[400][0].InputTokens == 0 || strings.Contains(byStatus[400][0].ClientRequestID, "x") {
		t.Errorf("400 row %+v", byStatus[400])
	}
}
