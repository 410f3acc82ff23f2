//go:build linux

package bpf

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"

	"github.com/felis-dev/felis/snapshot"
)

// datagram is a TCP or UDP datagram cut into fragments, as a test sends it and reads it back.
type datagram struct {
	Src, Dst netip.AddrPort
	Proto    uint8
}

// fragments builds the datagram (an L4 header with a valid checksum, then size bytes of
// payload) cut into fragments of at most 48 bytes of L4 data each (IPv4: header checksums
// valid; IPv6: a fragment header), all with identification id.
func (g datagram) fragments(id uint32, size int) [][]byte {
	hl := 8
	if g.Proto == 6 {
		hl = 20
	}
	l4 := make([]byte, hl+size)
	binary.BigEndian.PutUint16(l4[0:], g.Src.Port())
	binary.BigEndian.PutUint16(l4[2:], g.Dst.Port())
	for i := hl; i < len(l4); i++ {
		l4[i] = byte(i * 7)
	}
	off := 6
	if g.Proto == 6 {
		l4[12] = 5 << 4
		l4[13] = 0x10 // ACK
		off = 16
	} else {
		binary.BigEndian.PutUint16(l4[4:], uint16(len(l4)))
	}
	binary.BigEndian.PutUint16(l4[off:], ^uint16(csum(pseudo(g.Src.Addr(), g.Dst.Addr(), g.Proto, len(l4)), l4)))
	var frames [][]byte
	for o := 0; o < len(l4); o += 48 {
		end := min(o+48, len(l4))
		more := end < len(l4)
		if g.Src.Addr().Is4() {
			b := v4frag(g.Src.Addr(), g.Dst.Addr(), g.Proto, uint16(id), uint16(o), more, l4[o:end])
			binary.BigEndian.PutUint16(b[14+10:], ^uint16(csum(0, b[14:34])))
			frames = append(frames, b)
		} else {
			frames = append(frames, v6frame(g.Src.Addr(), g.Dst.Addr(), extFrag(uint16(o), more, id), hdr{g.Proto, slices.Clone(l4[o:end])}))
		}
	}
	return frames
}

// reassemble reads fragments back: every one must carry the same addresses (IPv4: a valid
// header checksum) and together the L4 checksum must be valid for those addresses. It
// returns the datagram and its L4 bytes.
func reassemble(t *testing.T, frames [][]byte) (datagram, []byte) {
	t.Helper()
	var g datagram
	var src, dst netip.Addr
	var l4 []byte
	for i, b := range frames {
		var s, d netip.Addr
		var off int
		var data []byte
		switch binary.BigEndian.Uint16(b[12:]) {
		case 0x0800:
			h := b[14:34]
			if c := csum(0, h); c != 0xffff {
				t.Errorf("fragment %d: IPv4 header checksum invalid (sum %#x): %x", i, c, h)
			}
			s, _ = netip.AddrFromSlice(h[12:16])
			d, _ = netip.AddrFromSlice(h[16:20])
			g.Proto = h[9]
			off = int(binary.BigEndian.Uint16(h[6:])&0x1fff) * 8
			data = b[34:]
		case 0x86dd:
			h := b[14:54]
			s, _ = netip.AddrFromSlice(h[8:24])
			d, _ = netip.AddrFromSlice(h[24:40])
			if h[6] != 44 {
				t.Fatalf("fragment %d: next header %d, want a fragment header", i, h[6])
			}
			g.Proto = b[54]
			off = int(binary.BigEndian.Uint16(b[56:]) &^ 7)
			data = b[62:]
		default:
			t.Fatalf("fragment %d: not IP: %x", i, b)
		}
		if i == 0 {
			src, dst = s, d
		} else if s != src || d != dst {
			t.Errorf("fragment %d: %s -> %s, the first fragment %s -> %s", i, s, d, src, dst)
		}
		if off != len(l4) {
			t.Fatalf("fragment %d at offset %d, want %d", i, off, len(l4))
		}
		l4 = append(l4, data...)
	}
	g.Src = netip.AddrPortFrom(src, binary.BigEndian.Uint16(l4[0:]))
	g.Dst = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(l4[2:]))
	if c := csum(pseudo(src, dst, g.Proto, len(l4)), l4); c != 0xffff {
		t.Errorf("%v: reassembled L4 checksum invalid (sum %#x)", g, c)
	}
	return g, l4
}

// through runs prog on each frame and returns the frames as they left; every verdict must
// be want.
func through(t *testing.T, prog *ebpf.Program, frames [][]byte, want uint32) [][]byte {
	t.Helper()
	var out [][]byte
	for i, in := range frames {
		buf := make([]byte, len(in)+64)
		opts := &ebpf.RunOptions{Data: in, DataOut: buf}
		v, err := prog.Run(opts)
		if err != nil {
			t.Fatalf("BPF_PROG_TEST_RUN: %v", err)
		}
		if v != want {
			t.Fatalf("fragment %d of %d: verdict %d, want %d", i, len(frames), v, want)
		}
		out = append(out, opts.DataOut)
	}
	return out
}

// TestServiceNATFragments: a datagram to a ClusterIP cut into fragments leaves with every
// fragment DNATed to the backend its first fragment chose (the payload unchanged, the IPv4
// header checksums and the reassembled L4 checksum valid); a fragmented reply from the
// backend reaches the client with every fragment from the frontend; a fragmented reply
// already reverse-NATed at a local backend's interface passes whole; a later fragment
// whose first fragment was not NATed here is left alone (and dropped by policy as before).
// IPv4 (UDP) and IPv6 (TCP).
func TestServiceNATFragments(t *testing.T) {
	d, _ := openTest(t)
	toWEP, fromWEP := d.Programs()
	mustSync(t, d, serviceSnapshot(), true)

	for i, c := range []struct {
		req      datagram
		frontend netip.AddrPort
		backend  netip.AddrPort
	}{
		{datagram{ap("10.0.0.1:5300"), ap("10.96.0.53:53"), 17}, ap("10.96.0.53:53"), ap("10.0.0.7:5353")},
		{datagram{ap("[fd00::1]:5301"), ap("[fd00:96::10]:80"), 6}, ap("[fd00:96::10]:80"), ap("[fd00::5]:8080")},
	} {
		t.Run(fmt.Sprint(c.req), func(t *testing.T) {
			id := uint32(100 + i)
			req := c.req.fragments(id, 150)
			if len(req) < 3 {
				t.Fatalf("%d fragments, want 3 or more", len(req))
			}
			_, sentL4 := reassemble(t, req)
			out := through(t, fromWEP, req, tcOK)
			got, gotL4 := reassemble(t, out)
			if want := (datagram{c.req.Src, c.backend, c.req.Proto}); got != want {
				t.Errorf("request left as %v, want %v", got, want)
			}
			hl := 8
			if c.req.Proto == 6 {
				hl = 20
			}
			if !slices.Equal(gotL4[hl:], sentL4[hl:]) {
				t.Errorf("request payload changed: %x, sent %x", gotL4[hl:], sentL4[hl:])
			}

			// The backend's reply, policed and reverse-NATed at the client's interface.
			reply := datagram{c.backend, c.req.Src, c.req.Proto}
			back, _ := reassemble(t, through(t, toWEP, reply.fragments(id+10, 150), tcOK))
			if want := (datagram{c.frontend, c.req.Src, c.req.Proto}); back != want {
				t.Errorf("reply delivered as %v, want %v", back, want)
			}

			// The same reply rewritten at a local backend's interface: it passes as it is,
			// every fragment (with allow-all policy, a later fragment whose first was not
			// recorded would be dropped by the fragment check).
			rewritten := datagram{c.frontend, c.req.Src, c.req.Proto}.fragments(id+20, 150)
			passed := through(t, toWEP, rewritten, tcOK)
			for j := range passed {
				if !slices.Equal(passed[j], rewritten[j]) {
					t.Errorf("rewritten reply fragment %d changed: %x, sent %x", j, passed[j], rewritten[j])
				}
			}

			// A later fragment of a datagram whose first fragment was never seen: not
			// NATed, dropped as before.
			stray := c.req.fragments(id+30, 150)[1]
			through(t, fromWEP, [][]byte{stray}, tcShot)
		})
	}
}

// icmpErrorFrame builds an ICMP (IPv4) or ICMPv6 error from src to dst of type typ and code with
// the 4 bytes after the checksum (an MTU, say) and quoting quoted, checksums valid.
func icmpErrorFrame(src, dst netip.Addr, typ, code uint8, rest uint32, quoted []byte) []byte {
	msg := make([]byte, 8, 8+len(quoted))
	msg[0], msg[1] = typ, code
	binary.BigEndian.PutUint32(msg[4:], rest)
	msg = append(msg, quoted...)
	b := make([]byte, 14)
	if src.Is4() {
		binary.BigEndian.PutUint16(b[12:], 0x0800)
		binary.BigEndian.PutUint16(msg[2:], ^uint16(csum(0, msg)))
		h := make([]byte, 20)
		h[0] = 0x45
		binary.BigEndian.PutUint16(h[2:], uint16(20+len(msg)))
		h[8], h[9] = 64, 1
		copy(h[12:], src.AsSlice())
		copy(h[16:], dst.AsSlice())
		binary.BigEndian.PutUint16(h[10:], ^uint16(csum(0, h)))
		b = append(b, h...)
	} else {
		binary.BigEndian.PutUint16(b[12:], 0x86dd)
		binary.BigEndian.PutUint16(msg[2:], ^uint16(csum(pseudo(src, dst, 58, len(msg)), msg)))
		h := make([]byte, 40)
		h[0] = 0x60
		binary.BigEndian.PutUint16(h[4:], uint16(len(msg)))
		h[6], h[7] = 58, 64
		copy(h[8:], src.AsSlice())
		copy(h[24:], dst.AsSlice())
		b = append(b, h...)
	}
	return append(b, msg...)
}

// runBytes runs prog on frame and returns the verdict and the frame as it left.
func runBytes(t *testing.T, prog *ebpf.Program, frame []byte) (uint32, []byte) {
	t.Helper()
	buf := make([]byte, len(frame)+64)
	opts := &ebpf.RunOptions{Data: frame, DataOut: buf}
	v, err := prog.Run(opts)
	if err != nil {
		t.Fatalf("BPF_PROG_TEST_RUN: %v", err)
	}
	return v, opts.DataOut
}

// TestServiceNATICMPErrors: an ICMP error about a flow a client opened to a ClusterIP, sent
// by the backend (or a router on the way) about the DNATed packet, reaches the client
// translated as conntrack's NAT translates it: the outer source is the frontend when the
// backend sent it (a router's address stays), the quoted packet is the client's own packet
// again (addresses, ports, IPv4 header checksum, the L4 checksum when quoted), and the
// outer IPv4 header checksum and the ICMP / ICMPv6 checksum (pseudo-header included) are
// valid: each output is compared byte for byte with the error built from the client's
// packet; the error as a local backend's interface translated it passes the client's
// interface unchanged. IPv4 UDP (fragmentation needed, whole datagram quoted; time exceeded from a
// router), IPv4 TCP (port unreachable quoting 8 bytes of TCP), IPv6 TCP (packet too big,
// whole segment quoted; time exceeded from a router quoting 8 bytes).
func TestServiceNATICMPErrors(t *testing.T) {
	d, _ := openTest(t)
	toWEP, fromWEP := d.Programs()
	mustSync(t, d, serviceSnapshot(), true)
	router4, router6 := netip.MustParseAddr("10.9.9.1"), netip.MustParseAddr("2001:db8::1")
	for _, c := range []struct {
		name      string
		req       segment
		typ, code uint8
		rest      uint32
		quote     int // bytes of the packet quoted (0: all)
		router    bool
	}{
		{name: "v4 UDP fragmentation needed from the backend", req: segment{Src: ap("10.0.0.1:5400"), Dst: ap("10.96.0.53:53"), Proto: 17}, typ: 3, code: 4, rest: 1400},
		{name: "v4 UDP zero checksum, port unreachable from the backend", req: segment{Src: ap("10.0.0.1:5403"), Dst: ap("10.96.0.53:53"), Proto: 17, ZeroUDPChecksum: true}, typ: 3, code: 3},
		{name: "v4 UDP time exceeded from a router", req: segment{Src: ap("10.0.0.1:5404"), Dst: ap("10.96.0.53:53"), Proto: 17}, typ: 11, router: true},
		{name: "v4 TCP port unreachable quoting 8 bytes", req: segment{Src: ap("10.0.0.1:5401"), Dst: ap("10.96.0.10:80"), Proto: 6}, typ: 3, code: 3, quote: 28},
		{name: "v6 TCP packet too big from the backend", req: segment{Src: ap("[fd00::1]:5402"), Dst: ap("[fd00:96::10]:80"), Proto: 6}, typ: 2, rest: 1280},
		{name: "v6 TCP time exceeded from a router, 8 bytes", req: segment{Src: ap("[fd00::1]:5405"), Dst: ap("[fd00:96::10]:80"), Proto: 6}, typ: 3, quote: 48, router: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			sent := c.req.build()
			v, dnat := runBytes(t, fromWEP, sent)
			backend := parseSegment(t, dnat)
			if v != tcOK || backend.Dst == c.req.Dst {
				t.Fatalf("%s: verdict %d, sent as %s; want DNATed", c.req, v, backend)
			}
			quote := c.quote
			if quote == 0 {
				quote = len(sent) - 14
			}
			from, wantFrom := backend.Dst.Addr(), c.req.Dst.Addr()
			if c.router {
				from = router4
				if from6 := c.req.Src.Addr().Is6(); from6 {
					from = router6
				}
				wantFrom = from
			}
			in := icmpErrorFrame(from, c.req.Src.Addr(), c.typ, c.code, c.rest, dnat[14:14+quote])
			want := icmpErrorFrame(wantFrom, c.req.Src.Addr(), c.typ, c.code, c.rest, sent[14:14+quote])
			v, got := runBytes(t, toWEP, in)
			if v != tcOK || !slices.Equal(got, want) {
				t.Errorf("verdict %d, error delivered as\n%x\nwant (verdict %d)\n%x\nsent\n%x", v, got, tcOK, want, in)
			}
			// The same error translated at a local backend's interface passes the client's
			// as it is (conntrack here holds the flow DNATed: it alone would call the error
			// invalid).
			if v, got := runBytes(t, toWEP, want); v != tcOK || !slices.Equal(got, want) {
				t.Errorf("translated error: verdict %d, delivered as\n%x\nwant it passed unchanged", v, got)
			}
		})
	}
}

// TestServiceNATICMPErrorSNAT: a NodePort flow to a remote backend is SNATed to the node;
// an error the backend sends the node about it (fragmentation needed) is translated on the
// data interface back to the client's view — from the NodePort address to the client,
// quoting the client's own packet — and forwarded like the flow's replies (TTL decremented
// when redirected; the IPv4 header checksum valid either way).
func TestServiceNATICMPErrorSNAT(t *testing.T) {
	d, _ := openTest(t)
	dataIn := d.objs.FelisDataIn
	mustSync(t, d, serviceSnapshot(), true)
	inNetNS(t, func(func(bool)) {
		c := segment{Src: ap("192.168.5.2:5556"), Dst: ap("192.168.5.1:30081"), Proto: 6}
		sent := c.build()
		v, snat := runBytes(t, dataIn, sent)
		out := parseSegment(t, snat)
		if v == tcShot || out.Src.Addr() != c.Dst.Addr() || out.Dst != ap("10.1.0.9:8080") {
			t.Fatalf("NodePort, remote backend: verdict %d, sent as %s; want from the node to 10.1.0.9:8080", v, out)
		}
		in := icmpErrorFrame(out.Dst.Addr(), out.Src.Addr(), 3, 4, 1400, snat[14:14+28])
		want := icmpErrorFrame(c.Dst.Addr(), c.Src.Addr(), 3, 4, 1400, sent[14:14+28])
		v, got := runBytes(t, dataIn, in)
		if v == tcShot || len(got) != len(want) {
			t.Fatalf("error from the backend: verdict %d, %x", v, got)
		}
		if c := csum(0, got[14:34]); c != 0xffff {
			t.Errorf("outer IPv4 header checksum invalid (sum %#x)", c)
		}
		if v == tcRedirect && got[14+8] != 63 {
			t.Errorf("redirected with TTL %d, want 63", got[14+8])
		}
		// Compare all but the MAC addresses, the TTL and the header checksum.
		for _, i := range []int{14 + 8, 14 + 10, 14 + 11} {
			got[i], want[i] = 0, 0
		}
		if !slices.Equal(got[12:], want[12:]) {
			t.Errorf("error delivered as\n%x\nwant\n%x", got[12:], want[12:])
		}
	})
}

// TestServiceNATFragmentsSNAT: a fragmented datagram from outside to a NodePort whose
// backend is on another node (`felis_data_in`): every fragment leaves SNATed to the node and
// DNATed to the backend, and every fragment of the backend's fragmented reply goes back from
// the NodePort to the client (checksums checked on reassembly; TTLs decremented when
// redirected).
func TestServiceNATFragmentsSNAT(t *testing.T) {
	d, _ := openTest(t)
	dataIn := d.objs.FelisDataIn
	mustSync(t, d, serviceSnapshot(), true)
	inNetNS(t, func(func(bool)) {
		through := func(frames [][]byte) [][]byte {
			t.Helper()
			var out [][]byte
			for i, f := range frames {
				v, b := runBytes(t, dataIn, f)
				if v == tcShot {
					t.Fatalf("fragment %d of %d dropped", i, len(frames))
				}
				out = append(out, b)
			}
			return out
		}
		req := datagram{ap("192.168.5.2:5557"), ap("192.168.5.1:30081"), 6}
		got, _ := reassemble(t, through(req.fragments(300, 150)))
		if got.Src.Addr() != req.Dst.Addr() || got.Dst != ap("10.1.0.9:8080") {
			t.Fatalf("request left as %v; want from the node to 10.1.0.9:8080", got)
		}
		reply := datagram{got.Dst, got.Src, 6}
		back, _ := reassemble(t, through(reply.fragments(301, 150)))
		if want := (datagram{req.Dst, req.Src, 6}); back != want {
			t.Errorf("reply delivered as %v, want %v", back, want)
		}
	})
}

// TestServiceNATFragmentsOnHostEndpoint: the same through a host endpoint's program (eth0,
// whose normal policy denies everything: NAT flows are known there): a fragmented datagram
// to a NodePort with a local backend leaves with every fragment DNATed, and one to a
// NodePort with a remote backend with every fragment SNATed and DNATed; the later
// fragments pass the fragment check under their translated addresses.
func TestServiceNATFragmentsOnHostEndpoint(t *testing.T) {
	d, _ := openTest(t)
	_, fromWEP := d.Programs()
	s := serviceSnapshot()
	s.Endpoints = nil
	s.Policies = []snapshot.Policy{{ID: "host", Tier: "default"}}
	s.HostEndpoints = []snapshot.HostEndpoint{{ID: "h", Interface: "eth0",
		Normal: snapshot.HostDirections{Ingress: tier("default", snapshot.Deny, "host"), Egress: tier("default", snapshot.Deny, "host")}}}
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
		for i, c := range []struct {
			req  datagram
			want datagram
		}{
			{datagram{ap("192.168.5.2:5560"), ap("192.168.5.1:30080"), 6}, datagram{ap("192.168.5.2:5560"), ap("10.0.0.1:8080"), 6}},
			{datagram{ap("192.168.5.2:5561"), ap("192.168.5.1:30081"), 6}, datagram{ap("192.168.5.1:5561"), ap("10.1.0.9:8080"), 6}},
		} {
			var out [][]byte
			for j, f := range c.req.fragments(uint32(400+i), 150) {
				v, b := runBytes(t, fromWEP, f)
				if v == tcShot {
					t.Fatalf("%v: fragment %d dropped", c.req, j)
				}
				out = append(out, b)
			}
			if got, _ := reassemble(t, out); got != c.want {
				t.Errorf("%v left as %v, want %v", c.req, got, c.want)
			}
		}
	})
}
