package loggers

import (
	"encoding/json"
	"errors"
	"fmt"
)

// ProvisionedRow is the provisioned time of one served entity's replicas
// over one period (a minute by default) that the scheduler metered: what
// the entity cost while it ran, and what scale to zero saved while it
// did not. It travels the usage rows' path (the capture producer, Kafka,
// the logger) into ProvisionedTable.
type ProvisionedRow struct {
	// RowID is random: a row the logger delivers twice counts once with
	// FINAL, and two rows of one minute (before and after a scheduler
	// restart) both count.
	RowID string `json:"row_id"`
	// TimestampMs starts the period; PeriodMs is its length.
	TimestampMs  int64  `json:"timestamp_ms"`
	PeriodMs     int64  `json:"period_ms"`
	Endpoint     string `json:"endpoint"`
	ServedEntity string `json:"served_entity"`
	WorkloadSize string `json:"workload_size"`
	WorkloadType string `json:"workload_type"`
	// ReplicaSeconds sums the replicas that ran (ready or starting) over
	// the period's seconds.
	ReplicaSeconds float64 `json:"replica_seconds"`
	// SavedReplicaSeconds sums, over the seconds the entity was scaled to
	// zero, the replicas it would have kept without scale to zero.
	SavedReplicaSeconds float64 `json:"saved_replica_seconds"`
}

// ProvisionedTable is where provisioned rows land, next to UsageTable.
var ProvisionedTable = Table{Database: "default", Name: "gantry_provisioned"}

// provisionedVersion starts a provisioned row's encoding on the topic.
const provisionedVersion = 0xA3

// AppendProvisioned appends the encoding of p to b.
func AppendProvisioned(b []byte, p *ProvisionedRow) []byte {
	j, _ := json.Marshal(p) // strings and numbers: cannot fail
	return append(append(b, provisionedVersion), j...)
}

// IsProvisioned reports whether a message on the topic is a provisioned row.
func IsProvisioned(b []byte) bool { return len(b) > 0 && b[0] == provisionedVersion }

// DecodeProvisioned decodes what AppendProvisioned wrote.
func DecodeProvisioned(b []byte) (ProvisionedRow, error) {
	var p ProvisionedRow
	if !IsProvisioned(b) {
		return p, errors.New("not a provisioned row")
	}
	if err := json.Unmarshal(b[1:], &p); err != nil {
		return ProvisionedRow{}, fmt.Errorf("provisioned row: %w", err)
	}
	if p.RowID == "" {
		return ProvisionedRow{}, errors.New("provisioned row without row_id")
	}
	return p, nil
}
