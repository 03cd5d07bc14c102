package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/autoscaler"
	"github.com/spf13/cobra"
)

func autoscalerCmd() *cobra.Command {
	var listen, schedulerURL string
	var so scalingOptions
	c := &cobra.Command{
		Use:   "autoscaler",
		Short: "Run the autoscaler: take load reports from activators and size deployments through the scheduler",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runAutoscaler(cmd.Context(), listen, schedulerURL, &so)
		},
	}
	c.Flags().StringVar(&listen, "listen", "127.0.0.1:8082", "address to take activators' load reports and pokes on (gantry activator --autoscaler)")
	c.Flags().StringVar(&schedulerURL, "scheduler", "http://127.0.0.1:8081", "URL of the scheduler whose deployments to size")
	so.flags(c)
	return c
}

func runAutoscaler(ctx context.Context, listen, schedulerURL string, so *scalingOptions) error {
	spec, err := so.spec()
	if err != nil {
		return err
	}
	log := slog.Default()
	// DefaultConfig reads GANTRY_TOKEN; the flag names the scheduler.
	cfg := api.DefaultConfig()
	cfg.Address = schedulerURL
	client, err := api.NewClient(cfg)
	if err != nil {
		return fmt.Errorf("--scheduler: %w", err)
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}

	sched := &autoscaler.RemoteScheduler{Client: client, Logger: log}
	// The collector pokes the autoscaler and the autoscaler reads the
	// collector: asc is set before either serves or runs.
	var asc *autoscaler.Autoscaler
	col := autoscaler.NewCollector(autoscaler.CollectorConfig{Logger: log}, func(dep string) { asc.Poke(dep) })
	reg := newRegistry()
	asc = autoscaler.New(autoscaler.Config{Spec: spec, Logger: log, Metrics: autoscaler.NewMetrics(reg)}, sched, col.Samples)

	mux := http.NewServeMux()
	mux.Handle("/v1/", col)
	health(mux, reg, sched.Synced)
	srv := &http.Server{Handler: jsonErrors(mux), ReadHeaderTimeout: 10 * time.Second}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go asc.Run(ctx)
	go func() {
		<-ctx.Done()
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		srv.Shutdown(sctx)
	}()
	log.Info("gantry autoscaler is up", "url", "http://"+ln.Addr().String(), "scheduler", client.Address())
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
