package tables

import (
	"context"
	"fmt"
	"time"

	"github.com/gantry/gantry/loggers"
)

// usageColumns of the usage table, in insert order.
const usageColumns = "request_id, date, timestamp_ms, endpoint, served_entity, requester, status_code, input_tokens, output_tokens, streaming, client_request_id"

// EnsureUsage creates the usage table (loggers.UsageTable) if it does not
// exist: a ReplacingMergeTree ordered by request_id, so that a row the
// logger delivers twice counts once with FINAL.
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
	client_request_id String
) ENGINE = ReplacingMergeTree()
PARTITION BY date
ORDER BY request_id`
	if err := db.conn.Exec(ctx, ddl); err != nil {
		return fmt.Errorf("create table %s: %w", t, err)
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
			u.Requester, u.StatusCode, u.InputTokens, u.OutputTokens, streaming, u.ClientRequestID); err != nil {
			return fmt.Errorf("insert into %s: %w", t, err)
		}
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("insert into %s: %w", t, err)
	}
	return nil
}
