package snapshot

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var addrEq = cmp.Comparer(func(a, b netip.Addr) bool { return a == b })

func TestResolveHostEndpoints(t *testing.T) {
	a := netip.MustParseAddr
	hep := func(id, iface string, ips ...string) HostEndpoint {
		h := HostEndpoint{ID: id, Interface: iface}
		for _, ip := range ips {
			h.ExpectedIPs = append(h.ExpectedIPs, a(ip))
		}
		return h
	}
	on := func(h HostEndpoint, iface string) HostEndpoint { h.Interface = iface; return h }
	ifaces := []Interface{
		{Name: "eth0", Addrs: []netip.Addr{a("10.0.0.1"), a("fd00::1")}},
		{Name: "eth1", Addrs: []netip.Addr{a("10.1.0.1")}},
		{Name: "eth2", Addrs: []netip.Addr{a("10.2.0.1"), a("10.1.0.2")}},
		{Name: "cali123", Addrs: []netip.Addr{a("10.9.0.1")}},
		{Name: "lo", Addrs: []netip.Addr{a("127.0.0.1")}},
	}
	for _, c := range []struct {
		name         string
		in           []HostEndpoint
		want         []HostEndpoint
		wantWarnings int
	}{
		{"nothing to resolve: unchanged", []HostEndpoint{hep("a", "eth0"), hep("w", "*")},
			[]HostEndpoint{hep("a", "eth0"), hep("w", "*")}, 0},
		{"by an IPv4 address", []HostEndpoint{hep("a", "", "10.1.0.1")},
			[]HostEndpoint{on(hep("a", "", "10.1.0.1"), "eth1")}, 0},
		{"by an IPv6 address", []HostEndpoint{hep("a", "", "fd00::1")},
			[]HostEndpoint{on(hep("a", "", "fd00::1"), "eth0")}, 0},
		{"one copy per interface carrying an expected IP", []HostEndpoint{hep("a", "", "10.1.0.1", "10.2.0.1", "192.0.2.1")},
			[]HostEndpoint{on(hep("a", "", "10.1.0.1", "10.2.0.1", "192.0.2.1"), "eth1"), on(hep("a", "", "10.1.0.1", "10.2.0.1", "192.0.2.1"), "eth2")}, 0},
		{"no interface carries it: left out, warned", []HostEndpoint{hep("a", "", "192.0.2.1"), hep("b", "eth1")},
			[]HostEndpoint{hep("b", "eth1")}, 1},
		{"workload interfaces are not host interfaces", []HostEndpoint{hep("a", "", "10.9.0.1")}, nil, 1},
		{"the lowest ID wins: an unnamed one beats a named one", []HostEndpoint{hep("a", "", "10.0.0.1"), hep("b", "eth0")},
			[]HostEndpoint{on(hep("a", "", "10.0.0.1"), "eth0")}, 1},
		{"the lowest ID wins: a named one beats an unnamed one", []HostEndpoint{hep("a", "eth0"), hep("b", "", "10.0.0.1", "10.1.0.1")},
			[]HostEndpoint{hep("a", "eth0"), on(hep("b", "", "10.0.0.1", "10.1.0.1"), "eth1")}, 0},
		{"the lowest ID wins between unnamed ones", []HostEndpoint{hep("b", "", "10.1.0.2"), hep("a", "", "10.2.0.1")},
			[]HostEndpoint{on(hep("a", "", "10.2.0.1"), "eth2")}, 1},
		{"a named one on an interface not seen is kept; `*` too", []HostEndpoint{hep("a", "", "10.1.0.1"), hep("n", "eth9"), hep("w", "*")},
			[]HostEndpoint{on(hep("a", "", "10.1.0.1"), "eth1"), hep("n", "eth9"), hep("w", "*")}, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			in := append([]HostEndpoint(nil), c.in...)
			got, warnings := ResolveHostEndpoints(in, ifaces, []string{"cali"})
			if diff := cmp.Diff(c.want, got, addrEq); diff != "" {
				t.Errorf("resolved (-want +got):\n%s", diff)
			}
			if len(warnings) != c.wantWarnings {
				t.Errorf("warnings %q, want %d", warnings, c.wantWarnings)
			}
			if diff := cmp.Diff(c.in, in, addrEq); diff != "" {
				t.Errorf("input modified:\n%s", diff)
			}
		})
	}
}
