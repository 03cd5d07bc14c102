package main

import (
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/spf13/cobra"
)

// gantry users|service-principals|groups: the SCIM API from the command
// line. Principals are named as people know them (a userName, an
// applicationId or a service principal's display name, a group's name)
// or by SCIM id; the commands look the id up, since SCIM paths take ids.

// requestTimeout bounds each request of the commands whose requests are
// small (these, the feature commands'): a server that hangs must not hang
// the command.
const requestTimeout = 30 * time.Second

// newBoundedClient is newClient whose requests each end within
// requestTimeout.
func newBoundedClient(addr string) (*api.Client, error) {
	cfg := api.DefaultConfig()
	cfg.Address = addr
	cfg.HTTPClient = &http.Client{Timeout: requestTimeout} // NewClient adds the CA's transport
	return api.NewClient(cfg)
}

// principalKind is what differs between the three commands.
type principalKind struct {
	use, word string // "users", "user"
	resource  string // api.ScimUsers ...
	// nameAttr is the SCIM attribute a principal's name travels in,
	// alsoAttr one more that finds it (a service principal's
	// displayName, which is what people remember of a UUID).
	nameAttr, alsoAttr string
}

var (
	usersKind  = principalKind{"users", "user", api.ScimUsers, "userName", ""}
	spsKind    = principalKind{"service-principals", "service principal", api.ScimServicePrincipals, "applicationId", "displayName"}
	groupsKind = principalKind{"groups", "group", api.ScimGroups, "displayName", ""}
)

func (k principalKind) name(p *api.ScimPrincipal) string {
	switch k.resource {
	case api.ScimUsers:
		return p.UserName
	case api.ScimServicePrincipals:
		return p.ApplicationID
	}
	return p.DisplayName
}

// scimID matches a SCIM id: Gantry's are 16 decimal digits.
var scimID = regexp.MustCompile(`^[0-9]{1,20}$`)

// find resolves ref (an id or a name) to one principal of kind k; nil
// without an error when there is none.
func (k principalKind) find(cl *api.Client, ref string) (*api.ScimPrincipal, error) {
	ps := cl.Principals(k.resource)
	attrs := []string{k.nameAttr}
	if k.alsoAttr != "" {
		attrs = append(attrs, k.alsoAttr)
	}
	if scimID.MatchString(ref) {
		attrs = append([]string{"id"}, attrs...)
	}
	for _, attr := range attrs {
		got, err := ps.List(attr+" eq "+api.ScimQuote(ref), nil)
		if err != nil {
			return nil, err
		}
		switch len(got) {
		case 0:
			continue
		case 1:
			return &got[0], nil
		}
		ids := make([]string, len(got))
		for i := range got {
			ids[i] = got[i].ID
		}
		return nil, fmt.Errorf("%d %ss have the %s %q (ids %s); name one by its id", len(got), k.word, attr, ref, strings.Join(ids, ", "))
	}
	return nil, nil
}

// mustFind is find, with "does not exist" as an error.
func (k principalKind) mustFind(cl *api.Client, ref string) (*api.ScimPrincipal, error) {
	p, err := k.find(cl, ref)
	if err == nil && p == nil {
		err = fmt.Errorf("%s %q does not exist; `gantry %s list` shows them", k.word, ref, k.use)
	}
	return p, err
}

// open connects to the server at addr and finds the principal of kind k
// that ref names: where every command on one principal starts.
func (k principalKind) open(addr, ref string) (*api.Client, *api.ScimPrincipal, error) {
	cl, err := newBoundedClient(addr)
	if err != nil {
		return nil, nil, err
	}
	p, err := k.mustFind(cl, ref)
	if err != nil {
		return nil, nil, err
	}
	return cl, p, nil
}

func usersCmd() *cobra.Command { return principalsCmd(usersKind, tokenCmds(usersKind)) }

func servicePrincipalsCmd() *cobra.Command { return principalsCmd(spsKind, tokenCmds(spsKind)) }

// tokenCmds is `gantry users|service-principals token`: an admin makes a
// token for another principal (POST .../on-behalf-of/tokens), such as a
// component's own service principal in the gantry-components group.
// The value is printed once, alone on stdout, so that it can go
// straight into a file or a secret store.
func tokenCmds(k principalKind) func(addr *string) []*cobra.Command {
	return func(addr *string) []*cobra.Command {
		var lifetime time.Duration
		var comment string
		c := &cobra.Command{
			Use:   "token " + k.argName(),
			Short: "Make a token for a " + k.word + " (admins) and print its value, shown this once",
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				if lifetime < 0 || lifetime%time.Second != 0 {
					return fmt.Errorf("--lifetime %s: want whole seconds, 0 for the default of two years", lifetime)
				}
				cl, p, err := k.open(*addr, args[0])
				if err != nil {
					return err
				}
				req := &api.OnBehalfOfRequest{LifetimeSeconds: int64(lifetime / time.Second), Comment: comment}
				if k.resource == api.ScimUsers {
					req.UserName = p.UserName
				} else {
					req.ApplicationID = p.ApplicationID
				}
				out, err := cl.Tokens().OnBehalfOf(req, nil)
				if err != nil {
					return err
				}
				expiry := "never"
				if out.TokenInfo.ExpiryTime >= 0 {
					expiry = time.UnixMilli(out.TokenInfo.ExpiryTime).UTC().Format(time.RFC3339)
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "token %s for %s %s, expires %s; its value follows, shown this once\n", out.TokenInfo.TokenID, k.word, k.name(p), expiry)
				fmt.Fprintln(cmd.OutOrStdout(), out.TokenValue)
				return nil
			},
		}
		c.Flags().DurationVar(&lifetime, "lifetime", 0, "how long the token lives (e.g. 720h); 0: two years")
		c.Flags().StringVar(&comment, "comment", "", "what the token is for")
		return []*cobra.Command{c}
	}
}

func groupsCmd() *cobra.Command { return principalsCmd(groupsKind, membersCmds) }

// membersCmds are gantry groups add-member and remove-member.
func membersCmds(addr *string) []*cobra.Command {
	var out []*cobra.Command
	for _, op := range []struct{ use, op, short, done string }{
		{"add-member", "add", "Add users, service principals or groups to a group", "added to"},
		{"remove-member", "remove", "Remove members from a group", "removed from"},
	} {
		out = append(out, &cobra.Command{
			Use:   op.use + " GROUP MEMBER...",
			Short: op.short + " (members by userName, applicationId, service principal display name, group name or id)",
			Args:  cobra.MinimumNArgs(2),
			RunE: func(cmd *cobra.Command, args []string) error {
				cl, g, err := groupsKind.open(*addr, args[0])
				if err != nil {
					return err
				}
				var ids, names []string
				for _, ref := range args[1:] {
					id, name, err := findMember(cl, ref)
					if err != nil {
						return err
					}
					ids, names = append(ids, id), append(names, name)
				}
				if _, err := cl.Principals(api.ScimGroups).PatchMembers(g.ID, op.op, ids, nil); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s %s group %s\n", strings.Join(names, ", "), op.done, g.DisplayName)
				return nil
			},
		})
	}
	return out
}

// findMember resolves a group member named by id or by name, whatever
// its kind; a name that more than one kind holds must be given by id.
func findMember(cl *api.Client, ref string) (id, name string, err error) {
	var found []string
	for _, k := range []principalKind{usersKind, spsKind, groupsKind} {
		p, err := k.find(cl, ref)
		if err != nil {
			return "", "", err
		}
		if p != nil {
			id, name = p.ID, k.word+" "+k.name(p)
			found = append(found, k.word+" "+p.ID)
		}
	}
	switch len(found) {
	case 0:
		return "", "", fmt.Errorf("no user, service principal or group is named %q", ref)
	case 1:
		return id, name, nil
	}
	return "", "", fmt.Errorf("%q names more than one principal (%s); give the id", ref, strings.Join(found, ", "))
}

// principalsCmd is the command group of kind k; extra adds the commands
// only one kind has.
func principalsCmd(k principalKind, extra func(addr *string) []*cobra.Command) *cobra.Command {
	var addr string
	c := &cobra.Command{Use: k.use, Short: "List, show, create and delete " + k.word + "s (SCIM; changes need an admin)"}
	clientFlags(c, &addr)

	var filter string
	var asJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List " + k.word + "s",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := newBoundedClient(addr)
			if err != nil {
				return err
			}
			ps, err := cl.Principals(k.resource).List(filter, (&api.QueryOptions{}).WithContext(cmd.Context()))
			if err != nil {
				return err
			}
			if asJSON {
				if ps == nil {
					ps = []api.ScimPrincipal{}
				}
				return printJSON(cmd.OutOrStdout(), ps)
			}
			return k.table(cmd.OutOrStdout(), ps)
		},
	}
	list.Flags().StringVar(&filter, "filter", "", `SCIM filter, e.g. '`+k.nameAttr+` sw "ml-"' (operators eq, co, sw)`)
	list.Flags().BoolVar(&asJSON, "json", false, "print the SCIM resources as JSON")

	get := &cobra.Command{
		Use:   "get " + k.argName(),
		Short: "Show a " + k.word + " as SCIM JSON",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, p, err := k.open(addr, args[0])
			if err != nil {
				return err
			}
			return printJSON(cmd.OutOrStdout(), p)
		},
	}

	var display, appID string
	var members []string
	create := &cobra.Command{
		Short: "Create a " + k.word,
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := newBoundedClient(addr)
			if err != nil {
				return err
			}
			in := &api.ScimPrincipal{DisplayName: display}
			switch k.resource {
			case api.ScimUsers:
				in.UserName = args[0]
			case api.ScimServicePrincipals:
				in.ApplicationID = appID
			case api.ScimGroups:
				in.DisplayName = args[0]
				for _, ref := range members {
					id, _, err := findMember(cl, ref)
					if err != nil {
						return err
					}
					in.Members = append(in.Members, api.ScimValue{Value: id})
				}
			}
			p, err := cl.Principals(k.resource).Create(in, nil)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "created %s %s (id %s)\n", k.word, k.name(p), p.ID)
			return nil
		},
	}
	switch k.resource {
	case api.ScimUsers:
		create.Use, create.Args = "create USERNAME", cobra.ExactArgs(1)
		create.Flags().StringVar(&display, "display-name", "", "the user's full name")
	case api.ScimServicePrincipals:
		create.Use, create.Args = "create --display-name NAME", cobra.NoArgs
		create.Flags().StringVar(&display, "display-name", "", "what the service principal is for (its applicationId is a new UUID)")
		create.Flags().StringVar(&appID, "application-id", "", "the applicationId, instead of a new UUID")
	case api.ScimGroups:
		create.Use, create.Args = "create NAME", cobra.ExactArgs(1)
		create.Flags().StringSliceVar(&members, "member", nil, "a first member (userName, applicationId, group name or id); repeat or separate with commas")
	}

	del := &cobra.Command{
		Use:   "delete " + k.argName(),
		Short: "Delete a " + k.word + " with its tokens, memberships and grants",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, p, err := k.open(addr, args[0])
			if err != nil {
				return err
			}
			if err := cl.Principals(k.resource).Delete(p.ID, nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "deleted %s %s (id %s)\n", k.word, k.name(p), p.ID)
			return nil
		},
	}
	c.AddCommand(list, get, create, del)
	if extra != nil {
		c.AddCommand(extra(&addr)...)
	}
	return c
}

func (k principalKind) argName() string {
	switch k.resource {
	case api.ScimUsers:
		return "USERNAME|ID"
	case api.ScimServicePrincipals:
		return "APPLICATION_ID|DISPLAY_NAME|ID"
	}
	return "NAME|ID"
}

// table prints principals one a line; members and groups by name.
func (k principalKind) table(w io.Writer, ps []api.ScimPrincipal) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	names := func(vs []api.ScimValue) string {
		var out []string
		for _, v := range vs {
			out = append(out, v.Display)
		}
		if len(out) == 0 {
			return "-"
		}
		return strings.Join(out, ",")
	}
	active := func(p *api.ScimPrincipal) string {
		if p.Active == nil || *p.Active {
			return "yes"
		}
		return "no"
	}
	orDash := func(s string) string {
		if s == "" {
			return "-"
		}
		return s
	}
	switch k.resource {
	case api.ScimUsers:
		fmt.Fprintln(tw, "ID\tUSERNAME\tDISPLAY NAME\tACTIVE\tGROUPS")
	case api.ScimServicePrincipals:
		fmt.Fprintln(tw, "ID\tAPPLICATION ID\tDISPLAY NAME\tACTIVE\tGROUPS")
	default:
		fmt.Fprintln(tw, "ID\tNAME\tMEMBERS\tGROUPS")
	}
	for i := range ps {
		p := &ps[i]
		if k.resource == api.ScimGroups {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", p.ID, p.DisplayName, names(p.Members), names(p.Groups))
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", p.ID, k.name(p), orDash(p.DisplayName), active(p), names(p.Groups))
	}
	return tw.Flush()
}
