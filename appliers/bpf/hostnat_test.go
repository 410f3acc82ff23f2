//go:build linux

package bpf

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"

	"github.com/felis-dev/felis/snapshot"
)

// TestServiceNATFromHost: BPF_PROG_TEST_RUN on felis_data_out (TC egress of a data
// interface), in a private netns where the node is 192.168.5.1 and fd00:5::1 and the backends
// are routed via the underlay. A packet the host sends to a ClusterIP is DNATed to a backend
// (TCP, UDP, IPv6; valid checksums; its TTL kept: the host's own packet, not forwarded) and
// redirected; the flow keeps its backend; new flows reach every backend; a source port
// already used towards the same backend is remapped (and restored on the reply); the reply is
// reverse-NATed to come from the ClusterIP wherever it first meets felis (a local backend's
// felis_from_wep, felis_data_in for a remote one) and passed on to the stack, not
// redirected; a frontend without backends answers with an ICMP port unreachable sent back in;
// packets to no frontend leave untouched. On lo (the host to a NodePort on its own address),
// the same DNAT and redirect; the reply, reverse-NATed at the backend's hook, is redirected
// into lo's ingress with zeroed MACs instead.
func TestServiceNATFromHost(t *testing.T) {
	d, _ := openTest(t)
	toWEP, fromWEP := d.Programs()
	dataIn, dataOut := d.objs.FelisDataIn, d.objs.FelisDataOut
	mustSync(t, d, serviceSnapshot(), true)
	inNetNS(t, func(func(bool)) {
		d1, err := netlink.LinkByName("d0")
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range []struct{ dst, via string }{{"10.0.0.0/24", "192.168.5.2"}, {"10.1.0.0/16", "192.168.5.2"}, {"fd00::/64", "fd00:5::2"}} {
			_, dst, _ := net.ParseCIDR(r.dst)
			if err := netlink.RouteAdd(&netlink.Route{LinkIndex: d1.Attrs().Index, Dst: dst, Gw: net.ParseIP(r.via)}); err != nil {
				t.Fatalf("route %s via %s: %v", r.dst, r.via, err)
			}
		}
		for _, c := range []struct {
			name     string
			src, fe  netip.AddrPort
			proto    uint8
			backends []netip.AddrPort
			local    bool // the backend is the workload: its reply meets felis_from_wep first
		}{
			{"TCP", ap("192.168.5.1:40000"), ap("10.96.0.10:80"), 6, []netip.AddrPort{ap("10.0.0.5:8080"), ap("10.0.0.6:8080")}, false},
			{"TCP to a local backend", ap("192.168.5.1:40000"), ap("10.96.0.11:80"), 6, []netip.AddrPort{ap("10.0.0.1:8080")}, true},
			{"UDP", ap("192.168.5.1:40000"), ap("10.96.0.53:53"), 17, []netip.AddrPort{ap("10.0.0.7:5353")}, false},
			{"IPv6", ap("[fd00:5::1]:40000"), ap("[fd00:96::10]:80"), 6, []netip.AddrPort{ap("[fd00::5]:8080")}, false},
		} {
			seen := map[netip.AddrPort]int{}
			for i := range 40 {
				src := netip.AddrPortFrom(c.src.Addr(), c.src.Port()+uint16(i))
				s := segment{Src: src, Dst: c.fe, Proto: c.proto}
				v, out := sendOn(t, dataOut, s, d1.Attrs().Index)
				if v != tcRedirect || out.Src != src || out.TTL != 64 {
					t.Fatalf("%s: host to %s: verdict %d, sent as %s TTL %d; want redirected from %s, TTL 64", c.name, c.fe, v, out, out.TTL, src)
				}
				seen[out.Dst]++
				if v, again := sendOn(t, dataOut, s, d1.Attrs().Index); v != tcRedirect || again.Dst != out.Dst {
					t.Fatalf("%s: the flow's next packet: verdict %d, sent to %s; want its backend %s", c.name, v, again.Dst, out.Dst)
				}
				reply := segment{Src: out.Dst, Dst: src, Proto: c.proto}
				hook, want := dataIn, uint32(tcNext) // a remote backend's reply, at the data interface
				if c.local {
					// The redirect into a local backend's veth meets its ingress policy; the
					// reply meets the backend's egress hook.
					if v, at := send(t, toWEP, out); v != tcOK || at != out {
						t.Fatalf("%s: into the local backend: verdict %d, as %s", c.name, v, at)
					}
					hook, want = fromWEP, tcOK
				}
				if v, back := send(t, hook, reply); v != want || back.Src != c.fe || back.Dst != src {
					t.Fatalf("%s: reply %s: verdict %d, as %s; want %d (to the stack) from %s to %s", c.name, reply, v, back, want, c.fe, src)
				}
			}
			for _, b := range c.backends {
				if seen[b] == 0 {
					t.Errorf("%s: 40 host flows to %s reached %v; want every backend of %v", c.name, c.fe, seen, c.backends)
				}
			}
		}

		// One source port to two frontends sharing a backend (self: 10.96.0.11:80 and np:
		// 192.168.5.1:30080, both 10.0.0.1:8080): the second flow's reply would be the
		// first's, so it gets another source port, and each reply goes back to its own
		// frontend and the socket's port.
		src := ap("192.168.5.1:2000") // below the remapped range
		first := segment{Src: src, Dst: ap("10.96.0.11:80"), Proto: 6}
		second := segment{Src: src, Dst: ap("192.168.5.1:30080"), Proto: 6}
		_, out1 := sendOn(t, dataOut, first, d1.Attrs().Index)
		v, out2 := sendOn(t, dataOut, second, d1.Attrs().Index)
		if out1.Src != src || out2.Dst != out1.Dst || out2.Src.Addr() != src.Addr() || out2.Src.Port() < 32768 || v != tcRedirect {
			t.Fatalf("two flows from %s to frontends sharing a backend: sent as %s and %s (verdict %d); want the second from another port >= 32768", src, out1, out2, v)
		}
		if _, again := sendOn(t, dataOut, second, d1.Attrs().Index); again.Src != out2.Src {
			t.Errorf("the second flow's next packet left from %s, want %s (its remapped port)", again.Src, out2.Src)
		}
		for _, c := range []struct {
			out segment
			fe  netip.AddrPort
		}{{out1, first.Dst}, {out2, second.Dst}} {
			if v, back := send(t, dataIn, segment{Src: c.out.Dst, Dst: c.out.Src, Proto: 6}); v != tcNext || back.Src != c.fe || back.Dst != src {
				t.Errorf("reply to %s: verdict %d, as %s; want from %s to %s", c.out.Src, v, back, c.fe, src)
			}
		}

		// On lo (ifindex 1): the host reaching a NodePort on its own address. The packet is
		// DNATed and redirected as on a data interface; the reply, reverse-NATed where it
		// first meets felis (a local backend's felis_from_wep, felis_data_in for a remote
		// one), is redirected into lo's ingress with zeroed MACs (from a node address, the
		// input route check of any other interface would drop it), not handed to the stack.
		for _, c := range []struct {
			name   string
			fe, be netip.AddrPort
			local  bool
		}{
			{"its own NodePort, a local backend", ap("192.168.5.1:30080"), ap("10.0.0.1:8080"), true},
			{"its own NodePort, a remote backend", ap("192.168.5.1:30081"), ap("10.1.0.9:8080"), false},
		} {
			src := ap("192.168.5.1:42000")
			s := segment{Src: src, Dst: c.fe, Proto: 6}
			v, out := sendOn(t, dataOut, s, 1)
			if v != tcRedirect || out.Src != src || out.Dst != c.be || out.TTL != 64 {
				t.Fatalf("lo: the host to %s %s: verdict %d, sent as %s TTL %d; want redirected to %s from %s, TTL 64", c.name, c.fe, v, out, out.TTL, c.be, src)
			}
			reply := segment{Src: c.be, Dst: src, Proto: 6}
			hook := dataIn
			if c.local {
				if v, at := send(t, toWEP, out); v != tcOK || at != out {
					t.Fatalf("lo: %s: into the local backend: verdict %d, as %s", c.name, v, at)
				}
				hook = fromWEP
			}
			in := reply.build()
			opts := &ebpf.RunOptions{Data: in, DataOut: make([]byte, len(in)+64)}
			v, err := hook.Run(opts)
			if err != nil {
				t.Fatal(err)
			}
			back := parseSegment(t, opts.DataOut)
			if v != tcRedirect || back.Src != c.fe || back.Dst != src {
				t.Errorf("lo: %s: reply %s: verdict %d, as %s; want redirected (into lo) from %s to %s", c.name, reply, v, back, c.fe, src)
			}
			if mac := opts.DataOut[:12]; !slices.Equal(mac, make([]byte, 12)) {
				t.Errorf("lo: %s: reply's MACs %x, want zero (lo's)", c.name, mac)
			}
			if v, again := sendOn(t, dataOut, s, 1); v != tcRedirect || again.Dst != c.be {
				t.Errorf("lo: %s: the flow's next packet: verdict %d, sent to %s; want its backend %s", c.name, v, again.Dst, c.be)
			}
		}
		// The same flow leaving a data interface (a ClusterIP) is not a lo flow: its reply goes
		// to the stack (checked above); and a packet to a node address that is no frontend
		// leaves lo untouched.
		if v, out := sendOn(t, dataOut, segment{Src: ap("192.168.5.1:42001"), Dst: ap("192.168.5.1:22"), Proto: 6}, 1); v != tcNext || out.Dst != ap("192.168.5.1:22") {
			t.Errorf("lo: the host to its own port 22 (no frontend): verdict %d, as %s; want untouched", v, out)
		}

		c := segment{Src: ap("192.168.5.1:41000"), Dst: ap("10.96.0.12:80"), Proto: 6}
		in := c.build()
		var ctx [11]uint32 // __sk_buff.ifindex: on d0, not lo
		ctx[10] = uint32(d1.Attrs().Index)
		opts := &ebpf.RunOptions{Data: in, DataOut: make([]byte, len(in)+128), Context: ctx}
		if v, err := dataOut.Run(opts); err != nil || v != tcRedirect {
			t.Errorf("host to a frontend without backends: verdict %d (%v), want redirect (reject back in)", v, err)
		} else {
			checkUnreachable(t, c, in, opts.DataOut)
		}
		for _, s := range []segment{
			{Src: ap("192.168.5.1:41001"), Dst: ap("10.0.0.5:8080"), Proto: 6}, // a backend directly
			{Src: ap("192.168.5.1:41002"), Dst: ap("10.96.0.10:81"), Proto: 6}, // another port
		} {
			if v, out := sendOn(t, dataOut, s, d1.Attrs().Index); v != tcNext || out.Src != s.Src || out.Dst != s.Dst || out.TTL != 64 {
				t.Errorf("not a frontend: %s: verdict %d, sent as %s; want untouched", s, v, out)
			}
		}
	})
}

// BenchmarkHostServicePacket: per-packet cost of felis_data_out (BPF_PROG_TEST_RUN, in a
// private netns with a route to the frontends). "not-a-frontend" is what every packet leaving
// a data interface pays (parse, NAT entry lookup, frontend lookup); "established" a host
// flow's packet (NAT entry hit, DNAT, fib lookup, redirect). BPF_PROG_TEST_RUN keeps the
// rewrites between runs, so the established case uses two services that DNAT to each other
// (10.96.0.1:80 → 10.96.0.2:80 → 10.96.0.1:80), both flows recorded before the measurement.
// Each case is its own benchmark function: the program must run on the goroutine (thread)
// that entered the netns, which b.Run would not give.
func BenchmarkHostServicePacketNotFrontend(b *testing.B) {
	benchHostPacket(b, segment{Src: ap("192.168.5.1:1000"), Dst: ap("10.9.9.9:80"), Proto: 6}, tcNext)
}

// BenchmarkHostServicePacketEstablished: see BenchmarkHostServicePacketNotFrontend.
func BenchmarkHostServicePacketEstablished(b *testing.B) {
	benchHostPacket(b, segment{Src: ap("192.168.5.1:1000"), Dst: ap("10.96.0.1:80"), Proto: 6}, tcRedirect)
}

func benchHostPacket(b *testing.B, s segment, want uint32) {
	d, _ := openTest(b)
	dataOut := d.objs.FelisDataOut
	fe1, fe2 := netip.MustParseAddr("10.96.0.1"), netip.MustParseAddr("10.96.0.2")
	snap := syncSnapshot()
	snap.Services = []snapshot.Service{
		{ID: "ns/a", Frontends: []snapshot.Frontend{{Addr: fe1, Protocol: 6, Port: 80, Kind: "ClusterIP"}},
			Backends: []snapshot.Backend{{Addr: fe2, Protocol: 6, Port: 80, Ready: true}}},
		{ID: "ns/b", Frontends: []snapshot.Frontend{{Addr: fe2, Protocol: 6, Port: 80, Kind: "ClusterIP"}},
			Backends: []snapshot.Backend{{Addr: fe1, Protocol: 6, Port: 80, Ready: true}}},
	}
	snap.Finalize()
	if _, err := d.Sync(context.Background(), snap, true); err != nil {
		b.Fatal(err)
	}
	inNetNS(b, func(func(bool)) {
		d0, err := netlink.LinkByName("d0")
		if err != nil {
			b.Fatal(err)
		}
		_, dst, _ := net.ParseCIDR("10.96.0.0/24")
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: d0.Attrs().Index, Dst: dst, Gw: net.ParseIP("192.168.5.2")}); err != nil {
			b.Fatal(err)
		}
		pkt := s.build()
		for range 2 { // record the flows (the established case)
			if ret, _, err := dataOut.Test(pkt); err != nil || ret != want {
				b.Fatalf("warming up: verdict %d (%v), want %d", ret, err, want)
			}
		}
		b.ResetTimer() // the set-up above is not the packet's cost
		benchProg(b, dataOut, pkt, want)
	})
}
