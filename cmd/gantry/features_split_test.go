package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/features/onlinestore/redistest"
	"github.com/gantry/gantry/internal/chtest"
	"github.com/gantry/gantry/internal/eventually"
)

// Feature serving with the components split (issue 17): `gantry
// scheduler` publishes from ClickHouse into a redis-server that two
// `gantry activator` processes look features up in, each with its own
// --online-store; one of them caches lookups (--feature-cache-staleness).
// They share nothing but Redis and the scheduler's API.
func TestSplitComponentsOnlineStore(t *testing.T) {
	if testing.Short() {
		t.Skip("runs ClickHouse, redis-server, a scheduler and two activators with a worker; run without -short")
	}
	bin := buildGantry(t)
	ch := chtest.Start(t)
	db := chtest.Open(t, ch)
	redis := redistest.Start(t)
	ctx := context.Background()
	for _, q := range []string{
		"CREATE DATABASE IF NOT EXISTS features",
		"CREATE TABLE features.user_behavior (user_id UInt64, ts DateTime, mean_radius Float64, mean_texture Float64, worst_texture Float64) ENGINE = MergeTree ORDER BY (user_id, ts)",
		"INSERT INTO features.user_behavior SELECT 1, toDateTime('2026-01-02 00:00:00'), 12.34, 14.95, 16.85",
		"INSERT INTO features.user_behavior SELECT 2, toDateTime('2026-01-02 00:00:00'), 16.3, 15.7, 17.76",
	} {
		if err := db.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}

	schedAddr, plainAddr, cachedAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	dataDir := t.TempDir()
	sched := startProc(t, bin, schedAddr, "scheduler", "--listen", schedAddr, "--data-dir", dataDir,
		"--online-store", redis.URL(), "--clickhouse", ch.Addr())
	b, err := os.ReadFile(filepath.Join(dataDir, api.ComponentsTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(string(b))
	adminTokens.Store(plainAddr, tokenOf(schedAddr))
	adminTokens.Store(cachedAddr, tokenOf(schedAddr))
	plain := startProc(t, bin, plainAddr, "activator", "--listen", plainAddr, "--scheduler", "http://"+schedAddr, "--token", token,
		"--online-store", redis.URL())
	cached := startProc(t, bin, cachedAddr, "activator", "--listen", cachedAddr, "--scheduler", "http://"+schedAddr, "--token", token,
		"--online-store", redis.URL(), "--feature-cache-staleness", "1h")
	logs := func() string {
		return "scheduler:\n" + sched.log.String() + "\nactivator:\n" + plain.log.String() + "\ncaching activator:\n" + cached.log.String()
	}

	// Published through the scheduler's CLI; a spec created with it and
	// attached to a model version; an endpoint for the model and a
	// feature-serving one for the spec.
	if out := mustCLI(t, bin, schedAddr, "features", "publish", "features.user_behavior", "--primary-key", "user_id",
		"--timeseries-key", "ts", "--mode", "SNAPSHOT"); !strings.Contains(out, "ONLINE") {
		t.Fatalf("publish: %s", out)
	}
	spec := filepath.Join(t.TempDir(), "spec.json")
	writeFile(t, spec, `{"name": "scorer_features", "features": [{"table_name": "features.user_behavior", "lookup_key": ["user_id"],
		"feature_names": ["mean_radius", "mean_texture", "worst_texture"]}]}`)
	mustCLI(t, bin, schedAddr, "features", "create-spec", "-f", spec)
	mustCLI(t, bin, schedAddr, "models", "upload", "binary", filepath.Join(fixtures, "binary"))
	mustCLI(t, bin, schedAddr, "models", "attach-spec", "binary", "1", "scorer_features")
	ep := filepath.Join(t.TempDir(), "ep.json")
	writeFile(t, ep, `{"name": "fraud", "config": {"served_entities": [{"entity_name": "binary", "entity_version": "1", "workload_size": "Small"}]}}`)
	mustCLI(t, bin, schedAddr, "endpoints", "create", "-f", ep, "--wait")
	writeFile(t, ep, `{"name": "user-features", "config": {"served_entities": [{"entity_name": "scorer_features"}]}}`)
	mustCLI(t, bin, schedAddr, "endpoints", "create", "-f", ep)

	keysOnly := `{"dataframe_records": [{"user_id": 1, "mean_smoothness": 0.08682, "mean_concavity": 0.02109, "mean_concave_points": 0.05591999739408493},
		{"user_id": 2, "mean_smoothness": 0.09427, "mean_concavity": 0.05526, "mean_concave_points": 0.051454998552799225}]}`
	sent := `{"dataframe_records": [{"mean_radius": 12.34, "mean_texture": 14.95, "mean_smoothness": 0.08682, "mean_concavity": 0.02109, "mean_concave_points": 0.05591999739408493, "worst_texture": 16.85},
		{"mean_radius": 16.3, "mean_texture": 15.7, "mean_smoothness": 0.09427, "mean_concavity": 0.05526, "mean_concave_points": 0.051454998552799225, "worst_texture": 17.76}]}`
	const served = `{"outputs":[{"mean_radius":12.34,"mean_texture":14.95,"worst_texture":16.85}]}`
	for _, addr := range []string{plainAddr, cachedAddr} {
		direct := invokeUntil(t, addr, "fraud", sent, 200)
		if looked := invokeUntil(t, addr, "fraud", keysOnly, 200); !bytes.Equal(looked, direct) {
			t.Errorf("activator %s, keys only: %s\nfeatures sent: %s\n%s", addr, looked, direct, logs())
		}
		if got := invokeUntil(t, addr, "user-features", `{"dataframe_records": [{"user_id": 1}]}`, 200); string(got) != served {
			t.Errorf("activator %s, feature serving: %s, want %s", addr, got, served)
		}
	}

	// A new row published: the activator without a cache serves it at
	// once; the caching one keeps what it read within its hour.
	if err := db.Exec(ctx, "INSERT INTO features.user_behavior SELECT 1, toDateTime('2026-01-03 00:00:00'), 20, 21, 22"); err != nil {
		t.Fatal(err)
	}
	mustCLI(t, bin, schedAddr, "features", "publish", "features.user_behavior", "--primary-key", "user_id",
		"--timeseries-key", "ts", "--mode", "SNAPSHOT")
	body := `{"dataframe_records": [{"user_id": 1}]}`
	if got := invokeUntil(t, plainAddr, "user-features", body, 200); string(got) != `{"outputs":[{"mean_radius":20,"mean_texture":21,"worst_texture":22}]}` {
		t.Errorf("after a publish, the activator without a cache answered %s", got)
	}
	if got := invokeUntil(t, cachedAddr, "user-features", body, 200); string(got) != served {
		t.Errorf("after a publish, the caching activator answered %s, want its cached %s", got, served)
	}

	// The caching activator counts its hits and misses in its metrics.
	resp, err := http.Get("http://" + cachedAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	scrape, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, m := range []string{"gantry_feature_cache_hits_total", "gantry_feature_cache_misses_total", "gantry_feature_cache_bytes"} {
		var v float64
		for _, line := range strings.Split(string(scrape), "\n") {
			if f := strings.Fields(line); len(f) == 2 && f[0] == m {
				v, _ = strconv.ParseFloat(f[1], 64)
			}
		}
		if v <= 0 {
			t.Errorf("the caching activator's %s is %v, want > 0", m, v)
		}
	}

	// Redis gone: the activator without a cache answers 503 with the
	// reason; the caching one answers what it holds, and 503 for a key it
	// does not.
	redis.Kill()
	eventually.True(t, 10*time.Second, "503 from the activator without a cache", func() bool {
		code, h, b := invoke(t, plainAddr, "user-features", "application/json", []byte(body))
		return code == 503 && strings.Contains(string(b), "online store") && h.Get("Retry-After") != ""
	})
	if code, _, b := invoke(t, cachedAddr, "user-features", "application/json", []byte(body)); code != 200 || string(b) != served {
		t.Errorf("the caching activator with Redis down, a cached key: %d %s", code, b)
	}
	if code, _, b := invoke(t, cachedAddr, "user-features", "application/json", []byte(`{"dataframe_records": [{"user_id": 3}]}`)); code != 503 {
		t.Errorf("the caching activator with Redis down, a key it does not hold: %d %s", code, b)
	}
}
