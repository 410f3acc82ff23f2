//go:build linux

package main

import (
	"context"

	"github.com/felis-dev/felis/appliers/nftables"
	"github.com/felis-dev/felis/appliers/nftables/render"
)

// observeNftables reads the felis nftables table of the current network namespace.
func observeNftables(ctx context.Context) (*render.Table, error) {
	k, err := nftables.NewKernel()
	if err != nil {
		return nil, err
	}
	defer k.Close()
	return k.Observe(ctx)
}
