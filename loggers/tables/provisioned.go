package tables

import (
	"context"
	"fmt"
	"time"

	"github.com/gantry/gantry/loggers"
)

// provisionedColumns of the provisioned table, in insert order.
const provisionedColumns = "row_id, date, timestamp_ms, period_ms, endpoint, served_entity, workload_size, workload_type, replica_seconds, saved_replica_seconds"

// EnsureProvisioned creates the provisioned table
// (loggers.ProvisionedTable) if it does not exist: a ReplacingMergeTree
// whose key ends in the row's random id, so that a redelivered row counts
// once with FINAL and every other row counts.
func (db *DB) EnsureProvisioned(ctx context.Context) error {
	t := loggers.ProvisionedTable
	if err := db.conn.Exec(ctx, "CREATE DATABASE IF NOT EXISTS `"+t.Database+"`"); err != nil {
		return fmt.Errorf("create database %s: %w", t.Database, err)
	}
	ddl := "CREATE TABLE IF NOT EXISTS " + t.Quoted() + ` (
	row_id String,
	date Date,
	timestamp_ms Int64,
	period_ms Int64,
	endpoint String,
	served_entity String,
	workload_size String,
	workload_type String,
	replica_seconds Float64,
	saved_replica_seconds Float64
) ENGINE = ReplacingMergeTree()
PARTITION BY date
ORDER BY (endpoint, served_entity, timestamp_ms, row_id)`
	if err := db.conn.Exec(ctx, ddl); err != nil {
		return fmt.Errorf("create table %s: %w", t, err)
	}
	return nil
}

// InsertProvisioned writes rows as one block, creating the table first if
// it is missing.
func (db *DB) InsertProvisioned(ctx context.Context, rows []loggers.ProvisionedRow) error {
	err := db.insertProvisioned(ctx, rows)
	if err != nil && IsMissingTable(err) {
		if err = db.EnsureProvisioned(ctx); err == nil {
			err = db.insertProvisioned(ctx, rows)
		}
	}
	return err
}

func (db *DB) insertProvisioned(ctx context.Context, rows []loggers.ProvisionedRow) error {
	t := loggers.ProvisionedTable
	batch, err := db.conn.PrepareBatch(ctx, "INSERT INTO "+t.Quoted()+" ("+provisionedColumns+")")
	if err != nil {
		return fmt.Errorf("insert into %s: %w", t, err)
	}
	defer batch.Abort()
	for i := range rows {
		p := &rows[i]
		if err := batch.Append(p.RowID, time.UnixMilli(p.TimestampMs).UTC(), p.TimestampMs, p.PeriodMs, p.Endpoint, p.ServedEntity,
			p.WorkloadSize, p.WorkloadType, p.ReplicaSeconds, p.SavedReplicaSeconds); err != nil {
			return fmt.Errorf("insert into %s: %w", t, err)
		}
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("insert into %s: %w", t, err)
	}
	return nil
}
