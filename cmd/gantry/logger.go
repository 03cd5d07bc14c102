package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/internal/apierr"
	"github.com/gantry/gantry/loggers/local"
	"github.com/gantry/gantry/monitors"
	"github.com/spf13/cobra"
)

func loggerCmd() *cobra.Command {
	var listen string
	var webhookAllow []string
	var ko kafkaOptions
	var co clickhouseOptions
	var lo loggerOptions
	var mo monitorOptions
	var to tlsOptions
	c := &cobra.Command{
		Use:   "logger",
		Short: "Move invocation records from Kafka into ClickHouse inference tables",
		Long: `Run a logger: a member of a Kafka consumer group that inserts invocation
records into their ClickHouse inference tables in batches, and commits
offsets only after the insert. Run several for more throughput; a logger
that dies leaves its records in Kafka for the others.

With --scheduler, it also refreshes the drift monitors defined there every
--monitor-interval and posts their alerts.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if ko.brokers == "" || co.addr == "" {
				return errors.New("--kafka-brokers and --clickhouse are required")
			}
			allow, err := monitors.ParseWebhookAllow(webhookAllow)
			if err != nil {
				return fmt.Errorf("--webhook-allow: %w", err)
			}
			return runLoggerCmd(cmd.Context(), listen, &ko, &co, &lo, &mo, &to, allow)
		},
	}
	c.Flags().StringVar(&listen, "listen", "127.0.0.1:8083", "address to serve /metrics and /healthz on")
	c.Flags().StringSliceVar(&webhookAllow, "webhook-allow", nil, "non-public addresses (IPs, CIDR ranges, host names) that monitor webhooks may reach; default none")
	ko.flags(c, false)
	co.flags(c, false)
	lo.flags(c)
	mo.flags(c, true)
	to.flags(c)
	caFlag(c, &mo.ca)
	return c
}

func runLoggerCmd(ctx context.Context, listen string, ko *kafkaOptions, co *clickhouseOptions, lo *loggerOptions, mo *monitorOptions, to *tlsOptions, allow *monitors.WebhookAllow) error {
	log := slog.Default()
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	if ln, err = to.wrap(ln, log); err != nil {
		return err
	}
	db, err := co.open(ctx)
	if err != nil {
		ln.Close()
		return err
	}
	defer db.Close()
	reg := newRegistry()
	mux := http.NewServeMux()
	health(mux, reg, func() bool { return db.Ping(context.Background()) == nil })
	// The server stops after the logger has.
	ctx, stop := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- serve(ctx, ln, newHTTPServer(apierr.Unrouted(mux))) }()
	defer func() { stop(); <-served }()
	if mo.scheduler == "" {
		log.Info("drift monitors are off: give --scheduler to refresh them")
	} else {
		cfg := api.DefaultConfig()
		cfg.Address = mo.scheduler
		if mo.token != "" {
			cfg.Token = mo.token
		}
		if mo.ca != "" {
			cfg.CACert = mo.ca
		}
		cl, err := api.NewClient(cfg)
		if err != nil {
			return err
		}
		// The refresh uses db: it ends before the deferred Close.
		ctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			runMonitors(ctx, mo, monitors.NewRefresher(db, &monitors.Alerter{Logger: log, Allow: allow}), apiMonitors(cl), log)
		}()
		defer func() { cancel(); <-done }()
	}
	return runLogger(ctx, ko, lo, db, log, reg)
}

func brokerCmd() *cobra.Command {
	var listen, dataDir string
	c := &cobra.Command{
		Use:   "broker",
		Short: "Run the embedded Kafka-protocol broker on its own, for development",
		Long: `Run the in-process Kafka-protocol broker that gantry dev embeds (franz-go's
kfake) as a process of its own, keeping its log under --data-dir. It is
for development and tests; production uses a Kafka cluster.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, port, err := net.SplitHostPort(listen)
			var p int
			if err == nil {
				_, err = fmt.Sscan(port, &p)
			}
			if err != nil || !strings.HasPrefix(listen, "127.0.0.1:") {
				return fmt.Errorf("--listen %q: want 127.0.0.1:PORT (the embedded broker serves loopback only)", listen)
			}
			b, err := local.StartBroker(dataDir, p)
			if err != nil {
				return err
			}
			defer b.Close()
			slog.Info("gantry broker is up", "addr", b.Addr(), "data_dir", dataDir)
			<-cmd.Context().Done()
			return nil
		},
	}
	c.Flags().StringVar(&listen, "listen", "127.0.0.1:9092", "address to serve the Kafka protocol on")
	c.Flags().StringVar(&dataDir, "data-dir", filepath.Join(".gantry", "kafka"), "directory for the broker's log")
	return c
}

func tablesCmd() *cobra.Command {
	var addr string
	c := &cobra.Command{Use: "tables", Short: "Query endpoints' inference tables"}
	clientFlags(c, &addr)
	c.AddCommand(&cobra.Command{
		Use:   "query ENDPOINT SQL",
		Short: "Run read-only SQL over an endpoint's inference table; {table} stands for its name",
		Example: `  gantry tables query fraud "SELECT served_entity, count() FROM {table} FINAL GROUP BY served_entity"
  gantry tables query fraud "SELECT * FROM {table} FINAL ORDER BY timestamp_ms DESC LIMIT 10"`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := newClient(addr)
			if err != nil {
				return err
			}
			res, err := cl.Tables().Query(args[0], args[1], nil)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, strings.Join(res.Columns, "\t"))
			for _, row := range res.Rows {
				for i, v := range row {
					// One row per line: a body with tabs or newlines would
					// break the table.
					row[i] = strings.NewReplacer("\t", `\t`, "\n", `\n`).Replace(v)
				}
				fmt.Fprintln(tw, strings.Join(row, "\t"))
			}
			return tw.Flush()
		},
	})
	return c
}
