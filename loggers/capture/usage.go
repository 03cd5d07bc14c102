package capture

import "github.com/gantry/gantry/loggers"

// Usage queues a usage row for the usage table; like a record, a row
// that does not fit is dropped and counted, never waited for.
func (c *Capturer) Usage(u *loggers.UsageRow) bool {
	return c.enqueue(loggers.AppendUsage(nil, u))
}
