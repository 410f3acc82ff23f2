package netlink

import (
	"context"
	"fmt"
	"net/netip"

	vnl "github.com/vishvananda/netlink"

	"github.com/felis-dev/felis/snapshot"
)

// HostInterfaces lists the network interfaces of the current network namespace with their
// addresses, for placing host endpoints by their expectedIPs (appliers.ResolvingHostEndpoints).
func HostInterfaces(context.Context) ([]snapshot.Interface, error) {
	links, err := vnl.LinkList()
	if err != nil {
		return nil, fmt.Errorf("listing links: %w", err)
	}
	addrs, err := vnl.AddrList(nil, vnl.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("listing addresses: %w", err)
	}
	byIndex := map[int][]netip.Addr{}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			byIndex[a.LinkIndex] = append(byIndex[a.LinkIndex], ip.Unmap())
		}
	}
	out := make([]snapshot.Interface, 0, len(links))
	for _, l := range links {
		attrs := l.Attrs()
		out = append(out, snapshot.Interface{Name: attrs.Name, Addrs: byIndex[attrs.Index]})
	}
	return out, nil
}
