package capture

import "github.com/gantry/gantry/loggers"

// Usage queues a usage row for the usage table; like a record, a row
// that does not fit is dropped and counted, never waited for.
func (c *Capturer) Usage(u *loggers.UsageRow) bool {
	return c.enqueue(loggers.AppendUsage(nil, u))
}

// Provisioned queues a provisioned row (the scheduler's metering) as
// Usage queues a usage row.
func (c *Capturer) Provisioned(p *loggers.ProvisionedRow) bool {
	return c.enqueue(loggers.AppendProvisioned(nil, p))
}
