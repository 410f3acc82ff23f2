package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

func init() { rootCmd.AddCommand(newStatusCmd()) }

func newStatusCmd() *cobra.Command {
	var addr, output string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the running agent's per-endpoint programming status",
		Long: `status reads /status from a running felis agent's health address and prints, per local
endpoint, whether its current desired state is programmed (or the error that stops it), the
store revision and when it got there.`,
		Example: `  felis status
  felis status --addr 127.0.0.1:9099 -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runStatus(cmd.Context(), addr, output, cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVar(&addr, "addr", "127.0.0.1:9099", "the agent's --health-addr")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "text or json")
	return cmd
}

func runStatus(ctx context.Context, addr, output string, out io.Writer) error {
	if output != "text" && output != "json" {
		return fmt.Errorf("-o %q: want text or json", output)
	}
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/status", nil)
	if err != nil {
		return fmt.Errorf("--addr %q: %w", addr, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("reading the agent's status at %s (is felis agent running with --health-addr %s?): %w", addr, addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("reading the agent's status at %s: %w", addr, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("agent at %s: /status: %s", addr, resp.Status)
	}
	var r StatusReport
	if err := json.Unmarshal(body, &r); err != nil {
		return fmt.Errorf("agent at %s: /status: %w", addr, err)
	}
	if output == "json" {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	return printStatus(out, r, time.Now())
}

// printStatus writes the report as a table, one endpoint per line.
func printStatus(w io.Writer, r StatusReport, now time.Time) error {
	fmt.Fprintf(w, "node %s, in sync %t, programmed revision %d\n", r.Node, r.InSync, r.Revision)
	if r.LastError != "" {
		fmt.Fprintf(w, "last error: %s\n", r.LastError)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ENDPOINT\tWORKLOAD\tINTERFACE\tSTATE\tREVISION\tSINCE\tREASON")
	for _, e := range r.Endpoints {
		since := "-"
		if !e.Time.IsZero() {
			since = now.Sub(e.Time).Round(time.Second).String() + " ago"
		}
		workload := e.Workload
		if workload == "" {
			workload = "(" + e.Kind + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", e.ID, workload, e.Interface, e.State, e.Revision, since, e.Reason)
	}
	return tw.Flush()
}
