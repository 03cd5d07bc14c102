package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/spf13/cobra"
)

func monitorsCmd() *cobra.Command {
	var addr string
	c := &cobra.Command{Use: "monitors", Short: "Define drift monitors over inference tables, run them and read their reports"}
	clientFlags(c, &addr)

	var file string
	create := &cobra.Command{
		Use:   "create -f FILE",
		Short: "Create a monitor from a JSON file (the body of POST /api/2.0/gantry/monitors)",
		Example: `  cat > drift.json <<EOF
  {"name": "fraud_drift", "endpoint": "fraud", "granularity": "1h",
   "columns": [{"name": "amount", "kind": "numeric"}, {"name": "country", "kind": "categorical"}],
   "problem_type": "classification", "thresholds": {"ks_statistic": 0.2, "js_distance": 0.1},
   "alert_webhook_url": "https://hooks.example.com/gantry"}
  EOF
  gantry monitors create -f drift.json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var m api.Monitor
			if err := readJSON(file, &m); err != nil {
				return err
			}
			cl, err := newClient(addr)
			if err != nil {
				return err
			}
			out, _, err := cl.Monitors().Create(&m, nil)
			if err != nil {
				return err
			}
			return printJSON(cmd.OutOrStdout(), out)
		},
	}
	create.Flags().StringVarP(&file, "file", "f", "", "JSON file with the monitor definition")
	create.MarkFlagRequired("file")
	c.AddCommand(create)

	c.AddCommand(&cobra.Command{
		Use:   "get NAME",
		Short: "Print a monitor's definition",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := newClient(addr)
			if err != nil {
				return err
			}
			m, _, err := cl.Monitors().Get(args[0], nil)
			if err != nil {
				return err
			}
			return printJSON(cmd.OutOrStdout(), m)
		},
	})
	c.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "List monitors",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := newClient(addr)
			if err != nil {
				return err
			}
			ms, _, err := cl.Monitors().List(nil)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tENDPOINT\tGRANULARITY\tTABLE\tCOLUMNS\tWEBHOOK")
			for _, m := range ms {
				var cols []string
				for _, c := range m.Columns {
					cols = append(cols, c.Name)
				}
				if m.ProblemType != "" {
					cols = append(cols, "prediction")
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", m.Name, m.Endpoint, m.Granularity, m.Table, strings.Join(cols, ","), orDash(m.AlertWebhookURL))
			}
			return tw.Flush()
		},
	})
	c.AddCommand(&cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a monitor (its metric tables stay)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := newClient(addr)
			if err != nil {
				return err
			}
			if _, err := cl.Monitors().Delete(args[0], nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "deleted monitor %s\n", args[0])
			return nil
		},
	})

	var lookback time.Duration
	run := &cobra.Command{
		Use:   "run NAME",
		Short: "Refresh a monitor's recently closed windows now and send their alerts",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := newClient(addr)
			if err != nil {
				return err
			}
			run, _, err := cl.Monitors().Run(args[0], lookback, nil)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "monitor %s: refreshed windows from %s to %s; %d alerts sent\n", args[0],
				run.From.Format(time.RFC3339), run.To.Format(time.RFC3339), len(run.Alerts))
			for _, a := range run.Alerts {
				fmt.Fprintf(w, "alert %s: %s %s %s %s of %s = %s (threshold %s)\n", a.ID, a.WindowStart.Format(time.RFC3339),
					a.DriftType, a.Column, a.Metric, a.ServedEntity, fmtValue(&a.Value), fmtValue(&a.Threshold))
			}
			for _, e := range run.AlertErrors {
				fmt.Fprintf(w, "alert failed (retried on the next refresh): %s\n", e)
			}
			return nil
		},
	}
	run.Flags().DurationVar(&lookback, "lookback", 0, "refresh the windows that closed in this last span (default: 24 windows)")
	c.AddCommand(run)

	var windows int
	var plot string
	report := &cobra.Command{
		Use:   "report NAME",
		Short: "Print the metrics of a monitor's latest windows, and plot each column's drift over time",
		Example: `  gantry monitors report fraud_drift --windows 24
  gantry monitors report fraud_drift --plot drift.svg   # or drift.png`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if plot != "" && !strings.HasSuffix(plot, ".svg") && !strings.HasSuffix(plot, ".png") {
				return fmt.Errorf("--plot %q: want a file name ending in .svg or .png", plot)
			}
			cl, err := newClient(addr)
			if err != nil {
				return err
			}
			rep, _, err := cl.Monitors().Report(args[0], windows, nil)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "WINDOW\tENTITY\tSLICE\tCOLUMN\tTYPE\tMETRIC\tVALUE\tTHRESHOLD\tCROSSED")
			for _, rows := range [][]api.MonitorMetric{rep.Profile, rep.Drift} {
				for _, r := range rows {
					slice := "-"
					if r.SliceKey != "" {
						slice = r.SliceKey + "=" + r.SliceValue
					}
					crossed := ""
					if r.Crossed {
						crossed = "yes"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.WindowStart.Format(time.RFC3339), r.ServedEntity, slice,
						r.Column, orDash(r.DriftType), r.Metric, fmtValue(r.Value), fmtValue(r.Threshold), crossed)
				}
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if len(rep.Profile) == 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "monitor %s has no metrics yet: run `gantry monitors run %s`\n", args[0], args[0])
			}
			if plot == "" {
				return nil
			}
			panels := drawPanels(rep)
			var b []byte
			if strings.HasSuffix(plot, ".svg") {
				b = plotSVG("monitor "+rep.Monitor, panels)
			} else if b, err = plotPNG(panels); err != nil {
				return err
			}
			if err := os.WriteFile(plot, b, 0o644); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s (%d columns)\n", plot, len(panels))
			return nil
		},
	}
	report.Flags().IntVar(&windows, "windows", 12, "how many of the latest windows to show")
	report.Flags().StringVar(&plot, "plot", "", "write a chart of each column's drift over time to this .svg or .png file")
	c.AddCommand(report)
	return c
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func fmtValue(v *float64) string {
	if v == nil {
		return "-"
	}
	return strconv.FormatFloat(*v, 'g', 6, 64)
}
