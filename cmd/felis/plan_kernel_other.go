//go:build !linux

package main

import (
	"context"
	"errors"

	"github.com/felis-dev/felis/appliers/nftables/render"
)

// observeNftables is Linux-only: nftables exists only there.
func observeNftables(context.Context) (*render.Table, error) {
	return nil, errors.New("nftables exists only on Linux")
}
