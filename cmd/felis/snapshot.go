package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/felis-dev/felis/datastore"
	_ "github.com/felis-dev/felis/datastore/file" // registers the file: datastore
	"github.com/felis-dev/felis/derive"
	"github.com/felis-dev/felis/model/store"
	"github.com/felis-dev/felis/snapshot"
)

func init() {
	var (
		spec        string
		node        string
		output      string
		allPolicies bool
	)
	cmd := &cobra.Command{
		Use:   "snapshot --datastore SRC --node NAME [-o yaml|json] [--all-policies]",
		Short: "Print the desired dataplane snapshot of a node",
		Long: `snapshot loads the datastore once, derives the complete desired dataplane state of one
node (IP sets, active policies and profiles, local endpoints with their tier programs, routes,
VTEPs, pools, effective configuration) and prints it in canonical form. Invalid resources are
reported on stderr and left out; the snapshot of the rest is still printed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runSnapshot(cmd.Context(), spec, node, output, derive.Options{AllPoliciesActive: allPolicies},
				cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	cmd.Flags().StringVar(&spec, "datastore", "file:.", "datastore: file:PATH, kubernetes or etcd:URL")
	cmd.Flags().StringVar(&node, "node", "", "node to derive the snapshot of (required)")
	cmd.Flags().StringVarP(&output, "output", "o", "yaml", "output format: yaml or json")
	cmd.Flags().BoolVar(&allPolicies, "all-policies", false, "treat every policy as active on this node (Calico's AssumeNeededOnEveryNode for all)")
	rootCmd.AddCommand(cmd)
}

// runSnapshot loads spec, derives node and writes the snapshot to out; every invalid
// resource is reported on errOut and the snapshot of the rest is still written.
func runSnapshot(ctx context.Context, spec, node, output string, opts derive.Options, out, errOut io.Writer) error {
	if node == "" {
		return fmt.Errorf("--node is required")
	}
	if output != "yaml" && output != "json" {
		return fmt.Errorf("-o %q: want yaml or json", output)
	}
	src, err := datastore.Open(spec)
	if err != nil {
		return err
	}
	st := store.New()
	problems, err := src.Load(ctx, st)
	for _, p := range problems {
		fmt.Fprintln(errOut, p.String())
	}
	if err != nil {
		return fmt.Errorf("load %s: %w", spec, err)
	}
	snap, err := derive.Derive(st.View(), node, opts)
	if err != nil {
		return fmt.Errorf("derive node %q: %w", node, err)
	}
	for _, n := range unplacedHostEndpoints(snap) {
		fmt.Fprintln(errOut, "note: "+n)
	}
	var data []byte
	if output == "json" {
		data, err = snap.JSON()
	} else {
		data, err = snap.YAML()
	}
	if err != nil {
		return err
	}
	_, err = out.Write(data)
	return err
}

// unplacedHostEndpoints notes the host endpoints with expectedIPs and no interfaceName: the
// snapshot leaves them unplaced (its interface is ""), the agent places them on the
// interfaces carrying those addresses at each sync (appliers.ResolvingHostEndpoints).
func unplacedHostEndpoints(s *snapshot.Snapshot) []string {
	var out []string
	for _, h := range s.HostEndpoints {
		if h.Interface == "" {
			out = append(out, fmt.Sprintf("node %s: host endpoint %s has no interfaceName: the agent places it at run time on the interfaces carrying its expectedIPs %v (not resolved here)", s.Node, h.ID, h.ExpectedIPs))
		}
	}
	return out
}
