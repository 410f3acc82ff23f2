//go:build linux

package bpf

import (
	"context"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/felis-dev/felis/appliers/bpf/render"
	"github.com/felis-dev/felis/snapshot"
)

// newNS creates a throwaway network namespace (closed at cleanup) without entering it.
func newNS(t *testing.T) netns.NsHandle {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	ns, err := netns.New()
	if serr := netns.Set(orig); serr != nil {
		panic(serr)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	return ns
}

// inNS runs f on a thread inside ns.
func inNS(t *testing.T, ns netns.NsHandle, f func() error) error {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	if err := netns.Set(ns); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			panic(err)
		}
	}()
	return f()
}

// listenIn accepts (and closes) TCP connections on addr:port inside ns until the test ends.
func listenIn(t *testing.T, ns netns.NsHandle, addr netip.Addr, ports ...uint16) {
	t.Helper()
	for _, p := range ports {
		var l net.Listener
		if err := inNS(t, ns, func() (err error) {
			l, err = net.Listen("tcp", netip.AddrPortFrom(addr, p).String())
			return err
		}); err != nil {
			t.Fatal(err)
		}
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

// connectsFrom says whether a TCP connection from ns to addr:port succeeds within timeout.
func connectsFrom(t *testing.T, ns netns.NsHandle, addr netip.Addr, port uint16, timeout time.Duration) bool {
	t.Helper()
	return inNS(t, ns, func() error {
		c, err := net.DialTimeout("tcp", netip.AddrPortFrom(addr, port).String(), timeout)
		if err == nil {
			c.Close()
		}
		return err
	}) == nil
}

// TestPacketsHostEndpointFailsafe mirrors the nftables host endpoint packet test: a node
// netns whose eth0 faces an external netns, a host endpoint on eth0 whose ingress policy
// denies everything and whose egress has no policy: inbound failsafe port 22 stays open and
// 8080 closes; from the node, outbound failsafe port 9000 stays open and 9001 closes.
func TestPacketsHostEndpointFailsafe(t *testing.T) {
	_, dir := openTest(t) // root check and a private bpffs
	node, ext := newNS(t), newNS(t)
	nodeIP, extIP := netip.MustParseAddr("192.168.50.1"), netip.MustParseAddr("192.168.50.2")
	hn, err := netlink.NewHandleAt(node)
	if err != nil {
		t.Fatal(err)
	}
	defer hn.Close()
	if err := hn.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(ext))}); err != nil {
		t.Fatal(err)
	}
	hx, err := netlink.NewHandleAt(ext)
	if err != nil {
		t.Fatal(err)
	}
	defer hx.Close()
	for _, s := range []struct {
		h  *netlink.Handle
		ip netip.Addr
	}{{hn, nodeIP}, {hx, extIP}} {
		for _, n := range []string{"lo", "eth0"} {
			l, err := s.h.LinkByName(n)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.h.LinkSetUp(l); err != nil {
				t.Fatal(err)
			}
			if n == "eth0" {
				if err := s.h.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: s.ip.AsSlice(), Mask: net.CIDRMask(24, 32)}}); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	listenIn(t, node, nodeIP, 22, 8080)
	listenIn(t, ext, extIP, 9000, 9001)
	ready := false
	for i := 0; i < 5 && !ready; i++ {
		ready = connectsFrom(t, ext, nodeIP, 8080, time.Second)
	}
	if !ready || !connectsFrom(t, node, extIP, 9001, time.Second) {
		t.Fatal("without felis, the netns cannot reach each other: the test wiring is broken")
	}

	snap := &snapshot.Snapshot{
		Node: "n",
		Config: snapshot.Config{FailsafeInbound: []snapshot.FailsafePort{{Protocol: 6, Port: 22}},
			FailsafeOutbound: []snapshot.FailsafePort{{Protocol: 6, Port: 9000}}},
		Policies: []snapshot.Policy{{ID: "deny-all", Tier: "default", Inbound: []snapshot.Rule{{Action: snapshot.Deny}}}},
		HostEndpoints: []snapshot.HostEndpoint{{ID: "node-eth0", Interface: "eth0",
			Normal: snapshot.HostDirections{Ingress: snapshot.Direction{Tiers: []snapshot.TierPolicies{{Tier: "default", DefaultAction: snapshot.Deny, Policies: []string{"deny-all"}}}}}}},
	}
	var d *Dataplane
	if err := inNS(t, node, func() error {
		var err error
		if d, err = Open(Options{PinDir: dir + "/hep"}); err != nil {
			return err
		}
		res, err := d.Sync(context.Background(), snap, true)
		if err == nil && res.Counts["link-attach"] != 2 {
			t.Errorf("sync attached %d links, want 2 (eth0 in and out)", res.Counts["link-attach"])
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	defer inNS(t, node, func() error { return Cleanup(context.Background(), dir+"/hep") })

	if !connectsFrom(t, ext, nodeIP, 22, 3*time.Second) {
		t.Error("failsafe port 22 is closed under a deny-all host endpoint policy")
	}
	if connectsFrom(t, ext, nodeIP, 8080, 400*time.Millisecond) {
		t.Error("port 8080 is open under a deny-all host endpoint policy")
	}
	if !connectsFrom(t, node, extIP, 9000, 3*time.Second) {
		t.Error("outbound failsafe port 9000 is closed under a host endpoint without egress policy")
	}
	if connectsFrom(t, node, extIP, 9001, 400*time.Millisecond) {
		t.Error("outbound port 9001 is open under a host endpoint without egress policy")
	}
}

// TestHostEndpointPolicesOnlyHostTraffic: with BPF_PROG_TEST_RUN in a netns with forwarding
// on, a host endpoint's normal programs police traffic to the host (TC ingress) and from it
// (TC egress); forwarded traffic passes when it has no forward policy; failsafes open their
// port; no anti-spoofing.
func TestHostEndpointPolicesOnlyHostTraffic(t *testing.T) {
	d, _ := openTest(t)
	toWEP, fromWEP := d.Programs() // TC egress and TC ingress programs
	inNetNS(t, func(func(bool)) {
		s := &snapshot.Snapshot{
			Node:     "n",
			Config:   snapshot.Config{FailsafeInbound: []snapshot.FailsafePort{{Protocol: 6, Port: 22}}},
			Policies: []snapshot.Policy{{ID: "deny-all", Tier: "default", Inbound: []snapshot.Rule{{Action: snapshot.Deny}}, Outbound: []snapshot.Rule{{Action: snapshot.Deny}}}},
			HostEndpoints: []snapshot.HostEndpoint{{ID: "h", Interface: "eth0", Normal: snapshot.HostDirections{
				Ingress: snapshot.Direction{Tiers: []snapshot.TierPolicies{{Tier: "default", DefaultAction: snapshot.Deny, Policies: []string{"deny-all"}}}},
				Egress:  snapshot.Direction{Tiers: []snapshot.TierPolicies{{Tier: "default", DefaultAction: snapshot.Deny, Policies: []string{"deny-all"}}}}}}},
		}
		mustSync(t, d, s, true)
		tcp := func(src, dst string, sport, dport uint16) snapshot.Packet {
			return snapshot.Packet{Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(dst), Protocol: 6, SrcPort: sport, DstPort: dport}
		}
		for _, c := range []struct {
			name    string
			ingress bool
			pkt     snapshot.Packet
			want    uint32
		}{
			{"to the host", true, tcp("10.1.1.1", "192.168.5.1", 40000, 80), tcShot},
			{"to the host, failsafe port", true, tcp("10.1.1.1", "192.168.5.1", 40001, 22), tcOK},
			{"forwarded in", true, tcp("10.1.1.1", "192.168.5.7", 40002, 80), tcOK},
			{"from the host", false, tcp("192.168.5.1", "10.1.1.1", 40003, 80), tcShot},
			{"forwarded out (a routed, non-local source)", false, tcp("192.168.5.9", "192.168.5.7", 40004, 80), tcOK},
		} {
			prog := toWEP
			if c.ingress {
				prog = fromWEP
			}
			if got := run(t, prog, c.pkt); got != c.want {
				t.Errorf("%s (%v→%v:%d): verdict %d, want %d", c.name, c.pkt.Src, c.pkt.Dst, c.pkt.DstPort, got, c.want)
			}
		}
		st, err := render.Render(&snapshot.Snapshot{HostEndpoints: []snapshot.HostEndpoint{{ID: "all", Interface: "*"}}})
		if err != nil || len(st.Endpoints) != 0 || len(st.Warnings) != 0 || st.Wildcard == nil {
			t.Errorf("wildcard host endpoint: endpoints %v, warnings %q, wildcard %v, err %v; want it rendered, on no interface yet", st.Endpoints, st.Warnings, st.Wildcard, err)
		}
	})
}
