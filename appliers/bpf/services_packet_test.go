//go:build linux

package bpf

import (
	"context"
	"fmt"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/felis-dev/felis/snapshot"
	"github.com/felis-dev/felis/tools/netns"
)

// TestPacketsServices: real packets between namespaces (tools/netns). node1 runs a client
// pod and two backend pods (TCP and UDP echo on 8080) behind the ClusterIP 10.96.0.50:80 and
// the NodePort 30080 of node1's address; node2 on the same underlay is the outside world.
// Pods and nodes are dual-stack, the service too (10.96.0.50 and fd00:96::50, the NodePort on
// both node addresses). The client reaches both backends through the ClusterIP (every
// exchange completes, so the
// replies came back from the ClusterIP: the client's socket accepts nothing else), a backend
// reaches itself (hairpin), and node2 reaches both backends through the NodePort (TCP and
// UDP); a service without endpoints refuses connections from a pod and from outside (ICMP
// port unreachable), and a backend's own port unreachable reaches the client translated.
// Then the felis state is removed with Cleanup.
func TestPacketsServices(t *testing.T) {
	_, dir := openTest(t) // root check and a private bpffs
	node, outside := underlayNodes(t)
	pods := map[string]*netns.Pod{}
	for i, name := range []string{"client", "web-a", "web-b"} {
		p, err := node.NewPod(netns.PodOptions{Namespace: "app", Name: name, IPv4: netip.AddrFrom4([4]byte{10, 65, 0, byte(10 + i)}),
			IPv6: netip.MustParseAddr(fmt.Sprintf("fd00:65::%d", 10+i))})
		if err != nil {
			t.Fatal(err)
		}
		pods[name] = p
	}
	listeners := map[string][2]*netns.Listener{}
	for _, name := range []string{"web-a", "web-b"} {
		tcp, err := pods[name].Listen(netns.TCP, 8080)
		if err != nil {
			t.Fatal(err)
		}
		udp, err := pods[name].Listen(netns.UDP, 8080)
		if err != nil {
			t.Fatal(err)
		}
		listeners[name] = [2]*netns.Listener{tcp, udp}
	}

	all := []snapshot.Rule{{Action: snapshot.Allow}}
	snap := &snapshot.Snapshot{Node: "node1",
		Config: snapshot.Config{DefaultEndpointToHostAction: snapshot.Allow, NodeIPv4: netip.PrefixFrom(node.IPv4, 24),
			NodeIPv6: netip.PrefixFrom(node.IPv6, 64)},
		Profiles: []snapshot.Profile{{ID: "all", Inbound: all, Outbound: all}}}
	svc := snapshot.Service{ID: "app/web"}
	for _, proto := range []uint8{6, 17} {
		svc.Frontends = append(svc.Frontends,
			snapshot.Frontend{Addr: netip.MustParseAddr("10.96.0.50"), Port: 80, Protocol: proto, Kind: "ClusterIP"},
			snapshot.Frontend{Addr: node.IPv4, Port: 30080, Protocol: proto, Kind: "NodePort"},
			snapshot.Frontend{Addr: netip.MustParseAddr("fd00:96::50"), Port: 80, Protocol: proto, Kind: "ClusterIP"},
			snapshot.Frontend{Addr: node.IPv6, Port: 30080, Protocol: proto, Kind: "NodePort"})
	}
	for name, p := range pods {
		snap.Endpoints = append(snap.Endpoints, snapshot.Endpoint{ID: "app/" + name, Interface: p.HostInterface,
			Addrs:   []netip.Prefix{netip.PrefixFrom(p.IPv4, 32), netip.PrefixFrom(p.IPv6, 128)},
			Ingress: snapshot.Direction{Profiles: []string{"all"}}, Egress: snapshot.Direction{Profiles: []string{"all"}}})
		if name != "client" {
			for _, proto := range []uint8{6, 17} {
				for _, a := range p.Addrs() {
					svc.Backends = append(svc.Backends, snapshot.Backend{Addr: a, Port: 8080, Protocol: proto, Node: "node1", Ready: true, Serving: true})
				}
			}
		}
	}
	none := snapshot.Service{ID: "app/none", Frontends: []snapshot.Frontend{
		{Addr: netip.MustParseAddr("10.96.0.60"), Port: 80, Protocol: 6, Kind: "ClusterIP"},
		{Addr: node.IPv4, Port: 30090, Protocol: 6, Kind: "NodePort"}}}
	// closed: UDP to a backend port nothing listens on; web-a answers port unreachable.
	closed := snapshot.Service{ID: "app/closed", Frontends: []snapshot.Frontend{
		{Addr: netip.MustParseAddr("10.96.0.70"), Port: 80, Protocol: 17, Kind: "ClusterIP"},
		{Addr: netip.MustParseAddr("fd00:96::70"), Port: 80, Protocol: 17, Kind: "ClusterIP"}}}
	for _, a := range pods["web-a"].Addrs() {
		closed.Backends = append(closed.Backends, snapshot.Backend{Addr: a, Port: 9999, Protocol: 17, Node: "node1", Ready: true, Serving: true})
	}
	snap.Services = []snapshot.Service{svc, none, closed}
	snap.Finalize()

	var d *Dataplane
	if err := node.Do(func() error {
		var err error
		if d, err = Open(Options{PinDir: dir + "/svc"}); err != nil {
			return err
		}
		res, err := d.Sync(context.Background(), snap, true)
		if err == nil && res.Counts["data-link-attach"] != 1 {
			t.Errorf("sync attached the service program to %d data interfaces, want 1 (eth0): %v", res.Counts["data-link-attach"], res.Ops)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	defer node.Do(func() error { return Cleanup(context.Background(), dir+"/svc") })

	served := func() map[string]int {
		out := map[string]int{}
		for name, ls := range listeners {
			out[name] = ls[0].Served() + ls[1].Served()
		}
		return out
	}
	probe := func(from *netns.Namespace, proto netns.Protocol, dst netip.AddrPort, n int) map[string]int {
		t.Helper()
		before := served()
		for i := range n {
			if err := from.Probe(proto, dst).Allowed(); err != nil {
				t.Fatalf("%s probe %d of %d to %s from %s: %v", proto, i+1, n, dst, from.Name, err)
			}
		}
		after := served()
		for k := range after {
			after[k] -= before[k]
		}
		return after
	}
	cip := netip.MustParseAddrPort("10.96.0.50:80")
	for _, dst := range []netip.AddrPort{cip, netip.MustParseAddrPort("[fd00:96::50]:80")} {
		for _, proto := range []netns.Protocol{netns.TCP, netns.UDP} {
			if got := probe(pods["client"].Namespace, proto, dst, 20); got["web-a"] == 0 || got["web-b"] == 0 {
				t.Errorf("client to the ClusterIP %s over %s: served %v; want both backends", dst, proto, got)
			}
		}
	}
	// A 4,000-byte UDP datagram leaves the client as three fragments (MTU 1500) and its
	// echo comes back as three: every fragment must be DNATed on the way in and come from
	// the ClusterIP on the way back, or the backend or the client cannot reassemble it.
	for _, dst := range []netip.AddrPort{cip, netip.MustParseAddrPort("[fd00:96::50]:80")} {
		if err := pods["client"].EchoUDP(dst, 4000); err != nil {
			t.Errorf("client to the ClusterIP %s, a 4,000-byte UDP datagram: %v", dst, err)
		}
	}
	// The backend's port unreachable reaches the client translated (from the ClusterIP,
	// quoting the client's datagram), so its connected socket sees the refusal; untranslated,
	// the kernel matches it to no socket and the probe times out.
	for _, dst := range []netip.AddrPort{netip.MustParseAddrPort("10.96.0.70:80"), netip.MustParseAddrPort("[fd00:96::70]:80")} {
		if r := pods["client"].Probe(netns.UDP, dst); r.Outcome != netns.Refused {
			t.Errorf("client to %s over UDP (the backend's port is closed): %s; want refused", dst, r)
		}
	}
	if got := probe(pods["web-a"].Namespace, netns.TCP, cip, 20); got["web-a"] == 0 {
		t.Errorf("web-a to its own service: served %v; want web-a among them (hairpin)", got)
	}
	for _, np := range []netip.AddrPort{netip.AddrPortFrom(node.IPv4, 30080), netip.AddrPortFrom(node.IPv6, 30080)} {
		for _, proto := range []netns.Protocol{netns.TCP, netns.UDP} {
			if got := probe(outside.Namespace, proto, np, 20); got["web-a"] == 0 || got["web-b"] == 0 {
				t.Errorf("node2 to node1's NodePort %s over %s: served %v; want both backends", np, proto, got)
			}
		}
	}

	// A service without endpoints rejects: the connection is refused at once (ICMP port
	// unreachable), from a pod and from outside.
	for _, c := range []struct {
		from *netns.Namespace
		dst  netip.AddrPort
	}{{pods["client"].Namespace, netip.MustParseAddrPort("10.96.0.60:80")}, {outside.Namespace, netip.AddrPortFrom(node.IPv4, 30090)}} {
		if r := c.from.Probe(netns.TCP, c.dst); r.Outcome != netns.Refused {
			t.Errorf("%s to %s (a service without endpoints): %s; want refused", c.from.Name, c.dst, r)
		}
	}

	// Cleanup detaches the service program from eth0.
	var left []string
	if err := node.Do(func() error {
		if err := Cleanup(context.Background(), dir+"/svc"); err != nil {
			return err
		}
		l, err := node.Netlink().LinkByName("eth0")
		if err != nil {
			return err
		}
		res, err := link.QueryPrograms(link.QueryOptions{Target: l.Attrs().Index, Attach: ebpf.AttachTCXIngress})
		if err != nil {
			return err
		}
		for _, p := range res.Programs {
			if isFelisProgram(p.ID) {
				left = append(left, fmt.Sprint(p.ID))
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
