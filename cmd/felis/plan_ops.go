package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/felis-dev/felis/appliers/iptables"
	"github.com/felis-dev/felis/appliers/netlink/render"
	"github.com/felis-dev/felis/appliers/nftables"
	nftrender "github.com/felis-dev/felis/appliers/nftables/render"
	"github.com/felis-dev/felis/snapshot"
)

// kernelOps lists the kernel operations the appliers would emit to reach the after snapshot:
// the policy dataplane's (nftables or iptables) and the routing applier's (netlink). They are
// planned from the before snapshot, or with againstKernel from what the live kernel of the
// current network namespace holds.
func kernelOps(cmd *cobra.Command, againstKernel bool, dataplane string, before, after *snapshot.Snapshot) ([]Operation, error) {
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	var out []Operation
	switch dataplane {
	case "nftables", "":
		desired, err := nftrender.Render(*after)
		if err != nil {
			return nil, fmt.Errorf("nftables render: %w", err)
		}
		var current *nftrender.Table
		if againstKernel {
			if current, err = observeNftables(ctx); err != nil {
				return nil, fmt.Errorf("--against kernel: reading the felis nftables tables: %w", err)
			}
		} else {
			t, err := nftrender.Render(*before)
			if err != nil {
				return nil, fmt.Errorf("nftables render of the current snapshot: %w", err)
			}
			current = &t
		}
		for _, op := range nftables.Plan(desired, current) {
			out = append(out, Operation{Dataplane: "nftables", Op: op.String()})
		}
	case "iptables":
		desired, err := iptables.Render(*after)
		if err != nil {
			return nil, fmt.Errorf("iptables render: %w", err)
		}
		var current *iptables.State
		if againstKernel {
			if current, err = observeIptables(ctx); err != nil {
				return nil, fmt.Errorf("--against kernel: reading the felis iptables chains and ipsets: %w", err)
			}
		} else {
			rs, err := iptables.Render(*before)
			if err != nil {
				return nil, fmt.Errorf("iptables render of the current snapshot: %w", err)
			}
			current = iptables.StateOf(rs)
		}
		for _, op := range iptables.Plan(desired, current) {
			out = append(out, Operation{Dataplane: "iptables", Op: op.String()})
		}
	default:
		return nil, fmt.Errorf("--dataplane %q: plan shows nftables or iptables operations", dataplane)
	}

	// Routing, in every mode. Render leaves invalid pieces out (the agent logs them).
	desired, _ := render.Render(*after, render.Options{})
	var current render.State
	if againstKernel {
		var err error
		if current, err = observeNetlink(ctx, after.Config.RouteProtocol, desired); err != nil {
			return nil, fmt.Errorf("--against kernel: reading routes and VXLAN state: %w", err)
		}
	} else {
		current, _ = render.Render(*before, render.Options{})
	}
	for _, op := range render.Plan(desired, current) {
		out = append(out, Operation{Dataplane: "netlink", Op: op.String()})
	}
	return out, nil
}
