package sink

import (
	"context"
	"time"

	"github.com/gantry/gantry/loggers"
	"github.com/segmentio/kafka-go"
)

// UsageStore is a Store that also holds the usage table; *tables.DB is
// one. With a Store that is not, usage rows are counted as bad and
// dropped (the scheduler refuses usage tracking without ClickHouse).
type UsageStore interface {
	InsertUsage(ctx context.Context, rows []loggers.UsageRow) error
}

// splitUsage takes the usage rows out of msgs, as splitAudit does audit
// events.
func (s *Sink) splitUsage(msgs []kafka.Message) (rest []kafka.Message, rows []loggers.UsageRow) {
	for _, m := range msgs {
		if !loggers.IsUsage(m.Value) {
			rest = append(rest, m)
			continue
		}
		u, err := loggers.DecodeUsage(m.Value)
		if err != nil {
			s.bad.Inc()
			s.cfg.Logger.Error("skip a usage row that does not decode", "partition", m.Partition, "offset", m.Offset, "err", err)
			continue
		}
		rows = append(rows, u)
	}
	return rest, rows
}

// insertUsage stores rows, retrying with backoff until they are in or ctx
// ends: their offsets are committed after.
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
	backoff := 100 * time.Millisecond
	for {
		err := us.InsertUsage(ctx, rows)
		if err == nil {
			s.rows.Add(float64(len(rows)))
			return nil
		}
		s.insertErrors.Inc()
		s.cfg.Logger.Warn("insert usage rows; retrying", "table", loggers.UsageTable.String(), "rows", len(rows), "retry_in", backoff, "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}
