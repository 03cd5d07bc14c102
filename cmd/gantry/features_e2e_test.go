package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/features/onlinestore/redistest"
	"github.com/gantry/gantry/features/publish"
	"github.com/gantry/gantry/internal/chtest"
	"github.com/gantry/gantry/internal/eventually"
)

// apiCall sends a JSON body to the API of the Gantry at addr (with its
// admin token) and returns the status and the body.
func apiCall(t testing.TB, addr, method, path, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+addr+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// copyFixture copies a model fixture's files into a new directory.
func copyFixture(t testing.TB, name string) string {
	t.Helper()
	dst := t.TempDir()
	src := filepath.Join(fixtures, name)
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dst, e.Name()), string(b))
	}
	return dst
}

// invokeUntil invokes until the answer's status is want (a route table
// may take a moment to reach the activator, a worker to start).
func invokeUntil(t testing.TB, addr, ep, body string, want int) []byte {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		code, _, b := invoke(t, addr, ep, "application/json", []byte(body))
		if code == want {
			return b
		}
		if time.Now().After(deadline) {
			t.Fatalf("invoke %s: %d %s, want %d", ep, code, b, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Feature serving end to end through gantry dev (issue 17): a feature
// table in ClickHouse published to redis-server, a model whose
// feature_spec.yaml looks features up, invoked with keys only, answers as
// it does with the features sent; a feature-serving endpoint answers the
// features; models and specs share a namespace; redis-server killed is a
// 503 with the reason, never a prediction.
func TestFeatureServingE2E(t *testing.T) {
	if testing.Short() {
		t.Skip("runs ClickHouse, redis-server and gantry dev; run without -short")
	}
	bin, addr := buildGantry(t), freeAddr(t)
	ch := chtest.Start(t)
	db := chtest.Open(t, ch)
	redis := redistest.Start(t)
	ctx := context.Background()
	for _, q := range []string{
		"CREATE DATABASE IF NOT EXISTS features",
		"CREATE TABLE features.user_behavior (user_id UInt64, ts DateTime, mean_radius Float64, mean_texture Float64, worst_texture Float64) ENGINE = MergeTree ORDER BY (user_id, ts)",
		// Each key's newest row is the one served; the older ones are
		// decoys that a wrong pick would show.
		"INSERT INTO features.user_behavior SELECT 1, toDateTime('2026-01-01 00:00:00'), 99, 99, 99",
		"INSERT INTO features.user_behavior SELECT 1, toDateTime('2026-01-02 00:00:00'), 12.34, 14.95, 16.85",
		"INSERT INTO features.user_behavior SELECT 2, toDateTime('2026-01-02 00:00:00'), 16.3, 15.7, 17.76",
		"INSERT INTO features.user_behavior SELECT 2, toDateTime('2026-01-01 00:00:00'), 98, 98, 98",
	} {
		if err := db.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	startDev(t, bin, addr, t.TempDir(), "--clickhouse", ch.Addr(), "--online-store", redis.URL())

	code, b := apiCall(t, addr, "POST", "/api/2.0/feature-store/tables/features.user_behavior/publish",
		`{"publish_spec": {"online_table_name": "user_behavior", "publish_mode": "SNAPSHOT"}, "primary_key_columns": ["user_id"], "timeseries_key": "ts"}`)
	var tbl api.OnlineTable
	if code != 200 || json.Unmarshal(b, &tbl) != nil || tbl.Rows != 2 || tbl.State != "ONLINE" {
		t.Fatalf("publish: %d %s", code, b)
	}

	// A model with a feature_spec.yaml: three of its six inputs are looked up.
	dir := copyFixture(t, "binary")
	writeFile(t, filepath.Join(dir, "feature_spec.yaml"), `features:
  - table_name: features.user_behavior
    lookup_key: [user_id]
    feature_names: [mean_radius, mean_texture, worst_texture]
`)
	mustCLI(t, bin, addr, "models", "upload", "scorer", dir)
	mustCLI(t, bin, addr, "models", "upload", "plain", filepath.Join(fixtures, "binary"))
	ep := filepath.Join(t.TempDir(), "ep.json")
	// Two inference tables: fraud's logs what the model saw (the
	// augmented request, the default), fraud_sent's the request as sent.
	for _, c := range []struct{ name, asSent string }{{"fraud", "false"}, {"fraud_sent", "true"}} {
		writeFile(t, ep, `{"name": "`+c.name+`", "config": {"served_entities": [{"entity_name": "scorer", "entity_version": "1", "workload_size": "Small", "scale_to_zero_enabled": true}],
			"auto_capture_config": {"catalog_name": "ml", "schema_name": "feat", "enabled": true, "log_request_as_sent": `+c.asSent+`}}}`)
		mustCLI(t, bin, addr, "endpoints", "create", "-f", ep)
	}
	writeFile(t, ep, `{"name": "plain", "config": {"served_entities": [{"entity_name": "plain", "entity_version": "1", "workload_size": "Small", "scale_to_zero_enabled": true}]}}`)
	mustCLI(t, bin, addr, "endpoints", "create", "-f", ep)

	keysOnly := `{"dataframe_records": [{"user_id": 1, "mean_smoothness": 0.08682, "mean_concavity": 0.02109, "mean_concave_points": 0.05591999739408493},
		{"user_id": 2, "mean_smoothness": 0.09427, "mean_concavity": 0.05526, "mean_concave_points": 0.051454998552799225}]}`
	sent := `{"dataframe_records": [{"mean_radius": 12.34, "mean_texture": 14.95, "mean_smoothness": 0.08682, "mean_concavity": 0.02109, "mean_concave_points": 0.05591999739408493, "worst_texture": 16.85},
		{"mean_radius": 16.3, "mean_texture": 15.7, "mean_smoothness": 0.09427, "mean_concavity": 0.05526, "mean_concave_points": 0.051454998552799225, "worst_texture": 17.76}]}`
	looked := invokeUntil(t, addr, "fraud", keysOnly, 200)
	direct := invokeUntil(t, addr, "plain", sent, 200)
	// The same features sent to the model with the spec: the request's
	// own values override the lookups.
	overridden := invokeUntil(t, addr, "fraud", strings.ReplaceAll(sent, `"mean_radius"`, `"user_id": 1, "mean_radius"`), 200)
	if !bytes.Equal(looked, direct) || !bytes.Equal(overridden, direct) {
		t.Errorf("keys only: %s\noverridden: %s\nfeatures sent: %s", looked, overridden, direct)
	}
	if sentAnswer := invokeUntil(t, addr, "fraud_sent", keysOnly, 200); !bytes.Equal(sentAnswer, direct) {
		t.Errorf("keys only, logged as sent: %s\nfeatures sent: %s", sentAnswer, direct)
	}
	logged := map[string][]string{}
	eventually.True(t, 60*time.Second, "the inference rows of fraud and fraud_sent", func() bool {
		for _, tbl := range []string{"fraud", "fraud_sent"} {
			qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			rows, err := db.Query(qctx, "SELECT request FROM `ml_feat`.`"+tbl+"_payload` WHERE status_code = 200 ORDER BY timestamp_ms")
			cancel()
			if err != nil {
				return false
			}
			logged[tbl] = logged[tbl][:0]
			for _, r := range rows.Rows {
				logged[tbl] = append(logged[tbl], r[0])
			}
		}
		return len(logged["fraud"]) >= 2 && len(logged["fraud_sent"]) >= 1
	})
	if got := logged["fraud_sent"][0]; got != keysOnly {
		t.Errorf("fraud_sent logged %s\nwant the request as sent: %s", got, keysOnly)
	}
	// fraud logs the augmented request: the looked-up features are in it.
	if got := logged["fraud"][0]; !strings.Contains(got, `"dataframe_split"`) || !strings.Contains(got, `"worst_texture"`) ||
		!strings.Contains(got, "12.34") || !strings.Contains(got, "17.76") {
		t.Errorf("fraud logged %s\nwant the augmented request", got)
	}
	var preds struct{ Predictions []float64 }
	if json.Unmarshal(looked, &preds) != nil || len(preds.Predictions) != 2 {
		t.Errorf("predictions: %s", looked)
	}
	code, _, b = invoke(t, addr, "fraud", "application/json", []byte(`{"dataframe_records": [{"user_id": 3, "mean_smoothness": 0.1, "mean_concavity": 0.1, "mean_concave_points": 0.1}]}`))
	if code != 400 || !strings.Contains(string(b), "user_id=3") || !strings.Contains(string(b), "features.user_behavior") {
		t.Errorf("missing key: %d %s", code, b)
	}

	// A feature-serving endpoint: a spec served by itself.
	if code, b := apiCall(t, addr, "POST", "/api/2.0/gantry/feature-specs",
		`{"name": "user_features", "features": [{"table_name": "features.user_behavior", "lookup_key": ["user_id"], "feature_names": ["mean_radius", "worst_texture"], "rename_outputs": {"worst_texture": "texture"}}]}`); code != 200 {
		t.Fatalf("create spec: %d %s", code, b)
	}
	writeFile(t, ep, `{"name": "user-features", "config": {"served_entities": [{"entity_name": "user_features", "workload_size": "Small", "scale_to_zero_enabled": true}]}}`)
	mustCLI(t, bin, addr, "endpoints", "create", "-f", ep)
	served := invokeUntil(t, addr, "user-features", `{"dataframe_records": [{"user_id": 2}, {"user_id": 1}]}`, 200)
	if string(served) != `{"outputs":[{"mean_radius":16.3,"texture":17.76},{"mean_radius":12.34,"texture":16.85}]}` {
		t.Errorf("feature serving: %s", served)
	}
	var view api.Endpoint
	if code, b := apiCall(t, addr, "GET", "/api/2.0/serving-endpoints/user-features", ""); code != 200 || json.Unmarshal(b, &view) != nil ||
		view.Config.ServedEntities[0].State.Deployment != api.DeploymentReady {
		t.Errorf("feature-serving endpoint: %d %s", code, b)
	}
	// One namespace for models and specs.
	if out, err := cli(t, bin, addr, "models", "upload", "user_features", filepath.Join(fixtures, "binary")); err == nil || !strings.Contains(out, "share one namespace") {
		t.Errorf("a model named like a spec: %v %s", err, out)
	}
	if code, b := apiCall(t, addr, "POST", "/api/2.0/gantry/feature-specs", `{"name": "scorer", "features": []}`); code != 409 {
		t.Errorf("a spec named like a model: %d %s", code, b)
	}

	// A spec created through the API and attached to a model version that
	// has no feature_spec.yaml: plain version 1, which the plain endpoint
	// serves, then looks its features up for keys-only requests.
	specFile := filepath.Join(t.TempDir(), "spec.json")
	writeFile(t, specFile, `{"name": "scorer_features", "features": [{"table_name": "features.user_behavior", "lookup_key": ["user_id"],
		"feature_names": ["mean_radius", "mean_texture", "worst_texture"]}]}`)
	mustCLI(t, bin, addr, "features", "create-spec", "-f", specFile)
	if _, _, b := invoke(t, addr, "plain", "application/json", []byte(keysOnly)); bytes.Equal(b, direct) {
		t.Fatalf("plain answered keys only as if it had the features before a spec was attached: %s", b)
	}
	if out := mustCLI(t, bin, addr, "models", "attach-spec", "plain", "1", "scorer_features"); !strings.Contains(out, "attached") {
		t.Errorf("attach-spec: %s", out)
	}
	// The endpoint follows at the scheduler's next pass.
	eventually.True(t, 30*time.Second, "plain to look features up", func() bool {
		_, _, got := invoke(t, addr, "plain", "application/json", []byte(keysOnly))
		return bytes.Equal(got, direct)
	})
	if code, b := apiCall(t, addr, "GET", "/api/2.0/gantry/models/plain/versions/1", ""); code != 200 || !strings.Contains(string(b), `"feature_spec":"scorer_features"`) {
		t.Errorf("model version with a spec attached: %d %s", code, b)
	}
	for _, c := range []struct{ args, want string }{
		{"scorer 1 scorer_features", "has its own feature_spec.yaml"}, // 409
		{"plain 1 nope", "feature spec nope does not exist"},          // 404
		{"plain 9 scorer_features", "does not exist"},                 // 404
	} {
		if out, err := cli(t, bin, addr, append([]string{"models", "attach-spec"}, strings.Fields(c.args)...)...); err == nil || !strings.Contains(out, c.want) {
			t.Errorf("attach-spec %s: %v %s; want %q", c.args, err, out, c.want)
		}
	}
	// A spec whose feature does not fit the model's signature is a 400
	// at attach time, not a failed deployment later.
	apiCall(t, addr, "POST", "/api/2.0/gantry/feature-specs", `{"name": "wrong_types", "features": [{"table_name": "features.user_behavior", "lookup_key": ["user_id"],
		"feature_names": ["ts"], "rename_outputs": {"ts": "mean_radius"}}]}`)
	if code, b := apiCall(t, addr, "PUT", "/api/2.0/gantry/models/plain/versions/1/feature-spec", `{"feature_spec": "wrong_types"}`); code != 400 ||
		!strings.Contains(string(b), "mean_radius is DateTime in table features.user_behavior but double in the model's signature") {
		t.Errorf("a spec that does not fit the signature: %d %s", code, b)
	}
	if code, b := apiCall(t, addr, "DELETE", "/api/2.0/gantry/feature-specs/scorer_features", ""); code != 409 || !strings.Contains(string(b), "attached to model plain version 1") {
		t.Errorf("deleting an attached spec: %d %s", code, b)
	}
	mustCLI(t, bin, addr, "models", "detach-spec", "plain", "1")
	eventually.True(t, 30*time.Second, "plain to stop looking features up", func() bool {
		_, _, got := invoke(t, addr, "plain", "application/json", []byte(keysOnly))
		return !bytes.Equal(got, direct)
	})
	if code, b := apiCall(t, addr, "DELETE", "/api/2.0/gantry/feature-specs/scorer_features", ""); code != 200 {
		t.Errorf("deleting a detached spec: %d %s", code, b)
	}

	// gantry features get shows the table's state.
	if out := mustCLI(t, bin, addr, "features", "get", "features.user_behavior"); !strings.Contains(out, "ONLINE") || !strings.Contains(out, "user_behavior") {
		t.Errorf("features get: %s", out)
	}

	// A training set from the same spec, point in time: the label of user
	// 1 on January 1st at noon gets the decoy row (the only one then),
	// user 2 on December 31st none (NULL: nothing before), and the rows
	// after the newest feature rows get what the endpoint serves now,
	// value by value (no training-serving skew).
	for _, q := range []string{
		"CREATE TABLE features.labels (user_id UInt64, ts DateTime, label UInt8) ENGINE = MergeTree ORDER BY ts",
		"INSERT INTO features.labels SELECT 1, toDateTime('2026-01-01 12:00:00'), 0",
		"INSERT INTO features.labels SELECT 1, toDateTime('2026-01-03 00:00:00'), 1",
		"INSERT INTO features.labels SELECT 2, toDateTime('2026-01-03 00:00:00'), 0",
		"INSERT INTO features.labels SELECT 2, toDateTime('2025-12-31 00:00:00'), 1",
	} {
		if err := db.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	mustCLI(t, bin, addr, "features", "training-set", "--spec", "user_features", "--labels", "features.labels",
		"--timestamp", "ts", "--out", "features.train", "--clickhouse", ch.Addr())
	conn, err := publish.OpenClickHouse(ctx, ch.Addr(), "default", "")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rows, err := conn.Query(ctx, "SELECT user_id, toString(ts), label, mean_radius, texture FROM features.train ORDER BY ts, user_id")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	train := map[uint64]map[string]any{}
	for rows.Next() {
		var id uint64
		var ts string
		var label uint8
		var radius, texture *float64
		if err := rows.Scan(&id, &ts, &label, &radius, &texture); err != nil {
			t.Fatal(err)
		}
		f := func(p *float64) string {
			if p == nil {
				return "NULL"
			}
			return fmt.Sprint(*p)
		}
		got = append(got, fmt.Sprintf("%d %s %d %s %s", id, ts, label, f(radius), f(texture)))
		if ts == "2026-01-03 00:00:00" {
			train[id] = map[string]any{"mean_radius": *radius, "texture": *texture}
		}
	}
	rows.Close()
	want := []string{"2 2025-12-31 00:00:00 1 NULL NULL", "1 2026-01-01 12:00:00 0 99 99", "1 2026-01-03 00:00:00 1 12.34 16.85", "2 2026-01-03 00:00:00 0 16.3 17.76"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("training set:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	var outputs struct{ Outputs []map[string]any }
	if err := json.Unmarshal(invokeUntil(t, addr, "user-features", `{"dataframe_records": [{"user_id": 1}, {"user_id": 2}]}`, 200), &outputs); err != nil || len(outputs.Outputs) != 2 {
		t.Fatalf("feature serving: %v %+v", err, outputs)
	}
	for i, id := range []uint64{1, 2} {
		for k, v := range outputs.Outputs[i] {
			if train[id][k] != v {
				t.Errorf("skew: user %d %s: training %v, served %v", id, k, train[id][k], v)
			}
		}
		if len(outputs.Outputs[i]) != len(train[id]) {
			t.Errorf("skew: user %d: training %v, served %v", id, train[id], outputs.Outputs[i])
		}
	}

	// The online store down: 503 with the reason, never a prediction.
	redis.Kill()
	for _, c := range []struct{ ep, body string }{{"fraud", keysOnly}, {"user-features", `{"dataframe_records": [{"user_id": 1}]}`}} {
		code, h, b := invoke(t, addr, c.ep, "application/json", []byte(c.body))
		if code != 503 || !strings.Contains(string(b), "online store") || h.Get("Retry-After") == "" {
			t.Errorf("%s with redis-server killed: %d %v %s", c.ep, code, h, b)
		}
	}
}
