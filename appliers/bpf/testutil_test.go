//go:build linux

package bpf

import (
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"net/netip"
	"os"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/felis-dev/felis/snapshot"
)

// openTest opens a Dataplane whose pins live on a private bpffs mount, removed at cleanup;
// every endpoint interface resolves to ifindex 1 (the loopback device BPF_PROG_TEST_RUN uses).
func openTest(t testing.TB) (*Dataplane, string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (bpf maps, BPF_PROG_TEST_RUN)")
	}
	dir := t.TempDir()
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		t.Fatalf("mounting bpffs on %s: %v", dir, err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	d := openAt(t, dir)
	return d, dir
}

func openAt(t testing.TB, dir string) *Dataplane {
	t.Helper()
	d, err := Open(Options{PinDir: dir + "/felis", NoAttach: true, Ifindex: func(string) (int, error) { return 1, nil }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// frame builds an Ethernet frame carrying p (IPv4 or IPv6, then TCP/UDP/SCTP ports or the
// ICMP type and code). A TCP segment is a SYN: a packet that may open a flow
// (ctstate_test.go crafts the other flags).
func frame(p snapshot.Packet) []byte {
	var l4 []byte
	switch {
	case p.Protocol == 6 || p.Protocol == 17 || p.Protocol == 132:
		l4 = make([]byte, 20)
		binary.BigEndian.PutUint16(l4[0:], p.SrcPort)
		binary.BigEndian.PutUint16(l4[2:], p.DstPort)
		if p.Protocol == 6 {
			l4[12] = 5 << 4 // data offset: 20 bytes
			l4[13] = tcpSYN
		}
	case p.ICMPType != nil:
		l4 = make([]byte, 8)
		l4[0] = *p.ICMPType
		if p.ICMPCode != nil {
			l4[1] = *p.ICMPCode
		}
	default:
		l4 = make([]byte, 8)
	}
	b := make([]byte, 14, 128)
	if p.Src.Is4() {
		binary.BigEndian.PutUint16(b[12:], 0x0800)
		h := make([]byte, 20)
		h[0] = 0x45
		binary.BigEndian.PutUint16(h[2:], uint16(20+len(l4)))
		h[8] = 64
		h[9] = p.Protocol
		s, d := p.Src.As4(), p.Dst.As4()
		copy(h[12:], s[:])
		copy(h[16:], d[:])
		b = append(b, h...)
	} else {
		binary.BigEndian.PutUint16(b[12:], 0x86dd)
		h := make([]byte, 40)
		h[0] = 0x60
		binary.BigEndian.PutUint16(h[4:], uint16(len(l4)))
		h[6] = p.Protocol
		h[7] = 64
		s, d := p.Src.As16(), p.Dst.As16()
		copy(h[8:], s[:])
		copy(h[24:], d[:])
		b = append(b, h...)
	}
	return append(b, l4...)
}

// clearCT empties the conntrack map so every packet is a new flow.
func clearCT(t testing.TB, m *ebpf.Map) {
	var k policyCtKey
	var keys []policyCtKey
	var v policyCtVal
	it := m.Iterate()
	for it.Next(&k, &v) {
		keys = append(keys, k)
	}
	for _, k := range keys {
		if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			t.Fatal(err)
		}
	}
}

// Address pools the random snapshots and packets draw from, small so sets and nets match often.
var (
	pool4 = []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.1.7"),
		netip.MustParseAddr("10.1.2.3"), netip.MustParseAddr("192.168.5.5"), netip.MustParseAddr("172.16.0.9")}
	pool6 = []netip.Addr{netip.MustParseAddr("fd00::1"), netip.MustParseAddr("fd00::2"), netip.MustParseAddr("fd00::1:7"),
		netip.MustParseAddr("fd01::3"), netip.MustParseAddr("2001:db8::5")}
	portPool = []uint16{0, 1, 53, 80, 443, 8080, 8081, 65535}
)

func pick[T any](r *rand.Rand, xs []T) T { return xs[r.IntN(len(xs))] }

func randAddr(r *rand.Rand, v6 bool) netip.Addr {
	if v6 {
		return pick(r, pool6)
	}
	return pick(r, pool4)
}

func randPrefix(r *rand.Rand, v6 bool) netip.Prefix {
	a := randAddr(r, v6)
	bits := a.BitLen()
	switch r.IntN(4) {
	case 0:
		bits = r.IntN(a.BitLen() + 1)
	case 1:
		bits = a.BitLen() - 8
	}
	return netip.PrefixFrom(a, bits).Masked()
}

func randPrefixes(r *rand.Rand) []netip.Prefix {
	var out []netip.Prefix
	for range 1 + r.IntN(3) {
		out = append(out, randPrefix(r, r.IntN(2) == 0))
	}
	return out
}

func randPorts(r *rand.Rand) []snapshot.PortRange {
	var out []snapshot.PortRange
	for range 1 + r.IntN(2) {
		a, b := pick(r, portPool), pick(r, portPool)
		if r.IntN(2) == 0 {
			b = a
		}
		out = append(out, snapshot.PortRange{Min: min(a, b), Max: max(a, b)})
	}
	return out
}

func u8(v uint8) *uint8 { return &v }

// randSnapshot builds a snapshot with one endpoint and random sets, policies and profiles.
func randSnapshot(r *rand.Rand) *snapshot.Snapshot {
	// Pod-to-host traffic is allowed: the evaluator does not model the host (the host
	// netns's routes and forwarding setting would decide otherwise; TestEndpointToHostAction
	// covers Deny).
	s := &snapshot.Snapshot{Node: "n", Config: snapshot.Config{DefaultEndpointToHostAction: snapshot.Allow}}
	var plain, named []string
	for i := range 6 {
		set := snapshot.IPSet{ID: "s:" + string(rune('a'+i))}
		switch i % 3 {
		case 0:
			set.Type = snapshot.IPSetIP
		case 1:
			set.Type = snapshot.IPSetNet
		case 2:
			set.Type = snapshot.IPSetIPPort
		}
		seen := map[snapshot.Member]bool{}
		for range r.IntN(5) {
			m := snapshot.Member{Prefix: netip.PrefixFrom(randAddr(r, r.IntN(2) == 0), 0)}
			m.Prefix = netip.PrefixFrom(m.Prefix.Addr(), m.Prefix.Addr().BitLen())
			if set.Type == snapshot.IPSetNet {
				m.Prefix = randPrefix(r, r.IntN(2) == 0)
			}
			if set.Type == snapshot.IPSetIPPort {
				m.Protocol = pick(r, []uint8{6, 17, 132})
				m.Port = pick(r, portPool)
			}
			if !seen[m] {
				seen[m] = true
				set.Members = append(set.Members, m)
			}
		}
		s.IPSets = append(s.IPSets, set)
		if set.Type == snapshot.IPSetIPPort {
			named = append(named, set.ID)
		} else {
			plain = append(plain, set.ID)
		}
	}
	plain = append(plain, "s:missing")
	pickSets := func(from []string) []string {
		var out []string
		for range 1 + r.IntN(2) {
			out = append(out, pick(r, from))
		}
		return out
	}
	rule := func(i int) snapshot.Rule {
		ru := snapshot.Rule{Action: pick(r, []snapshot.Action{snapshot.Allow, snapshot.Deny, snapshot.Pass, snapshot.Log, snapshot.Allow}),
			Origin: snapshot.RuleOrigin{Index: i}}
		if r.IntN(5) == 0 {
			ru.IPVersion = pick(r, []int{4, 6})
		}
		if r.IntN(3) == 0 {
			ru.Protocol = u8(pick(r, []uint8{6, 17, 1, 58, 132}))
		}
		if r.IntN(6) == 0 {
			ru.NotProtocol = u8(pick(r, []uint8{6, 17, 1, 58}))
		}
		if r.IntN(6) == 0 {
			m := &snapshot.ICMPMatch{Type: pick(r, []uint8{0, 3, 8, 128})}
			if r.IntN(2) == 0 {
				m.Code = u8(uint8(r.IntN(2)))
			}
			if r.IntN(2) == 0 {
				ru.ICMP = m
			} else {
				ru.NotICMP = m
			}
		}
		type side struct {
			nets, notNets                 *[]netip.Prefix
			sets, notSets, named, notName *[]string
			ports, notPorts               *[]snapshot.PortRange
		}
		for _, sd := range []side{
			{&ru.SrcNets, &ru.NotSrcNets, &ru.SrcIPSets, &ru.NotSrcIPSets, &ru.SrcNamedPortIPSets, &ru.NotSrcNamedPortIPSets, &ru.SrcPorts, &ru.NotSrcPorts},
			{&ru.DstNets, &ru.NotDstNets, &ru.DstIPSets, &ru.NotDstIPSets, &ru.DstNamedPortIPSets, &ru.NotDstNamedPortIPSets, &ru.DstPorts, &ru.NotDstPorts},
		} {
			if r.IntN(6) == 0 {
				*sd.nets = randPrefixes(r)
			}
			if r.IntN(8) == 0 {
				*sd.notNets = randPrefixes(r)
			}
			if r.IntN(5) == 0 {
				*sd.sets = pickSets(plain)
			}
			if r.IntN(8) == 0 {
				*sd.notSets = pickSets(plain)
			}
			if r.IntN(5) == 0 {
				*sd.ports = randPorts(r)
			}
			if r.IntN(6) == 0 {
				*sd.named = pickSets(named)
			}
			if r.IntN(10) == 0 {
				*sd.notPorts = randPorts(r)
			}
			if r.IntN(10) == 0 {
				*sd.notName = pickSets(named)
			}
		}
		if r.IntN(12) == 0 {
			ru.DstServiceIPSets = pickSets(append(cloneStrings(named), plain...))
		}
		return ru
	}
	rules := func() []snapshot.Rule {
		var out []snapshot.Rule
		for i := range r.IntN(5) {
			out = append(out, rule(i))
		}
		return out
	}
	for i := range 5 {
		s.Policies = append(s.Policies, snapshot.Policy{ID: "p" + string(rune('0'+i)), Inbound: rules(), Outbound: rules()})
	}
	for i := range 3 {
		s.Profiles = append(s.Profiles, snapshot.Profile{ID: "prof" + string(rune('0'+i)), Inbound: rules(), Outbound: rules()})
	}
	dir := func() snapshot.Direction {
		var d snapshot.Direction
		for t := range r.IntN(3) {
			tp := snapshot.TierPolicies{Tier: "t" + string(rune('0'+t)), DefaultAction: pick(r, []snapshot.Action{snapshot.Deny, snapshot.Pass})}
			for range r.IntN(3) {
				tp.Policies = append(tp.Policies, pick(r, []string{"p0", "p1", "p2", "p3", "p4", "pmissing"}))
			}
			d.Tiers = append(d.Tiers, tp)
		}
		for range r.IntN(3) {
			d.Profiles = append(d.Profiles, pick(r, []string{"prof0", "prof1", "prof2", "profmissing"}))
		}
		return d
	}
	s.Endpoints = []snapshot.Endpoint{{
		ID: "ns/ep", Interface: "cali0", Addrs: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/32"), netip.MustParsePrefix("fd00::1/128")},
		Ingress: dir(), Egress: dir(),
	}}
	return s
}

func cloneStrings(xs []string) []string { return append([]string(nil), xs...) }

// randPacket draws a packet; src is the endpoint's own address when fromEP.
func randPacket(r *rand.Rand, fromEP bool) snapshot.Packet {
	v6 := r.IntN(2) == 0
	p := snapshot.Packet{Src: randAddr(r, v6), Dst: randAddr(r, v6)}
	if fromEP && r.IntN(8) != 0 {
		p.Src = netip.MustParseAddr("10.0.0.1")
		if v6 {
			p.Src = netip.MustParseAddr("fd00::1")
		}
	}
	icmp := uint8(1)
	if v6 {
		icmp = 58
	}
	p.Protocol = pick(r, []uint8{6, 17, 132, icmp, icmp, 47})
	switch {
	case p.Protocol == 6 || p.Protocol == 17 || p.Protocol == 132:
		p.SrcPort, p.DstPort = pick(r, portPool), pick(r, portPool)
	case p.Protocol == icmp:
		types := []uint8{0, 3, 8, 128}
		p.ICMPType = u8(pick(r, types))
		p.ICMPCode = u8(uint8(r.IntN(2)))
	}
	return p
}

// icmpError says whether frame(p) is an ICMP error (ct.h's icmp_error): with no embedded
// packet of a known flow, conntrack calls it INVALID and the programs drop it before policy.
func icmpError(p snapshot.Packet) bool {
	var t uint8
	if p.ICMPType != nil {
		t = *p.ICMPType
	}
	if p.Src.Is4() {
		return p.Protocol == 1 && (t == 3 || t == 11 || t == 12)
	}
	return p.Protocol == 58 && t >= 1 && t <= 4
}
