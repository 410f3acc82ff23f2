//go:build linux

package bpf

import (
	"context"
	"fmt"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"

	"github.com/felis-dev/felis/snapshot"
	"github.com/felis-dev/felis/tools/netns"
)

// TestPacketsHostClientServices: real packets from the node itself (a host-network client) to
// a ClusterIP. node1 runs felis and the backend web-a; node2, on the same underlay and without
// felis, runs web-b, routed from node1 over the underlay. Both are behind 10.96.0.70:80 and
// [fd00:96::70]:80 (TCP and UDP echo on 8080). node1's own sockets reach both backends over
// TCP and UDP, IPv4 and IPv6: every exchange completes, so the replies came back from the
// ClusterIP (the local backend's at its veth, the remote one's at eth0). A service without
// endpoints refuses node1's connection (the ICMP port unreachable is sent back into the host).
// node2's own connections to the ClusterIP are not NATed (no felis there): they time out,
// which shows the answers on node1 come from felis. Cleanup removes felis_data_out from eth0.
// Run with TCX links and with clsact cls_bpf filters.
func TestPacketsHostClientServices(t *testing.T) {
	for _, clsact := range []bool{false, true} {
		t.Run(map[bool]string{false: "tcx", true: "clsact"}[clsact], func(t *testing.T) { hostClientServices(t, clsact) })
	}
}

func hostClientServices(t *testing.T, clsact bool) {
	_, dir := openTest(t)
	node, node2, webA, webB, listeners, snap := twoNodeBackends(t)
	svc := snapshot.Service{ID: "app/web"}
	for _, proto := range []uint8{6, 17} {
		svc.Frontends = append(svc.Frontends,
			snapshot.Frontend{Addr: netip.MustParseAddr("10.96.0.70"), Port: 80, Protocol: proto, Kind: "ClusterIP"},
			snapshot.Frontend{Addr: netip.MustParseAddr("fd00:96::70"), Port: 80, Protocol: proto, Kind: "ClusterIP"})
		for _, p := range []*netns.Pod{webA, webB} {
			for _, a := range p.Addrs() {
				svc.Backends = append(svc.Backends, snapshot.Backend{Addr: a, Port: 8080, Protocol: proto, Node: p.Node.NodeName, Ready: true, Serving: true})
			}
		}
	}
	none := snapshot.Service{ID: "app/none", Frontends: []snapshot.Frontend{
		{Addr: netip.MustParseAddr("10.96.0.71"), Port: 80, Protocol: 6, Kind: "ClusterIP"}}}
	snap.Services = []snapshot.Service{svc, none}
	snap.Finalize()

	var d *Dataplane
	if err := node.Do(func() error {
		var err error
		if d, err = Open(Options{PinDir: dir + "/host", Clsact: clsact}); err != nil {
			return err
		}
		res, err := d.Sync(context.Background(), snap, true)
		in, out := "data-link-attach", "data-out-link-attach"
		if clsact {
			in, out = "data-filter-replace", "data-out-filter-replace"
		}
		if err == nil && (res.Counts[in] != 1 || res.Counts[out] != 1) {
			t.Errorf("sync attached the service programs to %d / %d data interfaces (%s / %s), want 1 / 1 (eth0): %v",
				res.Counts[in], res.Counts[out], in, out, res.Ops)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	defer node.Do(func() error { return Cleanup(context.Background(), dir+"/host") })

	served := func() map[string][2]int {
		out := map[string][2]int{}
		for name, ls := range listeners {
			out[name] = [2]int{ls[0].Served(), ls[1].Served()}
		}
		return out
	}
	for _, dst := range []netip.AddrPort{netip.MustParseAddrPort("10.96.0.70:80"), netip.MustParseAddrPort("[fd00:96::70]:80")} {
		for i, proto := range []netns.Protocol{netns.TCP, netns.UDP} {
			before := served()
			for n := range 24 {
				if err := node.Probe(proto, dst).Allowed(); err != nil {
					t.Fatalf("node1 to the ClusterIP %s over %s, probe %d: %v", dst, proto, n+1, err)
				}
			}
			after := served()
			for _, b := range []string{"web-a", "web-b"} {
				if after[b][i] == before[b][i] {
					t.Errorf("node1 to the ClusterIP %s over %s: %s never served (before %v, after %v); want both backends", dst, proto, b, before, after)
				}
			}
		}
	}
	// A 4,000-byte UDP datagram leaves the host as three fragments: each must be DNATed
	// (the later ones as their first) and the fragmented echo must come back from the
	// ClusterIP, or nobody reassembles it.
	for _, dst := range []netip.AddrPort{netip.MustParseAddrPort("10.96.0.70:80"), netip.MustParseAddrPort("[fd00:96::70]:80")} {
		for range 4 { // both backends, most likely
			if err := node.EchoUDP(dst, 4000); err != nil {
				t.Errorf("node1 to the ClusterIP %s, a 4,000-byte UDP datagram: %v", dst, err)
			}
		}
	}
	if r := node.Probe(netns.TCP, netip.MustParseAddrPort("10.96.0.71:80")); r.Outcome != netns.Refused {
		t.Errorf("node1 to a ClusterIP without endpoints: %s; want refused", r)
	}
	if r := node2.Probe(netns.TCP, netip.MustParseAddrPort("10.96.0.70:80")); r.Outcome == netns.Allowed {
		t.Errorf("node2 (no felis) to the ClusterIP: %s; want no answer", r)
	}

	var left []string
	if err := node.Do(func() error {
		if err := Cleanup(context.Background(), dir+"/host"); err != nil {
			return err
		}
		l, err := node.Netlink().LinkByName("eth0")
		if err != nil {
			return err
		}
		for _, at := range []ebpf.AttachType{ebpf.AttachTCXIngress, ebpf.AttachTCXEgress} {
			res, err := link.QueryPrograms(link.QueryOptions{Target: l.Attrs().Index, Attach: at})
			if err != nil {
				return err
			}
			for _, p := range res.Programs {
				if isFelisProgram(p.ID) {
					left = append(left, fmt.Sprint(at, p.ID))
				}
			}
		}
		for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
			fs, _ := netlink.FilterList(l, parent) // an error: no clsact qdisc, nothing left
			for _, f := range fs {
				if bf, ok := f.(*netlink.BpfFilter); ok && bf.Handle == clsactDataHandle {
					left = append(left, fmt.Sprintf("clsact %x filter %s", parent, bf.Name))
				}
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(left) > 0 {
		t.Errorf("felis programs %v still on eth0 after Cleanup", left)
	}
}

// twoNodeBackends builds the topology the host-client service tests share: node1 and node2 on
// one underlay, backend web-a on node1 and web-b on node2 (TCP and UDP listeners on 8080, IPv4
// and IPv6), node1 routing web-b's prefixes to node2 over the underlay, and node1's snapshot
// with web-a as its only endpoint (allow-all profile, to-host Allow, node addresses set).
func twoNodeBackends(t *testing.T) (node, node2 *netns.Node, webA, webB *netns.Pod, listeners map[string][2]*netns.Listener, snap *snapshot.Snapshot) {
	t.Helper()
	node, node2 = underlayNodes(t)
	webA, err := node.NewPod(netns.PodOptions{Namespace: "app", Name: "web-a", IPv4: netip.MustParseAddr("10.65.0.10"),
		IPv6: netip.MustParseAddr("fd00:65::10")})
	if err != nil {
		t.Fatal(err)
	}
	webB, err = node2.NewPod(netns.PodOptions{Namespace: "app", Name: "web-b", IPv4: netip.MustParseAddr("10.65.1.10"),
		IPv6: netip.MustParseAddr("fd00:65:1::10")})
	if err != nil {
		t.Fatal(err)
	}
	if err := node.AddRoute(netip.MustParsePrefix("10.65.1.0/24"), node2.IPv4); err != nil {
		t.Fatal(err)
	}
	if err := node.AddRoute(netip.MustParsePrefix("fd00:65:1::/64"), node2.IPv6); err != nil {
		t.Fatal(err)
	}
	listeners = map[string][2]*netns.Listener{}
	for name, p := range map[string]*netns.Pod{"web-a": webA, "web-b": webB} {
		tcp, err := p.Listen(netns.TCP, 8080)
		if err != nil {
			t.Fatal(err)
		}
		udp, err := p.Listen(netns.UDP, 8080)
		if err != nil {
			t.Fatal(err)
		}
		listeners[name] = [2]*netns.Listener{tcp, udp}
	}

	all := []snapshot.Rule{{Action: snapshot.Allow}}
	snap = &snapshot.Snapshot{Node: "node1",
		Config: snapshot.Config{DefaultEndpointToHostAction: snapshot.Allow, NodeIPv4: netip.PrefixFrom(node.IPv4, 24),
			NodeIPv6: netip.PrefixFrom(node.IPv6, 64)},
		Profiles: []snapshot.Profile{{ID: "all", Inbound: all, Outbound: all}},
		Endpoints: []snapshot.Endpoint{{ID: "app/web-a", Interface: webA.HostInterface,
			Addrs:   []netip.Prefix{netip.PrefixFrom(webA.IPv4, 32), netip.PrefixFrom(webA.IPv6, 128)},
			Ingress: snapshot.Direction{Profiles: []string{"all"}}, Egress: snapshot.Direction{Profiles: []string{"all"}}}}}
	return node, node2, webA, webB, listeners, snap
}

// underlayNodes builds two node namespaces, node1 and node2, on one underlay in a harness the
// test removes when it ends.
func underlayNodes(t *testing.T) (node1, node2 *netns.Node) {
	t.Helper()
	u, err := netns.New(t).NewUnderlay("underlay")
	if err != nil {
		t.Fatal(err)
	}
	if node1, err = u.NewNode("node1"); err != nil {
		t.Fatal(err)
	}
	if node2, err = u.NewNode("node2"); err != nil {
		t.Fatal(err)
	}
	return node1, node2
}
