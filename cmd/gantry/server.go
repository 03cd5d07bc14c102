package main

import (
	"context"
	"errors"
	"fmt"
	"github.com/gantry/gantry/api"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/gantry/gantry/activator"
	"github.com/gantry/gantry/features"
	"github.com/gantry/gantry/internal/apierr"
	"github.com/gantry/gantry/loggers/capture"
	"github.com/spf13/cobra"
)

func schedulerCmd() *cobra.Command {
	var o controlPlaneOptions
	var co clickhouseOptions
	c := &cobra.Command{
		Use:   "scheduler",
		Short: "Run the control plane: endpoints API, model registry, orchestrator driver, route table",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runScheduler(cmd.Context(), &o, &co)
		},
	}
	o.flags(c, "127.0.0.1:8081")
	o.onlineStore.flags(c, false)
	co.flags(c, false)
	o.auditKafka.flags(c, false) // audit events travel with invocation records
	return c
}

func runScheduler(ctx context.Context, o *controlPlaneOptions, co *clickhouseOptions) error {
	log := slog.Default()
	reg := newRegistry()
	o.tablesOff = "the scheduler was started without --clickhouse"
	defer o.startAudit(log, reg)()
	if co.addr != "" {
		db, err := co.open(ctx)
		if err != nil {
			return err
		}
		defer db.Close()
		o.tables = db
	}
	o.featuresOff = "the scheduler was started without --online-store redis://host:port/db"
	if o.onlineStore.url != "" {
		fs, closeFeatures, err := schedulerFeatures(ctx, &o.onlineStore, co, log)
		if err != nil {
			return err
		}
		defer closeFeatures()
		o.features, o.featuresOff = fs, ""
	}
	cp, err := openControlPlane(o, log, reg)
	if err != nil {
		return err
	}
	defer cp.close()
	mux := http.NewServeMux()
	// Every path but the health ones: the scheduler answers those it does
	// not serve (/.well-known/databricks-config too) in API.md's shape.
	mux.Handle("/", cp.sched.Handler())
	health(mux, reg, func() bool { return true })

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go cp.sched.Run(ctx)
	log.Info("gantry scheduler is up", "url", o.tls.scheme()+"://"+o.listen, "data_dir", o.dataDir)
	return serve(ctx, cp.ln, newHTTPServer(mux))
}

func activatorCmd() *cobra.Command {
	var listen, schedulerURL, autoscalerURL string
	var qo queueOptions
	var ko kafkaOptions
	var ao accessOptions
	var fo onlineStoreOptions
	c := &cobra.Command{
		Use:   "activator",
		Short: "Run the data plane: route invocations to workers, following the scheduler's route table",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runActivator(cmd.Context(), listen, schedulerURL, autoscalerURL, &qo, &ko, &ao, &fo)
		},
	}
	ao.flags(c)
	ko.flags(c, false)
	fo.flags(c, false)
	fo.cacheFlags(c)
	c.Flags().StringVar(&listen, "listen", "127.0.0.1:8080", "address to serve invocations on")
	c.Flags().StringVar(&schedulerURL, "scheduler", "http://127.0.0.1:8081", "URL of the scheduler whose route table to follow")
	c.Flags().StringVar(&autoscalerURL, "autoscaler", "", "URL of the autoscaler (gantry autoscaler) to report load and cold starts to; empty: no autoscaling")
	qo.flags(c)
	return c
}

// accessOptions are how gantry activator authenticates to the scheduler,
// whether it checks invocations, and its TLS on both sides.
type accessOptions struct {
	token string
	auth  bool
	tls   tlsOptions
	ca    string // --ca-cert: the scheduler's and autoscaler's authorities
}

func (o *accessOptions) flags(c *cobra.Command) {
	o.tls.flags(c)
	caFlag(c, &o.ca)
	tokenFlag(c, &o.token, "the components' token (DATA_DIR/"+api.ComponentsTokenFile+" of the scheduler) or an admin's, to follow the route table and the access snapshot and to report load to the autoscaler")
	c.Flags().BoolVar(&o.auth, "auth", true, "check every invocation's bearer token against the scheduler's access snapshot (--auth=false: anyone who reaches the port may invoke every endpoint; for a scheduler with --auth=false)")
}

// tokenFlag adds --token (GANTRY_TOKEN): the bearer token a component
// sends to the scheduler. Its value is never logged.
func tokenFlag(c *cobra.Command, v *string, what string) {
	c.Flags().StringVar(v, "token", "", "bearer token sent to the scheduler: "+what)
}

func runActivator(ctx context.Context, listen, schedulerURL, autoscalerURL string, qo *queueOptions, ko *kafkaOptions, ao *accessOptions, fo *onlineStoreOptions) error {
	log := slog.Default()
	hc, err := caClient(ao.ca)
	if err != nil {
		return fmt.Errorf("--ca-cert: %w", err)
	}
	var access activator.AccessSource
	if ao.auth {
		if ao.token == "" {
			return errors.New("--token (GANTRY_TOKEN) is required to follow the scheduler's route table and access snapshot; with a scheduler that runs --auth=false, pass --auth=false")
		}
		access = &activator.HTTPAccess{Base: schedulerURL, Token: ao.token, Client: hc}
	} else {
		log.Warn("invocations are not checked (--auth=false): anyone who reaches this port may invoke every endpoint")
	}
	reg := newRegistry()
	var look features.Looker // nil: entities that look features up get 503
	if fo.url != "" {
		st, err := fo.openStore(ctx)
		if err != nil {
			return err
		}
		defer st.Close()
		look = fo.looker(st, reg)
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	addr := ln.Addr().String()
	if ln, err = ao.tls.wrap(ln, log); err != nil {
		return err
	}
	var report *activator.Reporter
	poke := func(string) {} // no autoscaler: nothing to wake
	if autoscalerURL != "" {
		if u, err := url.Parse(autoscalerURL); err != nil || u.Host == "" {
			ln.Close()
			return fmt.Errorf("--autoscaler %q: want a URL such as http://127.0.0.1:8082", autoscalerURL)
		}
		host, _ := os.Hostname()
		report = &activator.Reporter{URL: autoscalerURL, ID: host + "/" + addr, Logger: log, Client: hc, Token: ao.token}
		poke = report.Poke
	}
	var records *capture.Capturer
	captured := func() {}
	if len(ko.list()) > 0 {
		c, closeWriter := newCapture(ko, log, reg)
		defer closeWriter()
		records, captured = c, runCapture(c)
	} else {
		log.Warn("no --kafka-brokers: invocations are not captured to inference tables")
	}
	act := newActivator(&activator.HTTPRoutes{Base: schedulerURL, Token: ao.token, Client: hc}, access, poke, records, look, qo, log, reg)
	mux := http.NewServeMux()
	health(mux, reg, act.Ready)
	front := newFront(act.Handler, apierr.Unrouted(mux), 0) // the limits and timeouts of gantry dev's

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go act.Run(ctx)
	if report != nil {
		go report.Run(ctx, act)
	}
	log.Info("gantry activator is up", "url", ao.tls.scheme()+"://"+addr, "scheduler", schedulerURL, "autoscaler", autoscalerURL)
	err = serve(ctx, ln, fastServer{front})
	sctx, scancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer scancel()
	act.WaitShadows(sctx)
	captured() // produce what the last requests captured
	return err
}

// withBodyTimeout gives a request body bodyTimeout to arrive from the end
// of its headers (uploadTimeout for a model upload), on the scheduler's
// net/http server; ReadHeaderTimeout bounds the headers. It is not the
// server's ReadTimeout: that deadline also stands while a handler runs,
// and net/http cancels the request's context when it passes, cutting off
// blocking route queries and table queries that take their time. Here the
// deadline goes once the body has been read to its end.
func withBodyTimeout(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil && r.Body != http.NoBody {
			d := bodyTimeout
			if isUpload([]byte(r.Method), []byte(r.URL.EscapedPath())) {
				d = uploadTimeout
			}
			rc := http.NewResponseController(w)
			if rc.SetReadDeadline(time.Now().Add(d)) == nil {
				r.Body = &deadlineBody{ReadCloser: r.Body, rc: rc}
			}
		}
		h.ServeHTTP(w, r)
	})
}

// deadlineBody lifts the connection's read deadline once the body has been
// read to its end (or failed).
type deadlineBody struct {
	io.ReadCloser
	rc   *http.ResponseController
	done bool
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && !b.done {
		b.done = true
		b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}
