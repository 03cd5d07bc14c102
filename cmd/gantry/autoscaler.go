package main

import (
	"context"
	"errors"
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
	auth := true
	var so scalingOptions
	var to tlsOptions
	c := &cobra.Command{
		Use:   "autoscaler",
		Short: "Run the autoscaler: take load reports from activators and size deployments through the scheduler",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runAutoscaler(cmd.Context(), listen, schedulerURL, token, ca, auth, &so, &to)
		},
	}
	c.Flags().StringVar(&listen, "listen", "127.0.0.1:8082", "address to take activators' load reports and pokes on (gantry activator --autoscaler)")
	c.Flags().StringVar(&schedulerURL, "scheduler", "http://127.0.0.1:8081", "URL of the scheduler whose deployments to size")
	so.flags(c)
	tokenFlag(c, &token, "the components' token (DATA_DIR/"+api.ComponentsTokenFile+" of the scheduler) or an admin's, to read and size every deployment and to check who reports load")
	c.Flags().BoolVar(&auth, "auth", true, "take load reports and pokes only with a component's or an admin's bearer token, checked against the scheduler's access snapshot (--auth=false: from anyone who reaches the port; for a scheduler with --auth=false)")
	to.flags(c)
	caFlag(c, &ca)
	return c
}

func runAutoscaler(ctx context.Context, listen, schedulerURL, token, ca string, auth bool, so *scalingOptions, to *tlsOptions) error {
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
	var reportAuth *autoscaler.ReportAuth
	if auth {
		if cfg.Token == "" {
			return errors.New("--token (GANTRY_TOKEN) is required to check who reports load and to size deployments; with a scheduler that runs --auth=false, pass --auth=false")
		}
		reportAuth = &autoscaler.ReportAuth{Client: client, Logger: log}
	} else {
		log.Warn("load reports and pokes are not checked (--auth=false): anyone who reaches this port may report load")
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
	colCfg := autoscaler.CollectorConfig{Logger: log}
	ready := sched.Synced
	if reportAuth != nil {
		colCfg.Auth = reportAuth
		ready = func() bool { return sched.Synced() && reportAuth.Ready() }
	}
	col := autoscaler.NewCollector(colCfg, pokes.send)
	reg := newRegistry()
	asc := newAutoscaler(spec, sched, col.Samples, log, reg)
	pokes.connect(asc.Poke)

	mux := http.NewServeMux()
	mux.Handle("/v1/", col)
	health(mux, reg, ready)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go asc.Run(ctx)
	if reportAuth != nil {
		go reportAuth.Run(ctx)
	}
	log.Info("gantry autoscaler is up", "url", to.scheme()+"://"+addr, "scheduler", client.Address())
	return serve(ctx, ln, newHTTPServer(apierr.Unrouted(mux)))
}
