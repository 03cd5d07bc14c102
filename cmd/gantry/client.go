package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/scheduler/registry"
	"github.com/spf13/cobra"
)

// clientFlags adds --addr to a client command group.
func clientFlags(c *cobra.Command, addr *string) {
	c.PersistentFlags().StringVar(addr, "addr", api.DefaultConfig().Address, "URL of the Gantry API")
}

// newClient is DefaultConfig's client (GANTRY_TOKEN, else the admin
// token of the data dir) for the server at addr.
func newClient(addr string) (*api.Client, error) {
	cfg := api.DefaultConfig()
	cfg.Address = addr
	return api.NewClient(cfg)
}

func modelsCmd() *cobra.Command {
	var addr string
	c := &cobra.Command{Use: "models", Short: "Upload and list models in the registry"}
	clientFlags(c, &addr)
	c.AddCommand(&cobra.Command{
		Use:   "upload NAME DIR",
		Short: "Upload an MLflow model directory as the next version of NAME",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := newClient(addr)
			if err != nil {
				return err
			}
			if _, err := os.Stat(args[1] + "/MLmodel"); err != nil {
				return fmt.Errorf("%s is not an MLflow model directory: no MLmodel file", args[1])
			}
			var buf bytes.Buffer
			if err := registry.TarGz(&buf, args[1]); err != nil {
				return err
			}
			out, _, err := cl.Models().Upload(args[0], &buf, nil)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "uploaded %s version %s\n", args[0], out.Version)
			return nil
		},
	})
	c.AddCommand(&cobra.Command{
		Use:   "delete NAME VERSION",
		Short: "Delete a model version that no endpoint serves (its number is never given again)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := newClient(addr)
			if err != nil {
				return err
			}
			if _, err := cl.Models().Delete(args[0], args[1], nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "deleted %s version %s\n", args[0], args[1])
			return nil
		},
	})
	c.AddCommand(&cobra.Command{
		Use:   "attach-spec NAME VERSION SPEC",
		Short: "Attach a feature spec (gantry features create-spec, POST /api/2.0/gantry/feature-specs) to a model version: its endpoints look the features up",
		Args:  cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := newBoundedClient(addr)
			if err != nil {
				return err
			}
			if _, _, err := cl.Models().AttachFeatureSpec(args[0], args[1], args[2], nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "attached feature spec %s to %s version %s\n", args[2], args[0], args[1])
			return nil
		},
	})
	c.AddCommand(&cobra.Command{
		Use:   "detach-spec NAME VERSION",
		Short: "Detach the feature spec attached to a model version",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := newBoundedClient(addr)
			if err != nil {
				return err
			}
			if _, _, err := cl.Models().DetachFeatureSpec(args[0], args[1], nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "detached the feature spec of %s version %s\n", args[0], args[1])
			return nil
		},
	})
	c.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "List every model version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := newClient(addr)
			if err != nil {
				return err
			}
			ms, _, err := cl.Models().List(nil)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tVERSION\tFLAVORS\tSIZE\tCREATED\tFEATURE SPEC")
			for _, m := range ms {
				spec := m.FeatureSpec
				if spec == "" {
					spec = "-"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", m.Name, m.Version, strings.Join(m.Flavors, ","),
					m.SizeBytes, time.UnixMilli(m.CreationTimestamp).Format(time.RFC3339), spec)
			}
			return tw.Flush()
		},
	})
	return c
}

func endpointsCmd() *cobra.Command {
	var addr string
	c := &cobra.Command{Use: "endpoints", Short: "Create, read, update and delete serving endpoints"}
	clientFlags(c, &addr)

	var file string
	var wait, pt bool
	var timeout time.Duration
	create := &cobra.Command{
		Use:   "create -f FILE",
		Short: "Create an endpoint from a JSON file (the body of POST /api/2.0/serving-endpoints)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var req api.CreateEndpointRequest
			if err := readJSON(file, &req); err != nil {
				return err
			}
			cl, err := newClient(addr)
			if err != nil {
				return err
			}
			create := cl.Endpoints().Create
			if pt {
				create = cl.Endpoints().CreatePt
			}
			ep, _, err := create(&req, nil)
			if err != nil {
				return err
			}
			if wait {
				return waitReady(cmd, cl, ep.Name, timeout)
			}
			return printJSON(cmd.OutOrStdout(), ep)
		},
	}
	waitFlags := func(c *cobra.Command) {
		c.Flags().StringVarP(&file, "file", "f", "", "JSON file, - for standard input")
		c.Flags().BoolVar(&wait, "wait", false, "wait until the endpoint is READY, showing progress")
		c.Flags().DurationVar(&timeout, "timeout", 10*time.Minute, "how long --wait waits")
		c.Flags().BoolVar(&pt, "pt", false, "through Databricks' provisioned-throughput route (/serving-endpoints/pt): every served entity takes provisioned_model_units")
	}
	waitFlags(create)

	update := &cobra.Command{
		Use:   "update-config NAME -f FILE",
		Short: "Replace an endpoint's config (served entities, traffic) from a JSON file",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var cfg api.EndpointConfig
			if err := readJSON(file, &cfg); err != nil {
				return err
			}
			cl, err := newClient(addr)
			if err != nil {
				return err
			}
			update := cl.Endpoints().UpdateConfig
			if pt {
				update = cl.Endpoints().UpdatePtConfig
			}
			ep, _, err := update(args[0], &cfg, nil)
			if err != nil {
				return err
			}
			if wait {
				return waitReady(cmd, cl, ep.Name, timeout)
			}
			return printJSON(cmd.OutOrStdout(), ep)
		},
	}
	waitFlags(update)

	get := &cobra.Command{
		Use:   "get NAME",
		Short: "Show an endpoint as JSON",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := newClient(addr)
			if err != nil {
				return err
			}
			ep, _, err := cl.Endpoints().Get(args[0], nil)
			if err != nil {
				return err
			}
			return printJSON(cmd.OutOrStdout(), ep)
		},
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "List endpoints",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := newClient(addr)
			if err != nil {
				return err
			}
			eps, _, err := cl.Endpoints().List(nil)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tREADY\tCONFIG UPDATE\tVERSION\tSERVED ENTITIES")
			for _, ep := range eps {
				var names []string
				for _, e := range ep.Config.ServedEntities {
					names = append(names, fmt.Sprintf("%s(%s)", e.Name, shortState(e.State)))
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", ep.Name, ep.State.Ready, ep.State.ConfigUpdate,
					ep.Config.ConfigVersion, strings.Join(names, " "))
			}
			return tw.Flush()
		},
	}
	del := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete an endpoint and stop its workers",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := newClient(addr)
			if err != nil {
				return err
			}
			if _, err := cl.Endpoints().Delete(args[0], nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "deleted %s\n", args[0])
			return nil
		},
	}
	var waitTimeout time.Duration
	waitCmd := &cobra.Command{
		Use:   "wait NAME",
		Short: "Wait until an endpoint is READY, showing progress",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := newClient(addr)
			if err != nil {
				return err
			}
			return waitReady(cmd, cl, args[0], waitTimeout)
		},
	}
	waitCmd.Flags().DurationVar(&waitTimeout, "timeout", 10*time.Minute, "how long to wait")
	c.AddCommand(create, update, get, list, del, waitCmd)
	return c
}

func shortState(s *api.ServedEntityState) string {
	if s == nil {
		return "?"
	}
	return strings.TrimPrefix(s.Deployment, "DEPLOYMENT_")
}

// waitReady polls an endpoint until it is READY and not updating, printing
// each change of state, and fails fast when an entity or the update fails.
func waitReady(cmd *cobra.Command, cl *api.Client, name string, timeout time.Duration) error {
	out := cmd.ErrOrStderr()
	deadline := time.Now().Add(timeout)
	start := time.Now()
	last := ""
	for {
		ep, _, err := cl.Endpoints().Get(name, (&api.QueryOptions{}).WithContext(cmd.Context()))
		if err != nil {
			return err
		}
		line := progressLine(ep)
		if line != last {
			fmt.Fprintf(out, "[%5.1fs] %s\n", time.Since(start).Seconds(), line)
			last = line
		}
		switch {
		case ep.State.ConfigUpdate == api.ConfigUpdateFailed:
			return fmt.Errorf("endpoint %s: config update failed: %s", name, ep.State.Message)
		case ep.State.Ready == api.EndpointReady && ep.State.ConfigUpdate == api.ConfigNotUpdating:
			fmt.Fprintf(cmd.OutOrStdout(), "endpoint %s is READY: %s\n", name, ep.EndpointURL)
			return nil
		case time.Now().After(deadline):
			return fmt.Errorf("endpoint %s is not ready after %s: %s", name, timeout, line)
		}
		select {
		case <-cmd.Context().Done():
			return cmd.Context().Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func progressLine(ep *api.Endpoint) string {
	parts := []string{ep.State.Ready, ep.State.ConfigUpdate}
	cfgs := []*api.EndpointConfig{ep.Config}
	if ep.PendingConfig != nil {
		cfgs = append(cfgs, &ep.PendingConfig.EndpointConfig)
	}
	for _, c := range cfgs {
		for _, e := range c.ServedEntities {
			p := fmt.Sprintf("%s: %s", e.Name, shortState(e.State))
			if e.Replicas != nil {
				p += fmt.Sprintf(" %d/%d ready", e.Replicas.Ready, e.Replicas.Desired)
			}
			if e.State != nil && e.State.DeploymentStateMessage != "" {
				p += " (" + e.State.DeploymentStateMessage + ")"
			}
			parts = append(parts, p)
		}
	}
	return strings.Join(parts, "; ")
}

func invokeCmd() *cobra.Command {
	var addr, data, file, contentType string
	c := &cobra.Command{
		Use:   "invoke ENDPOINT (-d JSON | -f FILE)",
		Short: "Send a scoring request to an endpoint and print the answer",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var body []byte
			switch {
			case data != "" && file != "":
				return errors.New("give -d or -f, not both")
			case data != "":
				body = []byte(data)
			case file != "":
				b, err := readFile(file)
				if err != nil {
					return err
				}
				body = b
			default:
				return errors.New("give the request body with -d JSON or -f FILE")
			}
			cl, err := newClient(addr)
			if err != nil {
				return err
			}
			out, served, err := cl.Endpoints().Invoke(args[0], body, contentType, nil)
			if err != nil {
				return err
			}
			if served != "" {
				fmt.Fprintf(cmd.ErrOrStderr(), "served-model-name: %s\n", served)
			}
			cmd.OutOrStdout().Write(bytes.TrimRight(out, "\n"))
			fmt.Fprintln(cmd.OutOrStdout())
			return nil
		},
	}
	clientFlags(c, &addr)
	c.Flags().StringVarP(&data, "data", "d", "", "request body")
	c.Flags().StringVarP(&file, "file", "f", "", "file with the request body, - for standard input")
	c.Flags().StringVar(&contentType, "content-type", "application/json", "request content type (text/csv for CSV)")
	return c
}

func readFile(name string) ([]byte, error) {
	if name == "-" {
		return io.ReadAll(os.Stdin)
	}
	return os.ReadFile(name)
}

// readJSON decodes a file strictly, so a misspelled field is caught here
// with its name rather than silently dropped.
func readJSON(name string, v any) error {
	if name == "" {
		return errors.New("give the JSON file with -f FILE")
	}
	b, err := readFile(name)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
