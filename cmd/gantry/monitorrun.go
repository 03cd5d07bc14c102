package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/monitors"
	"github.com/spf13/cobra"
)

// monitorOptions tune the drift monitors' scheduled refresh, which runs
// in the logger.
type monitorOptions struct {
	interval, lookback time.Duration
	// scheduler is the API that `gantry logger` reads definitions from;
	// gantry dev reads them in-process.
	scheduler string
	// token is the bearer token sent to it: an admin's, to see every
	// monitor (a caller lists those of endpoints it may view).
	token string
	ca    string // --ca-cert: the scheduler's authorities
}

func (o *monitorOptions) flags(c *cobra.Command, remote bool) {
	c.Flags().DurationVar(&o.interval, "monitor-interval", time.Minute, "how often drift monitors refresh their recently closed windows")
	c.Flags().DurationVar(&o.lookback, "monitor-lookback", 10*time.Minute, "how long after it closes a monitor window is refreshed again, for late rows")
	if remote {
		c.Flags().StringVar(&o.scheduler, "scheduler", "", "URL of the Gantry API to read drift monitor definitions from (none: monitors are not refreshed)")
		tokenFlag(c, &o.token, "the components' token (DATA_DIR/"+api.ComponentsTokenFile+" of the scheduler) or an admin's, to read every drift monitor's definition")
	}
}

// runMonitors refreshes the monitors that list names until ctx ends.
func runMonitors(ctx context.Context, o *monitorOptions, rf *monitors.Refresher, list func(context.Context) ([]*monitors.Monitor, error), log *slog.Logger) {
	r := &monitors.Runner{Refresher: rf, Monitors: list, Tick: o.interval, Lookback: o.lookback, Logger: log}
	log.Info("drift monitors are on", "interval", o.interval, "lookback", o.lookback)
	r.Run(ctx)
}

// apiMonitors lists the monitor definitions through the API.
func apiMonitors(cl *api.Client) func(context.Context) ([]*monitors.Monitor, error) {
	return func(ctx context.Context) ([]*monitors.Monitor, error) {
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		as, _, err := cl.Monitors().List((&api.QueryOptions{}).WithContext(ctx))
		if err != nil {
			return nil, err
		}
		out := make([]*monitors.Monitor, len(as))
		for i := range as {
			out[i] = monitors.FromAPI(&as[i])
		}
		return out, nil
	}
}
