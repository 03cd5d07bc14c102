package loggers

import (
	"encoding/json"
	"errors"
	"fmt"
)

// UsageRow is one invocation of an endpoint with usage tracking on
// (ai_gateway.usage_tracking_config): who called what, how it ended and,
// for LLM entities, the tokens. It travels the inference records' path
// (the capture producer, Kafka, the logger) into UsageTable. It never
// holds a body.
type UsageRow struct {
	RequestID       string `json:"request_id"`
	TimestampMs     int64  `json:"timestamp_ms"`
	Endpoint        string `json:"endpoint"`
	ServedEntity    string `json:"served_entity"`
	Requester       string `json:"requester"`
	StatusCode      int32  `json:"status_code"`
	InputTokens     int64  `json:"input_tokens"`
	OutputTokens    int64  `json:"output_tokens"`
	Streaming       bool   `json:"streaming"`
	ClientRequestID string `json:"client_request_id,omitempty"`
	// UsageContext is the request's usage_context (Databricks' map of
	// strings that callers attribute usage with: a project, a team).
	UsageContext map[string]string `json:"usage_context,omitempty"`
}

// UsageTable is where usage rows land, next to AuditTable.
var UsageTable = Table{Database: "default", Name: "gantry_usage"}

// usageVersion starts a usage row's encoding on the topic (records start
// with recordVersion, audit events with auditVersion).
const usageVersion = 0xA2

// AppendUsage appends the encoding of u to b.
func AppendUsage(b []byte, u *UsageRow) []byte {
	j, _ := json.Marshal(u) // strings, integers, a bool and a map of strings: cannot fail
	return append(append(b, usageVersion), j...)
}

// IsUsage reports whether a message on the topic is a usage row.
func IsUsage(b []byte) bool { return len(b) > 0 && b[0] == usageVersion }

// DecodeUsage decodes what AppendUsage wrote.
func DecodeUsage(b []byte) (UsageRow, error) {
	var u UsageRow
	if !IsUsage(b) {
		return u, errors.New("not a usage row")
	}
	if err := json.Unmarshal(b[1:], &u); err != nil {
		return UsageRow{}, fmt.Errorf("usage row: %w", err)
	}
	if u.RequestID == "" {
		return UsageRow{}, errors.New("usage row without request_id")
	}
	return u, nil
}
