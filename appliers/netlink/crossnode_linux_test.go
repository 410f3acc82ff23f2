package netlink

import (
	"context"
	"net/netip"
	"testing"
	"time"

	vnl "github.com/vishvananda/netlink"

	"github.com/felis-dev/felis/appliers/netlink/render"
	"github.com/felis-dev/felis/snapshot"
	tnetns "github.com/felis-dev/felis/tools/netns"
)

// crossNode is one node of the cross-node test: its namespace, pod and addresses.
type crossNode struct {
	node            *tnetns.Node
	pod             *tnetns.Pod
	block, block6   netip.Prefix
	tunnel, tunnel6 netip.Addr
	mac, mac6       string
}

// crossNodeSnapshot is what derive would produce for self with one remote peer: a workload
// route to the local pod, a blackhole for the local block, and the peer's block over VXLAN
// (or directly via the peer's node IP when direct is set).
func crossNodeSnapshot(self, peer crossNode, direct bool) snapshot.Snapshot {
	s := snapshot.Snapshot{
		Node: self.node.NodeName,
		Config: snapshot.Config{
			NodeIPv4:     netip.PrefixFrom(self.node.IPv4, self.node.Subnet4.Bits()),
			NodeIPv6:     netip.PrefixFrom(self.node.IPv6, self.node.Subnet6.Bits()),
			VXLANEnabled: !direct, VXLANVNI: 4096, VXLANPort: 4789, VXLANMTU: 1450,
			VXLANTunnelAddr: self.tunnel, VXLANTunnelMAC: self.mac, RouteProtocol: 80,
			VXLANEnabledV6: !direct, VXLANMTUV6: 1430, VXLANTunnelAddrV6: self.tunnel6, VXLANTunnelMACV6: self.mac6,
		},
		Endpoints: []snapshot.Endpoint{{ID: "default/" + self.pod.PodName, Interface: self.pod.HostInterface,
			Addrs: []netip.Prefix{netip.PrefixFrom(self.pod.IPv4, 32), netip.PrefixFrom(self.pod.IPv6, 128)}}},
		Routes: []snapshot.Route{
			{Dst: self.block, Type: snapshot.RouteBlackhole},
			{Dst: netip.PrefixFrom(self.pod.IPv4, 32), Type: snapshot.RouteWorkload, Interface: self.pod.HostInterface},
			{Dst: self.block6, Type: snapshot.RouteBlackhole},
			{Dst: netip.PrefixFrom(self.pod.IPv6, 128), Type: snapshot.RouteWorkload, Interface: self.pod.HostInterface},
		},
	}
	if direct {
		s.Routes = append(s.Routes,
			snapshot.Route{Dst: peer.block, Type: snapshot.RouteDirect, Gateway: peer.node.IPv4, Node: peer.node.NodeName},
			snapshot.Route{Dst: peer.block6, Type: snapshot.RouteDirect, Gateway: peer.node.IPv6, Node: peer.node.NodeName})
	} else {
		s.Routes = append(s.Routes,
			snapshot.Route{Dst: peer.block, Type: snapshot.RouteVXLAN, Gateway: peer.tunnel, Node: peer.node.NodeName},
			snapshot.Route{Dst: peer.block6, Type: snapshot.RouteVXLAN, Gateway: peer.tunnel6, Node: peer.node.NodeName})
		s.VTEPs = []snapshot.VTEP{
			{Node: peer.node.NodeName, TunnelIP: peer.tunnel, MAC: peer.mac, ParentIP: peer.node.IPv4},
			{Node: peer.node.NodeName, TunnelIP: peer.tunnel6, MAC: peer.mac6, ParentIP: peer.node.IPv6, IPv6: true},
		}
	}
	return s
}

// TestCrossNodeVXLAN wires two nodes on one underlay with a dual-stack pod each (host side left
// to felis), programs both with the applier, and sends real ICMP and TCP between the pods over
// VXLAN (IPv4 and IPv6), then switches the pools to no-encap (direct routes, VXLAN devices
// removed) and sends again.
func TestCrossNodeVXLAN(t *testing.T) {
	tnetns.RequireRoot(t)
	h := tnetns.New(t)
	u, err := h.NewUnderlay("ul")
	if err != nil {
		t.Fatal(err)
	}
	var nodes [2]crossNode
	for i, name := range []string{"n1", "n2"} {
		n, err := u.NewNode(name)
		if err != nil {
			t.Fatal(err)
		}
		block := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 65, byte(i), 0}), 26)
		block6 := netip.PrefixFrom(netip.AddrFrom16([16]byte{0xfd, 0x10, 6: 0, 7: byte(i)}), 122)
		pod, err := n.NewPod(tnetns.PodOptions{Name: "p" + name, IPv4: block.Addr().Next().Next(), IPv6: block6.Addr().Next().Next(), SkipHostWiring: true})
		if err != nil {
			t.Fatal(err)
		}
		nodes[i] = crossNode{
			node: n, pod: pod, block: block, block6: block6,
			tunnel: block.Addr().Next(), tunnel6: block6.Addr().Next(),
			mac: "66:aa:00:00:00:0" + string(rune('1'+i)), mac6: "66:bb:00:00:00:0" + string(rune('1'+i)),
		}
	}
	ctx := context.Background()
	appliers := make([]*Applier, 2)
	kernels := make([]*Netlink, 2)
	program := func(direct bool) {
		t.Helper()
		for i := range nodes {
			st, err := render.Render(crossNodeSnapshot(nodes[i], nodes[1-i], direct), render.Options{})
			if err != nil {
				t.Fatal(err)
			}
			if appliers[i] == nil {
				k, err := NewNetlink(nodes[i].node.Handle())
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(k.Close)
				kernels[i], appliers[i] = k, New(k, Options{})
			}
			res, err := appliers[i].Sync(ctx, st)
			if err != nil || len(res.Pending) > 0 {
				t.Fatalf("node %s: sync: %v (pending %v)", nodes[i].node.NodeName, err, res.Pending)
			}
		}
	}
	txPackets := func(i int, dev string) uint64 {
		l, err := kernels[i].h.LinkByName(dev)
		if err != nil || l.Attrs().Statistics == nil {
			return 0
		}
		return l.Attrs().Statistics.TxPackets
	}

	// Before felis programs anything, the pods cannot reach each other.
	a, b := nodes[0].pod, nodes[1].pod
	if r := a.ProbeTimeout(tnetns.ICMP, netip.AddrPortFrom(b.IPv4, 0), 500*time.Millisecond); r.Allowed() == nil {
		t.Fatalf("pods reach each other before felis programmed the nodes: %v", r)
	}

	program(false)
	lst, err := b.Listen(tnetns.TCP, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, dev := range []string{render.VXLANDevice, render.VXLANDeviceV6} {
		dst, src := b.IPv4, a.IPv4
		if dev == render.VXLANDeviceV6 {
			dst, src = b.IPv6, a.IPv6
		}
		before := txPackets(0, dev)
		a.ExpectAllowed(t, tnetns.ICMP, netip.AddrPortFrom(dst, 0))
		a.ExpectAllowed(t, tnetns.TCP, netip.AddrPortFrom(dst, lst.Port))
		b.ExpectAllowed(t, tnetns.ICMP, netip.AddrPortFrom(src, 0))
		if after := txPackets(0, dev); after <= before {
			t.Errorf("%s on n1 sent no packets (tx %d -> %d): traffic did not take the tunnel", dev, before, after)
		}
	}

	// No-encap: the same pods over direct routes via the node IPs; the VXLAN device goes.
	program(true)
	if _, err := kernels[0].h.LinkByName(render.VXLANDevice); err == nil {
		t.Errorf("vxlan.calico still exists on n1 with VXLAN off")
	} else if _, ok := err.(vnl.LinkNotFoundError); !ok {
		t.Errorf("looking for vxlan.calico: %v", err)
	}
	for _, dst := range []netip.Addr{b.IPv4, b.IPv6} {
		a.ExpectAllowed(t, tnetns.ICMP, netip.AddrPortFrom(dst, 0))
		a.ExpectAllowed(t, tnetns.TCP, netip.AddrPortFrom(dst, lst.Port))
	}
}
