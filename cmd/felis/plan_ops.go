package main

import (
	"github.com/spf13/cobra"

	"github.com/felis-dev/felis/snapshot"
)

// kernelOps lists the kernel operations each dataplane applier would emit to go from the
// before snapshot to the after snapshot (or from the live kernel, with againstKernel).
// Dataplane renderers register here as they land.
func kernelOps(cmd *cobra.Command, againstKernel bool, before, after *snapshot.Snapshot) ([]Operation, error) {
	_, _, _, _ = cmd, againstKernel, before, after
	return nil, nil
}
