package api

// Feature serving (issue 17): online feature tables published from
// ClickHouse to the online store, feature specs, and what the route table
// tells activators about the lookups of a served entity. Shapes follow
// Databricks' feature engineering (PEERS.md §4): publish_spec,
// primary_key_columns, timeseries_key, FeatureLookup's table_name,
// lookup_key, feature_names, rename_outputs, default_values.

// Publish modes of PublishSpec.
const (
	// PublishSnapshot copies the whole table to a new generation and swaps
	// it in at once: a reader sees the old table or the new one.
	PublishSnapshot = "SNAPSHOT"
	// PublishTriggered copies the rows newer than the last sync (the whole
	// table the first time), once per publish call.
	PublishTriggered = "TRIGGERED"
	// PublishContinuous follows new rows within seconds until the table
	// is published again in another mode.
	PublishContinuous = "CONTINUOUS"
)

// States of an online table.
const (
	OnlineTableProvisioning = "PROVISIONING_INITIAL_SNAPSHOT"
	OnlineTableOnline       = "ONLINE"
	OnlineTableContinuous   = "ONLINE_CONTINUOUS_UPDATE"
	OnlineTableFailed       = "ONLINE_PIPELINE_FAILED"
)

// PublishRequest is the body of
// POST /api/2.0/feature-store/tables/{source}/publish.
type PublishRequest struct {
	PublishSpec PublishSpec `json:"publish_spec"`
	// PrimaryKeyColumns name the columns a row is looked up by, in order.
	PrimaryKeyColumns []string `json:"primary_key_columns"`
	// TimeseriesKey, when set, picks the newest row of each key (and is
	// what TRIGGERED and CONTINUOUS follow); without it a key must have
	// one row.
	TimeseriesKey string `json:"timeseries_key,omitempty"`
}

// PublishSpec is Databricks' publish_spec.
type PublishSpec struct {
	OnlineStore     string `json:"online_store,omitempty"`
	OnlineTableName string `json:"online_table_name,omitempty"`
	PublishMode     string `json:"publish_mode,omitempty"` // default TRIGGERED
}

// OnlineTable is a published table's state: the answer of publish and of
// GET /api/2.0/feature-store/tables/{source}.
type OnlineTable struct {
	Source            string          `json:"source_table_name"`
	Name              string          `json:"online_table_name"`
	PrimaryKeyColumns []string        `json:"primary_key_columns"`
	TimeseriesKey     string          `json:"timeseries_key,omitempty"`
	PublishMode       string          `json:"publish_mode"`
	State             string          `json:"state"`
	Message           string          `json:"message,omitempty"`
	Columns           []FeatureColumn `json:"columns"`
	Rows              int64           `json:"rows"`
	// LastSync is when the last sync ended, in ms since the epoch;
	// Watermark the newest timeseries_key value copied (ms); LagMs how
	// far the newest copied row is behind the sync's time.
	LastSync  int64 `json:"last_sync_timestamp,omitempty"`
	Watermark int64 `json:"watermark_timestamp,omitempty"`
	LagMs     int64 `json:"lag_ms"`
	// Generation counts SNAPSHOT swaps.
	Generation int64 `json:"generation"`
}

// ListOnlineTablesResponse is the answer of GET /api/2.0/feature-store/tables.
type ListOnlineTablesResponse struct {
	Tables []OnlineTable `json:"tables"`
}

// FeatureColumn is a column of a published table with its ClickHouse type.
type FeatureColumn struct {
	Name string `json:"name"`
	Type string `json:"type"`
}

// FeatureSpec is a named set of lookups: what a model's feature_spec.yaml
// holds, or POST /api/2.0/gantry/feature-specs creates.
type FeatureSpec struct {
	Name     string          `json:"name" yaml:"name,omitempty"`
	Features []FeatureLookup `json:"features" yaml:"features"`
}

// FeatureLookup is Databricks' FeatureLookup.
type FeatureLookup struct {
	TableName string   `json:"table_name" yaml:"table_name"`
	LookupKey []string `json:"lookup_key" yaml:"lookup_key"`
	// FeatureNames default to every column but the primary key and the
	// timeseries key.
	FeatureNames  []string          `json:"feature_names,omitempty" yaml:"feature_names,omitempty"`
	RenameOutputs map[string]string `json:"rename_outputs,omitempty" yaml:"rename_outputs,omitempty"`
	// DefaultValues, by output name (after renaming), stand in for a key
	// with no row; without one such a key is a 400.
	DefaultValues map[string]any `json:"default_values,omitempty" yaml:"default_values,omitempty"`
}

// ListFeatureSpecsResponse is the answer of GET /api/2.0/gantry/feature-specs.
type ListFeatureSpecsResponse struct {
	Specs []FeatureSpec `json:"feature_specs"`
}

// FeatureRoute is what an activator needs to look features up for a
// served entity: the spec resolved against the published tables, in the
// route table.
type FeatureRoute struct {
	// Spec names the feature spec ("" for a model's own feature_spec.yaml).
	Spec    string        `json:"spec,omitempty"`
	Lookups []LookupRoute `json:"lookups"`
	// Serving marks a feature-serving entity: the activator answers
	// {"outputs": [...]} itself and the entity has no replicas.
	Serving bool `json:"serving,omitempty"`
	// Order, when set, is the column order the model gets (its
	// signature's inputs); columns it does not name follow.
	Order []string `json:"order,omitempty"`
	// Error, when set, says why the spec cannot be served (a table not
	// published, a type mismatch): the activator refuses the entity's
	// requests with it and the entity's state is DEPLOYMENT_FAILED.
	Error string `json:"error,omitempty"`
}

// LookupRoute is one resolved lookup.
type LookupRoute struct {
	Table     string   `json:"table"`
	LookupKey []string `json:"lookup_key"`
	// Features are the table's columns to fetch and Outputs the names the
	// model sees, index by index.
	Features []string `json:"features"`
	Outputs  []string `json:"outputs"`
	// Defaults are JSON values by output index; nil where none.
	Defaults []RawJSON `json:"defaults"`
}

// RawJSON is a JSON value kept as its bytes.
type RawJSON []byte

// MarshalJSON writes the bytes as they are (null when empty).
func (r RawJSON) MarshalJSON() ([]byte, error) {
	if len(r) == 0 {
		return []byte("null"), nil
	}
	return r, nil
}

// UnmarshalJSON keeps a copy of the bytes; null becomes nil.
func (r *RawJSON) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*r = nil
		return nil
	}
	*r = append((*r)[:0], b...)
	return nil
}
