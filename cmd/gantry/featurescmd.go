package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/features"
	"github.com/gantry/gantry/features/publish"
	"github.com/spf13/cobra"
)

// featureAPI calls the feature-store API of the Gantry at addr with the
// CLI's token (GANTRY_TOKEN, else the data dir's admin token), within
// timeout (0: none, for a publish, which copies the table within the
// request).
func featureAPI(ctx context.Context, timeout time.Duration, addr, method, path string, in, out any) error {
	cfg := api.DefaultConfig()
	cfg.Address = addr
	hc := &http.Client{Timeout: timeout}
	if cfg.CACert != "" {
		var err error
		if hc, err = api.HTTPClientWithCA(cfg.CACert); err != nil {
			return err
		}
		hc.Timeout = timeout
	}
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(cfg.Address, "/")+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if cfg.Token != "" {
		req.Header.Set("Authorization", "Bearer "+cfg.Token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		var ae api.Error
		if json.Unmarshal(b, &ae) == nil && ae.Code != "" {
			return &ae
		}
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, b)
	}
	return json.Unmarshal(b, out)
}

func featuresCmd() *cobra.Command {
	var addr string
	c := &cobra.Command{Use: "features", Short: "Feature tables in the online store, and point-in-time training sets"}
	clientFlags(c, &addr)

	var asJSON bool
	get := &cobra.Command{
		Use:   "get [SOURCE]",
		Short: "Show the published feature tables (state, rows, last sync, lag), or one of them",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var ts []api.OnlineTable
			if len(args) == 1 {
				var t api.OnlineTable
				if err := featureAPI(cmd.Context(), requestTimeout, addr, "GET", "/api/2.0/feature-store/tables/"+url.PathEscape(args[0]), nil, &t); err != nil {
					return err
				}
				ts = append(ts, t)
			} else {
				var l api.ListOnlineTablesResponse
				if err := featureAPI(cmd.Context(), requestTimeout, addr, "GET", "/api/2.0/feature-store/tables", nil, &l); err != nil {
					return err
				}
				ts = l.Tables
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), ts)
			}
			return printTables(cmd.OutOrStdout(), ts)
		},
	}
	get.Flags().BoolVar(&asJSON, "json", false, "print the API's JSON")

	var req api.PublishRequest
	var spec api.PublishSpec
	pub := &cobra.Command{
		Use:   "publish SOURCE",
		Short: "Publish a ClickHouse table (db.table) to the online store",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r := req
			r.PublishSpec = spec
			var t api.OnlineTable
			if err := featureAPI(cmd.Context(), 0, addr, "POST", "/api/2.0/feature-store/tables/"+url.PathEscape(args[0])+"/publish", r, &t); err != nil {
				return err
			}
			return printTables(cmd.OutOrStdout(), []api.OnlineTable{t})
		},
	}
	pub.Flags().StringVar(&spec.OnlineTableName, "online-table-name", "", "name of the online table (default: the source's table name)")
	pub.Flags().StringVar(&spec.PublishMode, "mode", api.PublishTriggered, "TRIGGERED, CONTINUOUS or SNAPSHOT")
	pub.Flags().StringSliceVar(&req.PrimaryKeyColumns, "primary-key", nil, "primary key columns")
	pub.Flags().StringVar(&req.TimeseriesKey, "timeseries-key", "", "column whose newest value picks each key's row")

	var specName, labels, ts, out string
	var co clickhouseOptions
	train := &cobra.Command{
		Use:   "training-set --spec S --labels db.table --timestamp ts --out db.train",
		Short: "Write a training table: each label row joined to its features as of its timestamp (point-in-time correct)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if co.addr == "" {
				return fmt.Errorf("--clickhouse is required: the ClickHouse that holds the labels and the feature tables")
			}
			var fs api.FeatureSpec
			if err := featureAPI(ctx, requestTimeout, addr, "GET", "/api/2.0/gantry/feature-specs/"+url.PathEscape(specName), nil, &fs); err != nil {
				return err
			}
			tables := map[string]api.OnlineTable{}
			src := func(name string) (api.OnlineTable, bool, error) {
				var t api.OnlineTable
				err := featureAPI(ctx, requestTimeout, addr, "GET", "/api/2.0/feature-store/tables/"+url.PathEscape(name), nil, &t)
				if ae, ok := err.(*api.Error); ok && ae.Code == api.ErrResourceDoesNotExist {
					return t, false, nil
				}
				if err == nil {
					tables[name] = t
				}
				return t, err == nil, err
			}
			route, err := features.Resolve(fs, src, nil, false)
			if err != nil {
				return err
			}
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			conn, err := publish.OpenClickHouse(cctx, co.addr, co.user, co.password)
			cancel()
			if err != nil {
				return err
			}
			defer conn.Close()
			if err := publish.TrainingSet(ctx, conn, route, tables, labels, ts, out); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s: %s with the features of %s as of %s\n", out, labels, specName, ts)
			return nil
		},
	}
	train.Flags().StringVar(&specName, "spec", "", "feature spec (POST /api/2.0/gantry/feature-specs)")
	train.Flags().StringVar(&labels, "labels", "", "ClickHouse table of labels (db.table) with the spec's lookup keys and the timestamp column")
	train.Flags().StringVar(&ts, "timestamp", "", "column of the labels table: each row gets the features as of this time")
	train.Flags().StringVar(&out, "out", "", "ClickHouse table to write (db.table; replaced if it exists)")
	for _, f := range []string{"spec", "labels", "timestamp", "out"} {
		train.MarkFlagRequired(f)
	}
	co.flags(train, false)

	var specFile string
	createSpec := &cobra.Command{
		Use:   "create-spec -f FILE",
		Short: "Create a feature spec from a JSON file (the body of POST /api/2.0/gantry/feature-specs): serve it as an endpoint's entity_name, or attach it to a model version (gantry models attach-spec)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var fs api.FeatureSpec
			if err := readJSON(specFile, &fs); err != nil {
				return err
			}
			if err := featureAPI(cmd.Context(), requestTimeout, addr, "POST", "/api/2.0/gantry/feature-specs", fs, &fs); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "created feature spec %s\n", fs.Name)
			return nil
		},
	}
	createSpec.Flags().StringVarP(&specFile, "file", "f", "", "JSON file of the spec: {\"name\", \"features\": [{\"table_name\", \"lookup_key\", ...}]}")
	createSpec.MarkFlagRequired("file")

	c.AddCommand(get, pub, train, createSpec)
	return c
}

func printTables(w io.Writer, ts []api.OnlineTable) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SOURCE\tONLINE TABLE\tMODE\tSTATE\tROWS\tLAST SYNC\tLAG")
	for _, t := range ts {
		last := "-"
		if t.LastSync > 0 {
			last = time.UnixMilli(t.LastSync).Format(time.RFC3339)
		}
		state := t.State
		if t.Message != "" {
			state += ": " + t.Message
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", t.Source, t.Name, t.PublishMode, state, t.Rows, last, time.Duration(t.LagMs)*time.Millisecond)
	}
	return tw.Flush()
}
