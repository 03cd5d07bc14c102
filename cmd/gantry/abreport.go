package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/loggers/report"
	"github.com/spf13/cobra"
)

func abReportCmd() *cobra.Command {
	var addr, labels, key, labelCol string
	var since time.Duration
	var threshold optionalFloat
	c := &cobra.Command{
		Use:   "ab-report ENDPOINT",
		Short: "Compare an endpoint's served entities from its inference table",
		Long: `Compare the served entities of an endpoint over a recent window, from its
inference table: per entity, requests, error rate (status >= 400), latency
p50/p99 (exact, over every request), and the predictions: mean and
p10/p50/p90 for numbers, the shares of the most frequent values for class
labels. Shadow routes' answers, which no client saw, have rows of their own.

With --labels, a table of true labels in the same ClickHouse, the report adds
accuracy: the first prediction of each successful answer against the label
whose --key column equals the request's client_request_id.`,
		Example: `  gantry ab-report fraud
  gantry ab-report fraud --since 24h --labels ml.fraud_outcomes --label-col is_fraud --threshold 0.5
  gantry ab-report iris --labels ml.iris_truth --key request --label-col species`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if since <= 0 {
				return fmt.Errorf("--since %s: want a positive duration such as 30m or 24h", since)
			}
			f := cmd.Flags()
			if labels == "" && (f.Changed("key") || f.Changed("label-col") || threshold.v != nil) {
				return errors.New("--key, --label-col and --threshold need --labels")
			}
			to := time.Now()
			spec := report.Spec{Endpoint: args[0], From: to.Add(-since), To: to}
			if labels != "" {
				l, err := report.ParseLabels(labels, key, labelCol)
				if err != nil {
					return err
				}
				l.Threshold = threshold.v
				spec.Labels = l
			}
			cl, err := newClient(addr)
			if err != nil {
				return err
			}
			q := func(ctx context.Context, sql string) (*api.QueryResult, error) {
				return cl.Tables().Query(spec.Endpoint, sql, (&api.WriteOptions{}).WithContext(ctx))
			}
			rep, err := report.Build(cmd.Context(), q, spec)
			if errors.Is(err, report.ErrNoRequests) {
				return fmt.Errorf("no requests of endpoint %s were logged in the last %s (since %s UTC); try a longer --since (rows reach the table a few seconds after their request)",
					spec.Endpoint, since, spec.From.UTC().Format(time.DateTime))
			}
			if err != nil {
				return err
			}
			return printReport(cmd.OutOrStdout(), rep, spec.Labels, since)
		},
	}
	clientFlags(c, &addr)
	c.Flags().DurationVar(&since, "since", time.Hour, "how far back the report looks")
	c.Flags().StringVar(&labels, "labels", "", "table of true labels, database.table, in the inference tables' ClickHouse: adds accuracy")
	c.Flags().StringVar(&key, "key", "client_request_id", "column of the labels table that holds each request's client_request_id")
	c.Flags().StringVar(&labelCol, "label-col", "label", "column of the labels table that holds the true label")
	c.Flags().Var(&threshold, "threshold", "compare a numeric prediction as 1 at or above this value and 0 below (a probability against 0/1 labels)")
	return c
}

func printReport(w io.Writer, rep *report.Report, labels *report.Labels, since time.Duration) error {
	fmt.Fprintf(w, "endpoint %s: requests from %s to %s UTC (last %s)\n", rep.Endpoint,
		rep.From.UTC().Format(time.DateTime), rep.To.UTC().Format(time.DateTime), since)
	if labels != nil {
		threshold := ""
		if labels.Threshold != nil {
			threshold = fmt.Sprintf(" (a number >= %g counts as 1, below as 0)", *labels.Threshold)
		}
		fmt.Fprintf(w, "accuracy: successful answers whose first prediction%s equals %s.%s, matched on %s.%s = client_request_id\n",
			threshold, labels.Table, labels.Column, labels.Table, labels.Key)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	header := "ENTITY\tSHADOW\tREQUESTS\tERROR RATE\tP50 MS\tP99 MS\tPREDICTIONS"
	if rep.Labelled {
		header += "\tACCURACY"
	}
	fmt.Fprintln(tw, header)
	// One entity per line: a class label with a tab or newline would
	// break the table.
	cell := strings.NewReplacer("\t", `\t`, "\n", `\n`).Replace
	for _, e := range rep.Entities {
		shadow := "no"
		if e.Shadow {
			shadow = "yes"
		}
		line := fmt.Sprintf("%s\t%s\t%d\t%.2f%% (%d)\t%d\t%d\t%s", cell(e.Name), shadow, e.Requests,
			100*e.ErrorRate(), e.Errors, e.P50Ms, e.P99Ms, cell(e.Predictions.Summary()))
		if rep.Labelled {
			line += "\t" + e.Accuracy.String()
		}
		fmt.Fprintln(tw, line)
	}
	return tw.Flush()
}

// optionalFloat is a float flag that knows whether it was given, on the
// command line or through its environment variable alike.
type optionalFloat struct{ v *float64 }

func (o *optionalFloat) String() string {
	if o.v == nil {
		return ""
	}
	return strconv.FormatFloat(*o.v, 'g', -1, 64)
}

func (o *optionalFloat) Set(s string) error {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return fmt.Errorf("%q is not a number", s)
	}
	o.v = &f
	return nil
}

func (o *optionalFloat) Type() string { return "float" }
