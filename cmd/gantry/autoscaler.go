package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/autoscaler"
	"github.com/gantry/gantry/internal/apierr"
	"github.com/spf13/cobra"
)

func autoscalerCmd() *cobra.Command {
	var listen, schedulerURL, token, ca string
	var so scalingOptions
	var to tlsOptions
	c := &cobra.Command{
		Use:   "autoscaler",
		Short: "Run the autoscaler: take load reports from activators and size deployments through the scheduler",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runAutoscaler(cmd.Context(), listen, schedulerURL, token, ca, &so, &to)
		},
	}
	c.Flags().StringVar(&listen, "listen", "127.0.0.1:8082", "address to take activators' load reports and pokes on (gantry activator --autoscaler)")
	c.Flags().StringVar(&schedulerURL, "scheduler", "http://127.0.0.1:8081", "URL of the scheduler whose deployments to size")
	so.flags(c)
	tokenFlag(c, &token, "an admin's token, to read and size every deployment")
	to.flags(c)
	caFlag(c, &ca)
	return c
}

func runAutoscaler(ctx context.Context, listen, schedulerURL, token, ca string, so *scalingOptions, to *tlsOptions) error {
	spec, err := so.spec()
	if err != nil {
		return err
	}
	log := slog.Default()
	// The flags name the scheduler and the token (GANTRY_TOKEN sets both
	// --token and DefaultConfig's).
	cfg := api.DefaultConfig()
	cfg.Address = schedulerURL
	if token != "" {
		cfg.Token = token
	}
	if ca != "" {
		cfg.CACert = ca
	}
	client, err := api.NewClient(cfg)
	if err != nil {
		return fmt.Errorf("--scheduler: %w", err)
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	addr := ln.Addr().String()
	if ln, err = to.wrap(ln, log); err != nil {
		return err
	}

	sched := &autoscaler.RemoteScheduler{Client: client, Logger: log}
	// The collector pokes the autoscaler, built after it, which reads the
	// collector's samples.
	var pokes relay
	col := autoscaler.NewCollector(autoscaler.CollectorConfig{Logger: log}, pokes.send)
	reg := newRegistry()
	asc := newAutoscaler(spec, sched, col.Samples, log, reg)
	pokes.connect(asc.Poke)

	mux := http.NewServeMux()
	mux.Handle("/v1/", col)
	health(mux, reg, sched.Synced)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go asc.Run(ctx)
	log.Info("gantry autoscaler is up", "url", to.scheme()+"://"+addr, "scheduler", client.Address())
	return serve(ctx, ln, newHTTPServer(apierr.Unrouted(mux)))
}
