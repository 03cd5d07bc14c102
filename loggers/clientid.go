package loggers

import "github.com/gantry/gantry/openai"

// ClientRequestID returns the top-level "client_request_id" string of a JSON
// scoring body (the MLflow protocol lets clients name their requests so),
// or "" when there is none or the body is not a JSON object. The body is
// scanned, not decoded (openai.DecodeMember): bodies can hold thousands of
// rows, and this runs for every captured request.
func ClientRequestID(body []byte) string {
	var id string
	if openai.DecodeMember(body, "client_request_id", &id) != nil {
		return ""
	}
	return id
}

// UsageContext returns the top-level "usage_context" object of a JSON
// body (Databricks' map of strings that callers attribute usage with:
// a project, a team), or nil when there is none or it is not an object
// of strings. Invalid ones are refused for LLM entities (external.Decode)
// before any usage row is written; other bodies' are left out.
func UsageContext(body []byte) map[string]string {
	var m map[string]string
	if openai.DecodeMember(body, "usage_context", &m) != nil || len(m) == 0 {
		return nil
	}
	return m
}
