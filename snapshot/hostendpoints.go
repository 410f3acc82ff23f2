package snapshot

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Interface is a host network interface and the addresses it carries, as an applier observes
// them, for ResolveHostEndpoints.
type Interface struct {
	Name  string
	Addrs []netip.Addr
}

// ResolveHostEndpoints places the host endpoints that name no interface (expectedIPs only)
// on the interfaces that carry one of their expected IPs, the way Felix's endpoint manager
// resolves them: for each interface (workload interfaces, by prefix, excluded), the host
// endpoints naming it and the unnamed ones expecting one of its addresses compete, and the
// one with the lowest ID governs it. An unnamed host endpoint becomes one copy per interface
// it governs (Interface set); one governing none is left out, and so is a named one that
// loses its interface to an unnamed one with a lower ID; each is reported in warnings. `*`
// host endpoints and named ones on interfaces not in ifaces are kept as they are. The input
// is not modified; the result is sorted by ID, then interface.
func ResolveHostEndpoints(heps []HostEndpoint, ifaces []Interface, workloadPrefixes []string) ([]HostEndpoint, []string) {
	if !slices.ContainsFunc(heps, func(h HostEndpoint) bool { return h.Interface == "" }) {
		return heps, nil
	}
	workload := func(name string) bool {
		for _, p := range workloadPrefixes {
			if p != "" && strings.HasPrefix(name, p) {
				return true
			}
		}
		return false
	}
	var out []HostEndpoint
	var warnings []string
	governed := map[string]bool{} // IDs of unnamed host endpoints that got an interface
	byIP := map[string]bool{}     // interfaces an unnamed host endpoint governs
	for _, ifc := range ifaces {
		if workload(ifc.Name) || ifc.Name == "" {
			continue
		}
		best := -1
		for i := range heps {
			h := &heps[i]
			if best >= 0 && heps[best].ID <= h.ID {
				continue
			}
			switch {
			case h.Interface == ifc.Name:
				best = i
			case h.Interface == "" && slices.ContainsFunc(h.ExpectedIPs, func(a netip.Addr) bool {
				return slices.Contains(ifc.Addrs, a.Unmap())
			}):
				best = i
			}
		}
		if best < 0 || heps[best].Interface != "" {
			continue
		}
		h := heps[best]
		h.Interface = ifc.Name
		governed[h.ID] = true
		byIP[ifc.Name] = true
		out = append(out, h)
	}
	for _, h := range heps {
		switch {
		case h.Interface == "":
			if !governed[h.ID] {
				warnings = append(warnings, fmt.Sprintf("hostEndpoints[%s]: no interface carries any of its expectedIPs %v; not programmed", h.ID, h.ExpectedIPs))
			}
		case byIP[h.Interface]:
			warnings = append(warnings, fmt.Sprintf("hostEndpoints[%s]: interface %s is governed by a host endpoint with a lower ID (by its expectedIPs); not programmed", h.ID, h.Interface))
		default:
			out = append(out, h)
		}
	}
	slices.SortFunc(out, func(a, b HostEndpoint) int {
		if c := strings.Compare(a.ID, b.ID); c != 0 {
			return c
		}
		return strings.Compare(a.Interface, b.Interface)
	})
	return out, warnings
}
