package publish_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/features/onlinestore/redistest"
	"github.com/gantry/gantry/features/publish"
	"github.com/gantry/gantry/internal/chtest"
)

// BenchmarkPublish publishes a ClickHouse feature table of
// GANTRY_PUBLISH_ROWS keys (default 1,000,000) to a real redis-server,
// SNAPSHOT (a new generation written in batches, then swapped in) and
// TRIGGERED (rows written into the live generation; every key's newest row
// is at the watermark here, and rows at the watermark are copied again, so
// it copies all N), and reports rows/s. Each key has two rows, so the argMax that
// picks the latest runs over 2N rows; the features are the shape:
// counts, amounts, a segment string, a date and an array. ClickHouse,
// redis-server and the publisher share the CPUs.
func BenchmarkPublish(b *testing.B) {
	n := 1_000_000
	if s := os.Getenv("GANTRY_PUBLISH_ROWS"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil {
			b.Fatalf("GANTRY_PUBLISH_ROWS=%q: %v", s, err)
		}
	}
	ch := chtest.Start(b)
	db := chtest.Open(b, ch)
	srv := redistest.Start(b)
	store := redistest.Open(b, srv)
	ctx := context.Background()
	conn, err := publish.OpenClickHouse(ctx, ch.Addr(), "default", "")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	pub := publish.New(publish.Config{ClickHouse: conn, Store: store})
	b.Cleanup(pub.Close)
	for _, q := range []string{
		"CREATE DATABASE IF NOT EXISTS features",
		"CREATE TABLE features.bench (user_id UInt64, ts DateTime, txn_count_7d UInt32, txn_count_30d UInt32, " +
			"avg_amount_7d Float64, avg_amount_30d Float64, max_amount_30d Float64, chargebacks_90d UInt16, " +
			"segment String, first_seen Date, amounts Array(Float64)) ENGINE = MergeTree() ORDER BY (user_id, ts)",
		fmt.Sprintf("INSERT INTO features.bench SELECT number %% %d, toDateTime('2026-01-01 00:00:00') + intDiv(number, %d) * 3600, "+
			"number %% 97, number %% 389, (number %% 1000) / 7, (number %% 5000) / 13, (number %% 9999) / 3, number %% 5, "+
			"['bronze', 'silver', 'gold'][number %% 3 + 1], toDate('2025-01-01') + number %% 365, [number %% 10 / 4, number %% 7 / 2] "+
			"FROM numbers(%d)", n, n, 2*n),
	} {
		if err := db.Exec(ctx, q); err != nil {
			b.Fatalf("%s: %v", q, err)
		}
	}
	for _, mode := range []string{api.PublishSnapshot, api.PublishTriggered} {
		b.Run(mode, func(b *testing.B) {
			var took time.Duration
			var rows int64
			for b.Loop() {
				start := time.Now()
				t, err := pub.Publish(ctx, "features.bench", api.PublishRequest{
					PublishSpec:       api.PublishSpec{PublishMode: mode},
					PrimaryKeyColumns: []string{"user_id"}, TimeseriesKey: "ts",
				})
				took += time.Since(start)
				if err != nil || t.State != api.OnlineTableOnline || t.Rows != int64(n) {
					b.Fatalf("publish %s: %v, %+v", mode, err, t)
				}
				rows += int64(n)
			}
			b.ReportMetric(float64(rows)/took.Seconds(), "rows/s")
		})
	}
}
