package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/spf13/cobra"
)

func usageCmd() *cobra.Command {
	var addr, since, by, plot string
	c := &cobra.Command{
		Use:   "usage",
		Short: "Print what each endpoint, entity or requester used and cost (invocations, tokens, replica-hours), and plot it over time",
		Long: `Print GET /api/2.0/gantry/usage as a table: per key, the invocations of endpoints that track
usage (ai_gateway.usage_tracking_config) with their errors and tokens, and the provisioned time of
every served entity (replica-hours by workload, priced with the scheduler's --unit-costs) with what
scale to zero saved. Admins only.`,
		Example: `  gantry usage --since 7d --by endpoint
  gantry usage --since 24h --by requester
  gantry usage --since 7d --by usage_context.team
  gantry usage --since 30d --by entity --plot usage.svg   # or usage.png`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if plot != "" && !strings.HasSuffix(plot, ".svg") && !strings.HasSuffix(plot, ".png") {
				return fmt.Errorf("--plot %q: want a file name ending in .svg or .png", plot)
			}
			cl, err := newClient(addr)
			if err != nil {
				return err
			}
			u, _, err := cl.Usage(api.UsageOptions{Since: since, By: by}, nil)
			if err != nil {
				return err
			}
			if err := printUsage(cmd.OutOrStdout(), u); err != nil {
				return err
			}
			if plot == "" {
				return nil
			}
			panels := usagePanels(u)
			var b []byte
			if strings.HasSuffix(plot, ".svg") {
				b = plotSVG("usage since "+u.Since, panels)
			} else if b, err = plotPNG(panels); err != nil {
				return err
			}
			if err := os.WriteFile(plot, b, 0o644); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s (%d charts of %d %ss, per %s)\n", plot, len(panels), len(u.Series), u.By, u.Step)
			return nil
		},
	}
	clientFlags(c, &addr)
	c.Flags().StringVar(&since, "since", "7d", "how far back: a count of d, h or m (7d, 24h, 30m)")
	c.Flags().StringVar(&by, "by", "endpoint", "group by endpoint, entity, requester or usage_context.KEY (a key of the requests' usage_context)")
	c.Flags().StringVar(&plot, "plot", "", "write a chart of requests, tokens, replica-hours and cost over time to this .svg or .png file")
	return c
}

// printUsage writes u's rows as a table, with a total line.
func printUsage(w io.Writer, u *api.UsageResponse) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "%s\tREQUESTS\tERRORS\tINPUT_TOKENS\tOUTPUT_TOKENS\tREPLICA_HOURS\tCOST\tSAVED_HOURS\tSAVED_COST\tWORKLOADS\t\n", strings.ToUpper(u.By))
	var total api.UsageRow
	for _, r := range u.Rows {
		var ws []string
		for _, wl := range r.Workloads {
			ws = append(ws, fmt.Sprintf("%s/%s %sh", orDash(wl.WorkloadType), orDash(wl.WorkloadSize), fmtAmount(wl.ReplicaSeconds/3600)))
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t\n", orDash(r.Key), r.Requests, r.Errors, r.InputTokens, r.OutputTokens,
			fmtAmount(r.ReplicaSeconds/3600), fmtAmount(r.Cost), fmtAmount(r.SavedReplicaSeconds/3600), fmtAmount(r.SavedCost), strings.Join(ws, ", "))
		total.Requests += r.Requests
		total.Errors += r.Errors
		total.InputTokens += r.InputTokens
		total.OutputTokens += r.OutputTokens
		total.ReplicaSeconds += r.ReplicaSeconds
		total.Cost += r.Cost
		total.SavedReplicaSeconds += r.SavedReplicaSeconds
		total.SavedCost += r.SavedCost
	}
	fmt.Fprintf(tw, "total\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t%s\t\t\n", total.Requests, total.Errors, total.InputTokens, total.OutputTokens,
		fmtAmount(total.ReplicaSeconds/3600), fmtAmount(total.Cost), fmtAmount(total.SavedReplicaSeconds/3600), fmtAmount(total.SavedCost))
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(u.Rows) == 0 {
		fmt.Fprintf(w, "no usage since %s: enable usage_tracking_config on an endpoint (PUT .../ai-gateway); provisioned time needs the scheduler's Kafka (--kafka-brokers) and a logger\n", u.Since)
	}
	return nil
}

// fmtAmount writes hours and costs with 2 decimals, or 4 below 0.01 so
// that a few replica-seconds do not read as none.
func fmtAmount(v float64) string {
	switch {
	case v == 0:
		return "0"
	case v < 0.01:
		return fmt.Sprintf("%.4f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

// usagePanels are the charts of u's series: requests, tokens (input plus
// output), replica-hours and cost per bucket, one line per key; a chart
// with nothing in any bucket is left out.
func usagePanels(u *api.UsageResponse) []panel {
	per := "per " + u.Step
	metrics := []struct {
		name string
		v    func(api.UsagePoint) float64
	}{
		{"requests", func(p api.UsagePoint) float64 { return float64(p.Requests) }},
		{"tokens (input + output)", func(p api.UsagePoint) float64 { return float64(p.InputTokens + p.OutputTokens) }},
		{"replica-hours", func(p api.UsagePoint) float64 { return p.ReplicaSeconds / 3600 }},
		{"cost", func(p api.UsagePoint) float64 { return p.Cost }},
	}
	var out []panel
	for _, m := range metrics {
		p := panel{column: m.name, metric: per}
		nonzero := false
		for _, se := range u.Series {
			s := series{name: orDash(se.Key)}
			for _, pt := range se.Points {
				v := m.v(pt)
				nonzero = nonzero || v != 0
				s.pts = append(s.pts, point{t: time.UnixMilli(pt.TimeMs), v: v})
			}
			p.series = append(p.series, s)
		}
		if nonzero {
			out = append(out, p)
		}
	}
	return out
}
