//go:build linux

package main

import (
	"context"

	"github.com/vishvananda/netns"

	"github.com/felis-dev/felis/appliers/iptables"
	"github.com/felis-dev/felis/appliers/netlink"
	nlrender "github.com/felis-dev/felis/appliers/netlink/render"
	"github.com/felis-dev/felis/appliers/nftables"
	"github.com/felis-dev/felis/appliers/nftables/render"
)

// observeNftables reads the felis nftables tables of the current network namespace.
func observeNftables(ctx context.Context) (*render.Table, error) {
	k, err := nftables.NewKernel()
	if err != nil {
		return nil, err
	}
	defer k.Close()
	return k.Observe(ctx)
}

// observeIptables reads felis's iptables chains and ipsets (backend detected as the agent does).
func observeIptables(ctx context.Context) (*iptables.State, error) {
	k, err := iptables.NewKernel(ctx, "auto")
	if err != nil {
		return nil, err
	}
	return iptables.Observe(ctx, k)
}

// observeNetlink reads felis's routes, VXLAN devices and their entries, and the settings of
// the workload interfaces desired names.
func observeNetlink(ctx context.Context, protocol int, desired nlrender.State) (nlrender.State, error) {
	k, err := netlink.NewNetlink(netns.None())
	if err != nil {
		return nlrender.State{}, err
	}
	if protocol == 0 {
		protocol = nlrender.DefaultProtocol
	}
	return k.Observe(ctx, netlink.Query{Protocol: protocol, Devices: []string{nlrender.VXLANDevice, nlrender.VXLANDeviceV6},
		Sysctls: desired.Sysctls, ProxyNeighs: desired.ProxyNeighs})
}
