// Package api holds Gantry's wire types and a Go client for its REST API.
//
// The shapes follow the Databricks Model Serving REST API (snake_case JSON),
// so scripts written for Databricks serving endpoints work against Gantry
// with a changed host and token. The package depends on the standard library
// only, the way github.com/hashicorp/nomad/api serves Nomad users.
package api

// Endpoint states (EndpointState.Ready).
const (
	EndpointReady    = "READY"
	EndpointNotReady = "NOT_READY"
)

// Config update states (EndpointState.ConfigUpdate).
const (
	ConfigNotUpdating    = "NOT_UPDATING"
	ConfigInProgress     = "IN_PROGRESS"
	ConfigUpdateFailed   = "UPDATE_FAILED"
	ConfigUpdateCanceled = "UPDATE_CANCELED"
)

// Served entity deployment states (ServedEntityState.Deployment).
const (
	DeploymentCreating   = "DEPLOYMENT_CREATING"
	DeploymentReady      = "DEPLOYMENT_READY"
	DeploymentRecovering = "DEPLOYMENT_RECOVERING"
	DeploymentFailed     = "DEPLOYMENT_FAILED"
	DeploymentAborted    = "DEPLOYMENT_ABORTED"
)

// Workload sizes and types accepted in ServedEntity.
const (
	WorkloadSmall  = "Small"
	WorkloadMedium = "Medium"
	WorkloadLarge  = "Large"

	WorkloadCPU            = "CPU"
	WorkloadGPUSmall       = "GPU_SMALL"
	WorkloadGPUMedium      = "GPU_MEDIUM"
	WorkloadGPULarge       = "GPU_LARGE"
	WorkloadMultiGPUMedium = "MULTIGPU_MEDIUM"
)

// Permission levels.
const (
	CanView   = "CAN_VIEW"
	CanQuery  = "CAN_QUERY"
	CanManage = "CAN_MANAGE"
)

// CreateEndpointRequest is the body of POST /api/2.0/serving-endpoints.
type CreateEndpointRequest struct {
	Name   string          `json:"name"`
	Config *EndpointConfig `json:"config"`
	Tags   []Tag           `json:"tags,omitempty"`
}

// UpdatePtConfigRequest is the body of PUT
// /api/2.0/serving-endpoints/pt/{name}/config: Databricks wraps the config
// of a provisioned-throughput update in "config", where PUT .../{name}/config
// takes it bare.
type UpdatePtConfigRequest struct {
	Config *EndpointConfig `json:"config"`
}

// Endpoint is a serving endpoint as the API returns it.
type Endpoint struct {
	Name                 string          `json:"name"`
	ID                   string          `json:"id"`
	Creator              string          `json:"creator,omitempty"`
	CreationTimestamp    int64           `json:"creation_timestamp"`
	LastUpdatedTimestamp int64           `json:"last_updated_timestamp"`
	State                EndpointState   `json:"state"`
	Config               *EndpointConfig `json:"config,omitempty"`
	PendingConfig        *PendingConfig  `json:"pending_config,omitempty"`
	Tags                 []Tag           `json:"tags"`
	PermissionLevel      string          `json:"permission_level,omitempty"`
	EndpointURL          string          `json:"endpoint_url,omitempty"`
	AIGateway            *AIGateway      `json:"ai_gateway,omitempty"`
}

// AIGateway is what PUT .../ai-gateway takes and returns. Gantry supports
// its inference table, fallbacks, rate limits and guardrails (PII and
// invalid keywords) and usage tracking.
type AIGateway struct {
	// RateLimits are the endpoint's limits (PEERS.md §2.1): at most 20,
	// at most 5 of them for groups; see package ratelimit for how they
	// combine.
	RateLimits []RateLimit `json:"rate_limits,omitempty"`
	// InferenceTableConfig turns on the inference table like
	// EndpointConfig.AutoCaptureConfig; the two cannot both be enabled.
	InferenceTableConfig *AutoCaptureConfig `json:"inference_table_config,omitempty"`
	// FallbackConfig, when enabled, sends a request that an external
	// entity answered with 429 or 5xx (or did not answer) to the next
	// served entity in the config's order.
	FallbackConfig *FallbackConfig `json:"fallback_config,omitempty"`
	// Guardrails check what goes to an endpoint's LLM entities (Input)
	// and what comes back (Output); see package guardrail.
	Guardrails *Guardrails `json:"guardrails,omitempty"`
	// UsageTrackingConfig, when enabled, writes a row per invocation
	// (who, what, status, tokens) to the usage table; see
	// GET /api/2.0/gantry/usage.
	UsageTrackingConfig *UsageTrackingConfig `json:"usage_tracking_config,omitempty"`
}

// UsageTrackingConfig is the AI gateway's usage tracking switch.
type UsageTrackingConfig struct {
	Enabled bool `json:"enabled"`
}

// UsageResponse is GET /api/2.0/gantry/usage: one row per value of By
// (endpoint, entity or requester) since Since, the busiest first, and
// the same keys over time in Step-long buckets, for charts.
type UsageResponse struct {
	Since string     `json:"since"`
	By    string     `json:"by"`
	Rows  []UsageRow `json:"rows"`
	// Step is the length of Series' buckets: 1m for a since of up to 2
	// hours, 1h up to 7 days, else 1d.
	Step   string        `json:"step"`
	Series []UsageSeries `json:"series"`
}

// UsageRow sums the usage of one key: its invocations (usage tracking)
// and, by endpoint or entity, its provisioned time.
type UsageRow struct {
	Key          string `json:"key"`
	Requests     int64  `json:"requests"`
	Errors       int64  `json:"errors"`
	InputTokens  int64  `json:"input_tokens"`
	OutputTokens int64  `json:"output_tokens"`
	UsageCost
	// Workloads split the provisioned time by workload size and type.
	Workloads []WorkloadUsage `json:"workloads,omitempty"`
}

// UsageCost is provisioned time: replica-seconds that replicas ran, and
// those that scale to zero saved (seconds at zero replicas times the
// replicas the entity would keep without it), priced by the scheduler's
// unit costs per replica-hour.
type UsageCost struct {
	ReplicaSeconds      float64 `json:"replica_seconds,omitempty"`
	Cost                float64 `json:"cost,omitempty"`
	SavedReplicaSeconds float64 `json:"saved_replica_seconds,omitempty"`
	SavedCost           float64 `json:"saved_cost,omitempty"`
}

// WorkloadUsage is the provisioned time of one workload size and type.
type WorkloadUsage struct {
	WorkloadSize string `json:"workload_size"`
	WorkloadType string `json:"workload_type"`
	UsageCost
}

// UsageSeries is one key's usage over time, bucket by bucket (buckets
// with nothing are left out).
type UsageSeries struct {
	Key    string       `json:"key"`
	Points []UsagePoint `json:"points"`
}

// UsagePoint is the usage of one bucket, which starts at TimeMs.
type UsagePoint struct {
	TimeMs       int64 `json:"time_ms"`
	Requests     int64 `json:"requests,omitempty"`
	Errors       int64 `json:"errors,omitempty"`
	InputTokens  int64 `json:"input_tokens,omitempty"`
	OutputTokens int64 `json:"output_tokens,omitempty"`
	UsageCost
}

// Guardrails are the AI gateway's guardrails for LLM entities
// (Databricks' AiGatewayGuardrails).
type Guardrails struct {
	Input  *GuardrailParameters `json:"input,omitempty"`
	Output *GuardrailParameters `json:"output,omitempty"`
	// JudgeEntity (Gantry's own) names the served entity of this endpoint
	// that judges safety and valid_topics: an external model of task
	// llm/v1/chat, usually routed 0 % of the traffic. Without it, safety
	// and valid_topics are refused.
	JudgeEntity string `json:"judge_entity,omitempty"`
}

// GuardrailParameters are one side's guardrails. Safety and ValidTopics
// (input only) need a judge model: Guardrails.JudgeEntity.
type GuardrailParameters struct {
	Safety          bool                  `json:"safety,omitempty"`
	PII             *GuardrailPIIBehavior `json:"pii,omitempty"`
	InvalidKeywords []string              `json:"invalid_keywords,omitempty"`
	ValidTopics     []string              `json:"valid_topics,omitempty"`
}

// GuardrailPIIBehavior is what a PII match does: "BLOCK" (400 naming the
// guardrail), "MASK" (replaced by its kind, e.g. [EMAIL]) or "NONE".
type GuardrailPIIBehavior struct {
	Behavior string `json:"behavior"`
}

// RateLimit is one AI gateway rate limit: Calls or Tokens (or both) per
// RenewalPeriod ("minute", the only one) for Key: "endpoint" (the
// default: everyone together), "user" (each user and service principal
// alone, or the one Principal names), "user_group" (the members of group
// Principal together) or "service_principal" (the one Principal names).
type RateLimit struct {
	Calls         int64  `json:"calls,omitempty"`
	Tokens        int64  `json:"tokens,omitempty"`
	Key           string `json:"key,omitempty"`
	Principal     string `json:"principal,omitempty"`
	RenewalPeriod string `json:"renewal_period"`
}

// FallbackConfig is the AI gateway's fallback switch.
type FallbackConfig struct {
	Enabled bool `json:"enabled"`
}

// EndpointState is an endpoint's readiness and the state of its config update.
type EndpointState struct {
	Ready        string `json:"ready"`
	ConfigUpdate string `json:"config_update"`
	// Message says why an update failed; a Gantry extension.
	Message string `json:"message,omitempty"`
}

// EndpointConfig is what PUT .../config takes and what Endpoint.Config shows.
type EndpointConfig struct {
	ServedEntities    []ServedEntity     `json:"served_entities"`
	TrafficConfig     *TrafficConfig     `json:"traffic_config,omitempty"`
	AutoCaptureConfig *AutoCaptureConfig `json:"auto_capture_config,omitempty"`
	ConfigVersion     int                `json:"config_version,omitempty"`
}

// PendingConfig is a config that is rolling out while the current one serves.
type PendingConfig struct {
	EndpointConfig
	StartTime int64 `json:"start_time"`
}

// ServedEntity is one model version served by an endpoint.
//
// Optional numbers and booleans are pointers so that "unset" and "zero" stay
// distinct, as in Nomad's api.Job.
type ServedEntity struct {
	Name                      string `json:"name,omitempty"`
	EntityName                string `json:"entity_name,omitempty"`
	EntityVersion             string `json:"entity_version,omitempty"`
	WorkloadSize              string `json:"workload_size,omitempty"`
	WorkloadType              string `json:"workload_type,omitempty"`
	ScaleToZeroEnabled        *bool  `json:"scale_to_zero_enabled,omitempty"`
	MinProvisionedConcurrency *int   `json:"min_provisioned_concurrency,omitempty"`
	MaxProvisionedConcurrency *int   `json:"max_provisioned_concurrency,omitempty"`
	// MinProvisionedThroughput and MaxProvisionedThroughput bound an LLM
	// entity in tokens per second, in multiples of its model's throughput
	// chunk (GET /api/2.0/serving-endpoints/get-model-optimization-info):
	// each chunk is one replica, and the autoscaler sizes the entity from
	// the tokens per second and the queued sequences its replicas report.
	// They exclude workload_size and the concurrency bounds.
	MinProvisionedThroughput *int `json:"min_provisioned_throughput,omitempty"`
	MaxProvisionedThroughput *int `json:"max_provisioned_throughput,omitempty"`
	// ThroughputChunkSize is read-only: the model's chunk, in tokens per
	// second, that the throughput bounds were checked against.
	ThroughputChunkSize int `json:"throughput_chunk_size,omitempty"`
	// ProvisionedModelUnits is Databricks' newer provisioned-throughput
	// unit, for an LLM entity: one unit is one throughput chunk of its
	// model, one replica. N units keep N replicas ready (never scaled to
	// zero); with BurstScalingEnabled (the default when units are set)
	// the autoscaler may add up to N more from token load, without it the
	// entity runs exactly N. Units exclude workload_size, the concurrency
	// bounds and the throughput bounds. POST /api/2.0/serving-endpoints/pt
	// and PUT /api/2.0/serving-endpoints/pt/{name}/config require them.
	ProvisionedModelUnits *int              `json:"provisioned_model_units,omitempty"`
	BurstScalingEnabled   *bool             `json:"burst_scaling_enabled,omitempty"`
	EnvironmentVars       map[string]string `json:"environment_vars,omitempty"`
	// ReplicaConcurrency is how many requests one replica takes at once
	// (default 4); a Gantry extension. Requests beyond wait in the
	// activator's queue, and the autoscaler sizes the entity by it.
	ReplicaConcurrency *int `json:"replica_concurrency,omitempty"`
	// ExternalModel serves a model hosted by a provider (OpenAI,
	// Anthropic, Cohere, any OpenAI-compatible server) through the
	// activator: no replicas, no model, no workload. It excludes
	// entity_name, entity_version, workload_size, workload_type,
	// scale_to_zero_enabled and the concurrency fields.
	ExternalModel *ExternalModel `json:"external_model,omitempty"`

	// Read-only fields, filled in by the server.
	State        *ServedEntityState `json:"state,omitempty"`
	ScaledToZero *bool              `json:"scaled_to_zero,omitempty"`
	Replicas     *Replicas          `json:"replicas,omitempty"`
}

// External model providers and tasks (ExternalModel.Provider, .Task).
const (
	ProviderOpenAI    = "openai"
	ProviderAnthropic = "anthropic"
	ProviderCohere    = "cohere"
	ProviderCustom    = "custom"

	TaskChat        = "llm/v1/chat"
	TaskCompletions = "llm/v1/completions"
	TaskEmbeddings  = "llm/v1/embeddings"
)

// ExternalModel is a served entity's model at a provider (Databricks'
// ExternalModel). Exactly the config block that matches Provider is set.
//
// Every credential has a twin ending in _plaintext: the first takes a
// secret reference ("{{secrets/scope/key}}"), the twin the value itself;
// exactly one of the two is given. Answers never carry a _plaintext value.
type ExternalModel struct {
	// Name is the provider's model name ("gpt-4o-mini").
	Name string `json:"name"`
	// Provider is one of the Provider* constants.
	Provider string `json:"provider"`
	// Task is one of the Task* constants; every external entity of an
	// endpoint has the same.
	Task string `json:"task"`

	OpenAIConfig         *OpenAIConfig         `json:"openai_config,omitempty"`
	AnthropicConfig      *AnthropicConfig      `json:"anthropic_config,omitempty"`
	CohereConfig         *CohereConfig         `json:"cohere_config,omitempty"`
	CustomProviderConfig *CustomProviderConfig `json:"custom_provider_config,omitempty"`
}

// OpenAIConfig reaches OpenAI, or Azure OpenAI with OpenAIAPIType "azure".
type OpenAIConfig struct {
	OpenAIAPIKey          string `json:"openai_api_key,omitempty"`
	OpenAIAPIKeyPlaintext string `json:"openai_api_key_plaintext,omitempty"`
	// OpenAIAPIBase defaults to https://api.openai.com/v1; Azure needs its
	// resource's URL.
	OpenAIAPIBase string `json:"openai_api_base,omitempty"`
	// OpenAIAPIType is "openai" (the default) or "azure" (key auth).
	OpenAIAPIType string `json:"openai_api_type,omitempty"`
	// OpenAIAPIVersion and OpenAIDeploymentName are Azure's, required there.
	OpenAIAPIVersion     string `json:"openai_api_version,omitempty"`
	OpenAIDeploymentName string `json:"openai_deployment_name,omitempty"`
	OpenAIOrganization   string `json:"openai_organization,omitempty"`
}

// AnthropicConfig reaches Anthropic's Messages API.
type AnthropicConfig struct {
	AnthropicAPIKey          string `json:"anthropic_api_key,omitempty"`
	AnthropicAPIKeyPlaintext string `json:"anthropic_api_key_plaintext,omitempty"`
	// AnthropicAPIBase (a Gantry extension) defaults to
	// https://api.anthropic.com; a proxy or a test server can stand in.
	AnthropicAPIBase string `json:"anthropic_api_base,omitempty"`
}

// CohereConfig reaches Cohere's v2 API.
type CohereConfig struct {
	CohereAPIKey          string `json:"cohere_api_key,omitempty"`
	CohereAPIKeyPlaintext string `json:"cohere_api_key_plaintext,omitempty"`
	// CohereAPIBase defaults to https://api.cohere.com.
	CohereAPIBase string `json:"cohere_api_base,omitempty"`
}

// CustomProviderConfig reaches any OpenAI-compatible server (vLLM,
// llama.cpp's server, another Gantry) at CustomProviderURL, with at most
// one of the two ways to authenticate.
type CustomProviderConfig struct {
	CustomProviderURL string           `json:"custom_provider_url"`
	APIKeyAuth        *APIKeyAuth      `json:"api_key_auth,omitempty"`
	BearerTokenAuth   *BearerTokenAuth `json:"bearer_token_auth,omitempty"`
}

// APIKeyAuth sends Value in the header named Key.
type APIKeyAuth struct {
	Key            string `json:"key"`
	Value          string `json:"value,omitempty"`
	ValuePlaintext string `json:"value_plaintext,omitempty"`
}

// BearerTokenAuth sends "Authorization: Bearer <token>".
type BearerTokenAuth struct {
	Token          string `json:"token,omitempty"`
	TokenPlaintext string `json:"token_plaintext,omitempty"`
}

// ServedEntityState is the deployment state of a served entity.
type ServedEntityState struct {
	Deployment             string `json:"deployment"`
	DeploymentStateMessage string `json:"deployment_state_message,omitempty"`
}

// Replicas counts a served entity's replicas.
type Replicas struct {
	Desired int `json:"desired"`
	Ready   int `json:"ready"`
	// Starts (a Gantry extension) is each replica's cold start: the phase
	// it is in and when each phase began. Replica addresses stay in the
	// route table.
	Starts []ReplicaStart `json:"starts,omitempty"`
}

// ReplicaStart is one replica's cold start: Phase is schedule (asked
// for, not started), download (its model artifact downloading, on
// Nomad), process_start (started, not answering /ping yet), model_load
// (answering, loading its model), ready, and then
// first_response (first_token for a stream of tokens) once the replica
// has answered a request; the times (Unix ms, 0: not reached) are when
// each phase began and when it became ready, and the first answered
// request's arrival and first byte. A restarted replica has no
// requested_ms.
type ReplicaStart struct {
	ID          string `json:"id"`
	Phase       string `json:"phase"`
	RequestedMs int64  `json:"requested_ms,omitempty"`
	// DownloadingMs is when the model's artifact began to download, on
	// drivers that download it (Nomad); absent elsewhere.
	DownloadingMs int64 `json:"downloading_ms,omitempty"`
	StartedMs     int64 `json:"started_ms,omitempty"`
	AnsweredMs    int64 `json:"answered_ms,omitempty"`
	ReadyMs       int64 `json:"ready_ms,omitempty"`
	// The first answered request: when it reached the worker and when
	// its answer's first byte (first token) left. The driver learns them
	// from the worker's /ping, which it asks every 200 ms until then.
	FirstRequestMs  int64 `json:"first_request_ms,omitempty"`
	FirstResponseMs int64 `json:"first_response_ms,omitempty"`
}

// TrafficConfig splits an endpoint's traffic between its served entities.
type TrafficConfig struct {
	Routes []Route `json:"routes"`
}

// Route sends a percentage of traffic to one served entity.
type Route struct {
	ServedModelName   string `json:"served_model_name"`
	TrafficPercentage int    `json:"traffic_percentage"`
	// Shadow (a Gantry extension) mirrors TrafficPercentage of the
	// requests to the entity: its answers go to the inference table, never
	// to the client. Shadow routes do not count in the sum of 100.
	Shadow bool `json:"shadow,omitempty"`
}

// AutoCaptureConfig turns on inference tables.
type AutoCaptureConfig struct {
	CatalogName     string `json:"catalog_name,omitempty"`
	SchemaName      string `json:"schema_name,omitempty"`
	TableNamePrefix string `json:"table_name_prefix,omitempty"`
	Enabled         *bool  `json:"enabled,omitempty"`
	// LogRequestAsSent (a Gantry extension) logs each request of a served
	// entity that looks features up as the client sent it, keys only,
	// rather than augmented with the features it was given (the default,
	// what the model saw, as Databricks logs the augmented DataFrame).
	LogRequestAsSent bool `json:"log_request_as_sent,omitempty"`
	// State is read-only: the table that rows go to.
	State *AutoCaptureState `json:"state,omitempty"`
}

// AutoCaptureState names the inference table of an endpoint.
type AutoCaptureState struct {
	PayloadTable PayloadTable `json:"payload_table"`
}

// PayloadTable is an inference table: Name is "database.table" in ClickHouse.
type PayloadTable struct {
	Name string `json:"name"`
}

// QueryRequest runs read-only SQL over an endpoint's inference table
// (POST /api/2.0/gantry/tables/query); "{table}" in SQL stands for the
// table's qualified name (database.table), so "{table}_per_minute" names
// its per-minute view.
type QueryRequest struct {
	Endpoint string `json:"endpoint"`
	SQL      string `json:"sql"`
}

// QueryResult is a query's answer, every value formatted as text.
type QueryResult struct {
	Columns []string   `json:"columns"`
	Types   []string   `json:"types"`
	Rows    [][]string `json:"rows"`
}

// Tag is a key/value label on an endpoint.
type Tag struct {
	Key   string `json:"key"`
	Value string `json:"value,omitempty"`
}

// PatchTagsRequest is the body of PATCH /api/2.0/serving-endpoints/{name}/tags.
type PatchTagsRequest struct {
	AddTags    []Tag    `json:"add_tags,omitempty"`
	DeleteTags []string `json:"delete_tags,omitempty"`
}

// EndpointTags is the answer of PATCH .../tags: the endpoint's tags after
// the change (Databricks' EndpointTags).
type EndpointTags struct {
	Tags []Tag `json:"tags"`
}

// ListEndpointsResponse is the answer of GET /api/2.0/serving-endpoints.
type ListEndpointsResponse struct {
	Endpoints []Endpoint `json:"endpoints"`
}

// ModelVersion describes one uploaded model version.
type ModelVersion struct {
	Name      string   `json:"name"`
	Version   string   `json:"version"`
	Flavors   []string `json:"flavors"`
	Signature *Schema  `json:"signature,omitempty"`
	SizeBytes int64    `json:"size_bytes"`
	// Task is set for a model that an LLM runtime serves (a gguf
	// flavor): the unified task its endpoint answers (TaskChat, ...).
	Task string `json:"task,omitempty"`
	// TokensPerSecond is an LLM flavor's tokens_per_second: the rate one
	// replica sustains, as the model's author measured it; 0 when not
	// given.
	TokensPerSecond int `json:"tokens_per_second,omitempty"`
	// CreationTimestamp is in milliseconds since the epoch.
	CreationTimestamp int64 `json:"creation_timestamp"`
	// FeatureSpec names the feature spec (POST /api/2.0/gantry/feature-specs)
	// attached to the version with PUT .../versions/{v}/feature-spec: its
	// endpoints look those features up, as for a feature_spec.yaml in the
	// model directory.
	FeatureSpec string `json:"feature_spec,omitempty"`
}

// AttachFeatureSpecRequest is the body of
// PUT /api/2.0/gantry/models/{name}/versions/{version}/feature-spec.
type AttachFeatureSpecRequest struct {
	FeatureSpec string `json:"feature_spec"`
}

// Schema is an MLflow model signature: input and output column specs.
type Schema struct {
	Inputs  []ColSpec `json:"inputs,omitempty"`
	Outputs []ColSpec `json:"outputs,omitempty"`
}

// ColSpec is one column of an MLflow signature.
type ColSpec struct {
	Name     string `json:"name,omitempty"`
	Type     string `json:"type"`
	Required *bool  `json:"required,omitempty"`
}

// ModelOptimizationInfo is the answer of GET
// /api/2.0/serving-endpoints/get-model-optimization-info/{model}/{version}.
type ModelOptimizationInfo struct {
	// Optimizable says whether the model can be served with provisioned
	// throughput: it has an LLM flavor (openai_server, gguf).
	Optimizable bool `json:"optimizable"`
	// ModelType is that flavor; absent when not optimizable.
	ModelType string `json:"model_type,omitempty"`
	// ThroughputChunkSize is one replica's rate in tokens per second: the
	// unit of min/max_provisioned_throughput.
	ThroughputChunkSize int `json:"throughput_chunk_size,omitempty"`
}

// UploadModelResponse is the answer to a model upload.
type UploadModelResponse struct {
	Version string `json:"version"`
}

// ListModelsResponse is the answer of GET /api/2.0/gantry/models.
type ListModelsResponse struct {
	Models []ModelVersion `json:"models"`
}
