package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/felis-dev/felis/appliers/nftables"
	"github.com/felis-dev/felis/appliers/nftables/render"
	"github.com/felis-dev/felis/snapshot"
)

// kernelOps lists the kernel operations the dataplane appliers would emit to go from the
// before snapshot to the after snapshot (or from the live kernel, with againstKernel).
func kernelOps(cmd *cobra.Command, againstKernel bool, before, after *snapshot.Snapshot) ([]Operation, error) {
	if againstKernel {
		return nil, fmt.Errorf("--against kernel: reading the live dataplane is not available in this build yet")
	}
	_ = cmd
	var out []Operation
	desired, err := render.Render(*after)
	if err != nil {
		return nil, fmt.Errorf("nftables render: %w", err)
	}
	current, err := render.Render(*before)
	if err != nil {
		return nil, fmt.Errorf("nftables render of the current snapshot: %w", err)
	}
	for _, op := range nftables.Plan(desired, &current) {
		out = append(out, Operation{Dataplane: "nftables", Op: op.String()})
	}
	return out, nil
}
