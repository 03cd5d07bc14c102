package loggers

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
)

// AuditEvent is one control-plane change: who did what, when, and how it
// ended. It travels the inference records' path (the capture producer,
// Kafka, the logger) into AuditTable, or to the log when tables are off.
// It never holds a request or response body: those carry secret values
// and token values.
type AuditEvent struct {
	// EventID is unique per event; the table collapses redeliveries on it.
	EventID string `json:"event_id"`
	// TimestampMs is when the change was answered, in Unix milliseconds.
	TimestampMs int64 `json:"timestamp_ms"`
	// Principal is the caller's name (a userName or a service principal's
	// applicationId; with authentication off, X-Gantry-User or
	// "anonymous").
	Principal string `json:"principal"`
	// Action is the route, "METHOD /path/{pattern}"; Path the path sent.
	Action string `json:"action"`
	Path   string `json:"path"`
	// Target names the object when the path does not: "serving-endpoint
	// fraud" for a create, "secret prod/openai" for a put.
	Target     string `json:"target,omitempty"`
	StatusCode int32  `json:"status_code"`
	// ErrorCode is API.md's error_code of a failed change; empty on success.
	ErrorCode string `json:"error_code,omitempty"`
	// Source is the caller's address.
	Source string `json:"source,omitempty"`
}

// AuditTable is where audit events land: gantry_audit in ClickHouse's
// default database, next to nothing a user's capture config can name
// (inference tables live in <catalog>_<schema> databases).
var AuditTable = Table{Database: "default", Name: "gantry_audit"}

// auditVersion starts an audit event's encoding on the topic. Invocation
// records start with recordVersion (1), so the logger tells the two
// apart by the first byte. The rest is JSON: events are small and rare.
const auditVersion = 0xA1

// AppendAudit appends the encoding of e to b.
func AppendAudit(b []byte, e *AuditEvent) []byte {
	j, _ := json.Marshal(e) // strings and integers: cannot fail
	return append(append(b, auditVersion), j...)
}

// IsAudit reports whether a message on the topic is an audit event.
func IsAudit(b []byte) bool { return len(b) > 0 && b[0] == auditVersion }

// DecodeAudit decodes what AppendAudit wrote.
func DecodeAudit(b []byte) (AuditEvent, error) {
	var e AuditEvent
	if !IsAudit(b) {
		return e, errors.New("not an audit event")
	}
	if err := json.Unmarshal(b[1:], &e); err != nil {
		return AuditEvent{}, fmt.Errorf("audit event: %w", err)
	}
	if e.EventID == "" {
		return AuditEvent{}, errors.New("audit event without event_id")
	}
	return e, nil
}

// LogAttrs are e's fields as log attributes.
func (e *AuditEvent) LogAttrs() []any {
	return []any{"event_id", e.EventID, "principal", e.Principal, "action", e.Action, "path", e.Path,
		"target", e.Target, "status", e.StatusCode, "error_code", e.ErrorCode, "source", e.Source}
}

// AuditLog writes audit events to a log: where they go when inference
// tables are off.
type AuditLog struct{ Logger *slog.Logger }

// Audit logs e as one line.
func (a AuditLog) Audit(e *AuditEvent) { a.Logger.Info("audit", e.LogAttrs()...) }
