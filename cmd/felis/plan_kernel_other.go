//go:build !linux

package main

import (
	"context"
	"errors"

	"github.com/felis-dev/felis/appliers/iptables"
	nlrender "github.com/felis-dev/felis/appliers/netlink/render"
	"github.com/felis-dev/felis/appliers/nftables/render"
)

var errLinuxOnly = errors.New("the Linux dataplanes exist only on Linux")

func observeNftables(context.Context) (*render.Table, error) { return nil, errLinuxOnly }

func observeIptables(context.Context) (*iptables.State, error) { return nil, errLinuxOnly }

func observeNetlink(context.Context, int, nlrender.State) (nlrender.State, error) {
	return nlrender.State{}, errLinuxOnly
}
