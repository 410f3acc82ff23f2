//go:build linux

package bpf

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/felis-dev/felis/snapshot"
)

// hdr is one IPv6 extension header (or, last, the upper-layer header) of a crafted packet.
type hdr struct {
	typ  uint8
	body []byte // the bytes after the next-header field (extension headers) or the whole header
}

// Extension header constructors; the builder fills in each one's next-header byte.
func extOpts(typ uint8, units int) hdr { // hop-by-hop (0), routing (43), destination options (60)
	b := make([]byte, (units+1)*8-1)
	b[0] = byte(units)
	return hdr{typ, b}
}

func extAH() hdr { // 12-byte AH: payload length 1 ((1+2)*4 bytes)
	b := make([]byte, 11)
	b[0] = 1
	return hdr{51, b}
}

func extFrag(offset uint16, more bool, id uint32) hdr {
	b := make([]byte, 7)
	v := offset &^ 7
	if more {
		v |= 1
	}
	binary.BigEndian.PutUint16(b[1:], v)
	binary.BigEndian.PutUint32(b[3:], id)
	return hdr{44, b}
}

// ports is a UDP or TCP header's first bytes (TCP: flags ACK).
func l4ports(proto uint8, sport, dport uint16) hdr {
	b := make([]byte, 20)
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	if proto == 6 {
		b[12] = 5 << 4
		b[13] = 0x10
	}
	return hdr{proto, b}
}

// v6frame builds an Ethernet frame with an IPv6 header followed by chain: extension headers,
// then the payload (its typ is the last next-header value).
func v6frame(src, dst netip.Addr, chain ...hdr) []byte {
	var payload []byte
	for i, h := range chain {
		if i < len(chain)-1 {
			payload = append(payload, chain[i+1].typ)
		}
		payload = append(payload, h.body...)
	}
	b := make([]byte, 14+40)
	binary.BigEndian.PutUint16(b[12:], 0x86dd)
	h := b[14:]
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:], uint16(len(payload)))
	h[6] = chain[0].typ
	h[7] = 64
	s, d := src.As16(), dst.As16()
	copy(h[8:], s[:])
	copy(h[24:], d[:])
	return append(b, payload...)
}

// v4frag builds an Ethernet frame with an IPv4 header (identification id, fragment offset in
// bytes, more-fragments flag) and payload.
func v4frag(src, dst netip.Addr, proto uint8, id uint16, offset uint16, more bool, payload []byte) []byte {
	b := make([]byte, 14+20)
	binary.BigEndian.PutUint16(b[12:], 0x0800)
	h := b[14:]
	h[0] = 0x45
	binary.BigEndian.PutUint16(h[2:], uint16(20+len(payload)))
	binary.BigEndian.PutUint16(h[4:], id)
	v := offset / 8
	if more {
		v |= 0x2000
	}
	binary.BigEndian.PutUint16(h[6:], v)
	h[8] = 64
	h[9] = proto
	s, d := src.As4(), dst.As4()
	copy(h[12:], s[:])
	copy(h[16:], d[:])
	return append(b, payload...)
}

func runFrame(t *testing.T, prog *ebpf.Program, b []byte) uint32 {
	t.Helper()
	ret, err := prog.Run(&ebpf.RunOptions{Data: b})
	if err != nil {
		t.Fatalf("BPF_PROG_TEST_RUN: %v", err)
	}
	return ret
}

// fragSnapshot: the endpoint (10.0.0.1, fd00::1) accepts UDP except to port 54, and TCP to
// port 80; it may send anything.
func fragSnapshot() *snapshot.Snapshot {
	s := syncSnapshot()
	s.Endpoints[0].Addrs = append(s.Endpoints[0].Addrs, netip.MustParsePrefix("fd00::1/128"))
	s.Policies[0].Inbound = []snapshot.Rule{
		{Action: snapshot.Deny, Protocol: u8(17), DstPorts: []snapshot.PortRange{{Min: 54, Max: 54}}},
		{Action: snapshot.Allow, Protocol: u8(17), Origin: snapshot.RuleOrigin{Index: 1}},
		{Action: snapshot.Allow, Protocol: u8(6), DstPorts: []snapshot.PortRange{{Min: 80, Max: 80}}, Origin: snapshot.RuleOrigin{Index: 2}},
	}
	s.Profiles = []snapshot.Profile{{ID: "all", Outbound: []snapshot.Rule{{Action: snapshot.Allow}}}}
	s.Endpoints[0].Egress = snapshot.Direction{Profiles: []string{"all"}}
	return s
}

// TestFragments: a fragmented datagram is decided by its first fragment (the one with the
// ports) and its later fragments follow that verdict; a later fragment whose first fragment
// was not seen (or was dropped) is dropped, whatever its payload looks like; fragments of a
// tracked flow's reply pass. IPv4 and IPv6 (fragment header, also after other extension
// headers).
func TestFragments(t *testing.T) {
	d, _ := openTest(t)
	toWEP, fromWEP := d.Programs()
	mustSync(t, d, fragSnapshot(), true)
	peer4, ep4 := netip.MustParseAddr("10.9.9.9"), netip.MustParseAddr("10.0.0.1")
	peer6, ep6 := netip.MustParseAddr("2001:db8::9"), netip.MustParseAddr("fd00::1")
	udp := func(sport, dport uint16) []byte { return l4ports(17, sport, dport).body }
	// A later fragment's payload shaped like a UDP header to an allowed port: it must not be
	// read as one.
	lookalike := udp(53, 53)

	type step struct {
		name  string
		prog  *ebpf.Program
		frame []byte
		want  uint32
	}
	steps := []step{
		// IPv4: the datagram to port 54 is denied by its first fragment, and its later
		// fragments with it. Before fragments were tracked, a later fragment was policed
		// with ports 0 and passed the "UDP except port 54" rule.
		{"v4 first fragment, denied port", toWEP, v4frag(peer4, ep4, 17, 7, 0, true, udp(1000, 54)), tcShot},
		{"v4 later fragment of the denied datagram", toWEP, v4frag(peer4, ep4, 17, 7, 1480, true, lookalike), tcShot},
		{"v4 last fragment of the denied datagram", toWEP, v4frag(peer4, ep4, 17, 7, 2960, false, lookalike), tcShot},
		{"v4 first fragment, allowed port", toWEP, v4frag(peer4, ep4, 17, 8, 0, true, udp(1000, 53)), tcOK},
		{"v4 later fragment follows", toWEP, v4frag(peer4, ep4, 17, 8, 1480, true, lookalike), tcOK},
		{"v4 last fragment follows", toWEP, v4frag(peer4, ep4, 17, 8, 2960, false, lookalike), tcOK},
		{"v4 later fragment, first never seen", toWEP, v4frag(peer4, ep4, 17, 9, 1480, false, lookalike), tcShot},
		{"v4 later fragment, same ID other protocol", toWEP, v4frag(peer4, ep4, 6, 8, 1480, false, lookalike), tcShot},
		{"v4 later fragment, same ID other source", toWEP, v4frag(netip.MustParseAddr("10.9.9.8"), ep4, 17, 8, 1480, false, lookalike), tcShot},
		{"v4 later fragment at the other hook", fromWEP, v4frag(ep4, peer4, 17, 8, 1480, false, lookalike), tcShot},
		{"v4 first fragment too short for ports", toWEP, v4frag(peer4, ep4, 17, 10, 0, true, []byte{0, 53}), tcShot},

		// A tracked flow's reply arrives fragmented: the first fragment passes by conntrack
		// (ingress policy allows no TCP to port 40000), the rest follow.
		{"v4 flow out", fromWEP, v4frag(ep4, peer4, 6, 1, 0, false, l4ports(6, 40000, 443).body), tcOK},
		{"v4 reply first fragment (conntrack)", toWEP, v4frag(peer4, ep4, 6, 11, 0, true, l4ports(6, 443, 40000).body), tcOK},
		{"v4 reply later fragment", toWEP, v4frag(peer4, ep4, 6, 11, 1480, false, lookalike), tcOK},

		// IPv6 extension header chains: the L4 header is found behind them.
		{"v6 hop-by-hop, routing, destination options, UDP 53", toWEP,
			v6frame(peer6, ep6, extOpts(0, 0), extOpts(43, 1), extOpts(60, 2), l4ports(17, 1000, 53)), tcOK},
		{"v6 same chain, UDP 54", toWEP,
			v6frame(peer6, ep6, extOpts(0, 0), extOpts(43, 1), extOpts(60, 2), l4ports(17, 1000, 54)), tcShot},
		{"v6 AH, TCP 80", toWEP, v6frame(peer6, ep6, extAH(), l4ports(6, 1000, 80)), tcOK},
		{"v6 AH, TCP 81", toWEP, v6frame(peer6, ep6, extAH(), l4ports(6, 1000, 81)), tcShot},
		{"v6 eight destination options headers, UDP 53", toWEP,
			v6frame(peer6, ep6, extOpts(60, 0), extOpts(60, 0), extOpts(60, 0), extOpts(60, 0), extOpts(60, 0), extOpts(60, 0), extOpts(60, 0), extOpts(60, 0), l4ports(17, 1000, 53)), tcShot},
		{"v6 seven destination options headers, UDP 53", toWEP,
			v6frame(peer6, ep6, extOpts(60, 0), extOpts(60, 0), extOpts(60, 0), extOpts(60, 0), extOpts(60, 0), extOpts(60, 0), extOpts(60, 0), l4ports(17, 1000, 53)), tcOK},
		{"v6 truncated extension header", toWEP, v6frame(peer6, ep6, hdr{60, []byte{4}}), tcShot},
		// MLD is exempt from policy; reports carry a hop-by-hop router-alert option.
		{"v6 MLDv2 report behind hop-by-hop", toWEP, v6frame(peer6, ep6, extOpts(0, 0), hdr{58, []byte{143, 0, 0, 0, 0, 0, 0, 0}}), tcOK},

		// IPv6 fragments.
		{"v6 first fragment, denied port", toWEP, v6frame(peer6, ep6, extFrag(0, true, 70), l4ports(17, 1000, 54)), tcShot},
		{"v6 later fragment of the denied datagram", toWEP, v6frame(peer6, ep6, extFrag(1448, false, 70), hdr{17, lookalike}), tcShot},
		{"v6 first fragment, allowed port, destination options after the fragment header", toWEP,
			v6frame(peer6, ep6, extOpts(0, 0), extFrag(0, true, 71), extOpts(60, 0), l4ports(17, 1000, 53)), tcOK},
		{"v6 later fragment follows", toWEP, v6frame(peer6, ep6, extOpts(0, 0), extFrag(1448, true, 71), hdr{60, lookalike}), tcOK},
		{"v6 last fragment follows", toWEP, v6frame(peer6, ep6, extFrag(2896, false, 71), hdr{60, lookalike}), tcOK},
		{"v6 later fragment, first never seen", toWEP, v6frame(peer6, ep6, extFrag(1448, false, 72), hdr{17, lookalike}), tcShot},
		{"v6 atomic fragment, UDP 53", toWEP, v6frame(peer6, ep6, extFrag(0, false, 73), l4ports(17, 1000, 53)), tcOK},
		{"v6 atomic fragment, UDP 54", toWEP, v6frame(peer6, ep6, extFrag(0, false, 74), l4ports(17, 1000, 54)), tcShot},
		{"v6 first fragment too short for ports", toWEP, v6frame(peer6, ep6, extFrag(0, true, 75), hdr{17, []byte{0, 53}}), tcShot},
	}
	for _, s := range steps {
		if got := runFrame(t, s.prog, s.frame); got != s.want {
			t.Errorf("%s: verdict %d, want %d", s.name, got, s.want)
		}
	}
	// Atomic fragments are whole packets: nothing is recorded for them.
	var k policyFragKey
	var v policyFragVal
	n := 0
	for it := d.objs.FfragV1.Iterate(); it.Next(&k, &v); {
		n++
	}
	if n != 3 {
		t.Errorf("fragment map entries: %d, want 3 (the passed first fragments)", n)
	}
}
