package sink

import (
	"context"

	"github.com/gantry/gantry/loggers"
)

// ProvisionedStore is a Store that also holds the provisioned table (the
// scheduler's metering of replica time); *tables.DB is one. With a Store
// that is not, provisioned rows are counted as bad and dropped.
type ProvisionedStore interface {
	InsertProvisioned(ctx context.Context, rows []loggers.ProvisionedRow) error
}

// insertProvisioned stores rows as insertRows does.
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
	return insertRows(ctx, s, "provisioned", loggers.ProvisionedTable, rows, ps.InsertProvisioned)
}
