package api

// RouteTable is what activators follow: every endpoint, how its traffic
// splits, and the ready replicas of each served entity. The scheduler
// publishes a new table with a higher Index on every change; activators read
// it with a blocking query (GET /api/2.0/gantry/routes?index=N&wait=30s).
type RouteTable struct {
	Index     uint64          `json:"index"`
	Endpoints []EndpointRoute `json:"endpoints"`
}

// EndpointRoute is one endpoint in the route table.
type EndpointRoute struct {
	Name          string        `json:"name"`
	ConfigVersion int           `json:"config_version"`
	Routes        []Route       `json:"routes"`
	Entities      []EntityRoute `json:"entities"`
	// InferenceTable is where the activator logs this endpoint's
	// invocations ("database.table"); empty when capture is off.
	InferenceTable string `json:"inference_table,omitempty"`
	// LogRequestAsSent (the capture config's log_request_as_sent) logs a
	// request whose features were looked up as the client sent it rather
	// than augmented.
	LogRequestAsSent bool `json:"log_request_as_sent,omitempty"`
	// Fallback (ai_gateway.fallback_config.enabled) sends a request that
	// an external entity answered with 429 or 5xx to the next entity of
	// Entities, in order.
	Fallback bool `json:"fallback,omitempty"`
	// RateLimits (ai_gateway.rate_limits) tell the activator that every
	// call must first reserve budget from the scheduler's coordinator
	// (POST /api/2.0/gantry/rate-limits/reserve), and whether tokens
	// count; the coordinator decides with its own copy.
	RateLimits []RateLimit `json:"rate_limits,omitempty"`
	// Guardrails (ai_gateway.guardrails) are applied by the activator to
	// the requests and answers of the endpoint's external entities.
	Guardrails *Guardrails `json:"guardrails,omitempty"`
	// Usage (ai_gateway.usage_tracking_config.enabled) asks the activator
	// for a usage row per invocation.
	Usage bool `json:"usage,omitempty"`
}

// RateLimitReserve is what an activator asks the coordinator,
// POST /api/2.0/gantry/rate-limits/reserve: one call of Requester (with its
// Groups) on Endpoint, reserving Tokens. Admins only.
type RateLimitReserve struct {
	Endpoint  string   `json:"endpoint"`
	Requester string   `json:"requester,omitempty"`
	Groups    []string `json:"groups,omitempty"`
	Tokens    int64    `json:"tokens,omitempty"`
}

// RateLimitGrant is the coordinator's answer to a reservation that fits
// (a refusal is a 429 REQUEST_LIMIT_EXCEEDED with Retry-After): what to
// hand back to POST /api/2.0/gantry/rate-limits/refund with Used, the
// tokens the call used, when it ends. Buckets is empty when nothing was
// reserved that a refund could give back.
type RateLimitGrant struct {
	Endpoint string   `json:"endpoint"`
	Window   int64    `json:"window"`
	Tokens   int64    `json:"tokens,omitempty"`
	Buckets  []string `json:"buckets,omitempty"`
	Used     int64    `json:"used,omitempty"`
}

// RateLimitRefunds is a batch of refunds, the body of
// POST /api/2.0/gantry/rate-limits/refund from an activator that sends
// those that wait while one is in flight together; the path also takes a
// single RateLimitGrant.
type RateLimitRefunds struct {
	Grants []RateLimitGrant `json:"grants"`
}

// EntityRoute is one served entity in the route table.
type EntityRoute struct {
	// Name is the served entity's name (what served-model-name answers).
	Name string `json:"name"`
	// Deployment identifies the replicas' deployment; it changes with the config.
	Deployment string `json:"deployment"`
	// State is one of the Deployment* constants; Message says why it failed.
	State   string `json:"state"`
	Message string `json:"message,omitempty"`
	// Failures counts the failed replica starts of this deployment. It only
	// grows: an activator fails the requests it holds when it sees the count
	// pass the value it had when they arrived.
	Failures uint64 `json:"failures,omitempty"`
	// Secret is the deployment's worker secret: activators send it to
	// the replicas as X-Gantry-Worker-Secret, and a worker started with
	// one answers nothing without it. Empty when authentication is off.
	// It is why the route table is for admins only; never log it.
	Secret string `json:"secret,omitempty"`
	// Concurrency is how many requests one replica takes at once.
	Concurrency int       `json:"concurrency"`
	Replicas    []Replica `json:"replicas"`
	// Signature is the model's MLflow signature, when it has one: the
	// Open Inference Protocol's model metadata lists its inputs and
	// outputs.
	Signature *Schema `json:"signature,omitempty"`
	// Task is set for a model served by an LLM runtime (TaskChat, ...):
	// its invocations take the unified LLM bodies, the OpenAI SDK's paths
	// reach it, and its answers may stream (text/event-stream), which the
	// activator passes on event by event.
	Task string `json:"task,omitempty"`
	// External is set for an external model: the activator calls the
	// provider itself, and Replicas is empty.
	External *ExternalRoute `json:"external,omitempty"`
	// Features is set when the entity looks features up (its model has a
	// feature spec) or is a feature spec itself (Features.Serving: the
	// activator answers and Replicas is empty).
	Features *FeatureRoute `json:"features,omitempty"`
}

// ExternalRoute is what an activator needs to call a provider for an
// external entity, with defaults resolved by the scheduler.
type ExternalRoute struct {
	Provider string `json:"provider"`
	Task     string `json:"task"`
	// Model is the provider's model name.
	Model string `json:"model"`
	// BaseURL is the provider's API base ("https://api.openai.com/v1").
	BaseURL string `json:"base_url"`
	// Azure OpenAI: APIType "azure", with its version and deployment.
	APIType      string `json:"api_type,omitempty"`
	APIVersion   string `json:"api_version,omitempty"`
	Deployment   string `json:"deployment,omitempty"`
	Organization string `json:"organization,omitempty"`
	// KeyHeader names the header that carries the credential for a custom
	// provider with api_key_auth; empty means the provider's own scheme.
	KeyHeader string `json:"key_header,omitempty"`
	// Key is the credential. It is never encoded ("-"): an activator in
	// the scheduler's process reads it from the table in memory, and one
	// in another process fetches it from the admin-only
	// GET /api/2.0/gantry/external-keys, so that the route table as JSON
	// (GET /api/2.0/gantry/routes, logs, dumps) never holds a key.
	Key string `json:"-"`
	// KeyError says why the key's secret reference cannot be read (the
	// creator lost READ, the secret is gone); the activator answers each
	// call with it (503) rather than calling the provider without a key.
	KeyError string `json:"key_error,omitempty"`
}

// ExternalKeys is the answer of GET /api/2.0/gantry/external-keys: the
// credential of every external entity, by its deployment in the route
// table. Admins only.
type ExternalKeys struct {
	Keys []ExternalKey `json:"keys"`
}

// ExternalKey is one external entity's credential.
type ExternalKey struct {
	Deployment string `json:"deployment"`
	Key        string `json:"key"`
}

// Replica is one ready worker that answers /invocations.
type Replica struct {
	ID   string `json:"id"`
	Addr string `json:"addr"`
}
