package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/gantry/gantry/features"
	"github.com/gantry/gantry/features/onlinestore"
	"github.com/gantry/gantry/features/publish"
	"github.com/gantry/gantry/scheduler"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
)

// onlineStoreOptions say where feature serving's online store is (issue
// 17): --online-store on gantry dev, gantry scheduler and gantry activator.
type onlineStoreOptions struct {
	url string
	// cache is the activator's lookup cache: a value read from the store
	// is served from memory for up to staleness (0: every lookup reads
	// the store), in at most cacheBytes.
	staleness  time.Duration
	cacheBytes int64
}

// cacheFlags adds the lookup cache's flags, on the commands that look up
// (gantry dev and gantry activator).
func (o *onlineStoreOptions) cacheFlags(c *cobra.Command) {
	c.Flags().DurationVar(&o.staleness, "feature-cache-staleness", 0,
		"serve a feature row read from the online store from memory for up to this long, so that hot keys skip the round trip (0: every lookup reads the store)")
	c.Flags().Int64Var(&o.cacheBytes, "feature-cache-max-bytes", features.DefaultCacheBytes,
		"memory bound of the feature lookup cache (keys, rows and overhead)")
}

// looker is what the activator looks features up with: st, behind the
// cache when a staleness is set, whose counters reg exports.
func (o *onlineStoreOptions) looker(st *onlinestore.Store, reg prometheus.Registerer) features.Looker {
	if o.staleness <= 0 {
		return st
	}
	c := features.NewCache(st, features.CacheOptions{Staleness: o.staleness, MaxBytes: o.cacheBytes})
	reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "gantry_feature_cache_hits_total",
			Help: "Feature lookup keys answered from the activator's cache (--feature-cache-staleness)."},
			func() float64 { return float64(c.Stats().Hits) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "gantry_feature_cache_misses_total",
			Help: "Feature lookup keys the activator's cache did not hold fresh, read from the online store."},
			func() float64 { return float64(c.Stats().Misses) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "gantry_feature_cache_bytes",
			Help: "Memory the feature lookup cache's entries are accounted for (bounded by --feature-cache-max-bytes)."},
			func() float64 { return float64(c.Bytes()) }),
	)
	return c
}

func (o *onlineStoreOptions) flags(c *cobra.Command, embedded bool) {
	help := "online store of feature serving, redis://host:port/db"
	if embedded {
		help += " (default: start redis-server from the PATH with its data under the data dir)"
	} else {
		help += " (default: feature serving is off)"
	}
	c.Flags().StringVar(&o.url, "online-store", "", help)
}

// openStore connects to the online store; a store that does not answer
// within 10 s is an error, since the flag asked for it.
func (o *onlineStoreOptions) openStore(ctx context.Context) (*onlinestore.Store, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := onlinestore.Open(ctx, o.url, onlinestore.Options{})
	if err != nil {
		return nil, fmt.Errorf("--online-store: %w", err)
	}
	return st, nil
}

// schedulerFeatures is the scheduler's feature store: the online store,
// and a publisher when ClickHouse (the offline store) is at chAddr. Close
// with the returned function.
func schedulerFeatures(ctx context.Context, o *onlineStoreOptions, co *clickhouseOptions, log *slog.Logger) (*scheduler.FeatureStore, func(), error) {
	st, err := o.openStore(ctx)
	if err != nil {
		return nil, nil, err
	}
	fs := &scheduler.FeatureStore{Store: st}
	closers := []func(){func() { st.Close() }}
	closeAll := func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	if co.addr != "" {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		conn, err := publish.OpenClickHouse(cctx, co.addr, co.user, co.password)
		cancel()
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		closers = append(closers, func() { conn.Close() })
		fs.Publisher = publish.New(publish.Config{ClickHouse: conn, Store: st, Logger: log})
		closers = append(closers, fs.Publisher.Close)
		if err := fs.Publisher.Resume(ctx); err != nil {
			log.Warn("continuous publishes did not resume", "err", err)
		}
	} else {
		log.Warn("feature tables cannot be published: no ClickHouse (--clickhouse)")
	}
	log.Info("feature serving is on", "online_store", o.url, "publishing", fs.Publisher != nil)
	return fs, closeAll, nil
}

// devOnlineStore starts Debian's redis-server under the data dir when no
// --online-store is given and one is on the PATH; otherwise feature
// serving is off, for the reason it returns (not an error: serving works
// without it).
func devOnlineStore(ctx context.Context, dataDir string, o *onlineStoreOptions, log *slog.Logger) (stop func(), off string, err error) {
	if o.url != "" {
		return func() {}, "", nil
	}
	dir := filepath.Join(dataDir, "redis")
	srv, err := onlinestore.NewServer(dir, 0)
	if err == nil {
		log.Info("starting the embedded redis-server", "dir", dir)
		err = srv.Start(ctx)
	}
	if err != nil {
		off = fmt.Sprintf("the embedded redis-server did not start: %v", err)
		if errors.Is(err, onlinestore.ErrNoRedis) {
			off = err.Error()
		}
		log.Warn("feature serving is off", "reason", off)
		return func() {}, off, nil
	}
	o.url = srv.URL()
	return srv.Stop, "", nil
}
