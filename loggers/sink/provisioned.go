package sink

import (
	"context"
	"time"

	"github.com/gantry/gantry/loggers"
	"github.com/segmentio/kafka-go"
)

// ProvisionedStore is a Store that also holds the provisioned table (the
// scheduler's metering of replica time); *tables.DB is one. With a Store
// that is not, provisioned rows are counted as bad and dropped.
type ProvisionedStore interface {
	InsertProvisioned(ctx context.Context, rows []loggers.ProvisionedRow) error
}

// splitProvisioned takes the provisioned rows out of msgs, as splitUsage
// does usage rows.
func (s *Sink) splitProvisioned(msgs []kafka.Message) (rest []kafka.Message, rows []loggers.ProvisionedRow) {
	for _, m := range msgs {
		if !loggers.IsProvisioned(m.Value) {
			rest = append(rest, m)
			continue
		}
		p, err := loggers.DecodeProvisioned(m.Value)
		if err != nil {
			s.bad.Inc()
			s.cfg.Logger.Error("skip a provisioned row that does not decode", "partition", m.Partition, "offset", m.Offset, "err", err)
			continue
		}
		rows = append(rows, p)
	}
	return rest, rows
}

// insertProvisioned stores rows, retrying with backoff until they are in
// or ctx ends: their offsets are committed after.
func (s *Sink) insertProvisioned(ctx context.Context, rows []loggers.ProvisionedRow) error {
	if len(rows) == 0 {
		return nil
	}
	ps, ok := s.store.(ProvisionedStore)
	if !ok {
		s.bad.Add(float64(len(rows)))
		s.cfg.Logger.Error("provisioned rows dropped: this logger's store has no provisioned table", "rows", len(rows))
		return nil
	}
	backoff := 100 * time.Millisecond
	for {
		err := ps.InsertProvisioned(ctx, rows)
		if err == nil {
			s.rows.Add(float64(len(rows)))
			return nil
		}
		s.insertErrors.Inc()
		s.cfg.Logger.Warn("insert provisioned rows; retrying", "table", loggers.ProvisionedTable.String(), "rows", len(rows), "retry_in", backoff, "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}
