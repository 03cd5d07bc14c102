package api

import "net/http"

// Tables returns a handle on the inference tables API (a Gantry extension).
func (c *Client) Tables() *Tables { return &Tables{client: c} }

// Tables queries endpoints' inference tables.
type Tables struct{ client *Client }

// Query runs read-only SQL over endpoint's inference table; "{table}" in sql
// stands for the table's qualified name.
func (t *Tables) Query(endpoint, sql string, w *WriteOptions) (*QueryResult, error) {
	var out QueryResult
	if _, err := t.client.write(http.MethodPost, "/api/2.0/gantry/tables/query", &QueryRequest{Endpoint: endpoint, SQL: sql}, w, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// PutAIGateway sets an endpoint's AI gateway config and returns it.
func (e *Endpoints) PutAIGateway(name string, gw *AIGateway, w *WriteOptions) (*AIGateway, error) {
	var out AIGateway
	if _, err := e.client.write(http.MethodPut, endpointPath(name)+"/ai-gateway", gw, w, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
