package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/gantry/gantry/activator"
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
	co.flags(c, false)
	return c
}

func runScheduler(ctx context.Context, o *controlPlaneOptions, co *clickhouseOptions) error {
	log := slog.Default()
	reg := newRegistry()
	o.tablesOff = "the scheduler was started without --clickhouse"
	if co.addr != "" {
		db, err := co.open(ctx)
		if err != nil {
			return err
		}
		defer db.Close()
		o.tables = db
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
	srv := &http.Server{
		Handler:           withBodyTimeout(mux),
		ReadHeaderTimeout: headerTimeout,
		IdleTimeout:       idleTimeout,
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go cp.sched.Run(ctx)
	go func() {
		<-ctx.Done()
		sctx, scancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer scancel()
		srv.Shutdown(sctx)
	}()
	log.Info("gantry scheduler is up", "url", "http://"+o.listen, "data_dir", o.dataDir)
	if err := srv.Serve(cp.ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func activatorCmd() *cobra.Command {
	var listen, schedulerURL, autoscalerURL string
	var buffered int64
	var ko kafkaOptions
	c := &cobra.Command{
		Use:   "activator",
		Short: "Run the data plane: route invocations to workers, following the scheduler's route table",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runActivator(cmd.Context(), listen, schedulerURL, autoscalerURL, buffered, &ko)
		},
	}
	ko.flags(c, false)
	c.Flags().StringVar(&listen, "listen", "127.0.0.1:8080", "address to serve invocations on")
	c.Flags().StringVar(&schedulerURL, "scheduler", "http://127.0.0.1:8081", "URL of the scheduler whose route table to follow")
	c.Flags().StringVar(&autoscalerURL, "autoscaler", "", "URL of the autoscaler (gantry autoscaler) to report load and cold starts to; empty: no autoscaling")
	bufferedFlag(c, &buffered)
	return c
}

func runActivator(ctx context.Context, listen, schedulerURL, autoscalerURL string, buffered int64, ko *kafkaOptions) error {
	log := slog.Default()
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	reg := newRegistry()
	cfg := activator.Config{Logger: log, Metrics: activator.NewMetrics(reg), MaxBufferedBytes: buffered}
	var report *activator.Reporter
	if autoscalerURL != "" {
		if u, err := url.Parse(autoscalerURL); err != nil || u.Host == "" {
			ln.Close()
			return fmt.Errorf("--autoscaler %q: want a URL such as http://127.0.0.1:8082", autoscalerURL)
		}
		host, _ := os.Hostname()
		report = &activator.Reporter{URL: autoscalerURL, ID: host + "/" + ln.Addr().String(), Logger: log}
		cfg.Poke = report.Poke
	}
	var captured func()
	if len(ko.list()) > 0 {
		c, closeWriter := newCapture(ko, log, reg)
		defer closeWriter()
		cfg.Capture = c
		captured = runCapture(c)
	} else {
		log.Warn("no --kafka-brokers: invocations are not captured to inference tables")
	}
	act := activator.New(cfg, &activator.HTTPRoutes{Base: schedulerURL})
	mux := http.NewServeMux()
	health(mux, reg, act.Ready)
	srv := newFront(act.Handler, jsonErrors(mux), 0) // the limits and timeouts of gantry dev's

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go act.Run(ctx)
	if report != nil {
		go report.Run(ctx, act)
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	log.Info("gantry activator is up", "url", "http://"+ln.Addr().String(), "scheduler", schedulerURL, "autoscaler", autoscalerURL)
	select {
	case err := <-serveErr:
		return err
	case <-ctx.Done():
	}
	sctx, scancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer scancel()
	err = srv.ShutdownWithContext(sctx)
	act.WaitShadows(sctx)
	if captured != nil {
		captured() // produce what the last requests captured
	}
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
