package tables

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/gantry/gantry/loggers"
)

// usageColumns of the usage table, in insert order.
const usageColumns = "request_id, date, timestamp_ms, endpoint, served_entity, requester, status_code, input_tokens, output_tokens, streaming, client_request_id, usage_context"

// EnsureUsage creates the usage table (loggers.UsageTable) if it does not
// exist: a ReplacingMergeTree ordered by request_id, so that a row the
// logger delivers twice counts once with FINAL. usage_context holds the
// request's map as JSON with sorted keys ("{}" when none): ClickHouse
// 18.16 has no Map type, and visitParamExtractString(usage_context,
// 'team') reads one key.
func (db *DB) EnsureUsage(ctx context.Context) error {
	t := loggers.UsageTable
	if err := db.conn.Exec(ctx, "CREATE DATABASE IF NOT EXISTS `"+t.Database+"`"); err != nil {
		return fmt.Errorf("create database %s: %w", t.Database, err)
	}
	ddl := "CREATE TABLE IF NOT EXISTS " + t.Quoted() + ` (
	request_id String,
	date Date,
	timestamp_ms Int64,
	endpoint String,
	served_entity String,
	requester String,
	status_code Int32,
	input_tokens Int64,
	output_tokens Int64,
	streaming UInt8,
	client_request_id String,
	usage_context String
) ENGINE = ReplacingMergeTree()
PARTITION BY date
ORDER BY request_id`
	if err := db.conn.Exec(ctx, ddl); err != nil {
		return fmt.Errorf("create table %s: %w", t, err)
	}
	// A table made before usage_context was a column gets it.
	return db.addColumn(ctx, t, "usage_context", "String DEFAULT '{}'")
}

// addColumn adds column name of type typ to t unless t has it: ClickHouse
// 18.16 knows no ADD COLUMN IF NOT EXISTS. Two callers racing may both
// try; the second gets an error and the next call finds the column.
func (db *DB) addColumn(ctx context.Context, t loggers.Table, name, typ string) error {
	res, err := db.Query(ctx, "SELECT count() FROM system.columns WHERE database = ? AND table = ? AND name = ?", t.Database, t.Name, name)
	if err != nil {
		return fmt.Errorf("columns of %s: %w", t, err)
	}
	if len(res.Rows) == 1 && len(res.Rows[0]) == 1 && res.Rows[0][0] != "0" {
		return nil
	}
	if err := db.conn.Exec(ctx, "ALTER TABLE "+t.Quoted()+" ADD COLUMN `"+name+"` "+typ); err != nil {
		return fmt.Errorf("add %s to %s: %w", name, t, err)
	}
	return nil
}

// InsertUsage writes rows as one block, creating the table first if it
// is missing.
func (db *DB) InsertUsage(ctx context.Context, rows []loggers.UsageRow) error {
	err := db.insertUsage(ctx, rows)
	if err != nil && IsMissingTable(err) {
		if err = db.EnsureUsage(ctx); err == nil {
			err = db.insertUsage(ctx, rows)
		}
	}
	return err
}

func (db *DB) insertUsage(ctx context.Context, rows []loggers.UsageRow) error {
	t := loggers.UsageTable
	batch, err := db.conn.PrepareBatch(ctx, "INSERT INTO "+t.Quoted()+" ("+usageColumns+")")
	if err != nil {
		return fmt.Errorf("insert into %s: %w", t, err)
	}
	defer batch.Abort()
	for i := range rows {
		u := &rows[i]
		streaming := uint8(0) // UInt8: ClickHouse 18.16 has no Bool
		if u.Streaming {
			streaming = 1
		}
		if err := batch.Append(u.RequestID, time.UnixMilli(u.TimestampMs).UTC(), u.TimestampMs, u.Endpoint, u.ServedEntity,
			u.Requester, u.StatusCode, u.InputTokens, u.OutputTokens, streaming, u.ClientRequestID, usageContext(u.UsageContext)); err != nil {
			return fmt.Errorf("insert into %s: %w", t, err)
		}
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("insert into %s: %w", t, err)
	}
	return nil
}

// usageContext is the usage_context column of m: JSON with sorted keys.
func usageContext(m map[string]string) string {
	if len(m) == 0 {
		return "{}"
	}
	b, _ := json.Marshal(m) // a map of strings: cannot fail
	return string(b)
}
