package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/felis-dev/felis/appliers/nftables"
	"github.com/felis-dev/felis/appliers/nftables/render"
	"github.com/felis-dev/felis/snapshot"
)

// kernelOps lists the kernel operations the dataplane appliers would emit to reach the after
// snapshot: from the before snapshot, or with againstKernel from what the live kernel holds
// (the felis nftables table of the current network namespace).
func kernelOps(cmd *cobra.Command, againstKernel bool, before, after *snapshot.Snapshot) ([]Operation, error) {
	desired, err := render.Render(*after)
	if err != nil {
		return nil, fmt.Errorf("nftables render: %w", err)
	}
	var current *render.Table
	if againstKernel {
		if current, err = observeNftables(cmd.Context()); err != nil {
			return nil, fmt.Errorf("--against kernel: reading the felis nftables table: %w", err)
		}
	} else {
		t, err := render.Render(*before)
		if err != nil {
			return nil, fmt.Errorf("nftables render of the current snapshot: %w", err)
		}
		current = &t
	}
	var out []Operation
	for _, op := range nftables.Plan(desired, current) {
		out = append(out, Operation{Dataplane: "nftables", Op: op.String()})
	}
	return out, nil
}
