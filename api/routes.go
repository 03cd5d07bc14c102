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
	// Concurrency is how many requests one replica takes at once.
	Concurrency int       `json:"concurrency"`
	Replicas    []Replica `json:"replicas"`
}

// Replica is one ready worker that answers /invocations.
type Replica struct {
	ID   string `json:"id"`
	Addr string `json:"addr"`
}
