package loggers

import (
	"testing"
)

func TestAuditRoundTrip(t *testing.T) {
	e := AuditEvent{EventID: "e1", TimestampMs: 1_800_000_000_000, Principal: "alice@corp.com",
		Action: "POST /api/2.0/serving-endpoints", Path: "/api/2.0/serving-endpoints", Target: "serving-endpoint fraud",
		StatusCode: 400, ErrorCode: "INVALID_PARAMETER_VALUE", Source: "10.0.0.1:5000"}
	b := AppendAudit(nil, &e)
	if !IsAudit(b) {
		t.Fatal("not an audit event")
	}
	got, err := DecodeAudit(b)
	if err != nil || got != e {
		t.Fatalf("DecodeAudit = %+v, %v", got, err)
	}
	// An invocation record is never taken for an event, nor the reverse.
	rec := AppendRecord(nil, &Record{Table: "a.b", RequestID: "r"})
	if IsAudit(rec) {
		t.Fatal("a record reads as an audit event")
	}
	if _, err := DecodeRecord(b); err == nil {
		t.Fatal("an audit event decodes as a record")
	}
	for _, bad := range [][]byte{nil, {auditVersion}, append([]byte{auditVersion}, `{"principal":"x"}`...)} {
		if _, err := DecodeAudit(bad); err == nil {
			t.Errorf("DecodeAudit(%q) passed", bad)
		}
	}
}
