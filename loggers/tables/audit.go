package tables

import (
	"context"
	"fmt"
	"time"

	"github.com/gantry/gantry/loggers"
)

// auditColumns of the audit table, in insert order.
const auditColumns = "event_id, date, timestamp_ms, principal, action, path, target, status_code, error_code, source"

// EnsureAudit creates the audit table (loggers.AuditTable) if it does not
// exist. Like the inference tables it is a ReplacingMergeTree, ordered by
// event_id: the logger delivers at least once, and a redelivered event
// collapses into its first row (read with FINAL to count each once).
func (db *DB) EnsureAudit(ctx context.Context) error {
	t := loggers.AuditTable
	if err := db.conn.Exec(ctx, "CREATE DATABASE IF NOT EXISTS `"+t.Database+"`"); err != nil {
		return fmt.Errorf("create database %s: %w", t.Database, err)
	}
	ddl := "CREATE TABLE IF NOT EXISTS " + t.Quoted() + ` (
	event_id String,
	date Date,
	timestamp_ms Int64,
	principal String,
	action String,
	path String,
	target String,
	status_code Int32,
	error_code String,
	source String
) ENGINE = ReplacingMergeTree()
PARTITION BY date
ORDER BY event_id`
	if err := db.conn.Exec(ctx, ddl); err != nil {
		return fmt.Errorf("create table %s: %w", t, err)
	}
	return nil
}

// InsertAudit writes events as one block, creating the table first if it
// is missing.
func (db *DB) InsertAudit(ctx context.Context, events []loggers.AuditEvent) error {
	err := db.insertAudit(ctx, events)
	if err != nil && IsMissingTable(err) {
		if err = db.EnsureAudit(ctx); err == nil {
			err = db.insertAudit(ctx, events)
		}
	}
	return err
}

func (db *DB) insertAudit(ctx context.Context, events []loggers.AuditEvent) error {
	t := loggers.AuditTable
	batch, err := db.conn.PrepareBatch(ctx, "INSERT INTO "+t.Quoted()+" ("+auditColumns+")")
	if err != nil {
		return fmt.Errorf("insert into %s: %w", t, err)
	}
	defer batch.Abort()
	for i := range events {
		e := &events[i]
		if err := batch.Append(e.EventID, time.UnixMilli(e.TimestampMs).UTC(), e.TimestampMs, e.Principal,
			e.Action, e.Path, e.Target, e.StatusCode, e.ErrorCode, e.Source); err != nil {
			return fmt.Errorf("insert into %s: %w", t, err)
		}
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("insert into %s: %w", t, err)
	}
	return nil
}
