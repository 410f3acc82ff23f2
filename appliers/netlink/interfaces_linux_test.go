package netlink

import (
	"context"
	"net/netip"
	"slices"
	"testing"

	"github.com/felis-dev/felis/snapshot"
	"github.com/felis-dev/felis/tools/netns"
)

// TestHostInterfacesPlaceHostEndpoints lists a node namespace's interfaces with
// HostInterfaces and places a host endpoint by its expectedIPs: on eth0 while eth0 carries
// the address, on the new name after a rename, on another interface after the address moves.
func TestHostInterfacesPlaceHostEndpoints(t *testing.T) {
	netns.RequireRoot(t)
	h := netns.New(t)
	n, err := h.NewNode("node1")
	if err != nil {
		t.Fatal(err)
	}
	hep := snapshot.HostEndpoint{ID: "by-ip", ExpectedIPs: []netip.Addr{netip.MustParseAddr("10.99.0.2"), netip.MustParseAddr("fd99::2")}}
	placed := func() []string {
		t.Helper()
		var ifaces []snapshot.Interface
		if err := n.Do(func() error {
			var err error
			ifaces, err = HostInterfaces(context.Background())
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(ifaces, func(i snapshot.Interface) bool {
			return i.Name == netns.UplinkName && slices.Contains(i.Addrs, n.IPv4) && slices.Contains(i.Addrs, n.IPv6)
		}) {
			t.Fatalf("HostInterfaces %v: no %s with %s and %s", ifaces, netns.UplinkName, n.IPv4, n.IPv6)
		}
		got, _ := snapshot.ResolveHostEndpoints([]snapshot.HostEndpoint{hep}, ifaces, []string{"cali"})
		var names []string
		for _, g := range got {
			names = append(names, g.Interface)
		}
		return names
	}
	ip := func(args ...string) {
		t.Helper()
		if out, err := n.Exec(context.Background(), "ip", args...); err != nil {
			t.Fatalf("ip %v: %v\n%s", args, err, out)
		}
	}
	if got := placed(); len(got) != 0 {
		t.Errorf("no interface carries the expected IPs, yet placed on %v", got)
	}
	ip("addr", "add", "10.99.0.2/32", "dev", netns.UplinkName)
	if got := placed(); !slices.Equal(got, []string{netns.UplinkName}) {
		t.Errorf("placed on %v, want [%s]", got, netns.UplinkName)
	}
	ip("link", "add", "hep0", "type", "veth", "peer", "name", "hep0p")
	ip("-6", "addr", "add", "fd99::2/128", "dev", "hep0", "nodad")
	if got := placed(); !slices.Equal(got, []string{netns.UplinkName, "hep0"}) {
		t.Errorf("placed on %v, want [%s hep0] (an IPv6 expected IP on hep0)", got, netns.UplinkName)
	}
	ip("link", "set", "hep0", "name", "hep1")
	ip("addr", "del", "10.99.0.2/32", "dev", netns.UplinkName)
	if got := placed(); !slices.Equal(got, []string{"hep1"}) {
		t.Errorf("after the rename and the IPv4 address's removal: placed on %v, want [hep1]", got)
	}
}
