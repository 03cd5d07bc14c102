// Command gantry is Gantry's one binary: each component as a subcommand
// (scheduler, activator, autoscaler, worker), all of them in one process
// (dev), and the client commands (models, endpoints, invoke).
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/gantry/gantry/api"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := &cobra.Command{
		Use:           "gantry",
		Short:         "Gantry serves MLflow models on Nomad, scaling each to zero when idle",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(devCmd(), schedulerCmd(), activatorCmd(), autoscalerCmd(), workerCmd(),
		loggerCmd(), brokerCmd(), modelsCmd(), endpointsCmd(), invokeCmd(), tablesCmd(), abReportCmd(), jobsCmd(), monitorsCmd(), featuresCmd(),
		usersCmd(), groupsCmd(), servicePrincipalsCmd(), usageCmd())
	bindEnv(root)
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "error:", describe(err))
		os.Exit(1)
	}
}

// bindEnv gives every flag a GANTRY_<FLAG> environment variable, shown in
// --help, which sets the flag when it is not given on the command line.
func bindEnv(c *cobra.Command) {
	bind := func(fs *pflag.FlagSet) {
		fs.VisitAll(func(f *pflag.Flag) {
			if f.Name == "help" || strings.Contains(f.Usage, "(env ") {
				return
			}
			env := "GANTRY_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
			f.Usage += " (env " + env + ")"
		})
	}
	bind(c.PersistentFlags())
	bind(c.Flags())
	prev := c.PersistentPreRunE
	c.PersistentPreRunE = func(cmd *cobra.Command, args []string) error {
		var err error
		cmd.Flags().VisitAll(func(f *pflag.Flag) {
			env := "GANTRY_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
			if v, ok := os.LookupEnv(env); ok && !f.Changed && err == nil {
				if e := f.Value.Set(v); e != nil {
					err = fmt.Errorf("%s=%q: %w", env, v, e)
				}
			}
		})
		if err == nil && prev != nil {
			err = prev(cmd, args)
		}
		return err
	}
	for _, sub := range c.Commands() {
		bindEnv(sub)
	}
}

// describe turns an API error into its message, so the CLI prints what the
// server said rather than a Go error chain.
func describe(err error) string {
	var ue *api.UnexpectedResponseError
	var ae *api.Error
	if errors.As(err, &ae) {
		return ae.Message + " (" + ae.Code + ")"
	}
	if errors.As(err, &ue) {
		return ue.Error()
	}
	return err.Error()
}
