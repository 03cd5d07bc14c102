package sink

import (
	"context"

	"github.com/gantry/gantry/loggers"
)

// UsageStore is a Store that also holds the usage table; *tables.DB is
// one. With a Store that is not, usage rows are counted as bad and
// dropped (the scheduler refuses usage tracking without ClickHouse).
type UsageStore interface {
	InsertUsage(ctx context.Context, rows []loggers.UsageRow) error
}

// insertUsage stores rows as insertRows does.
func (s *Sink) insertUsage(ctx context.Context, rows []loggers.UsageRow) error {
	if len(rows) == 0 {
		return nil
	}
	us, ok := s.store.(UsageStore)
	if !ok {
		s.bad.Add(float64(len(rows)))
		s.cfg.Logger.Error("usage rows dropped: this logger's store has no usage table", "rows", len(rows))
		return nil
	}
	return insertRows(ctx, s, "usage", loggers.UsageTable, rows, us.InsertUsage)
}
