//go:build linux

package nftables

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"testing"
	"time"

	"github.com/felis-dev/felis/appliers/nftables/render"
	"github.com/felis-dev/felis/snapshot"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// inNS runs fn on a thread switched into ns.
func inNS(t *testing.T, ns netns.NsHandle, fn func() error) error {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// The thread is left locked: Go retires it when this goroutine ends, so it never
		// runs other code in the wrong namespace.
		if err := netns.Set(ns); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}()
	return <-errc
}

func must(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// packetNode builds a node netns with an uplink and a default route (so proxy-ARP answers)
// and one pod netns per address, wired Calico-style: host-side veth cali..., pod eth0 with the
// address as a /32 and a default route via 169.254.1.1 on-link.
func packetNode(t *testing.T, pods map[string]netip.Addr) (node netns.NsHandle, podNS map[string]netns.NsHandle) {
	node = newNetNS(t)
	hn, err := netlink.NewHandleAt(node)
	must(t, "node handle", err)
	t.Cleanup(hn.Close)
	must(t, "uplink", hn.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "upl0"}, PeerName: "upl1"}))
	for _, n := range []string{"lo", "upl0", "upl1"} {
		l, err := hn.LinkByName(n)
		must(t, n, err)
		must(t, "up "+n, hn.LinkSetUp(l))
	}
	upl, _ := hn.LinkByName("upl0")
	must(t, "uplink addr", hn.AddrAdd(upl, &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(192, 168, 99, 1), Mask: net.CIDRMask(24, 32)}}))
	must(t, "default route", hn.RouteAdd(&netlink.Route{LinkIndex: upl.Attrs().Index, Gw: net.IPv4(192, 168, 99, 2)}))
	must(t, "forwarding", inNS(t, node, func() error {
		return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644)
	}))
	podNS = map[string]netns.NsHandle{}
	for iface, addr := range pods {
		p := newNetNS(t)
		podNS[iface] = p
		must(t, "veth "+iface, hn.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: iface}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(p))}))
		host, err := hn.LinkByName(iface)
		must(t, iface, err)
		must(t, "up "+iface, hn.LinkSetUp(host))
		must(t, "route to pod", hn.RouteAdd(&netlink.Route{LinkIndex: host.Attrs().Index, Scope: netlink.SCOPE_LINK,
			Dst: &net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(32, 32)}}))
		must(t, "proxy_arp", inNS(t, node, func() error {
			// As Calico does: proxy-ARP without the default random delay of up to 0.8 s.
			if err := os.WriteFile(fmt.Sprintf("/proc/sys/net/ipv4/neigh/%s/proxy_delay", iface), []byte("0"), 0o644); err != nil {
				return err
			}
			return os.WriteFile(fmt.Sprintf("/proc/sys/net/ipv4/conf/%s/proxy_arp", iface), []byte("1"), 0o644)
		}))
		hp, err := netlink.NewHandleAt(p)
		must(t, "pod handle", err)
		eth0, err := hp.LinkByName("eth0")
		must(t, "eth0", err)
		lo, _ := hp.LinkByName("lo")
		must(t, "lo up", hp.LinkSetUp(lo))
		must(t, "eth0 up", hp.LinkSetUp(eth0))
		must(t, "pod addr", hp.AddrAdd(eth0, &netlink.Addr{IPNet: &net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(32, 32)}}))
		gw := net.IPv4(169, 254, 1, 1)
		must(t, "gw route", hp.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Scope: netlink.SCOPE_LINK, Dst: &net.IPNet{IP: gw, Mask: net.CIDRMask(32, 32)}}))
		must(t, "default via gw", hp.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: gw}))
		hp.Close()
	}
	return node, podNS
}

// listen accepts (and closes) TCP connections on addr:port inside ns until the test ends.
func listen(t *testing.T, ns netns.NsHandle, addr netip.Addr, ports ...int) {
	for _, port := range ports {
		var l net.Listener
		must(t, "listen", inNS(t, ns, func() (err error) {
			l, err = net.Listen("tcp", netip.AddrPortFrom(addr, uint16(port)).String())
			return err
		}))
		t.Cleanup(func() { l.Close() })
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
	}
}

// connects reports whether a TCP connection from ns to dst:port is established.
func connects(t *testing.T, ns netns.NsHandle, dst netip.Addr, port int, timeout time.Duration) bool {
	err := inNS(t, ns, func() error {
		c, err := net.DialTimeout("tcp", netip.AddrPortFrom(dst, uint16(port)).String(), timeout)
		if err == nil {
			c.Close()
		}
		return err
	})
	return err == nil
}

// TestPackets programs a rendered snapshot into a node netns and checks real TCP between two
// pods: a tiered policy allows port 80 from pod A's IP set only; then a Pass tier in front,
// then a Deny tier in front, then pod A leaves the set (one element op).
func TestPackets(t *testing.T) {
	a, b := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	node, pods := packetNode(t, map[string]netip.Addr{"caliaaaa": a, "calibbbb": b})
	listen(t, pods["calibbbb"], b, 80, 81)
	k, err := NewKernel(WithNetNSFd(int(node)))
	must(t, "kernel", err)
	t.Cleanup(func() { k.Close() })
	ap := NewApplier(k)
	ctx := context.Background()

	// Fresh veths can lose the first ARP request (the retry comes a second later): wait for
	// the wiring before judging policy.
	before := false
	for i := 0; i < 5 && !before; i++ {
		before = connects(t, pods["caliaaaa"], b, 81, time.Second)
	}
	if !before {
		out, _ := exec.Command("sh", "-c", fmt.Sprintf("for n in $(ls /run/netns | grep felis-nft-%d-); do echo == $n; ip -n $n -br addr; ip -n $n route; ip -n $n neigh; ip netns exec $n sysctl net.ipv4.ip_forward net.ipv4.conf.all.proxy_arp; ip netns exec $n sh -c 'cat /proc/sys/net/ipv4/conf/cali*/proxy_arp'; done", os.Getpid())).CombinedOutput()
		t.Log(string(out))
		t.Fatal("without felis, pod A cannot reach pod B: the test wiring is broken")
	}
	tcp := uint8(6)
	allowAll := []snapshot.Rule{{Action: snapshot.Allow}}
	snap := snapshot.Snapshot{
		Config: snapshot.Config{InterfacePrefixes: []string{"cali"}},
		IPSets: []snapshot.IPSet{{ID: "s:a", Type: snapshot.IPSetIP, Members: []snapshot.Member{{Prefix: netip.PrefixFrom(a, 32)}}}},
		Policies: []snapshot.Policy{
			{ID: "ns/web", Tier: "default", Inbound: []snapshot.Rule{{Action: snapshot.Allow, Protocol: &tcp, SrcIPSets: []string{"s:a"}, DstPorts: []snapshot.PortRange{{Min: 80, Max: 80}}}}},
			{ID: "pass-all", Tier: "security", Inbound: []snapshot.Rule{{Action: snapshot.Pass}}},
			{ID: "deny-a", Tier: "security", Inbound: []snapshot.Rule{{Action: snapshot.Deny, SrcNets: []netip.Prefix{netip.PrefixFrom(a, 32)}}}},
		},
		Profiles: []snapshot.Profile{{ID: "kns.ns", Inbound: allowAll, Outbound: allowAll}},
		Endpoints: []snapshot.Endpoint{
			{ID: "ns/a", Interface: "caliaaaa", Addrs: []netip.Prefix{netip.PrefixFrom(a, 32)}, Egress: snapshot.Direction{Profiles: []string{"kns.ns"}}, Ingress: snapshot.Direction{Profiles: []string{"kns.ns"}}},
			{ID: "ns/b", Interface: "calibbbb", Addrs: []netip.Prefix{netip.PrefixFrom(b, 32)}, Egress: snapshot.Direction{Profiles: []string{"kns.ns"}},
				Ingress: snapshot.Direction{Tiers: []snapshot.TierPolicies{{Tier: "default", DefaultAction: snapshot.Deny, Policies: []string{"ns/web"}}}, Profiles: []string{"kns.ns"}}},
		},
	}
	sync := func(what string) []Op {
		t.Helper()
		tbl, err := render.Render(snap)
		must(t, what+": render", err)
		ops, err := ap.Sync(ctx, tbl)
		must(t, what+": sync", err)
		return ops
	}
	expect := func(what string, port int, want bool) {
		t.Helper()
		// An allowed connection gets a generous timeout; a dropped one is given 400 ms.
		timeout := 400 * time.Millisecond
		if want {
			timeout = 3 * time.Second
		}
		if got := connects(t, pods["caliaaaa"], b, port, timeout); got != want {
			t.Errorf("%s: A -> B:%d connects = %v, want %v", what, port, got, want)
		}
	}

	sync("policy")
	expect("policy allows 80 from A", 80, true)
	expect("tier default denies 81", 81, false)

	snap.Endpoints[1].Ingress.Tiers = append([]snapshot.TierPolicies{{Tier: "security", DefaultAction: snapshot.Deny, Policies: []string{"pass-all"}}}, snap.Endpoints[1].Ingress.Tiers...)
	sync("pass tier")
	expect("a Pass tier in front still reaches the allow", 80, true)

	snap.Endpoints[1].Ingress.Tiers[0].Policies = []string{"deny-a"}
	sync("deny tier")
	expect("a Deny tier in front wins", 80, false)

	snap.Endpoints[1].Ingress.Tiers = snap.Endpoints[1].Ingress.Tiers[1:]
	sync("back")
	expect("back to the allow", 80, true)
	snap.IPSets[0].Members = []snapshot.Member{{Prefix: netip.MustParsePrefix("10.0.0.99/32")}}
	ops := sync("A leaves the set")
	if len(ops) != 2 || ops[0].Verb != DeleteSetElements || ops[1].Verb != AddSetElements {
		t.Fatalf("one member swapped: want delete+add element, got:\n%s", Script(ops))
	}
	expect("A no longer in the set", 80, false)

	snap.Endpoints[1].Ingress = snapshot.Direction{}
	sync("no policy, no profile")
	expect("an endpoint with no profile drops everything", 80, false)
}

// TestPacketsHostEndpointAndNAT adds an external netns behind the node's eth0, a host endpoint
// on eth0 whose policy denies everything, and a NAT-outgoing pool: the failsafe port stays
// open, another port closes, and a pod reaching the outside is masqueraded to the node's address.
func TestPacketsHostEndpointAndNAT(t *testing.T) {
	a := netip.MustParseAddr("10.0.0.1")
	nodeIP, extIP := netip.MustParseAddr("192.168.50.1"), netip.MustParseAddr("192.168.50.2")
	node, pods := packetNode(t, map[string]netip.Addr{"caliaaaa": a})
	ext := newNetNS(t)
	hn, err := netlink.NewHandleAt(node)
	must(t, "node handle", err)
	defer hn.Close()
	must(t, "eth0 veth", hn.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(ext))}))
	eth0, err := hn.LinkByName("eth0")
	must(t, "eth0", err)
	must(t, "eth0 up", hn.LinkSetUp(eth0))
	must(t, "node addr", hn.AddrAdd(eth0, &netlink.Addr{IPNet: &net.IPNet{IP: nodeIP.AsSlice(), Mask: net.CIDRMask(24, 32)}}))
	hx, err := netlink.NewHandleAt(ext)
	must(t, "ext handle", err)
	defer hx.Close()
	xeth, err := hx.LinkByName("eth0")
	must(t, "ext eth0", err)
	lo, _ := hx.LinkByName("lo")
	must(t, "ext lo", hx.LinkSetUp(lo))
	must(t, "ext eth0 up", hx.LinkSetUp(xeth))
	must(t, "ext addr", hx.AddrAdd(xeth, &netlink.Addr{IPNet: &net.IPNet{IP: extIP.AsSlice(), Mask: net.CIDRMask(24, 32)}}))

	listen(t, node, nodeIP, 22, 8080)
	// The external server reports the source address it sees.
	var l net.Listener
	must(t, "ext listen", inNS(t, ext, func() (err error) {
		l, err = net.Listen("tcp", netip.AddrPortFrom(extIP, 9000).String())
		return err
	}))
	t.Cleanup(func() { l.Close() })
	seen := make(chan string, 16)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			seen <- c.RemoteAddr().(*net.TCPAddr).IP.String()
			c.Close()
		}
	}()

	ready := false
	for i := 0; i < 5 && !ready; i++ {
		ready = connects(t, ext, nodeIP, 8080, time.Second)
	}
	if !ready {
		t.Fatal("without felis, the external netns cannot reach the node: the test wiring is broken")
	}
	allowAll := []snapshot.Rule{{Action: snapshot.Allow}}
	snap := snapshot.Snapshot{
		Config: snapshot.Config{InterfacePrefixes: []string{"cali"}, FailsafeInbound: []snapshot.FailsafePort{{Protocol: 6, Port: 22}}},
		Policies: []snapshot.Policy{
			{ID: "deny-all", Tier: "default", Inbound: []snapshot.Rule{{Action: snapshot.Deny}}},
		},
		Profiles: []snapshot.Profile{{ID: "kns.ns", Inbound: allowAll, Outbound: allowAll}},
		Endpoints: []snapshot.Endpoint{{ID: "ns/a", Interface: "caliaaaa", Addrs: []netip.Prefix{netip.PrefixFrom(a, 32)},
			Egress: snapshot.Direction{Profiles: []string{"kns.ns"}}, Ingress: snapshot.Direction{Profiles: []string{"kns.ns"}}}},
		HostEndpoints: []snapshot.HostEndpoint{{ID: "node-eth0", Interface: "eth0",
			Normal: snapshot.HostDirections{Ingress: snapshot.Direction{Tiers: []snapshot.TierPolicies{{Tier: "default", DefaultAction: snapshot.Deny, Policies: []string{"deny-all"}}}}}}},
		Pools: []snapshot.Pool{{CIDR: netip.MustParsePrefix("10.0.0.0/16"), NATOutgoing: true}},
	}
	tbl, err := render.Render(snap)
	must(t, "render", err)
	k, err := NewKernel(WithNetNSFd(int(node)))
	must(t, "kernel", err)
	t.Cleanup(func() { k.Close() })
	_, err = NewApplier(k).Sync(context.Background(), tbl)
	must(t, "sync", err)

	if !connects(t, ext, nodeIP, 22, 3*time.Second) {
		t.Error("failsafe port 22 is closed under a deny-all host endpoint policy")
	}
	if connects(t, ext, nodeIP, 8080, 400*time.Millisecond) {
		t.Error("port 8080 is open under a deny-all host endpoint policy")
	}
	for len(seen) > 0 {
		<-seen
	}
	if !connects(t, pods["caliaaaa"], extIP, 9000, 3*time.Second) {
		t.Fatal("pod A cannot reach the outside")
	}
	select {
	case src := <-seen:
		if src != nodeIP.String() {
			t.Errorf("outside saw source %s, want the node's %s (masquerade)", src, nodeIP)
		}
	case <-time.After(2 * time.Second):
		t.Error("the external server saw no connection")
	}
}
