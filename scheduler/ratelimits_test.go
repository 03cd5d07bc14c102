package scheduler

import (
	"encoding/json"
	"testing"

	"github.com/gantry/gantry/api"
)

// TestRefundBatch: the coordinator takes refunds one by one and in
// batches ({"grants": [...]}, what activators send); what a refund gives
// back can be reserved again.
func TestRefundBatch(t *testing.T) {
	h := newHarness(t, t.TempDir())
	if code, e := h.call(t, "POST", "/api/2.0/serving-endpoints", externalBody, nil); code != 200 {
		t.Fatalf("create: %d %v", code, e)
	}
	if code, e := h.call(t, "PUT", "/api/2.0/serving-endpoints/chat/ai-gateway", `{"rate_limits": [{"tokens": 100, "key": "endpoint", "renewal_period": "minute"}]}`, nil); code != 200 {
		t.Fatalf("limits: %d %v", code, e)
	}
	reserve := func(tokens int) (api.RateLimitGrant, int) {
		var g api.RateLimitGrant
		code, _ := h.call(t, "POST", "/api/2.0/gantry/rate-limits/reserve", `{"endpoint": "chat", "tokens": `+itoa(int64(tokens))+`}`, &g)
		return g, code
	}
	a, code := reserve(40)
	b, code2 := reserve(40)
	if code != 200 || code2 != 200 {
		t.Fatalf("reserve: %d %d", code, code2)
	}
	if _, code := reserve(40); code != 429 {
		t.Fatalf("third reserve: %d; want 429", code)
	}
	a.Used, b.Used = 10, 0
	batch, _ := json.Marshal(api.RateLimitRefunds{Grants: []api.RateLimitGrant{a, b}}) // 70 back
	if code, e := h.call(t, "POST", "/api/2.0/gantry/rate-limits/refund", string(batch), nil); code != 200 {
		t.Fatalf("refund batch: %d %v", code, e)
	}
	if _, code := reserve(85); code != 200 {
		t.Errorf("after the batch: %d; want 200 (90 free)", code)
	}
	if _, code := reserve(10); code != 429 {
		t.Errorf("beyond: %d; want 429", code)
	}
}
