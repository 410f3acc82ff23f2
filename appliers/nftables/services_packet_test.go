//go:build linux

package nftables

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/felis-dev/felis/appliers/nftables/render"
	"github.com/felis-dev/felis/snapshot"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// serveName answers every TCP connection on addr:port inside ns with name, then closes it.
func serveName(t *testing.T, ns netns.NsHandle, addr netip.Addr, port uint16, name string) {
	var l net.Listener
	must(t, "listen", inNS(t, ns, func() (err error) {
		l, err = net.Listen("tcp", netip.AddrPortFrom(addr, port).String())
		return err
	}))
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			_, _ = io.WriteString(c, name)
			c.Close()
		}
	}()
}

// ask connects from ns to dst and returns what the server says ("" when it cannot connect).
func ask(t *testing.T, ns netns.NsHandle, dst netip.AddrPort, timeout time.Duration) string {
	var got string
	_ = inNS(t, ns, func() error {
		c, err := net.DialTimeout("tcp", dst.String(), timeout)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(timeout))
		b, err := io.ReadAll(c)
		got = string(b)
		return err
	})
	return got
}

// TestPacketsServices load-balances real TCP through a ClusterIP and a NodePort: from a pod
// every backend answers; a backend itself reaches its own service (hairpin); a not-ready
// backend gets no new connection; affinity pins a client; a service without endpoints refuses
// at once; an ingress policy that allows only the target port admits service traffic (policy
// sees the DNATed destination); and a client outside the node reaches the NodePort.
func TestPacketsServices(t *testing.T) {
	a, b, c := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.3")
	nodeIP, extIP := netip.MustParseAddr("192.168.50.1"), netip.MustParseAddr("192.168.50.2")
	node, pods := packetNode(t, map[string]netip.Addr{"caliaaaa": a, "calibbbb": b, "calicccc": c})
	serveName(t, pods["calibbbb"], b, 8080, "b")
	serveName(t, pods["calicccc"], c, 8080, "c")

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

	// Wait for the wiring (a fresh veth can lose the first ARP request).
	wired := false
	for i := 0; i < 5 && !wired; i++ {
		wired = ask(t, pods["caliaaaa"], netip.AddrPortFrom(b, 8080), time.Second) == "b" &&
			ask(t, pods["caliaaaa"], netip.AddrPortFrom(c, 8080), time.Second) == "c"
	}
	if !wired {
		t.Fatal("without felis, pod A cannot reach pods B and C: the test wiring is broken")
	}

	tcp := uint8(6)
	allowAll := []snapshot.Rule{{Action: snapshot.Allow}}
	ep := func(id, iface string, addr netip.Addr, ingress snapshot.Direction) snapshot.Endpoint {
		return snapshot.Endpoint{ID: id, Interface: iface, Addrs: []netip.Prefix{netip.PrefixFrom(addr, 32)},
			Egress: snapshot.Direction{Profiles: []string{"kns.ns"}}, Ingress: ingress}
	}
	// B and C admit only TCP 8080: a connection to the service port 80 passes only if policy
	// sees the DNATed destination.
	only8080 := snapshot.Direction{Tiers: []snapshot.TierPolicies{{Tier: "default", DefaultAction: snapshot.Deny, Policies: []string{"ns/web"}}}}
	cip := netip.MustParseAddr("10.96.0.10")
	backend := func(addr netip.Addr, ready bool) snapshot.Backend {
		return snapshot.Backend{Addr: addr, Protocol: 6, Port: 8080, PortName: "http", Node: "node-1", Ready: ready, Serving: ready}
	}
	snap := snapshot.Snapshot{
		Node:   "node-1",
		Config: snapshot.Config{InterfacePrefixes: []string{"cali"}},
		Policies: []snapshot.Policy{
			{ID: "ns/web", Tier: "default", Inbound: []snapshot.Rule{{Action: snapshot.Allow, Protocol: &tcp, DstPorts: []snapshot.PortRange{{Min: 8080, Max: 8080}}}}},
		},
		Profiles: []snapshot.Profile{{ID: "kns.ns", Inbound: allowAll, Outbound: allowAll}},
		Endpoints: []snapshot.Endpoint{
			ep("ns/a", "caliaaaa", a, snapshot.Direction{Profiles: []string{"kns.ns"}}),
			ep("ns/b", "calibbbb", b, only8080),
			ep("ns/c", "calicccc", c, only8080),
		},
		Services: []snapshot.Service{{ID: "ns/web",
			Frontends: []snapshot.Frontend{
				{Addr: cip, Protocol: 6, Port: 80, Kind: "ClusterIP", PortName: "http"},
				{Addr: nodeIP, Protocol: 6, Port: 30080, Kind: "NodePort", PortName: "http"},
			},
			Backends: []snapshot.Backend{backend(b, true), backend(c, true)},
		}},
	}
	k, err := NewKernel(WithNetNSFd(int(node)))
	must(t, "kernel", err)
	t.Cleanup(func() { k.Close() })
	ap := NewApplier(k)
	sync := func(what string) {
		t.Helper()
		snap.Finalize()
		tbl, err := render.Render(snap)
		must(t, what+": render", err)
		_, err = ap.Sync(context.Background(), tbl)
		must(t, what+": sync", err)
	}
	// probe asks n times and counts the answers.
	probe := func(from netns.NsHandle, dst netip.AddrPort, n int) map[string]int {
		seen := map[string]int{}
		for range n {
			seen[ask(t, from, dst, 2*time.Second)]++
		}
		return seen
	}
	svc := netip.AddrPortFrom(cip, 80)

	sync("service")
	if seen := probe(pods["caliaaaa"], svc, 30); seen["b"] == 0 || seen["c"] == 0 || seen["b"]+seen["c"] != 30 {
		t.Errorf("pod A -> ClusterIP, 30 probes: answers %v, want both b and c and nothing else", seen)
	}
	if seen := probe(pods["calibbbb"], svc, 20); seen["b"] == 0 || seen["c"] == 0 || seen["b"]+seen["c"] != 20 {
		t.Errorf("pod B -> its own ClusterIP (hairpin), 20 probes: answers %v, want both b and c", seen)
	}
	if seen := probe(ext, netip.AddrPortFrom(nodeIP, 30080), 20); seen["b"] == 0 || seen["c"] == 0 || seen["b"]+seen["c"] != 20 {
		t.Errorf("outside -> NodePort, 20 probes: answers %v, want both b and c", seen)
	}

	snap.Services[0].Backends = []snapshot.Backend{backend(b, false), backend(c, true)}
	sync("b not ready")
	if seen := probe(pods["caliaaaa"], svc, 20); seen["c"] != 20 {
		t.Errorf("b not ready, 20 probes: answers %v, want only c", seen)
	}

	snap.Services[0].Backends = []snapshot.Backend{backend(b, true), backend(c, true)}
	snap.Services[0].AffinitySeconds = 600
	sync("affinity")
	first := ask(t, pods["caliaaaa"], svc, 2*time.Second)
	if seen := probe(pods["caliaaaa"], svc, 20); first == "" || seen[first] != 20 {
		t.Errorf("ClientIP affinity: first answer %q, then %v; want every answer the same", first, seen)
	}
	if seen := probe(pods["calicccc"], svc, 10); len(seen) != 1 || seen[""] != 0 {
		t.Errorf("ClientIP affinity from pod C: %v, want one backend throughout", seen)
	}

	snap.Services[0].Backends = nil
	snap.Services[0].AffinitySeconds = 0
	sync("no endpoints")
	err = inNS(t, pods["caliaaaa"], func() error {
		c, err := net.DialTimeout("tcp", svc.String(), 2*time.Second)
		if err == nil {
			c.Close()
		}
		return err
	})
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("service without endpoints: dial error %v, want connection refused (rejected at once)", err)
	}
	snap.Services[0].Backends = []snapshot.Backend{backend(b, true), backend(c, true)}

	snap.Endpoints[1].Ingress = snapshot.Direction{Tiers: []snapshot.TierPolicies{{Tier: "default", DefaultAction: snapshot.Deny}}}
	snap.Endpoints[2].Ingress = snap.Endpoints[1].Ingress
	snap.Services[0].AffinitySeconds = 0
	sync("deny ingress")
	if got := ask(t, pods["caliaaaa"], svc, 400*time.Millisecond); got != "" {
		t.Errorf("backends deny all ingress: ClusterIP still answered %q", got)
	}
}
