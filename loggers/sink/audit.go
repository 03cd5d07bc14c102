package sink

import (
	"context"

	"github.com/gantry/gantry/loggers"
)

// AuditStore is a Store that also holds the audit table; *tables.DB is
// one. With a Store that is not, audit events go to the log.
type AuditStore interface {
	InsertAudit(ctx context.Context, events []loggers.AuditEvent) error
}

// insertAudit stores events as insertRows does.
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
	return insertRows(ctx, s, "audit", loggers.AuditTable, events, as.InsertAudit)
}
