//go:build linux

package bpf

import (
	"context"
	"encoding/binary"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"

	"github.com/felis-dev/felis/snapshot"
)

// segment is one TCP or UDP packet as a test sends it and reads it back.
type segment struct {
	Src, Dst         netip.AddrPort
	Proto            uint8
	TTL              uint8 // as read back (sent: 64)
	ZeroUDPChecksum  bool  // send a UDP datagram without checksum (IPv4 only)
	checksumsChecked bool
}

func (s segment) String() string { return fmt.Sprintf("%s -> %s/%d", s.Src, s.Dst, s.Proto) }

var payload = []byte("felis service nat test payload, odd length.")

// csum is the Internet checksum of b (folded, not complemented) added to sum.
func csum(sum uint32, b []byte) uint32 {
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return sum
}

// pseudo is the L4 pseudo-header sum.
func pseudo(src, dst netip.Addr, proto uint8, n int) uint32 {
	var sum uint32
	sum = csum(sum, src.AsSlice())
	sum = csum(sum, dst.AsSlice())
	return csum(sum, []byte{0, proto, byte(n >> 8), byte(n)})
}

// build makes an Ethernet frame with valid IPv4 header and L4 checksums.
func (s segment) build() []byte {
	hl := 20
	if s.Proto == 17 {
		hl = 8
	}
	l4 := make([]byte, hl+len(payload))
	binary.BigEndian.PutUint16(l4[0:], s.Src.Port())
	binary.BigEndian.PutUint16(l4[2:], s.Dst.Port())
	copy(l4[hl:], payload)
	off := 16
	if s.Proto == 17 {
		binary.BigEndian.PutUint16(l4[4:], uint16(len(l4)))
		off = 6
	} else {
		l4[12] = 5 << 4
		l4[13] = 0x18 // PSH ACK
	}
	if !s.ZeroUDPChecksum {
		c := ^uint16(csum(pseudo(s.Src.Addr(), s.Dst.Addr(), s.Proto, len(l4)), l4))
		if c == 0 && s.Proto == 17 {
			c = 0xffff
		}
		binary.BigEndian.PutUint16(l4[off:], c)
	}
	b := make([]byte, 14, 128)
	if s.Src.Addr().Is4() {
		binary.BigEndian.PutUint16(b[12:], 0x0800)
		h := make([]byte, 20)
		h[0] = 0x45
		binary.BigEndian.PutUint16(h[2:], uint16(20+len(l4)))
		h[8] = 64
		h[9] = s.Proto
		copy(h[12:], s.Src.Addr().AsSlice())
		copy(h[16:], s.Dst.Addr().AsSlice())
		binary.BigEndian.PutUint16(h[10:], ^uint16(csum(0, h)))
		b = append(b, h...)
	} else {
		binary.BigEndian.PutUint16(b[12:], 0x86dd)
		h := make([]byte, 40)
		h[0] = 0x60
		binary.BigEndian.PutUint16(h[4:], uint16(len(l4)))
		h[6] = s.Proto
		h[7] = 64
		copy(h[8:], s.Src.Addr().AsSlice())
		copy(h[24:], s.Dst.Addr().AsSlice())
		b = append(b, h...)
	}
	return append(b, l4...)
}

// parseSegment reads a frame back and checks its IPv4 header and L4 checksums.
func parseSegment(t *testing.T, b []byte) segment {
	t.Helper()
	var s segment
	var l4 []byte
	var src, dst netip.Addr
	switch binary.BigEndian.Uint16(b[12:]) {
	case 0x0800:
		h := b[14:34]
		if c := csum(0, h); c != 0xffff {
			t.Errorf("IPv4 header checksum invalid (sum %#x) in %x", c, b)
		}
		s.Proto, s.TTL = h[9], h[8]
		src, _ = netip.AddrFromSlice(h[12:16])
		dst, _ = netip.AddrFromSlice(h[16:20])
		l4 = b[34:]
	case 0x86dd:
		h := b[14:54]
		s.Proto, s.TTL = h[6], h[7]
		src, _ = netip.AddrFromSlice(h[8:24])
		dst, _ = netip.AddrFromSlice(h[24:40])
		l4 = b[54:]
	default:
		t.Fatalf("not IP: %x", b)
	}
	s.Src = netip.AddrPortFrom(src, binary.BigEndian.Uint16(l4[0:]))
	s.Dst = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(l4[2:]))
	if s.Proto == 17 && binary.BigEndian.Uint16(l4[6:]) == 0 {
		s.ZeroUDPChecksum = true
	} else if c := csum(pseudo(src, dst, s.Proto, len(l4)), l4); c != 0xffff {
		t.Errorf("%s: L4 checksum invalid (sum %#x)", s, c)
	}
	s.checksumsChecked = true
	return s
}

// send runs prog on the segment and returns the verdict and the packet as it left.
func send(t *testing.T, prog *ebpf.Program, s segment) (uint32, segment) {
	t.Helper()
	in := s.build()
	out := make([]byte, len(in)+64)
	opts := &ebpf.RunOptions{Data: in, DataOut: out}
	ret, err := prog.Run(opts)
	if err != nil {
		t.Fatalf("BPF_PROG_TEST_RUN: %v", err)
	}
	return ret, parseSegment(t, opts.DataOut)
}

// sendOn is send with the packet on the interface ifindex (the context's __sk_buff.ifindex, at
// byte 40; BPF_PROG_TEST_RUN puts a packet without one on lo).
func sendOn(t *testing.T, prog *ebpf.Program, s segment, ifindex int) (uint32, segment) {
	t.Helper()
	in := s.build()
	out := make([]byte, len(in)+64)
	var ctx [11]uint32
	ctx[10] = uint32(ifindex)
	opts := &ebpf.RunOptions{Data: in, DataOut: out, Context: ctx}
	ret, err := prog.Run(opts)
	if err != nil {
		t.Fatalf("BPF_PROG_TEST_RUN on ifindex %d: %v", ifindex, err)
	}
	return ret, parseSegment(t, opts.DataOut)
}

// tcRedirect is TC_ACT_REDIRECT.
const tcRedirect = 7

// checkUnreachable checks that out is the ICMP (v6) port unreachable rejecting in (sent as
// c): MAC addresses swapped, from c's destination to its source, valid checksums, quoting
// in's IP header and the first 8 bytes of its L4 header.
func checkUnreachable(t *testing.T, c segment, in, out []byte) {
	t.Helper()
	if !slices.Equal(out[0:6], in[6:12]) || !slices.Equal(out[6:12], in[0:6]) {
		t.Errorf("%s: reject MACs %x, want swapped %x", c, out[:12], in[:12])
	}
	var src, dst netip.Addr
	var icmp, quoted []byte
	wantType, wantCode := byte(3), byte(3)
	if c.Src.Addr().Is4() {
		h := out[14:34]
		if csum(0, h) != 0xffff || h[9] != 1 || int(binary.BigEndian.Uint16(h[2:])) != len(out)-14 {
			t.Errorf("%s: reject IPv4 header %x (checksum, protocol 1, length %d)", c, h, len(out)-14)
		}
		src, _ = netip.AddrFromSlice(h[12:16])
		dst, _ = netip.AddrFromSlice(h[16:20])
		icmp, quoted = out[34:], in[14:14+28]
		if csum(0, icmp) != 0xffff {
			t.Errorf("%s: ICMP checksum invalid", c)
		}
	} else {
		h := out[14:54]
		src, _ = netip.AddrFromSlice(h[8:24])
		dst, _ = netip.AddrFromSlice(h[24:40])
		icmp, quoted = out[54:], in[14:14+48]
		wantType, wantCode = 1, 4
		if h[6] != 58 || int(binary.BigEndian.Uint16(h[4:])) != len(icmp) || csum(pseudo(src, dst, 58, len(icmp)), icmp) != 0xffff {
			t.Errorf("%s: reject IPv6 header %x or ICMPv6 checksum invalid", c, h)
		}
	}
	if src != c.Dst.Addr() || dst != c.Src.Addr() || icmp[0] != wantType || icmp[1] != wantCode || !slices.Equal(icmp[8:], quoted) {
		t.Errorf("%s: reject %s -> %s type %d code %d quoting %x; want %s -> %s type %d code %d quoting %x",
			c, src, dst, icmp[0], icmp[1], icmp[8:], c.Dst.Addr(), c.Src.Addr(), wantType, wantCode, quoted)
	}
}

// tcNext is TC_ACT_UNSPEC (TCX_NEXT): the packet goes on to the hook's next program.
const tcNext = 0xffffffff

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

// serviceSnapshot: one workload (10.0.0.1, fd00::1) whose egress and ingress allow
// everything, on node n (192.168.5.1), and services: web (ClusterIP 10.96.0.10:80 and
// [fd00:96::10]:80, TCP, backends 10.0.0.5 and 10.0.0.6 :8080 and fd00::5 :8080), dns (UDP
// 10.96.0.53:53 → 10.0.0.7:5353), self (10.96.0.11:80 → the workload itself, 10.0.0.1:8080),
// empty (10.96.0.12:80 TCP and UDP, [fd00:96::12]:80, no backend), local-elsewhere (a Local
// NodePort 192.168.5.1:30082 whose only backend is on another node), sticky (10.96.0.13:80 with ClientIP affinity over
// 10.0.0.5, 10.0.0.6, 10.0.0.8) and np (NodePort 192.168.5.1:30080 with one local backend,
// the workload at 10.0.0.1:8080, and, for 192.168.5.1:30081, one backend 10.1.0.9:8080 on another node).
func serviceSnapshot() *snapshot.Snapshot {
	all := []snapshot.Rule{{Action: snapshot.Allow}}
	be := func(addr string, port uint16, proto uint8, node string) snapshot.Backend {
		return snapshot.Backend{Addr: netip.MustParseAddr(addr), Port: port, Protocol: proto, Node: node, Ready: true, Serving: true}
	}
	fe := func(addr string, port uint16, proto uint8, kind string) snapshot.Frontend {
		return snapshot.Frontend{Addr: netip.MustParseAddr(addr), Port: port, Protocol: proto, Kind: kind}
	}
	s := &snapshot.Snapshot{
		Node: "n",
		Config: snapshot.Config{DefaultEndpointToHostAction: snapshot.Allow,
			NodeIPv4: netip.MustParsePrefix("192.168.5.1/24"), NodeIPv6: netip.MustParsePrefix("fd00:5::1/64")},
		Profiles: []snapshot.Profile{{ID: "all", Inbound: all, Outbound: all}},
		Endpoints: []snapshot.Endpoint{{ID: "ns/ep", Interface: "cali0",
			Addrs:   []netip.Prefix{netip.MustParsePrefix("10.0.0.1/32"), netip.MustParsePrefix("fd00::1/128")},
			Ingress: snapshot.Direction{Profiles: []string{"all"}}, Egress: snapshot.Direction{Profiles: []string{"all"}}}},
		Services: []snapshot.Service{
			{ID: "ns/web", Frontends: []snapshot.Frontend{fe("10.96.0.10", 80, 6, "ClusterIP"), fe("fd00:96::10", 80, 6, "ClusterIP")},
				Backends: []snapshot.Backend{be("10.0.0.5", 8080, 6, "n"), be("10.0.0.6", 8080, 6, "n"), be("fd00::5", 8080, 6, "n")}},
			{ID: "ns/dns", Frontends: []snapshot.Frontend{fe("10.96.0.53", 53, 17, "ClusterIP")},
				Backends: []snapshot.Backend{be("10.0.0.7", 5353, 17, "n")}},
			{ID: "ns/self", Frontends: []snapshot.Frontend{fe("10.96.0.11", 80, 6, "ClusterIP")},
				Backends: []snapshot.Backend{be("10.0.0.1", 8080, 6, "n")}},
			{ID: "ns/empty", Frontends: []snapshot.Frontend{fe("10.96.0.12", 80, 6, "ClusterIP"), fe("fd00:96::12", 80, 6, "ClusterIP"), fe("10.96.0.12", 80, 17, "ClusterIP")}},
			{ID: "ns/local-elsewhere", Frontends: []snapshot.Frontend{{Addr: netip.MustParseAddr("192.168.5.1"), Port: 30082, Protocol: 6, Kind: "NodePort", LocalOnly: true}},
				Backends: []snapshot.Backend{be("10.1.0.9", 8080, 6, "other")}},
			{ID: "ns/sticky", AffinitySeconds: 60, Frontends: []snapshot.Frontend{fe("10.96.0.13", 80, 6, "ClusterIP")},
				Backends: []snapshot.Backend{be("10.0.0.5", 8080, 6, "n"), be("10.0.0.6", 8080, 6, "n"), be("10.0.0.8", 8080, 6, "n")}},
			{ID: "ns/np", Frontends: []snapshot.Frontend{fe("192.168.5.1", 30080, 6, "NodePort")},
				Backends: []snapshot.Backend{be("10.0.0.1", 8080, 6, "n")}},
			{ID: "ns/np-remote", Frontends: []snapshot.Frontend{fe("192.168.5.1", 30081, 6, "NodePort")},
				Backends: []snapshot.Backend{be("10.1.0.9", 8080, 6, "other")}},
		},
	}
	s.Finalize()
	return s
}

// TestServiceNATFromWorkload: BPF_PROG_TEST_RUN on the workload hooks. A packet to a
// ClusterIP is DNATed to a backend (valid checksums; TCP, UDP, UDP without checksum, IPv6),
// the flow keeps its backend, new flows reach every backend, the reply is reverse-NATed to
// come from the ClusterIP; hairpin gets the frontend as source and its reply is rewritten
// back; a frontend without backends answers with an ICMP (v6) port unreachable sent back
// into the pod (TCP, UDP, IPv6); ClientIP affinity pins a client to one backend.
func TestServiceNATFromWorkload(t *testing.T) {
	d, _ := openTest(t)
	toWEP, fromWEP := d.Programs()
	mustSync(t, d, serviceSnapshot(), true)

	backends := map[netip.AddrPort]bool{ap("10.0.0.5:8080"): true, ap("10.0.0.6:8080"): true}
	seen := map[netip.AddrPort]int{}
	for port := uint16(40000); port < 40040; port++ {
		c := segment{Src: netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), port), Dst: ap("10.96.0.10:80"), Proto: 6}
		v, out := send(t, fromWEP, c)
		if v != tcOK || out.Src != c.Src || !backends[out.Dst] {
			t.Fatalf("%s: verdict %d, sent as %s; want pass to a backend from the client", c, v, out)
		}
		seen[out.Dst]++
		v, again := send(t, fromWEP, c)
		if v != tcOK || again.Dst != out.Dst {
			t.Fatalf("%s again: verdict %d to %s; want the flow's backend %s", c, v, again.Dst, out.Dst)
		}
		reply := segment{Src: out.Dst, Dst: c.Src, Proto: 6}
		v, back := send(t, toWEP, reply)
		if v != tcOK || back.Src != c.Dst || back.Dst != c.Src {
			t.Fatalf("reply %s: verdict %d, delivered as %s; want from %s to %s", reply, v, back, c.Dst, c.Src)
		}
	}
	if len(seen) != 2 {
		t.Errorf("40 flows reached %v; want both backends", seen)
	}

	for _, c := range []segment{
		{Src: ap("10.0.0.1:5000"), Dst: ap("10.96.0.53:53"), Proto: 17},
		{Src: ap("10.0.0.1:5001"), Dst: ap("10.96.0.53:53"), Proto: 17, ZeroUDPChecksum: true},
		{Src: ap("[fd00::1]:5002"), Dst: ap("[fd00:96::10]:80"), Proto: 6},
	} {
		want := ap("10.0.0.7:5353")
		if c.Src.Addr().Is6() {
			want = ap("[fd00::5]:8080")
		}
		v, out := send(t, fromWEP, c)
		if v != tcOK || out.Dst != want || out.Src != c.Src || out.ZeroUDPChecksum != c.ZeroUDPChecksum {
			t.Errorf("%s (zero checksum %t): verdict %d, sent as %s (zero checksum %t); want to %s", c, c.ZeroUDPChecksum, v, out, out.ZeroUDPChecksum, want)
		}
		v, back := send(t, toWEP, segment{Src: want, Dst: c.Src, Proto: c.Proto, ZeroUDPChecksum: c.ZeroUDPChecksum})
		if v != tcOK || back.Src != c.Dst || back.Dst != c.Src {
			t.Errorf("reply to %s: verdict %d, delivered as %s", c, v, back)
		}
	}

	// Hairpin: the workload reaches itself; it sees the frontend as the source, and its
	// reply, rewritten as it leaves, passes its own ingress as the reply it is.
	c := segment{Src: ap("10.0.0.1:41000"), Dst: ap("10.96.0.11:80"), Proto: 6}
	v, out := send(t, fromWEP, c)
	if want := (segment{Src: ap("10.96.0.11:41000"), Dst: ap("10.0.0.1:8080"), Proto: 6}); v != tcOK || out.Src != want.Src || out.Dst != want.Dst {
		t.Fatalf("hairpin %s: verdict %d, sent as %s; want %s", c, v, out, want)
	}
	v, back := send(t, fromWEP, segment{Src: out.Dst, Dst: out.Src, Proto: 6})
	if v != tcOK || back.Src != c.Dst || back.Dst != c.Src {
		t.Fatalf("hairpin reply: verdict %d, sent as %s; want from %s to %s", v, back, c.Dst, c.Src)
	}
	if v, in := send(t, toWEP, back); v != tcOK || in != back {
		t.Fatalf("hairpin reply into the workload: verdict %d, as %s", v, in)
	}

	// No backend: an ICMP port unreachable from the frontend goes back into the pod.
	for _, c := range []segment{
		{Src: ap("10.0.0.1:42000"), Dst: ap("10.96.0.12:80"), Proto: 6},
		{Src: ap("[fd00::1]:42001"), Dst: ap("[fd00:96::12]:80"), Proto: 6},
		{Src: ap("10.0.0.1:42002"), Dst: ap("10.96.0.12:80"), Proto: 17},
	} {
		in := c.build()
		out := make([]byte, len(in)+128)
		opts := &ebpf.RunOptions{Data: in, DataOut: out}
		v, err := fromWEP.Run(opts)
		if err != nil {
			t.Fatal(err)
		}
		if v != tcRedirect {
			t.Errorf("%s, frontend without backends: verdict %d, want redirect (reject)", c, v)
			continue
		}
		checkUnreachable(t, c, in, opts.DataOut)
	}

	sticky := map[netip.AddrPort]int{}
	for port := uint16(43000); port < 43020; port++ {
		_, out := send(t, fromWEP, segment{Src: netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), port), Dst: ap("10.96.0.13:80"), Proto: 6})
		sticky[out.Dst]++
	}
	if len(sticky) != 1 {
		t.Errorf("20 flows of one client with ClientIP affinity reached %v; want one backend", sticky)
	}
}

// TestServiceNATPolicySeesBackend: egress policy is evaluated on the DNATed packet, and a
// denied packet leaves no NAT entry.
func TestServiceNATPolicySeesBackend(t *testing.T) {
	d, _ := openTest(t)
	_, fromWEP := d.Programs()
	s := serviceSnapshot()
	s.Profiles = append(s.Profiles, snapshot.Profile{ID: "to-5", Outbound: []snapshot.Rule{{Action: snapshot.Allow,
		DstNets: []netip.Prefix{netip.MustParsePrefix("10.0.0.5/32")}}}})
	s.Endpoints[0].Egress.Profiles = []string{"to-5"}
	s.Finalize()
	mustSync(t, d, s, true)
	if v, out := send(t, fromWEP, segment{Src: ap("10.0.0.1:1000"), Dst: ap("10.96.0.30:80"), Proto: 6}); v != tcShot {
		t.Errorf("no frontend, no allowed destination: verdict %d (%s), want drop", v, out)
	}
	allowed, denied := 0, 0
	for port := uint16(1000); port < 1030; port++ {
		v, out := send(t, fromWEP, segment{Src: netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), port), Dst: ap("10.96.0.10:80"), Proto: 6})
		switch {
		case v == tcOK && out.Dst == ap("10.0.0.5:8080"):
			allowed++
		case v == tcShot:
			denied++
		default:
			t.Fatalf("verdict %d to %s: want 10.0.0.5 passed, 10.0.0.6 dropped", v, out.Dst)
		}
	}
	if allowed == 0 || denied == 0 {
		t.Fatalf("30 flows: %d to 10.0.0.5 allowed, %d to 10.0.0.6 denied; want both", allowed, denied)
	}
	if n := countNAT(t, d); n != 2*allowed {
		t.Errorf("%d NAT entries; want 2 per allowed flow (%d)", n, 2*allowed)
	}
}

func countNAT(t *testing.T, d *Dataplane) int {
	t.Helper()
	var k policyNatKey
	var v policyNatVal
	n := 0
	it := d.objs.FnatV1.Iterate()
	for it.Next(&k, &v) {
		n++
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestServiceNATFromOutside: felis_data_in on a data interface, in a private netns whose d0
// holds the node address 192.168.5.1. A NodePort with a local backend keeps the client's
// source; the backend's reply leaving its workload is rewritten to come from the NodePort.
// A NodePort whose backend is on another node is SNATed to the node's address, and the
// reply arriving from that node is rewritten back to the client.
func TestServiceNATFromOutside(t *testing.T) {
	d, _ := openTest(t)
	toWEP, fromWEP := d.Programs()
	dataIn := d.objs.FelisDataIn
	mustSync(t, d, serviceSnapshot(), true)
	inNetNS(t, func(func(bool)) {
		client := ap("192.168.5.2:5555")
		c := segment{Src: client, Dst: ap("192.168.5.1:30080"), Proto: 6}
		v, out := send(t, dataIn, c)
		if v != tcNext || out.Src != client || out.Dst != ap("10.0.0.1:8080") {
			t.Fatalf("NodePort, local backend: verdict %d, sent as %s; want it passed on from the client to 10.0.0.1:8080", v, out)
		}
		if v, in := send(t, toWEP, out); v != tcOK || in != out {
			t.Fatalf("NodePort into the backend's workload: verdict %d, as %s", v, in)
		}
		v, back := send(t, fromWEP, segment{Src: out.Dst, Dst: client, Proto: 6})
		if v != tcRedirect || back.Src != c.Dst || back.Dst != client || back.TTL != 63 {
			t.Fatalf("reply from the local backend: verdict %d, sent as %s TTL %d; want redirected (forwarded: TTL 63) from %s to %s", v, back, back.TTL, c.Dst, client)
		}

		c = segment{Src: client, Dst: ap("192.168.5.1:30081"), Proto: 6}
		v, out = send(t, dataIn, c)
		if v == tcShot || out.Src.Addr() != netip.MustParseAddr("192.168.5.1") || out.Dst != ap("10.1.0.9:8080") {
			t.Fatalf("NodePort, remote backend: verdict %d, sent as %s; want from the node to 10.1.0.9:8080", v, out)
		}
		v, back = send(t, dataIn, segment{Src: out.Dst, Dst: out.Src, Proto: 6})
		if v == tcShot || back.Src != c.Dst || back.Dst != client {
			t.Fatalf("reply from the remote backend: verdict %d, sent as %s; want from %s to %s", v, back, c.Dst, client)
		}
		if v, _ := send(t, dataIn, segment{Src: client, Dst: ap("192.168.5.1:30082"), Proto: 6}); v != tcShot {
			t.Errorf("Local NodePort without local backends (the service has one elsewhere): verdict %d, want drop", v)
		}
		c = segment{Src: client, Dst: ap("10.96.0.12:80"), Proto: 6}
		in := c.build()
		opts := &ebpf.RunOptions{Data: in, DataOut: make([]byte, len(in)+128)}
		if v, err := dataIn.Run(opts); err != nil || v != tcRedirect {
			t.Errorf("from outside to a frontend without backends: verdict %d (%v), want redirect (reject)", v, err)
		} else {
			checkUnreachable(t, c, in, opts.DataOut)
		}
		if v, out := send(t, dataIn, segment{Src: client, Dst: ap("192.168.5.1:22"), Proto: 6}); v != tcNext || out.Dst != ap("192.168.5.1:22") {
			t.Errorf("not a frontend: verdict %d, sent as %s; want untouched", v, out)
		}
	})
}

// TestServiceNATLocalShortCircuit: externalTrafficPolicy Local as kube-proxy has it. A pod
// reaching a Local NodePort on a node without local backends is DNATed to the remote
// backend, keeping its own address, and its reply is reverse-NATed; with local and remote
// backends its flows reach all of them; from outside the same NodePorts reach only the local
// backend (client address kept), or are dropped when there is none.
func TestServiceNATLocalShortCircuit(t *testing.T) {
	d, _ := openTest(t)
	toWEP, fromWEP := d.Programs()
	dataIn := d.objs.FelisDataIn
	snap := serviceSnapshot()
	be := func(addr, node string) snapshot.Backend {
		return snapshot.Backend{Addr: netip.MustParseAddr(addr), Port: 8080, Protocol: 6, Node: node, Ready: true, Serving: true}
	}
	for i := range snap.Services {
		if snap.Services[i].ID == "ns/local-elsewhere" { // and a Local load-balancer IP
			snap.Services[i].Frontends = append(snap.Services[i].Frontends,
				snapshot.Frontend{Addr: netip.MustParseAddr("198.51.100.7"), Port: 80, Protocol: 6, Kind: "LoadBalancer", LocalOnly: true},
				// An external IP that is the node's own address: FE_NODE, as a NodePort.
				snapshot.Frontend{Addr: netip.MustParseAddr("192.168.5.1"), Port: 8090, Protocol: 6, Kind: "ExternalIP", LocalOnly: true})
		}
	}
	snap.Services = append(snap.Services, snapshot.Service{ID: "ns/local-mixed",
		Frontends: []snapshot.Frontend{{Addr: netip.MustParseAddr("192.168.5.1"), Port: 30083, Protocol: 6, Kind: "NodePort", LocalOnly: true}},
		Backends:  []snapshot.Backend{be("10.0.0.5", "n"), be("10.1.0.9", "other"), be("10.1.0.10", "other")}})
	snap.Finalize()
	mustSync(t, d, snap, true)

	// The pod on a node without local backends: the remote one, no SNAT, no redirect.
	c := segment{Src: ap("10.0.0.1:44000"), Dst: ap("192.168.5.1:30082"), Proto: 6}
	v, out := send(t, fromWEP, c)
	if v != tcOK || out.Src != c.Src || out.Dst != ap("10.1.0.9:8080") {
		t.Fatalf("pod to a Local NodePort without local backends: verdict %d, sent as %s; want passed from %s to the remote 10.1.0.9:8080", v, out, c.Src)
	}
	if v, back := send(t, toWEP, segment{Src: out.Dst, Dst: c.Src, Proto: 6}); v != tcOK || back.Src != c.Dst || back.Dst != c.Src {
		t.Fatalf("reply from the remote backend: verdict %d, delivered as %s; want from %s to %s", v, back, c.Dst, c.Src)
	}
	seen := map[netip.AddrPort]int{}
	for port := uint16(44100); port < 44160; port++ {
		c := segment{Src: netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), port), Dst: ap("192.168.5.1:30083"), Proto: 6}
		v, out := send(t, fromWEP, c)
		if v != tcOK || out.Src != c.Src {
			t.Fatalf("pod to a Local NodePort: verdict %d, sent as %s", v, out)
		}
		seen[out.Dst]++
	}
	var reached []string
	for a := range maps.Keys(seen) {
		reached = append(reached, a.String())
	}
	slices.Sort(reached)
	if diff := cmp.Diff([]string{"10.0.0.5:8080", "10.1.0.10:8080", "10.1.0.9:8080"}, reached); diff != "" {
		t.Errorf("60 flows from a pod to a Local NodePort reached %v; want every backend of the cluster (-want +got):\n%s", seen, diff)
	}

	inNetNS(t, func(func(bool)) {
		// The pods' block routed through the namespace's veth, so replies can be forwarded.
		d0, err := netlink.LinkByName("d0")
		if err != nil {
			t.Fatal(err)
		}
		for _, dst := range []*net.IPNet{{IP: net.IPv4(10, 0, 0, 0), Mask: net.CIDRMask(24, 32)}, {IP: net.IPv4(10, 1, 0, 0), Mask: net.CIDRMask(16, 32)}} {
			if err := netlink.RouteAdd(&netlink.Route{LinkIndex: d0.Attrs().Index, Dst: dst}); err != nil {
				t.Fatal(err)
			}
		}
		// The node itself (felis_data_out) is a client inside the node too: the Local
		// load-balancer IP without local backends takes it to the remote one, its address
		// kept; a client from outside is dropped there.
		host := segment{Src: ap("192.168.5.1:44600"), Dst: ap("198.51.100.7:80"), Proto: 6}
		if v, out := sendOn(t, d.objs.FelisDataOut, host, d0.Attrs().Index); v != tcRedirect || out.Src != host.Src || out.Dst != ap("10.1.0.9:8080") {
			t.Errorf("the node to a Local load-balancer IP without local backends: verdict %d, sent as %s; want redirected from %s to the remote 10.1.0.9:8080", v, out, host.Src)
		}
		if v, _ := send(t, dataIn, segment{Src: ap("192.168.5.2:5800"), Dst: ap("198.51.100.7:80"), Proto: 6}); v != tcShot {
			t.Errorf("from outside to a Local load-balancer IP without local backends: verdict %d, want drop", v)
		}
		// A reply rewritten to come from the NodePort (a node address) would be dropped by the
		// input route check as a martian: it is forwarded by fib lookup (here from a remote
		// backend, reverse-NATed on the data interface; a local backend's at its workload
		// takes the same nat_out path, covered by the FV).
		c := segment{Src: ap("10.0.0.1:44200"), Dst: ap("192.168.5.1:30082"), Proto: 6}
		if v, out := send(t, fromWEP, c); v != tcOK || out.Dst != ap("10.1.0.9:8080") {
			t.Fatalf("pod to a Local NodePort without local backends: verdict %d, sent as %s", v, out)
		}
		v, back := send(t, dataIn, segment{Src: ap("10.1.0.9:8080"), Dst: c.Src, Proto: 6})
		if v != tcRedirect || back.Src != c.Dst || back.Dst != c.Src || back.TTL != 63 {
			t.Errorf("remote backend's reply on the data interface: verdict %d, sent as %s TTL %d; want redirected (TTL 63) from %s to %s", v, back, back.TTL, c.Dst, c.Src)
		}
		// The same through an external IP that is the node's address (FE_NODE from the
		// configured NodeIPv4): without the flag the reply went to the stack (a martian).
		c = segment{Src: ap("10.0.0.1:44201"), Dst: ap("192.168.5.1:8090"), Proto: 6}
		if v, out := send(t, fromWEP, c); v != tcOK || out.Dst != ap("10.1.0.9:8080") {
			t.Fatalf("pod to an external IP on the node's address: verdict %d, sent as %s", v, out)
		}
		v, back = send(t, dataIn, segment{Src: ap("10.1.0.9:8080"), Dst: c.Src, Proto: 6})
		if v != tcRedirect || back.Src != c.Dst || back.Dst != c.Src || back.TTL != 63 {
			t.Errorf("remote backend's reply to a pod through an external IP on the node's address: verdict %d, sent as %s TTL %d; want redirected (TTL 63) from %s to %s", v, back, back.TTL, c.Dst, c.Src)
		}

		for port := uint16(5600); port < 5620; port++ {
			client := netip.AddrPortFrom(netip.MustParseAddr("192.168.5.2"), port)
			v, out := send(t, dataIn, segment{Src: client, Dst: ap("192.168.5.1:30083"), Proto: 6})
			if v != tcNext || out.Src != client || out.Dst != ap("10.0.0.5:8080") {
				t.Fatalf("from outside to a Local NodePort: verdict %d, sent as %s; want passed on from the client to the local 10.0.0.5:8080 only", v, out)
			}
		}
		if v, _ := send(t, dataIn, segment{Src: ap("192.168.5.2:5700"), Dst: ap("192.168.5.1:30082"), Proto: 6}); v != tcShot {
			t.Errorf("from outside to a Local NodePort without local backends: verdict %d, want drop", v)
		}
	})
}

// TestServiceSyncMinimalAndAdoption: adding a service writes only its entries; a backend
// going not-ready rewrites its group's frontend and removes one backend; a frontend claimed
// by two services goes to the first by ID, and to the other when it leaves; a deleted entry
// is restored by a full sync; a new Dataplane on the same pins adopts the maps with no
// operation and an established NATed flow keeps its backend and its reverse NAT.
func TestServiceSyncMinimalAndAdoption(t *testing.T) {
	d, dir := openTest(t)
	_, fromWEP := d.Programs()
	s := serviceSnapshot()
	mustSync(t, d, s, true)

	add := snapshot.Service{ID: "ns/added", Frontends: []snapshot.Frontend{{Addr: netip.MustParseAddr("10.96.0.40"), Port: 80, Protocol: 6, Kind: "ClusterIP"}},
		Backends: []snapshot.Backend{{Addr: netip.MustParseAddr("10.0.0.9"), Port: 80, Protocol: 6, Ready: true}, {Addr: netip.MustParseAddr("10.0.0.10"), Port: 80, Protocol: 6, Ready: true}}}
	s.Services = append(s.Services, add)
	s.Finalize()
	if got, want := mustSync(t, d, s, false), map[string]int{"backend-put": 2, "frontend-put": 1}; !equalCounts(got, want) {
		t.Errorf("adding a service: counts %v, want %v", got, want)
	}

	web := &s.Services[slices.IndexFunc(s.Services, func(x snapshot.Service) bool { return x.ID == "ns/web" })]
	web.Backends[1].Ready = false // 10.0.0.6: serving but not ready, and 10.0.0.5 is ready
	web.Backends[1].Serving = false
	s.Finalize()
	if got, want := mustSync(t, d, s, false), map[string]int{"frontend-put": 1, "backend-del": 1}; !equalCounts(got, want) {
		t.Errorf("a backend going not-ready: counts %v, want %v", got, want)
	}
	for port := uint16(2000); port < 2020; port++ {
		if v, out := send(t, fromWEP, segment{Src: netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), port), Dst: ap("10.96.0.10:80"), Proto: 6}); v != tcOK || out.Dst != ap("10.0.0.5:8080") {
			t.Fatalf("after 10.0.0.6 went not-ready: verdict %d to %s; want 10.0.0.5:8080 only", v, out.Dst)
		}
	}

	// ns/a-dup sorts before ns/added and claims its frontend with another backend.
	dup := add
	dup.ID = "ns/a-dup"
	dup.Backends = []snapshot.Backend{{Addr: netip.MustParseAddr("10.0.0.11"), Port: 80, Protocol: 6, Ready: true}}
	s.Services = append(s.Services, dup)
	s.Finalize()
	mustSync(t, d, s, false)
	if _, out := send(t, fromWEP, segment{Src: ap("10.0.0.1:3000"), Dst: ap("10.96.0.40:80"), Proto: 6}); out.Dst != ap("10.0.0.11:80") {
		t.Errorf("frontend claimed by ns/a-dup and ns/added: sent to %s; want ns/a-dup's 10.0.0.11:80", out.Dst)
	}
	s.Services = slices.DeleteFunc(s.Services, func(x snapshot.Service) bool { return x.ID == "ns/a-dup" })
	s.Finalize()
	mustSync(t, d, s, false)
	if _, out := send(t, fromWEP, segment{Src: ap("10.0.0.1:3001"), Dst: ap("10.96.0.40:80"), Proto: 6}); out.Dst.Port() != 80 || out.Dst.Addr() == netip.MustParseAddr("10.0.0.11") {
		t.Errorf("after ns/a-dup left: sent to %s; want one of ns/added's backends", out.Dst)
	}

	// Drift: a deleted frontend comes back at the next full sync.
	if err := d.objs.FsvcV1.Delete(policyFeKey{Family: 4, Proto: 6, Port: 80, Addr: [16]byte{10, 96, 0, 40}}); err != nil {
		t.Fatal(err)
	}
	if got, want := mustSync(t, d, s, true), map[string]int{"frontend-put": 1}; !equalCounts(got, want) {
		t.Errorf("repairing a deleted frontend: counts %v, want %v", got, want)
	}

	// An established flow, then a restart with a changed backend set.
	c := segment{Src: ap("10.0.0.1:4000"), Dst: ap("10.96.0.40:80"), Proto: 6}
	_, first := send(t, fromWEP, c)
	d.Close()
	d2 := openAt(t, dir)
	toWEP, fromWEP := d2.Programs()
	if got := mustSync(t, d2, s, true); len(got) != 0 {
		t.Errorf("adopting the pinned maps: counts %v, want none", got)
	}
	i := slices.IndexFunc(s.Services, func(x snapshot.Service) bool { return x.ID == "ns/added" })
	s.Services[i].Backends = []snapshot.Backend{{Addr: netip.MustParseAddr("10.0.0.12"), Port: 80, Protocol: 6, Ready: true}}
	s.Finalize()
	mustSync(t, d2, s, false)
	if v, out := send(t, fromWEP, c); v != tcOK || out.Dst != first.Dst {
		t.Errorf("established flow after the restart: verdict %d to %s; want its backend %s", v, out.Dst, first.Dst)
	}
	if v, back := send(t, toWEP, segment{Src: first.Dst, Dst: c.Src, Proto: 6}); v != tcOK || back.Src != c.Dst {
		t.Errorf("its reply after the restart: verdict %d from %s; want from %s", v, back.Src, c.Dst)
	}
	if _, out := send(t, fromWEP, segment{Src: ap("10.0.0.1:4001"), Dst: ap("10.96.0.40:80"), Proto: 6}); out.Dst != ap("10.0.0.12:80") {
		t.Errorf("a new flow after the restart: to %s; want the new backend 10.0.0.12:80", out.Dst)
	}
}

func equalCounts(got, want map[string]int) bool {
	for k, v := range got {
		if v != 0 && want[k] != v {
			return false
		}
	}
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}

// TestServiceNATOnHostEndpoint: on a host endpoint's interface the NodePort NAT runs inside
// the host endpoint's TC ingress program, after its preDNAT stage: a source the preDNAT
// policy denies is dropped before DNAT, another is DNATed and, forwarded to the backend,
// skips the normal ingress policy (deny-all) as in the nftables dataplane; a remote backend
// gets the node's address as source and its reply is rewritten back; the reply of a local
// backend leaving through the interface passes its deny-all normal egress policy as the
// established flow it is; felis_data_in leaves the interface to the host endpoint program.
func TestServiceNATOnHostEndpoint(t *testing.T) {
	d, _ := openTest(t)
	toWEP, fromWEP := d.Programs()
	s := serviceSnapshot()
	s.Endpoints = nil
	s.Policies = []snapshot.Policy{
		{ID: "pre", Tier: "default", PreDNAT: true, Inbound: []snapshot.Rule{{Action: snapshot.Deny, SrcNets: []netip.Prefix{netip.MustParsePrefix("192.168.5.3/32")}}}},
		{ID: "host", Tier: "default"},
	}
	s.HostEndpoints = []snapshot.HostEndpoint{{ID: "h", Interface: "eth0",
		Normal:  snapshot.HostDirections{Ingress: tier("default", snapshot.Deny, "host"), Egress: tier("default", snapshot.Deny, "host")},
		PreDNAT: snapshot.HostDirections{Ingress: tier("default", snapshot.Pass, "pre")}}}
	s.Finalize()
	inNetNS(t, func(func(bool)) {
		d0, err := netlink.LinkByName("d0")
		if err != nil {
			t.Fatal(err)
		}
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: d0.Attrs().Index, Dst: &net.IPNet{IP: net.IP{10, 0, 0, 0}, Mask: net.CIDRMask(8, 32)}, Gw: net.IP{192, 168, 5, 2}}); err != nil {
			t.Fatal(err)
		}
		mustSync(t, d, s, true)
		if v, out := send(t, fromWEP, segment{Src: ap("192.168.5.3:5555"), Dst: ap("192.168.5.1:30080"), Proto: 6}); v != tcShot {
			t.Errorf("NodePort from a source preDNAT denies: verdict %d (sent as %s), want drop", v, out)
		}
		client := ap("192.168.5.2:5555")
		c := segment{Src: client, Dst: ap("192.168.5.1:30080"), Proto: 6}
		if v, out := send(t, d.objs.FelisDataIn, c); v != tcNext || out.Dst != c.Dst {
			t.Errorf("felis_data_in on a host endpoint: verdict %d, sent as %s; want it untouched and passed on", v, out)
		}
		v, out := send(t, fromWEP, c)
		if v != tcOK || out.Src != client || out.Dst != ap("10.0.0.1:8080") {
			t.Fatalf("NodePort, local backend, through a host endpoint: verdict %d, sent as %s; want pass to 10.0.0.1:8080 from the client", v, out)
		}
		if v, back := send(t, toWEP, segment{Src: c.Dst, Dst: client, Proto: 6}); v != tcOK || back.Src != c.Dst {
			t.Errorf("the backend's reply leaving through the host endpoint: verdict %d as %s; want pass", v, back)
		}

		c = segment{Src: ap("192.168.5.2:5556"), Dst: ap("192.168.5.1:30081"), Proto: 6}
		v, out = send(t, fromWEP, c)
		if v == tcShot || out.Src.Addr() != netip.MustParseAddr("192.168.5.1") || out.Dst != ap("10.1.0.9:8080") {
			t.Fatalf("NodePort, remote backend, through a host endpoint: verdict %d, sent as %s; want from the node to 10.1.0.9:8080", v, out)
		}
		v, back := send(t, fromWEP, segment{Src: out.Dst, Dst: out.Src, Proto: 6})
		if v == tcShot || back.Src != c.Dst || back.Dst != c.Src {
			t.Fatalf("reply from the remote backend: verdict %d, sent as %s; want from %s to %s", v, back, c.Dst, c.Src)
		}
	})
}

// TestServiceInvalidIsSkipped: a service the renderer rejects (a backend without port) is
// left out with a warning naming it; the other services are programmed.
func TestServiceInvalidIsSkipped(t *testing.T) {
	d, _ := openTest(t)
	_, fromWEP := d.Programs()
	s := serviceSnapshot()
	s.Services = append(s.Services, snapshot.Service{ID: "ns/broken",
		Frontends: []snapshot.Frontend{{Addr: netip.MustParseAddr("10.96.0.99"), Port: 80, Protocol: 6, Kind: "ClusterIP"}},
		Backends:  []snapshot.Backend{{Addr: netip.MustParseAddr("10.0.0.9"), Protocol: 6, Ready: true}}})
	s.Finalize()
	res, err := d.Sync(context.Background(), s, true)
	if err != nil {
		t.Fatalf("sync with an invalid service: %v", err)
	}
	warned := false
	for _, w := range res.Warnings {
		warned = warned || strings.Contains(w, "ns/broken")
	}
	if !warned {
		t.Errorf("warnings %q: none names ns/broken", res.Warnings)
	}
	if v, out := send(t, fromWEP, segment{Src: ap("10.0.0.1:5000"), Dst: ap("10.96.0.10:80"), Proto: 6}); v != tcOK || out.Dst.Port() != 8080 {
		t.Errorf("a valid service beside the invalid one: verdict %d to %s; want DNAT to a backend", v, out.Dst)
	}
}

// TestServiceUDPFlowsOfRemovedBackendFlushed: as kube-proxy clears UDP conntrack entries of
// a removed endpoint, a UDP flow whose backend left the service is forgotten (both NAT
// entries), so the client's next datagram from the same port picks a current backend; a
// TCP flow keeps its backend.
func TestServiceUDPFlowsOfRemovedBackendFlushed(t *testing.T) {
	d, _ := openTest(t)
	_, fromWEP := d.Programs()
	s := serviceSnapshot()
	mustSync(t, d, s, true)
	udp := segment{Src: ap("10.0.0.1:6000"), Dst: ap("10.96.0.53:53"), Proto: 17}
	if _, out := send(t, fromWEP, udp); out.Dst != ap("10.0.0.7:5353") {
		t.Fatalf("UDP flow sent to %s, want 10.0.0.7:5353", out.Dst)
	}
	tcp := segment{Src: ap("10.0.0.1:6001"), Dst: ap("10.96.0.10:80"), Proto: 6}
	_, first := send(t, fromWEP, tcp)
	before := countNAT(t, d)

	for i := range s.Services {
		switch s.Services[i].ID {
		case "ns/dns":
			s.Services[i].Backends[0].Addr = netip.MustParseAddr("10.0.0.8")
		case "ns/web":
			s.Services[i].Backends = slices.DeleteFunc(s.Services[i].Backends, func(b snapshot.Backend) bool { return b.Addr == first.Dst.Addr() })
		}
	}
	s.Finalize()
	if got := mustSync(t, d, s, false); got["nat-flush"] != 2 {
		t.Errorf("counts %v; want nat-flush 2 (the UDP flow's two entries)", got)
	}
	if n := countNAT(t, d); n != before-2 {
		t.Errorf("%d NAT entries after the flush, want %d", n, before-2)
	}
	if _, out := send(t, fromWEP, udp); out.Dst != ap("10.0.0.8:5353") {
		t.Errorf("the UDP client's next datagram went to %s, want the current backend 10.0.0.8:5353", out.Dst)
	}
	if _, out := send(t, fromWEP, tcp); out.Dst != first.Dst {
		t.Errorf("the TCP flow went to %s after its backend left, want it kept on %s", out.Dst, first.Dst)
	}
}

// TestServiceHairpinPolicySeesPod: a pod reaching itself through its service is policed as
// in the nftables dataplane, where the masquerade comes after the filter: its ingress policy
// sees its own address as the source (here the only source it allows), and its reply is
// the reply of that flow; another source is still denied.
func TestServiceHairpinPolicySeesPod(t *testing.T) {
	d, _ := openTest(t)
	toWEP, fromWEP := d.Programs()
	s := serviceSnapshot()
	s.Profiles = append(s.Profiles, snapshot.Profile{ID: "from-self", Inbound: []snapshot.Rule{{Action: snapshot.Allow,
		SrcNets: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/32")}}}})
	s.Endpoints[0].Ingress.Profiles = []string{"from-self"}
	s.Finalize()
	mustSync(t, d, s, true)
	if v, _ := send(t, toWEP, segment{Src: ap("10.0.0.5:1000"), Dst: ap("10.0.0.1:8080"), Proto: 6}); v != tcShot {
		t.Fatalf("from 10.0.0.5 to the pod: verdict %d, want drop (ingress allows only the pod itself)", v)
	}
	c := segment{Src: ap("10.0.0.1:41000"), Dst: ap("10.96.0.11:80"), Proto: 6}
	for i := range 2 { // a new flow, then the same flow established
		v, out := send(t, fromWEP, c)
		if v != tcOK || out.Src != ap("10.96.0.11:41000") || out.Dst != ap("10.0.0.1:8080") {
			t.Fatalf("hairpin %d out: verdict %d as %s", i, v, out)
		}
		if v, in := send(t, toWEP, out); v != tcOK || in != out {
			t.Fatalf("hairpin %d into the pod (ingress allows only the pod itself): verdict %d as %s; want pass", i, v, in)
		}
		v, back := send(t, fromWEP, segment{Src: out.Dst, Dst: out.Src, Proto: 6})
		if v != tcOK || back.Src != c.Dst || back.Dst != c.Src {
			t.Fatalf("hairpin %d reply: verdict %d as %s", i, v, back)
		}
		if v, in := send(t, toWEP, back); v != tcOK || in != back {
			t.Fatalf("hairpin %d reply into the pod: verdict %d", i, v)
		}
	}
}

// TestNATSweep: a full sync deletes NAT entries idle longer than the programs' 600 s
// timeout and keeps fresh ones, without reporting operations.
func TestNATSweep(t *testing.T) {
	d, _ := openTest(t)
	_, fromWEP := d.Programs()
	s := serviceSnapshot()
	mustSync(t, d, s, true)
	send(t, fromWEP, segment{Src: ap("10.0.0.1:7000"), Dst: ap("10.96.0.10:80"), Proto: 6}) // two fresh entries
	now, err := monotonicNanos()
	if err != nil {
		t.Fatal(err)
	}
	for i, age := range []time.Duration{601 * time.Second, 599 * time.Second} {
		k := policyNatKey{Family: 4, Proto: 6, Sport: uint16(8000 + i), Dport: 80, Src: [16]byte{10, 0, 0, 1}, Dst: [16]byte{10, 96, 0, 10}}
		if err := d.objs.FnatV1.Put(k, policyNatVal{LastSeen: now - uint64(age)}); err != nil {
			t.Fatal(err)
		}
	}
	if got := mustSync(t, d, s, true); len(got) != 0 {
		t.Errorf("full sync counts %v; want none (a sweep is not an operation)", got)
	}
	if n := countNAT(t, d); n != 3 {
		t.Errorf("%d NAT entries after the sweep; want 3 (the flow's two and the 599 s one)", n)
	}
}
