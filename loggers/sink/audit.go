package sink

import (
	"context"
	"time"

	"github.com/gantry/gantry/loggers"
	"github.com/segmentio/kafka-go"
)

// AuditStore is a Store that also holds the audit table; *tables.DB is
// one. With a Store that is not, audit events go to the log.
type AuditStore interface {
	InsertAudit(ctx context.Context, events []loggers.AuditEvent) error
}

// splitAudit takes the audit events out of msgs: they share the topic with
// invocation records and go to their own table. An event that does not
// decode is skipped and counted, as a bad record is.
func (s *Sink) splitAudit(msgs []kafka.Message) (records []kafka.Message, events []loggers.AuditEvent) {
	for _, m := range msgs {
		if !loggers.IsAudit(m.Value) {
			records = append(records, m)
			continue
		}
		e, err := loggers.DecodeAudit(m.Value)
		if err != nil {
			s.bad.Inc()
			s.cfg.Logger.Error("skip an audit event that does not decode", "partition", m.Partition, "offset", m.Offset, "err", err)
			continue
		}
		events = append(events, e)
	}
	return records, events
}

// insertAudit stores events, retrying with backoff until they are in or
// ctx ends, like invocation records: their offsets are committed after.
func (s *Sink) insertAudit(ctx context.Context, events []loggers.AuditEvent) error {
	if len(events) == 0 {
		return nil
	}
	as, ok := s.store.(AuditStore)
	if !ok {
		for i := range events {
			s.cfg.Logger.Info("audit", events[i].LogAttrs()...)
		}
		return nil
	}
	backoff := 100 * time.Millisecond
	for {
		err := as.InsertAudit(ctx, events)
		if err == nil {
			s.rows.Add(float64(len(events)))
			return nil
		}
		s.insertErrors.Inc()
		s.cfg.Logger.Warn("insert audit rows; retrying", "table", loggers.AuditTable.String(), "rows", len(events), "retry_in", backoff, "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}
