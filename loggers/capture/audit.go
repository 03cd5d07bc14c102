package capture

import (
	"github.com/gantry/gantry/loggers"
	"github.com/segmentio/kafka-go"
)

// Audit queues an audit event for Kafka next to the invocation records, on
// the same terms: it never blocks. An event that cannot be queued (a full
// buffer, Run ended) is written to the log whole instead, so that a
// change is never lost without a trace; it counts as dropped too.
func (c *Capturer) Audit(e *loggers.AuditEvent) {
	if c.enqueue(loggers.AppendAudit(nil, e)) {
		return
	}
	c.cfg.Logger.Warn("audit event not queued for the audit table; logged here instead", e.LogAttrs()...)
}

// enqueue queues an encoded message, or counts a drop.
func (c *Capturer) enqueue(b []byte) bool {
	if c.stopped.Load() {
		c.drop(1)
		return false
	}
	if c.bytes.Add(int64(len(b))) <= c.cfg.MaxBytes {
		select {
		case c.queue <- b:
			return true
		default:
		}
	}
	c.bytes.Add(-int64(len(b)))
	c.drop(1)
	return false
}

// logLostAudits writes to the log the audit events of a batch that Kafka
// did not take (werrs per message, else err for all), as Audit does for
// those it could not queue.
func (c *Capturer) logLostAudits(batch [][]byte, werrs kafka.WriteErrors, err error) {
	for i, b := range batch {
		if !loggers.IsAudit(b) || (werrs != nil && (i >= len(werrs) || werrs[i] == nil)) {
			continue
		}
		e, derr := loggers.DecodeAudit(b)
		if derr != nil {
			continue
		}
		c.cfg.Logger.Warn("audit event not produced to Kafka; logged here instead", append(e.LogAttrs(), "err", err)...)
	}
}
