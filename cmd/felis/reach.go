package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/felis-dev/felis/derive"
	"github.com/felis-dev/felis/snapshot"
)

func init() { rootCmd.AddCommand(newReachCmd()) }

type reachFlags struct {
	datastore string
	from, to  string
	ports     []string
	output    string
	explain   bool
	color     string
}

func newReachCmd() *cobra.Command {
	f := &reachFlags{}
	cmd := &cobra.Command{
		Use:   "reach",
		Short: "Evaluate which flows the derived snapshots allow, and what decides each",
		Long: `reach derives the snapshot of every node and evaluates, for each (source, destination,
port, protocol), the source's egress and the destination's ingress programs: the verdict and
the tier, policy and rule (or default) that decided it on each side.

Sources and destinations: NAMESPACE/WORKLOAD, sel:EXPR (Calico selector over the endpoints'
labels, including inherited namespace and service-account labels), ip:ADDR. Omitted: every
workload endpoint. Ports: NUMBER/PROTOCOL (TCP, UDP, SCTP) or a named port, repeatable.`,
		Example: `  felis reach --datastore file:examples/cluster --port 80/TCP
  felis reach --from frontend/web-0 --to sel:app==\'api\' --port http -o json`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE:          func(cmd *cobra.Command, _ []string) error { return runReach(cmd, f) },
	}
	cmd.Flags().StringVar(&f.datastore, "datastore", "file:examples/cluster", "datastore: file:PATH, kubernetes or etcd:URL")
	cmd.Flags().StringVar(&f.from, "from", "", "source: NAMESPACE/WORKLOAD, sel:EXPR or ip:ADDR (default every endpoint)")
	cmd.Flags().StringVar(&f.to, "to", "", "destination: NAMESPACE/WORKLOAD, sel:EXPR or ip:ADDR (default every endpoint)")
	cmd.Flags().StringArrayVar(&f.ports, "port", []string{"80/TCP"}, "NUMBER/PROTOCOL or a named port (repeatable)")
	cmd.Flags().StringVarP(&f.output, "output", "o", "text", "output format: text or json")
	cmd.Flags().BoolVar(&f.explain, "explain", false, "text output: list what decided every flow, not only denied ones")
	cmd.Flags().StringVar(&f.color, "color", "auto", "color the text table: auto, always or never")
	return cmd
}

func runReach(cmd *cobra.Command, f *reachFlags) error {
	if f.output != "text" && f.output != "json" {
		return fmt.Errorf("-o %q: want text or json", f.output)
	}
	var ports []snapshot.PortSpec
	for _, p := range f.ports {
		ps, err := snapshot.ParsePort(p)
		if err != nil {
			return err
		}
		ports = append(ports, ps)
	}
	st, _, err := openStore(cmd.Context(), f.datastore)
	if err != nil {
		return err
	}
	snaps, err := deriveAll(st.View(), derive.Options{})
	if err != nil {
		return err
	}
	c := snapshot.NewCluster(snaps)
	from, err := c.Resolve(f.from)
	if err != nil {
		return fmt.Errorf("--from %w", err)
	}
	to, err := c.Resolve(f.to)
	if err != nil {
		return fmt.Errorf("--to %w", err)
	}
	rows := c.Reach(from, to, ports)
	out := cmd.OutOrStdout()
	if f.output == "json" {
		if rows == nil {
			rows = []snapshot.Row{}
		}
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(rows)
	}
	color := f.color == "always" || f.color == "auto" && isTerminal(out)
	writeReachText(out, from, to, ports, rows, color, f.explain)
	return nil
}

func isTerminal(w io.Writer) bool {
	file, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := file.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// writeReachText prints one truth table per port (rows sources, columns destinations) and
// then what decided each denied flow (every flow with explain).
func writeReachText(w io.Writer, from, to []snapshot.Peer, ports []snapshot.PortSpec, rows []snapshot.Row, color, explain bool) {
	type cell struct{ from, to, port string }
	verdict := map[cell]snapshot.Action{}
	for _, r := range rows {
		verdict[cell{r.From, r.To, portLabel(r)}] = r.Verdict
	}
	for _, ps := range ports {
		fmt.Fprintf(w, "port %s\n", ps)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprint(tw, "FROM \\ TO")
		for _, t := range to {
			fmt.Fprintf(tw, "\t%s", t.Name())
		}
		fmt.Fprintln(tw)
		for _, f := range from {
			fmt.Fprint(tw, f.Name())
			for _, t := range to {
				fmt.Fprintf(tw, "\t%s", mark(verdict, cell{f.Name(), t.Name(), ps.String()}, color))
			}
			fmt.Fprintln(tw)
		}
		tw.Flush()
		fmt.Fprintln(w)
	}
	allowed := 0
	for _, r := range rows {
		if r.Verdict == snapshot.Allow {
			allowed++
		}
	}
	fmt.Fprintf(w, "%d flows: %d allowed, %d denied (- = not applicable: same endpoint, or no such named port)\n", len(rows), allowed, len(rows)-allowed)
	for _, r := range rows {
		if r.Verdict == snapshot.Allow && !explain {
			continue
		}
		fmt.Fprintf(w, "  %s -> %s %d/%s: %s (egress: %s; ingress: %s)\n", r.From, r.To, r.Port, r.Protocol, r.Verdict, r.Egress, r.Ingress)
	}
}

func portLabel(r snapshot.Row) string {
	if r.PortName != "" {
		return r.PortName
	}
	return fmt.Sprintf("%d/%s", r.Port, r.Protocol)
}

func mark[K comparable](verdict map[K]snapshot.Action, k K, color bool) string {
	v, ok := verdict[k]
	switch {
	case !ok:
		return "-"
	case !color:
		return strings.ToLower(string(v))
	case v == snapshot.Allow:
		return "\x1b[32mallow\x1b[0m"
	default:
		return "\x1b[31mdeny\x1b[0m"
	}
}
