package api

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Config says how to reach a Gantry control plane.
type Config struct {
	// Address is the base URL, e.g. http://127.0.0.1:8080.
	Address string
	// Token is sent as a bearer token when set.
	Token string
	// CACert is a PEM file of the certificate authorities that an https
	// Address's certificate must chain to, instead of the system's.
	// NewClient gives HTTPClient a transport that trusts them, unless
	// HTTPClient has a transport of its own.
	CACert string
	// HTTPClient defaults to a client without an overall timeout (blocking
	// queries and uploads may take long; use contexts to bound calls).
	HTTPClient *http.Client
}

// DefaultConfig is the only place that reads the environment: GANTRY_ADDR
// (default http://127.0.0.1:8080), GANTRY_CA_CERT and GANTRY_TOKEN. Without GANTRY_TOKEN
// the token is the one gantry dev wrote on its first start to
// admin-token in its data dir (GANTRY_DATA_DIR, default .gantry), so that
// `make run` and then a client command in the same directory work
// without copying a token around; no such file leaves Token empty.
func DefaultConfig() *Config {
	c := &Config{Address: "http://127.0.0.1:8080", HTTPClient: &http.Client{}}
	if v := os.Getenv("GANTRY_ADDR"); v != "" {
		c.Address = v
	}
	c.CACert = os.Getenv("GANTRY_CA_CERT")
	c.Token = os.Getenv("GANTRY_TOKEN")
	if c.Token == "" {
		dir := os.Getenv("GANTRY_DATA_DIR")
		if dir == "" {
			dir = DefaultDataDir
		}
		if b, err := os.ReadFile(filepath.Join(dir, AdminTokenFile)); err == nil {
			c.Token = strings.TrimSpace(string(b))
		}
	}
	return c
}

// DefaultDataDir is gantry dev's data dir unless --data-dir says
// otherwise, AdminTokenFile the file in it that holds the token of the
// admin service principal it makes on first start, and
// ComponentsTokenFile the token of the components' service principal
// (gantry activator, autoscaler and logger run apart send it).
const (
	DefaultDataDir      = ".gantry"
	AdminTokenFile      = "admin-token"
	ComponentsTokenFile = "components-token"
)

// Client calls the Gantry API.
type Client struct {
	config Config
}

// NewClient fills blank fields of config from DefaultConfig and checks the
// address.
func NewClient(config *Config) (*Client, error) {
	def := DefaultConfig()
	c := *def
	if config != nil {
		c = *config
		if c.Address == "" {
			c.Address = def.Address
		}
		if c.HTTPClient == nil {
			c.HTTPClient = def.HTTPClient
		}
	}
	if !strings.Contains(c.Address, "://") {
		c.Address = "http://" + c.Address
	}
	u, err := url.Parse(c.Address)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("gantry address %q: want a URL such as http://127.0.0.1:8080", c.Address)
	}
	c.Address = strings.TrimRight(c.Address, "/")
	if c.CACert != "" && (c.HTTPClient == nil || c.HTTPClient.Transport == nil) {
		hc, err := HTTPClientWithCA(c.CACert)
		if err != nil {
			return nil, err
		}
		if c.HTTPClient != nil {
			hc.Timeout = c.HTTPClient.Timeout
		}
		c.HTTPClient = hc
	}
	return &Client{config: c}, nil
}

// HTTPClientWithCA is an HTTP client (no overall timeout) whose https
// connections trust the certificate authorities in the PEM file caFile
// and nothing else, with TLS 1.2 or later.
func HTTPClientWithCA(caFile string) (*http.Client, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("CA certificate %s: no PEM certificate in it", caFile)
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return &http.Client{Transport: t}, nil
}

// Address is the base URL the client talks to.
func (c *Client) Address() string { return c.config.Address }

// QueryOptions are the options of a read. WaitIndex and WaitTime make a
// blocking query: the answer comes when the index passes WaitIndex or
// WaitTime has passed.
type QueryOptions struct {
	WaitIndex uint64
	WaitTime  time.Duration
	ctx       context.Context
}

// WithContext returns a copy of o that carries ctx.
func (o *QueryOptions) WithContext(ctx context.Context) *QueryOptions {
	o2 := new(QueryOptions)
	if o != nil {
		*o2 = *o
	}
	o2.ctx = ctx
	return o2
}

func (o *QueryOptions) context() context.Context {
	if o == nil || o.ctx == nil {
		return context.Background()
	}
	return o.ctx
}

// WriteOptions are the options of a write.
type WriteOptions struct {
	ctx context.Context
}

// WithContext returns a copy of o that carries ctx.
func (o *WriteOptions) WithContext(ctx context.Context) *WriteOptions {
	o2 := new(WriteOptions)
	if o != nil {
		*o2 = *o
	}
	o2.ctx = ctx
	return o2
}

func (o *WriteOptions) context() context.Context {
	if o == nil || o.ctx == nil {
		return context.Background()
	}
	return o.ctx
}

// QueryMeta is what a read learned besides its result.
type QueryMeta struct {
	// LastIndex is the index to pass as the next WaitIndex.
	LastIndex   uint64
	RequestTime time.Duration
}

// WriteMeta is what a write learned besides its result.
type WriteMeta struct {
	RequestTime time.Duration
}

// do sends a request and decodes a 2xx JSON answer into out (if not nil).
// Any other answer becomes an *UnexpectedResponseError.
func (c *Client) do(ctx context.Context, method, path string, body io.Reader, contentType string, out any) (http.Header, time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.config.Address+path, body)
	if err != nil {
		return nil, 0, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if c.config.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.config.Token)
	}
	start := time.Now()
	resp, err := c.config.HTTPClient.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	took := time.Since(start)
	if resp.StatusCode/100 != 2 {
		return resp.Header, took, newUnexpected(resp)
	}
	if out == nil {
		io.Copy(io.Discard, resp.Body)
		return resp.Header, took, nil
	}
	if w, ok := out.(io.Writer); ok {
		_, err = io.Copy(w, resp.Body)
	} else {
		err = json.NewDecoder(resp.Body).Decode(out)
	}
	if err != nil {
		return resp.Header, took, fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	return resp.Header, took, nil
}

func newUnexpected(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	e := &UnexpectedResponseError{status: resp.StatusCode, body: b}
	var ae Error
	if json.Unmarshal(b, &ae) == nil && ae.Code != "" {
		e.err = &ae
	}
	return e
}

func (c *Client) query(path string, q *QueryOptions, out any) (*QueryMeta, error) {
	if q != nil && (q.WaitIndex > 0 || q.WaitTime > 0) {
		v := url.Values{}
		v.Set("index", strconv.FormatUint(q.WaitIndex, 10))
		if q.WaitTime > 0 {
			v.Set("wait", q.WaitTime.String())
		}
		path += "?" + v.Encode()
	}
	h, took, err := c.do(q.context(), http.MethodGet, path, nil, "", out)
	if err != nil {
		return nil, err
	}
	meta := &QueryMeta{RequestTime: took}
	meta.LastIndex, _ = strconv.ParseUint(h.Get("X-Gantry-Index"), 10, 64)
	return meta, nil
}

func (c *Client) write(method, path string, in any, w *WriteOptions, out any) (*WriteMeta, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(b)
	}
	_, took, err := c.do(w.context(), method, path, body, "application/json", out)
	if err != nil {
		return nil, err
	}
	return &WriteMeta{RequestTime: took}, nil
}

// Endpoints returns a handle on the serving-endpoints API.
func (c *Client) Endpoints() *Endpoints { return &Endpoints{client: c} }

// Endpoints is the serving-endpoints API.
type Endpoints struct{ client *Client }

const endpointsPath = "/api/2.0/serving-endpoints"

func endpointPath(name string) string { return endpointsPath + "/" + url.PathEscape(name) }

// Create creates an endpoint.
func (e *Endpoints) Create(req *CreateEndpointRequest, w *WriteOptions) (*Endpoint, *WriteMeta, error) {
	var out Endpoint
	meta, err := e.client.write(http.MethodPost, endpointsPath, req, w, &out)
	if err != nil {
		return nil, nil, err
	}
	return &out, meta, nil
}

// Get reads one endpoint.
func (e *Endpoints) Get(name string, q *QueryOptions) (*Endpoint, *QueryMeta, error) {
	var out Endpoint
	meta, err := e.client.query(endpointPath(name), q, &out)
	if err != nil {
		return nil, nil, err
	}
	return &out, meta, nil
}

// List reads every endpoint.
func (e *Endpoints) List(q *QueryOptions) ([]Endpoint, *QueryMeta, error) {
	var out ListEndpointsResponse
	meta, err := e.client.query(endpointsPath, q, &out)
	if err != nil {
		return nil, nil, err
	}
	return out.Endpoints, meta, nil
}

// Delete deletes an endpoint and stops its workers.
func (e *Endpoints) Delete(name string, w *WriteOptions) (*WriteMeta, error) {
	return e.client.write(http.MethodDelete, endpointPath(name), nil, w, nil)
}

// UpdateConfig replaces an endpoint's config.
func (e *Endpoints) UpdateConfig(name string, config *EndpointConfig, w *WriteOptions) (*Endpoint, *WriteMeta, error) {
	var out Endpoint
	meta, err := e.client.write(http.MethodPut, endpointPath(name)+"/config", config, w, &out)
	if err != nil {
		return nil, nil, err
	}
	return &out, meta, nil
}

// CreatePt creates an endpoint through Databricks' provisioned-throughput
// route: every served entity must give provisioned_model_units.
func (e *Endpoints) CreatePt(req *CreateEndpointRequest, w *WriteOptions) (*Endpoint, *WriteMeta, error) {
	var out Endpoint
	meta, err := e.client.write(http.MethodPost, endpointsPath+"/pt", req, w, &out)
	if err != nil {
		return nil, nil, err
	}
	return &out, meta, nil
}

// UpdatePtConfig replaces an endpoint's config through Databricks'
// provisioned-throughput route: every served entity must give
// provisioned_model_units.
func (e *Endpoints) UpdatePtConfig(name string, config *EndpointConfig, w *WriteOptions) (*Endpoint, *WriteMeta, error) {
	var out Endpoint
	meta, err := e.client.write(http.MethodPut, endpointsPath+"/pt/"+url.PathEscape(name)+"/config", &UpdatePtConfigRequest{Config: config}, w, &out)
	if err != nil {
		return nil, nil, err
	}
	return &out, meta, nil
}

// PatchTags adds and deletes an endpoint's tags (deletes first) and
// returns its tags after the change.
func (e *Endpoints) PatchTags(name string, req *PatchTagsRequest, w *WriteOptions) ([]Tag, *WriteMeta, error) {
	var out EndpointTags
	meta, err := e.client.write(http.MethodPatch, endpointPath(name)+"/tags", req, w, &out)
	if err != nil {
		return nil, nil, err
	}
	return out.Tags, meta, nil
}

// Logs reads the recent output of a served entity's workers.
func (e *Endpoints) Logs(name, served string, q *QueryOptions) (string, *QueryMeta, error) {
	var out struct {
		Logs string `json:"logs"`
	}
	meta, err := e.client.query(endpointPath(name)+"/served-models/"+url.PathEscape(served)+"/logs", q, &out)
	if err != nil {
		return "", nil, err
	}
	return out.Logs, meta, nil
}

// Invoke sends a scoring request to an endpoint (through its traffic split)
// and returns the raw answer body and the served entity that answered.
func (e *Endpoints) Invoke(name string, body []byte, contentType string, w *WriteOptions) ([]byte, string, error) {
	var buf bytes.Buffer
	if contentType == "" {
		contentType = "application/json"
	}
	h, _, err := e.client.do(w.context(), http.MethodPost, "/serving-endpoints/"+url.PathEscape(name)+"/invocations",
		bytes.NewReader(body), contentType, &buf)
	if err != nil {
		return nil, "", err
	}
	return buf.Bytes(), h.Get("served-model-name"), nil
}

// Models returns a handle on the model registry API.
func (c *Client) Models() *Models { return &Models{client: c} }

// Models is the model registry API (a Gantry extension).
type Models struct{ client *Client }

func modelPath(name string) string {
	return "/api/2.0/gantry/models/" + url.PathEscape(name) + "/versions"
}

// Upload sends a tar.gz of an MLflow model directory as a new version.
func (m *Models) Upload(name string, tarGz io.Reader, w *WriteOptions) (*UploadModelResponse, *WriteMeta, error) {
	var out UploadModelResponse
	_, took, err := m.client.do(w.context(), http.MethodPost, modelPath(name), tarGz, "application/gzip", &out)
	if err != nil {
		return nil, nil, err
	}
	return &out, &WriteMeta{RequestTime: took}, nil
}

// Get reads a model version's metadata.
func (m *Models) Get(name, version string, q *QueryOptions) (*ModelVersion, *QueryMeta, error) {
	var out ModelVersion
	meta, err := m.client.query(modelPath(name)+"/"+url.PathEscape(version), q, &out)
	if err != nil {
		return nil, nil, err
	}
	return &out, meta, nil
}

// Delete removes a model version that no endpoint serves; its number is
// never given again.
func (m *Models) Delete(name, version string, w *WriteOptions) (*WriteMeta, error) {
	return m.client.write(http.MethodDelete, modelPath(name)+"/"+url.PathEscape(version), nil, w, nil)
}

// AttachFeatureSpec attaches the feature spec named spec to a version: its
// endpoints look the spec's features up.
func (m *Models) AttachFeatureSpec(name, version, spec string, w *WriteOptions) (*ModelVersion, *WriteMeta, error) {
	var out ModelVersion
	meta, err := m.client.write(http.MethodPut, modelPath(name)+"/"+url.PathEscape(version)+"/feature-spec",
		AttachFeatureSpecRequest{FeatureSpec: spec}, w, &out)
	if err != nil {
		return nil, nil, err
	}
	return &out, meta, nil
}

// DetachFeatureSpec detaches a version's feature spec.
func (m *Models) DetachFeatureSpec(name, version string, w *WriteOptions) (*ModelVersion, *WriteMeta, error) {
	var out ModelVersion
	meta, err := m.client.write(http.MethodDelete, modelPath(name)+"/"+url.PathEscape(version)+"/feature-spec", nil, w, &out)
	if err != nil {
		return nil, nil, err
	}
	return &out, meta, nil
}

// List reads every version of every model.
func (m *Models) List(q *QueryOptions) ([]ModelVersion, *QueryMeta, error) {
	var out ListModelsResponse
	meta, err := m.client.query("/api/2.0/gantry/models", q, &out)
	if err != nil {
		return nil, nil, err
	}
	return out.Models, meta, nil
}

// Routes returns a handle on the route table.
func (c *Client) Routes() *Routes { return &Routes{client: c} }

// Routes is the route table that activators follow.
type Routes struct{ client *Client }

// Get reads the route table; set q.WaitIndex to the last LastIndex to block
// until it changes.
func (r *Routes) Get(q *QueryOptions) (*RouteTable, *QueryMeta, error) {
	var out RouteTable
	meta, err := r.client.query("/api/2.0/gantry/routes", q, &out)
	if err != nil {
		return nil, nil, err
	}
	return &out, meta, nil
}
