package scheduler

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"

	"github.com/gantry/gantry/loggers"
)

// Auditor takes the audit events of control-plane changes. It must not
// block: the capture producer queues them for the audit table, AuditLog
// writes them to the log. Config.Audit nil records none.
type Auditor interface {
	Audit(e *loggers.AuditEvent)
}

var (
	_ Auditor = loggers.AuditLog{}
)

// notAudited are routes that change nothing a person asked for: table
// queries only read, and scale is the autoscaler sizing deployments every
// few seconds (its decisions are its metrics).
var notAudited = map[string]bool{
	"POST /api/2.0/gantry/tables/query":           true,
	"POST /api/2.0/gantry/deployments/{id}/scale": true,
}

// audited wraps the handler of route pattern so that each change it
// answers (every method but GET and HEAD) becomes an audit event: who,
// what, when, and the status and error code it ended with. It runs after
// authentication, so the principal is the caller's; refusals by rules
// (403, the hidden 404) are recorded as attempts.
func (s *Scheduler) audited(pattern string, h http.Handler) http.Handler {
	method, _, _ := strings.Cut(pattern, " ")
	if s.cfg.Audit == nil || notAudited[pattern] || method == http.MethodGet || method == http.MethodHead {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		note := &auditNote{}
		rec := &statusRecorder{ResponseWriter: w}
		h.ServeHTTP(rec, r.WithContext(context.WithValue(r.Context(), auditKey{}, note)))
		status := rec.status
		if status == 0 {
			status = http.StatusOK
		}
		e := &loggers.AuditEvent{
			EventID: newID(), TimestampMs: s.cfg.Now().UnixMilli(),
			Principal: requester(r), Action: pattern, Path: r.URL.Path, Target: note.target,
			StatusCode: int32(status), Source: r.RemoteAddr,
		}
		if status >= 300 {
			e.ErrorCode = rec.errorCode()
		}
		s.cfg.Audit.Audit(e)
	})
}

type auditKey struct{}

// auditNote is where a handler names the object of a change whose path
// does not (auditTarget).
type auditNote struct{ target string }

// auditTarget names the object the request changes, for its audit event:
// "serving-endpoint fraud" for a create, "secret prod/openai" for a put.
// It never takes a value.
func auditTarget(r *http.Request, target string) {
	if n, ok := r.Context().Value(auditKey{}).(*auditNote); ok {
		n.target = target
	}
}

// statusRecorder keeps the status an answer had and the start of an
// error's body, whose error_code the event records.
type statusRecorder struct {
	http.ResponseWriter
	status int
	head   []byte // the first bytes of an error answer
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	if r.status >= 300 && len(r.head) < 512 {
		r.head = append(r.head, p[:min(len(p), 512-len(r.head))]...)
	}
	return r.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the connection (uploads set
// read deadlines through it).
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// Flush passes flushes on, for handlers that stream.
func (r *statusRecorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// errorCode is the error_code of the error answer recorded, if it is in
// API.md's shape.
func (r *statusRecorder) errorCode() string {
	var e struct {
		Code string `json:"error_code"`
	}
	json.NewDecoder(bytes.NewReader(r.head)).Decode(&e)
	if len(e.Code) > 64 {
		return ""
	}
	return e.Code
}
