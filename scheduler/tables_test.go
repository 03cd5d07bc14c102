package scheduler

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/internal/chtest"
	"github.com/gantry/gantry/loggers/tables"
)

func captureBody(catalog, schema, prefix string) string {
	return `{"name": "fraud-det", "config": {"served_entities": [{"name": "v1", "entity_name": "m", "entity_version": "1"}],
		"auto_capture_config": {"catalog_name": "` + catalog + `", "schema_name": "` + schema + `", "table_name_prefix": "` + prefix + `", "enabled": true}}}`
}

func TestInferenceTable(t *testing.T) {
	h := newHarness(t, t.TempDir())
	h.upload(t, "m")

	// Without ClickHouse, enabling capture says why it cannot.
	h.s.cfg.TablesOff = "no ClickHouse given"
	code, e := h.call(t, "POST", "/api/2.0/serving-endpoints", captureBody("ml", "logs", ""), nil)
	if code != 400 || !strings.Contains(e.Message, "no ClickHouse given") {
		t.Fatalf("capture without tables: %d %v", code, e)
	}

	h.s.cfg.Tables = chtest.Open(t, chtest.Start(t))
	for _, bad := range []struct{ catalog, schema, prefix, field string }{
		{"ml`; DROP DATABASE system; --", "logs", "", "catalog_name"},
		{"ml", "logs.x", "", "schema_name"},
		{"ml", "logs", "a b", "table_name_prefix"},
		{"", "logs", "", "catalog_name"},
		{"ml", "l\u00e9", "", "schema_name"},
		{"9ml", "logs", "", "catalog_name"},
	} {
		code, e := h.call(t, "POST", "/api/2.0/serving-endpoints", captureBody(bad.catalog, bad.schema, bad.prefix), nil)
		if code != 400 || e.Code != api.ErrInvalidParameterValue || !strings.Contains(e.Message, bad.field) {
			t.Errorf("%+v: %d %v; want 400 naming %s", bad, code, e, bad.field)
		}
	}

	var ep api.Endpoint
	if code, e := h.call(t, "POST", "/api/2.0/serving-endpoints", captureBody("ml", "logs", ""), &ep); code != 200 {
		t.Fatalf("create: %d %v", code, e)
	}
	// The prefix defaults to the endpoint name, dashes made underscores.
	const want = "ml_logs.fraud_det_payload"
	if ac := h.get(t, "fraud-det").Config.AutoCaptureConfig; ac == nil || ac.State == nil || ac.State.PayloadTable.Name != want {
		t.Fatalf("auto_capture_config %+v; want state.payload_table.name %s", ac, want)
	}
	h.reconcile()
	rt, _ := h.routes.Wait(context.Background(), 0)
	if len(rt.Endpoints) != 1 || rt.Endpoints[0].InferenceTable != want {
		t.Fatalf("route table %+v; want inference_table %s", rt.Endpoints, want)
	}

	// The table exists as soon as the endpoint does.
	var res api.QueryResult
	if code, e := h.call(t, "POST", "/api/2.0/gantry/tables/query",
		`{"endpoint": "fraud-det", "sql": "SELECT count() AS n, name FROM system.tables WHERE database = 'ml_logs' AND name = 'fraud_det_payload' GROUP BY name"}`, &res); code != 200 {
		t.Fatalf("query: %d %v", code, e)
	}
	if len(res.Rows) != 1 || res.Rows[0][0] != "1" || res.Rows[0][1] != "fraud_det_payload" || res.Columns[0] != "n" {
		t.Fatalf("query result %+v", res)
	}
	if code, e := h.call(t, "POST", "/api/2.0/gantry/tables/query", `{"endpoint": "fraud-det", "sql": "SELECT count() FROM {table}"}`, &res); code != 200 || res.Rows[0][0] != "0" {
		t.Fatalf("count: %d %v %+v", code, e, res)
	}
	for _, c := range []struct {
		body string
		code int
	}{
		{`{"endpoint": "fraud-det", "sql": "DROP TABLE {table}"}`, 400},
		{`{"endpoint": "fraud-det", "sql": "SELEC nonsense"}`, 400},
		{`{"endpoint": "fraud-det", "sql": ""}`, 400},
		{`{"endpoint": "nope", "sql": "SELECT 1"}`, 404},
	} {
		if code, e := h.call(t, "POST", "/api/2.0/gantry/tables/query", c.body, nil); code != c.code {
			t.Errorf("%s: %d %v; want %d", c.body, code, e, c.code)
		}
	}
}

func TestAIGatewayInferenceTable(t *testing.T) {
	h := newHarness(t, t.TempDir())
	h.upload(t, "m")
	h.s.cfg.Tables = chtest.Open(t, chtest.Start(t))
	if code, e := h.call(t, "POST", "/api/2.0/serving-endpoints", createBody, nil); code != 200 {
		t.Fatalf("create: %d %v", code, e)
	}
	const path = "/api/2.0/serving-endpoints/fraud/ai-gateway"
	for _, c := range []struct {
		body, want string
		code       int
	}{
		{`{"guardrails": {"input": {"pii": {"behavior": "BLOCK"}}}}`, "guardrails: endpoint fraud serves no LLM entity", 400},
		{`{"rate_limits": [{"calls": 10}]}`, "rate_limits[0].renewal_period", 400},
		{`{"rate_limits": [{"calls": 10, "key": "user_group", "renewal_period": "minute"}]}`, "rate_limits[0].principal", 400},
		{`{"rate_limits": [{"calls": 10, "renewal_period": "minute"}, {"tokens": 500, "key": "user", "renewal_period": "minute"}]}`, "", 200},
		{`{"inference_table_config": {"catalog_name": "ml", "schema_name": "x;y", "enabled": true}}`, "inference_table_config.schema_name", 400},
		{`{"inference_table_config": {"catalog_name": "ml", "schema_name": "gw", "enabled": true}}`, "", 200},
	} {
		code, e := h.call(t, "PUT", path, c.body, nil)
		if code != c.code || !strings.Contains(e.Message, c.want) {
			t.Errorf("%s: %d %v; want %d naming %q", c.body, code, e, c.code, c.want)
		}
	}
	if code, _ := h.call(t, "PUT", "/api/2.0/serving-endpoints/nope/ai-gateway", `{}`, nil); code != 404 {
		t.Errorf("unknown endpoint: %d; want 404", code)
	}
	ep := h.get(t, "fraud")
	if ep.AIGateway != nil && len(ep.AIGateway.RateLimits) != 0 {
		t.Errorf("rate limits %+v stayed after a PUT without them", ep.AIGateway.RateLimits)
	}
	if ep.AIGateway == nil || ep.AIGateway.InferenceTableConfig.State == nil || ep.AIGateway.InferenceTableConfig.State.PayloadTable.Name != "ml_gw.fraud_payload" {
		t.Fatalf("ai_gateway %+v; want its inference table named", ep.AIGateway)
	}
	h.reconcile()
	rt, _ := h.routes.Wait(context.Background(), 0)
	if rt.Endpoints[0].InferenceTable != "ml_gw.fraud_payload" {
		t.Fatalf("route table inference_table %q", rt.Endpoints[0].InferenceTable)
	}
	// auto_capture_config may not turn on a second table.
	code, e := h.call(t, "PUT", "/api/2.0/serving-endpoints/fraud/config", `{"served_entities": [{"name": "v1", "entity_name": "m", "entity_version": "1"}],
		"auto_capture_config": {"catalog_name": "ml", "schema_name": "logs", "enabled": true}}`, nil)
	if code != 400 || !strings.Contains(e.Message, "cannot both be enabled") {
		t.Fatalf("second table: %d %v", code, e)
	}
}

// TestQueryLockdown: SQL from a caller (issue 19) cannot reach the
// network or files of the ClickHouse host through table functions, kill
// other queries or change its limits (400), gets a 400 for a result over
// the byte limit and a 504 past the time limit.
func TestQueryLockdown(t *testing.T) {
	var hits atomic.Int64
	secret := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		fmt.Fprintln(w, "secret")
	}))
	defer secret.Close()
	h := newHarness(t, t.TempDir())
	h.upload(t, "m")
	ch := chtest.Start(t)
	db := chtest.Open(t, ch)
	h.s.cfg.Tables = db
	if code, e := h.call(t, "POST", "/api/2.0/serving-endpoints", captureBody("ml", "logs", ""), nil); code != 200 {
		t.Fatalf("create: %d %v", code, e)
	}
	query := func(sql string) (int, api.Error) {
		t.Helper()
		return h.call(t, "POST", "/api/2.0/gantry/tables/query", `{"endpoint": "fraud-det", "sql": `+strconv.Quote(sql)+`}`, nil)
	}
	for _, c := range []struct{ sql, want string }{
		{"SELECT * FROM url('" + secret.URL + "/api', CSV, 'a String')", "table functions"},
		{"SELECT * FROM remote('" + ch.Addr() + "', system.one)", "table functions"},
		{"SELECT * FROM file('x', CSV, 'a String')", "table functions"},
		{"KILL QUERY WHERE 1", "KILL"},
		{"/* x */ KILL QUERY WHERE user = 'default'", "KILL"},
		{"SELECT count() FROM {table} SETTINGS max_execution_time = 0", "SETTINGS"},
		{"SELECT count() FROM {table} SETTINGS readonly = 0", "SETTINGS"},
	} {
		if code, e := query(c.sql); code != 400 || e.Code != api.ErrInvalidParameterValue || !strings.Contains(e.Message, c.want) {
			t.Errorf("%s: %d %v; want 400 naming %q", c.sql, code, e, c.want)
		}
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("a caller's query made ClickHouse fetch an HTTP service %d times", n)
	}

	h.s.cfg.Tables = db.WithLimits(tables.Limits{MaxResultBytes: 1 << 20})
	big := "SELECT arrayStringConcat(arrayMap(x -> 'x', range(300000))) FROM system.numbers LIMIT 8"
	if code, e := query(big); code != 400 || !strings.Contains(e.Message, "the result is larger than") || !strings.Contains(e.Message, "1 MiB") {
		t.Errorf("a result over 1 MiB: %d %v; want 400 naming the limit", code, e)
	}
	for _, sql := range []string{"SELECT count() FROM {table}", "SELECT * FROM {table}_per_minute", "SELECT * FROM {table}_latest"} {
		if code, e := query(sql); code != 200 {
			t.Errorf("%s: %d %v", sql, code, e)
		}
	}

	h.s.cfg.Tables = db.WithLimits(tables.Limits{Timeout: time.Second, MaxRowsToRead: 1 << 50, MaxBytesToRead: 1 << 50})
	if code, e := query("SELECT count() FROM system.numbers WHERE NOT ignore(toString(number))"); code != 504 || e.Code != api.ErrDeadlineExceeded || !strings.Contains(e.Message, "within 1s") {
		t.Errorf("past the time limit: %d %v; want 504 naming the limit", code, e)
	}
}

// TestQueryError: a refused query is a 400, a deadline a 504, anything
// else a 503.
func TestQueryError(t *testing.T) {
	for _, c := range []struct {
		err  error
		code string
	}{
		{&tables.RefusedError{API: api.Errorf(api.ErrInvalidParameterValue, "bad"), Err: tables.ErrTooManyRows}, api.ErrInvalidParameterValue},
		{fmt.Errorf("monitor m: %w", context.DeadlineExceeded), api.ErrDeadlineExceeded},
		{errors.New("connection refused"), api.ErrTemporarilyUnavailable},
	} {
		var ae *api.Error
		if err := queryError(c.err); !errors.As(err, &ae) || ae.Code != c.code {
			t.Errorf("queryError(%v) = %v; want %s", c.err, err, c.code)
		}
	}
}
