package scheduler

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/gantry/gantry/api"
)

func config(t *testing.T, s string) *api.EndpointConfig {
	t.Helper()
	c := new(api.EndpointConfig)
	if err := json.Unmarshal([]byte(s), c); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestNormalizeConfigDefaults(t *testing.T) {
	c := config(t, `{"served_entities": [{"entity_name": "cat.schema.fraud", "entity_version": "2"}]}`)
	if err := normalizeConfig(c); err != nil {
		t.Fatal(err)
	}
	e := c.ServedEntities[0]
	if e.Name != "cat-schema-fraud-2" || e.WorkloadSize != "Small" || e.WorkloadType != "CPU" {
		t.Errorf("defaults: name=%q size=%q type=%q", e.Name, e.WorkloadSize, e.WorkloadType)
	}
	r := c.TrafficConfig.Routes
	if len(r) != 1 || r[0].ServedModelName != "cat-schema-fraud-2" || r[0].TrafficPercentage != 100 {
		t.Errorf("default route = %+v", r)
	}
}

func TestNormalizeConfigErrors(t *testing.T) {
	two := `"served_entities": [{"name": "a", "entity_name": "m", "entity_version": "1"}, {"name": "b", "entity_name": "m", "entity_version": "2"}]`
	for _, tc := range []struct{ body, want string }{
		{`{"served_entities": []}`, "at least one served entity"},
		{`{"served_entities": [{"entity_version": "1"}]}`, "served_entities[0].entity_name: required"},
		{`{"served_entities": [{"name": "a b", "entity_name": "m", "entity_version": "1"}]}`, `name: "a b" must be`},
		{`{"served_entities": [{"entity_name": "m", "entity_version": "1", "workload_size": "Huge"}]}`, "workload_size"},
		{`{"served_entities": [{"entity_name": "m", "entity_version": "1", "workload_size": "Small", "max_provisioned_concurrency": 8}]}`, "cannot be combined"},
		{`{"served_entities": [{"entity_name": "m", "entity_version": "1", "min_provisioned_concurrency": 3, "max_provisioned_concurrency": 8}]}`, "multiples of 4"},
		{`{"served_entities": [{"entity_name": "m", "entity_version": "1", "min_provisioned_concurrency": 8, "max_provisioned_concurrency": 4}]}`, "not below"},
		{`{"served_entities": [{"entity_name": "m", "entity_version": "1", "workload_type": "TPU"}]}`, "workload_type"},
		{`{"served_entities": [{"entity_name": "m", "entity_version": "1", "replica_concurrency": 0}]}`, "replica_concurrency: 0 is out of range"},
		{`{"served_entities": [{"entity_name": "m", "entity_version": "1", "environment_vars": {"1X": "v"}}]}`, "not a valid variable name"},
		{`{"served_entities": [{"entity_name": "m", "entity_version": "1", "environment_vars": {"K": "Bearer {{secrets/s/k}}"}}]}`, "secret reference must be the whole value"},
		{`{"served_entities": [{"entity_name": "m", "entity_version": "1", "environment_vars": {"K": "{{secrets/s/k/x}}"}}]}`, "secret reference must be the whole value"},
		{`{"served_entities": [{"entity_name": "m", "entity_version": "1", "environment_vars": {"GANTRY_PYTHON": "{{secrets/s/k}}"}}]}`, "not a secret reference"},
		{`{"served_entities": [{"entity_name": "m", "entity_version": "1", "environment_vars": {"LD_PRELOAD": "/m/x.so"}}]}`, "environment_vars.LD_PRELOAD: LD_PRELOAD is reserved"},
		{`{"served_entities": [{"entity_name": "m", "entity_version": "1", "environment_vars": {"PYTHONPATH": "/m"}}]}`, "environment_vars.PYTHONPATH"},
		{`{"served_entities": [{"entity_name": "m", "entity_version": "1", "environment_vars": {"GANTRY_MAX_BATCH_SIZE": "0"}}]}`, "environment_vars.GANTRY_MAX_BATCH_SIZE: GANTRY_MAX_BATCH_SIZE must be a number of rows from 1"},
		{`{"served_entities": [{"entity_name": "m", "entity_version": "1", "environment_vars": {"GANTRY_MAX_BATCH_WAIT": "5s"}}]}`, "GANTRY_MAX_BATCH_WAIT must be a duration from 0 to 1s"},
		{`{"served_entities": [{"entity_name": "m", "entity_version": "1", "environment_vars": {"GANTRY_PYTHON": " "}}]}`, "GANTRY_PYTHON is empty"},
		{`{"served_entities": [{"entity_name": "m", "entity_version": "1", "environment_vars": {"GANTRY_LISTEN": ":1"}}]}`, "GANTRY_LISTEN is reserved"},
		{`{"served_entities": [{"entity_name": "m", "entity_version": "1"}, {"entity_name": "m", "entity_version": "1"}], "traffic_config": {"routes": [{"served_model_name": "m-1", "traffic_percentage": 100}]}}`, "used twice"},
		{`{` + two + `}`, "traffic_config.routes: required"},
		{`{` + two + `, "traffic_config": {"routes": [{"served_model_name": "a", "traffic_percentage": 80}, {"served_model_name": "b", "traffic_percentage": 10}]}}`, "percentages sum to 90, must sum to 100"},
		{`{` + two + `, "traffic_config": {"routes": [{"served_model_name": "a", "traffic_percentage": 110}, {"served_model_name": "b", "traffic_percentage": -10}]}}`, "out of range 0-100"},
		{`{` + two + `, "traffic_config": {"routes": [{"served_model_name": "a", "traffic_percentage": 50}, {"served_model_name": "c", "traffic_percentage": 50}]}}`, `"c" is not a served entity`},
		{`{` + two + `, "traffic_config": {"routes": [{"served_model_name": "a", "traffic_percentage": 50}, {"served_model_name": "a", "traffic_percentage": 50}]}}`, "more than one route"},
		// A shadow route does not count toward 100.
		{`{` + two + `, "traffic_config": {"routes": [{"served_model_name": "a", "traffic_percentage": 90}, {"served_model_name": "b", "traffic_percentage": 10, "shadow": true}]}}`, "percentages sum to 90"},
		{`{` + two + `, "traffic_config": {"routes": [{"served_model_name": "a", "traffic_percentage": 100}, {"served_model_name": "a", "traffic_percentage": 10, "shadow": true}]}}`, "more than one route"},
		{`{` + two + `, "traffic_config": {"routes": [{"served_model_name": "a", "traffic_percentage": 100}, {"served_model_name": "b", "traffic_percentage": 101, "shadow": true}]}}`, "out of range 0-100"},
	} {
		err := normalizeConfig(config(t, tc.body))
		ae, ok := err.(*api.Error)
		if !ok || ae.Code != api.ErrInvalidParameterValue || !strings.Contains(ae.Message, tc.want) {
			t.Errorf("%s:\n got %v\nwant INVALID_PARAMETER_VALUE containing %q", tc.body, err, tc.want)
		}
	}
}

func TestReplicaBounds(t *testing.T) {
	yes := true
	four, eight, sixteen := 4, 8, 16
	for _, tc := range []struct {
		e               api.ServedEntity
		lo, hi, initial int
	}{
		{api.ServedEntity{WorkloadSize: "Small"}, 1, 1, 1},
		{api.ServedEntity{WorkloadSize: "Medium"}, 2, 4, 2},
		{api.ServedEntity{WorkloadSize: "Large"}, 4, 16, 4},
		{api.ServedEntity{WorkloadSize: "Small", ScaleToZeroEnabled: &yes}, 0, 1, 1},
		{api.ServedEntity{WorkloadSize: "Large", ScaleToZeroEnabled: &yes}, 0, 16, 1},
		{api.ServedEntity{MinProvisionedConcurrency: &sixteen, MaxProvisionedConcurrency: &sixteen}, 4, 4, 4},
		{api.ServedEntity{MinProvisionedConcurrency: &four, MaxProvisionedConcurrency: &eight}, 1, 2, 1},
		{api.ServedEntity{WorkloadSize: "Large", ReplicaConcurrency: &eight}, 2, 8, 2},
	} {
		lo, hi := replicaBounds(&tc.e)
		if lo != tc.lo || hi != tc.hi || initialReplicas(&tc.e) != tc.initial {
			t.Errorf("bounds(%+v) = %d..%d initial %d, want %d..%d initial %d", tc.e, lo, hi, initialReplicas(&tc.e), tc.lo, tc.hi, tc.initial)
		}
	}
}

func TestShadowRouteIsValid(t *testing.T) {
	c := config(t, `{"served_entities": [{"name": "a", "entity_name": "m", "entity_version": "1"}, {"name": "b", "entity_name": "m", "entity_version": "2"}],
		"traffic_config": {"routes": [{"served_model_name": "a", "traffic_percentage": 100}, {"served_model_name": "b", "traffic_percentage": 25, "shadow": true}]}}`)
	if err := normalizeConfig(c); err != nil {
		t.Fatalf("100%% live plus a 25%% shadow: %v", err)
	}
}
