package scheduler

import (
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/scheduler/store"
	"github.com/gantry/gantry/secrets"
)

// External models: a served entity with external_model has no model, no
// workload and no replicas; the activator calls its provider. The
// scheduler checks the config with Databricks' rules, keeps the key in
// its store, answers every view without it, and publishes the provider's
// resolved settings in the route table (the key travels outside the JSON
// table: see api.ExternalRoute.Key). A key given as a secret reference is
// resolved as the endpoint's creator when the table is published
// (keyRoutes) and when a separate activator asks (externalKeys).

// Default API bases of the providers, as their SDKs have them.
const (
	defaultOpenAIBase    = "https://api.openai.com/v1"
	defaultAnthropicBase = "https://api.anthropic.com"
	defaultCohereBase    = "https://api.cohere.com"
)

// supportedProviders are the providers Gantry calls; Databricks' others
// (ai21labs, amazon-bedrock, google-cloud-vertex-ai, palm,
// databricks-model-serving) are refused by name.
var supportedProviders = []string{api.ProviderOpenAI, api.ProviderAnthropic, api.ProviderCohere, api.ProviderCustom}

var databricksOnlyProviders = map[string]bool{
	"ai21labs": true, "amazon-bedrock": true, "google-cloud-vertex-ai": true, "palm": true, "databricks-model-serving": true,
}

var externalTasks = map[string]bool{api.TaskChat: true, api.TaskCompletions: true, api.TaskEmbeddings: true}

// isExternal reports whether a served entity serves an external model.
func isExternal(e *api.ServedEntity) bool { return e.ExternalModel != nil }

// normalizeExternal checks an external entity and fills in its name. The
// messages name fields relative to the served entity.
func normalizeExternal(e *api.ServedEntity) *api.Error {
	m := e.ExternalModel
	// Databricks: external_model excludes the fields of a model entity.
	for _, f := range []struct {
		name string
		set  bool
	}{
		{"entity_name", e.EntityName != ""},
		{"entity_version", e.EntityVersion != ""},
		{"workload_size", e.WorkloadSize != ""},
		{"workload_type", e.WorkloadType != ""},
		{"scale_to_zero_enabled", e.ScaleToZeroEnabled != nil},
		{"min_provisioned_concurrency", e.MinProvisionedConcurrency != nil},
		{"max_provisioned_concurrency", e.MaxProvisionedConcurrency != nil},
		{"min_provisioned_throughput", e.MinProvisionedThroughput != nil},
		{"max_provisioned_throughput", e.MaxProvisionedThroughput != nil},
		{"provisioned_model_units", e.ProvisionedModelUnits != nil},
		{"burst_scaling_enabled", e.BurstScalingEnabled != nil},
		{"replica_concurrency", e.ReplicaConcurrency != nil},
		{"environment_vars", len(e.EnvironmentVars) > 0},
	} {
		if f.set {
			return invalid("%s: cannot be set with external_model; an external model runs at its provider, with no replicas", f.name)
		}
	}
	if m.Name == "" {
		return invalid("external_model.name: required (the provider's model name, such as gpt-4o-mini)")
	}
	if m.Provider == "" {
		return invalid("external_model.provider: required; one of %s", strings.Join(supportedProviders, ", "))
	}
	if databricksOnlyProviders[m.Provider] {
		return invalid("external_model.provider: %q is not supported by this Gantry yet; use one of %s", m.Provider, strings.Join(supportedProviders, ", "))
	}
	if m.Task == "" {
		return invalid("external_model.task: required; one of llm/v1/chat, llm/v1/completions, llm/v1/embeddings")
	}
	if !externalTasks[m.Task] {
		return invalid("external_model.task: %q is not one of llm/v1/chat, llm/v1/completions, llm/v1/embeddings", m.Task)
	}
	// Exactly the block that matches the provider.
	blocks := map[string]bool{
		"openai_config": m.OpenAIConfig != nil, "anthropic_config": m.AnthropicConfig != nil,
		"cohere_config": m.CohereConfig != nil, "custom_provider_config": m.CustomProviderConfig != nil,
	}
	want := ""
	switch m.Provider {
	case api.ProviderOpenAI:
		want = "openai_config"
	case api.ProviderAnthropic:
		want = "anthropic_config"
	case api.ProviderCohere:
		want = "cohere_config"
	case api.ProviderCustom:
		want = "custom_provider_config"
	default:
		return invalid("external_model.provider: %q is not one of %s", m.Provider, strings.Join(supportedProviders, ", "))
	}
	for _, b := range []string{"openai_config", "anthropic_config", "cohere_config", "custom_provider_config"} {
		if b != want && blocks[b] {
			return invalid("external_model.%s: does not go with provider %q; give %s only", b, m.Provider, want)
		}
	}
	if !blocks[want] {
		return invalid("external_model.%s: required for provider %q", want, m.Provider)
	}
	var err *api.Error
	switch m.Provider {
	case api.ProviderOpenAI:
		err = checkOpenAI(m.OpenAIConfig)
	case api.ProviderAnthropic:
		c := m.AnthropicConfig
		if m.Task == api.TaskEmbeddings {
			return invalid("external_model.task: anthropic has no embeddings; use llm/v1/chat or llm/v1/completions")
		}
		if err = checkKey("external_model.anthropic_config.anthropic_api_key", c.AnthropicAPIKey, c.AnthropicAPIKeyPlaintext); err == nil {
			err = checkBase("external_model.anthropic_config.anthropic_api_base", c.AnthropicAPIBase)
		}
	case api.ProviderCohere:
		c := m.CohereConfig
		if err = checkKey("external_model.cohere_config.cohere_api_key", c.CohereAPIKey, c.CohereAPIKeyPlaintext); err == nil {
			err = checkBase("external_model.cohere_config.cohere_api_base", c.CohereAPIBase)
		}
	case api.ProviderCustom:
		err = checkCustom(m.CustomProviderConfig)
	}
	if err != nil {
		return err
	}
	if e.Name == "" {
		// Databricks' default: the model's name with '.' and ':' as '-'.
		e.Name = strings.NewReplacer(".", "-", ":", "-").Replace(m.Name)
	}
	return nil
}

func checkOpenAI(c *api.OpenAIConfig) *api.Error {
	const p = "external_model.openai_config."
	switch strings.ToLower(c.OpenAIAPIType) {
	case "", "openai":
		if c.OpenAIAPIVersion != "" || c.OpenAIDeploymentName != "" {
			return invalid(p + "openai_api_version and openai_deployment_name are Azure's; set openai_api_type to azure or leave them out")
		}
	case "azure":
		switch {
		case c.OpenAIAPIBase == "":
			return invalid(p + "openai_api_base: required with openai_api_type azure (https://<resource>.openai.azure.com)")
		case c.OpenAIAPIVersion == "":
			return invalid(p + "openai_api_version: required with openai_api_type azure (such as 2024-10-21)")
		case c.OpenAIDeploymentName == "":
			return invalid(p + "openai_deployment_name: required with openai_api_type azure")
		case c.OpenAIOrganization != "":
			return invalid(p + "openai_organization: not allowed with openai_api_type azure")
		}
	case "azuread":
		return invalid(p + "openai_api_type: azuread (Microsoft Entra ID) is not supported by this Gantry yet; use azure with an API key")
	default:
		return invalid(p+"openai_api_type: %q is not one of openai, azure", c.OpenAIAPIType)
	}
	if err := checkKey(p+"openai_api_key", c.OpenAIAPIKey, c.OpenAIAPIKeyPlaintext); err != nil {
		return err
	}
	return checkBase(p+"openai_api_base", c.OpenAIAPIBase)
}

func checkCustom(c *api.CustomProviderConfig) *api.Error {
	const p = "external_model.custom_provider_config."
	if c.CustomProviderURL == "" {
		return invalid(p + "custom_provider_url: required (the server's OpenAI-compatible base, such as http://vllm:8000/v1)")
	}
	if err := checkBase(p+"custom_provider_url", c.CustomProviderURL); err != nil {
		return err
	}
	switch {
	case c.APIKeyAuth != nil && c.BearerTokenAuth != nil:
		return invalid(p + "api_key_auth, bearer_token_auth: You can only specify one authentication method")
	case c.APIKeyAuth != nil:
		if c.APIKeyAuth.Key == "" {
			return invalid(p + "api_key_auth.key: required (the header that carries the key)")
		}
		if !validHeaderName(c.APIKeyAuth.Key) {
			return invalid(p+"api_key_auth.key: %q is not a valid header name", c.APIKeyAuth.Key)
		}
		return checkKey(p+"api_key_auth.value", c.APIKeyAuth.Value, c.APIKeyAuth.ValuePlaintext)
	case c.BearerTokenAuth != nil:
		return checkKey(p+"bearer_token_auth.token", c.BearerTokenAuth.Token, c.BearerTokenAuth.TokenPlaintext)
	}
	return nil // a server without authentication (a local vLLM)
}

// checkKey checks a credential and its _plaintext twin: exactly one; a
// reference must be a whole {{secrets/scope/key}} (whether the creator
// may read it is checkSecretRefs's). field names the reference field; the
// message never quotes a value, which may be a key given in the wrong field.
func checkKey(field, ref, plain string) *api.Error {
	switch {
	case ref != "" && plain != "":
		return invalid("%s, %s_plaintext: give exactly one of the two", field, field)
	case ref == "" && plain == "":
		return invalid("%s: required (or %s_plaintext)", field, field)
	case ref != "":
		if _, ok, _ := secrets.ParseRef(ref); !ok {
			return invalid("%s: takes a secret reference {{secrets/scope/key}}; give a key itself in %s_plaintext", field, field)
		}
	case strings.ContainsAny(plain, "\r\n\x00"):
		return invalid("%s_plaintext: holds a line break or NUL, which no HTTP header can carry", field)
	}
	return nil
}

// checkBase checks an optional API base: an absolute http(s) URL without
// query or fragment.
func checkBase(field, base string) *api.Error {
	if base == "" {
		return nil
	}
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return invalid("%s: %q must be an http:// or https:// URL with a host and no query, fragment or user info", field, base)
	}
	return nil
}

func validHeaderName(s string) bool {
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return s != ""
}

// checkExternalMix applies the rules that span a config's entities:
// external entities are not mixed with model entities (Databricks serves
// an endpoint of one kind), and all of them share one task.
func checkExternalMix(c *api.EndpointConfig) *api.Error {
	task, first := "", -1
	models := 0
	for i := range c.ServedEntities {
		e := &c.ServedEntities[i]
		if !isExternal(e) {
			models++
			continue
		}
		if first < 0 {
			task, first = e.ExternalModel.Task, i
			continue
		}
		if e.ExternalModel.Task != task {
			return invalid("config.served_entities[%d].external_model.task: %q differs from served_entities[%d]'s %q; The task type of all external models within an endpoint must be the same.",
				i, e.ExternalModel.Task, first, task)
		}
	}
	if first >= 0 && models > 0 {
		return invalid("config.served_entities: an endpoint serves external models or model versions, not both; put them in separate endpoints")
	}
	return nil
}

// checkExternalSwitch refuses a config update that would turn an endpoint
// of external models into one of model versions, or back.
func checkExternalSwitch(old, next *api.EndpointConfig) *api.Error {
	was, is := hasExternal(old), hasExternal(next)
	switch {
	case was && !is:
		return invalid("config.served_entities: an endpoint created with external_model cannot be updated to serve entities without external_model; create a new endpoint")
	case !was && is:
		return invalid("config.served_entities: an endpoint created without external_model cannot be updated to serve an external_model; create a new endpoint")
	}
	return nil
}

func hasExternal(c *api.EndpointConfig) bool {
	for i := range c.ServedEntities {
		if isExternal(&c.ServedEntities[i]) {
			return true
		}
	}
	return false
}

// allExternal reports whether no entity of c runs replicas (external
// models, feature specs): such a config has nothing to roll out and
// applies at once.
func allExternal(c *api.EndpointConfig) bool {
	for i := range c.ServedEntities {
		if deploys(&c.ServedEntities[i]) {
			return false
		}
	}
	return len(c.ServedEntities) > 0
}

// redactExternal returns m without its plaintext credentials, for every
// answer the API gives; references stay, since they name, not hold, a key.
func redactExternal(m *api.ExternalModel) *api.ExternalModel {
	if m == nil {
		return nil
	}
	v := *m
	if c := m.OpenAIConfig; c != nil {
		cc := *c
		cc.OpenAIAPIKeyPlaintext = ""
		v.OpenAIConfig = &cc
	}
	if c := m.AnthropicConfig; c != nil {
		cc := *c
		cc.AnthropicAPIKeyPlaintext = ""
		v.AnthropicConfig = &cc
	}
	if c := m.CohereConfig; c != nil {
		cc := *c
		cc.CohereAPIKeyPlaintext = ""
		v.CohereConfig = &cc
	}
	if c := m.CustomProviderConfig; c != nil {
		cc := *c
		if a := c.APIKeyAuth; a != nil {
			aa := *a
			aa.ValuePlaintext = ""
			cc.APIKeyAuth = &aa
		}
		if b := c.BearerTokenAuth; b != nil {
			bb := *b
			bb.TokenPlaintext = ""
			cc.BearerTokenAuth = &bb
		}
		v.CustomProviderConfig = &cc
	}
	return &v
}

// externalRoute resolves m into what the activator needs, the key
// included (it is never encoded; see api.ExternalRoute.Key).
func externalRoute(m *api.ExternalModel) *api.ExternalRoute {
	r := &api.ExternalRoute{Provider: m.Provider, Task: m.Task, Model: m.Name}
	switch m.Provider {
	case api.ProviderOpenAI:
		c := m.OpenAIConfig
		r.BaseURL, r.Key, r.Organization = orDefault(c.OpenAIAPIBase, defaultOpenAIBase), c.OpenAIAPIKeyPlaintext, c.OpenAIOrganization
		if strings.EqualFold(c.OpenAIAPIType, "azure") {
			r.APIType, r.APIVersion, r.Deployment = "azure", c.OpenAIAPIVersion, c.OpenAIDeploymentName
		}
	case api.ProviderAnthropic:
		c := m.AnthropicConfig
		r.BaseURL, r.Key = orDefault(c.AnthropicAPIBase, defaultAnthropicBase), c.AnthropicAPIKeyPlaintext
	case api.ProviderCohere:
		c := m.CohereConfig
		r.BaseURL, r.Key = orDefault(c.CohereAPIBase, defaultCohereBase), c.CohereAPIKeyPlaintext
	case api.ProviderCustom:
		c := m.CustomProviderConfig
		r.BaseURL = c.CustomProviderURL
		switch {
		case c.APIKeyAuth != nil:
			r.KeyHeader, r.Key = c.APIKeyAuth.Key, c.APIKeyAuth.ValuePlaintext
		case c.BearerTokenAuth != nil:
			r.Key = c.BearerTokenAuth.TokenPlaintext
		}
	}
	r.BaseURL = strings.TrimRight(r.BaseURL, "/")
	return r
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// keyFields is m's credential: the path of its reference field (relative
// to the served entity), the reference given there, and the plaintext.
func keyFields(m *api.ExternalModel) (field, ref, plain string) {
	switch {
	case m.OpenAIConfig != nil:
		c := m.OpenAIConfig
		return "external_model.openai_config.openai_api_key", c.OpenAIAPIKey, c.OpenAIAPIKeyPlaintext
	case m.AnthropicConfig != nil:
		c := m.AnthropicConfig
		return "external_model.anthropic_config.anthropic_api_key", c.AnthropicAPIKey, c.AnthropicAPIKeyPlaintext
	case m.CohereConfig != nil:
		c := m.CohereConfig
		return "external_model.cohere_config.cohere_api_key", c.CohereAPIKey, c.CohereAPIKeyPlaintext
	case m.CustomProviderConfig != nil && m.CustomProviderConfig.APIKeyAuth != nil:
		a := m.CustomProviderConfig.APIKeyAuth
		return "external_model.custom_provider_config.api_key_auth.value", a.Value, a.ValuePlaintext
	case m.CustomProviderConfig != nil && m.CustomProviderConfig.BearerTokenAuth != nil:
		b := m.CustomProviderConfig.BearerTokenAuth
		return "external_model.custom_provider_config.bearer_token_auth.token", b.Token, b.TokenPlaintext
	}
	return "", "", ""
}

// externalRefs lists the secret references of a config's external
// models' keys (normalizeExternal checked their form).
func externalRefs(c *api.EndpointConfig) []envRef {
	var out []envRef
	for i := range c.ServedEntities {
		e := &c.ServedEntities[i]
		if !isExternal(e) {
			continue
		}
		field, v, _ := keyFields(e.ExternalModel)
		if ref, ok, _ := secrets.ParseRef(v); ok {
			out = append(out, envRef{entity: i, path: field, ref: ref})
		}
	}
	return out
}

// externalKey is the key of ep's external entity e: its plaintext, or its
// secret reference resolved as ep's creator. An error names the
// reference and why it cannot be read, never a value.
func (s *Scheduler) externalKey(ep *store.Endpoint, e *api.ServedEntity) (string, error) {
	field, v, plain := keyFields(e.ExternalModel)
	if v == "" {
		return plain, nil
	}
	ref, ok, _ := secrets.ParseRef(v)
	if !ok {
		return "", fmt.Errorf("served entity %s: %s is not a secret reference", e.Name, field)
	}
	key, err := s.resolveAs(ep.Creator, ep.ID, ref)
	if err != nil {
		return "", fmt.Errorf("served entity %s: %s: %w", e.Name, field, err)
	}
	return key, nil
}

// keyRoutes puts the keys of the external entities of routes into them
// (api.ExternalRoute.Key, which is never encoded), resolving secret
// references as each endpoint's creator; a reference that cannot be read
// leaves the key empty and says why in KeyError, which the activator
// answers each call with. A secret whose value changes changes the table,
// which is published again. s.mu must be held.
func (s *Scheduler) keyRoutes(routes []api.EndpointRoute) {
	for i := range routes {
		er := &routes[i]
		ep := s.eps[er.Name]
		for j := range er.Entities {
			en := &er.Entities[j]
			if en.External == nil || ep == nil {
				continue
			}
			e := servedFor(ep, en.Name, en.Deployment)
			if e == nil {
				continue
			}
			key, err := s.externalKey(ep, e)
			if err != nil {
				en.External.Key, en.External.KeyError = "", err.Error()
				continue
			}
			en.External.Key = key
		}
	}
}

// servedFor is the external entity of ep's config (or pending config)
// named name whose deployment is id.
func servedFor(ep *store.Endpoint, name, id string) *api.ServedEntity {
	for _, c := range []*api.EndpointConfig{&ep.Config, ep.Pending} {
		if c == nil {
			continue
		}
		for i := range c.ServedEntities {
			e := &c.ServedEntities[i]
			if e.Name == name && isExternal(e) && deploymentID(ep.Name, e) == id {
				return e
			}
		}
	}
	return nil
}

// externalKeys serves GET /api/2.0/gantry/external-keys (admins only):
// the key of every external entity of every config, serving or rolling
// out, by the deployment that names it in the route table, secret
// references resolved as the endpoint's creator (one that cannot be read
// is left out; the route table's key_error says why). An activator in a
// process of its own reads it after each route table that names an
// external entity; JSON route tables never carry keys.
func (s *Scheduler) externalKeys(w http.ResponseWriter, r *http.Request) {
	out := api.ExternalKeys{Keys: []api.ExternalKey{}}
	s.mu.Lock()
	for _, ep := range s.eps {
		for _, c := range []*api.EndpointConfig{&ep.Config, ep.Pending} {
			if c == nil {
				continue
			}
			for i := range c.ServedEntities {
				e := &c.ServedEntities[i]
				if !isExternal(e) {
					continue
				}
				if k, err := s.externalKey(ep, e); err == nil && k != "" {
					out.Keys = append(out.Keys, api.ExternalKey{Deployment: deploymentID(ep.Name, e), Key: k})
				}
			}
		}
	}
	s.mu.Unlock()
	sort.Slice(out.Keys, func(i, j int) bool { return out.Keys[i].Deployment < out.Keys[j].Deployment })
	// Keys must not sit in a shared cache on the way.
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, out)
}
