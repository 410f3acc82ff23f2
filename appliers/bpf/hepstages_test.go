//go:build linux

package bpf

import (
	"context"
	"fmt"
	"net/netip"
	"testing"

	"github.com/felis-dev/felis/snapshot"
)

// ctEntries counts the conntrack map's entries.
func ctEntries(t *testing.T, d *Dataplane) int {
	t.Helper()
	var k policyCtKey
	var v policyCtVal
	n := 0
	it := d.CTMap().Iterate()
	for it.Next(&k, &v) {
		n++
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}

func tier(name string, def snapshot.Action, ids ...string) snapshot.Direction {
	return snapshot.Direction{Tiers: []snapshot.TierPolicies{{Tier: name, DefaultAction: def, Policies: ids}}}
}

func tcpRule(a snapshot.Action, dst ...uint16) snapshot.Rule {
	r := snapshot.Rule{Action: a, Protocol: u8(6)}
	for _, p := range dst {
		r.DstPorts = append(r.DstPorts, snapshot.PortRange{Min: p, Max: p})
	}
	return r
}

// stageSnapshot is a host endpoint on eth0 with a policy in every stage, tiers as derive
// makes them (untracked and preDNAT tiers default to Pass, forward and normal to Deny):
//
//	untracked in:  deny 7001, deny 22, allow 7000 and 7002, deny ICMPv6 136   out: deny 9000, deny 9999, allow from port 7000, deny ICMPv6 135
//	preDNAT in:    deny 7100, deny from port 7200, deny ICMPv6 135
//	forward in:    allow 80, 7000, 7100                       out: allow 443
//	normal in:     allow 80, 7001, 7100                       out: allow 7200, 9999
//
// with failsafes 22 in and 9000 out.
func stageSnapshot() *snapshot.Snapshot {
	fromPort := func(a snapshot.Action, p uint16) snapshot.Rule {
		return snapshot.Rule{Action: a, Protocol: u8(6), SrcPorts: []snapshot.PortRange{{Min: p, Max: p}}}
	}
	icmp6 := func(a snapshot.Action, typ uint8) snapshot.Rule {
		return snapshot.Rule{Action: a, Protocol: u8(58), ICMP: &snapshot.ICMPMatch{Type: typ}}
	}
	return &snapshot.Snapshot{
		Node: "n",
		Config: snapshot.Config{FailsafeInbound: []snapshot.FailsafePort{{Protocol: 6, Port: 22}},
			FailsafeOutbound: []snapshot.FailsafePort{{Protocol: 6, Port: 9000}}},
		Policies: []snapshot.Policy{
			{ID: "raw", Tier: "default", DoNotTrack: true,
				Inbound: []snapshot.Rule{tcpRule(snapshot.Deny, 7001), tcpRule(snapshot.Deny, 22), tcpRule(snapshot.Allow, 7000, 7002),
					icmp6(snapshot.Deny, 136)},
				Outbound: []snapshot.Rule{tcpRule(snapshot.Deny, 9000), tcpRule(snapshot.Deny, 9999), fromPort(snapshot.Allow, 7000),
					icmp6(snapshot.Deny, 135)}},
			{ID: "pre", Tier: "default", PreDNAT: true,
				Inbound: []snapshot.Rule{tcpRule(snapshot.Deny, 7100), fromPort(snapshot.Deny, 7200), icmp6(snapshot.Deny, 135)}},
			{ID: "fwd", Tier: "default", ApplyOnForward: true,
				Inbound:  []snapshot.Rule{tcpRule(snapshot.Allow, 80, 7000, 7100)},
				Outbound: []snapshot.Rule{tcpRule(snapshot.Allow, 443)}},
			{ID: "host", Tier: "default",
				Inbound:  []snapshot.Rule{tcpRule(snapshot.Allow, 80, 7001, 7100)},
				Outbound: []snapshot.Rule{tcpRule(snapshot.Allow, 7200, 9999)}},
		},
		HostEndpoints: []snapshot.HostEndpoint{{ID: "h", Interface: "eth0",
			Normal:    snapshot.HostDirections{Ingress: tier("default", snapshot.Deny, "host"), Egress: tier("default", snapshot.Deny, "host")},
			Untracked: snapshot.HostDirections{Ingress: tier("default", snapshot.Pass, "raw"), Egress: tier("default", snapshot.Pass, "raw")},
			PreDNAT:   snapshot.HostDirections{Ingress: tier("default", snapshot.Pass, "pre")},
			Forward:   snapshot.HostDirections{Ingress: tier("default", snapshot.Deny, "fwd"), Egress: tier("default", snapshot.Deny, "fwd")},
		}},
	}
}

// TestHostEndpointStages runs packets through a host endpoint's TC programs with
// BPF_PROG_TEST_RUN, in a netns where 192.168.5.1 and fd00:5::1 are local and .7 / ::7 are
// forwarded: each stage decides what the nftables dataplane's hook for it decides, untracked
// allows leave no conntrack entry, and replies of untracked flows need their own allow.
func TestHostEndpointStages(t *testing.T) {
	d, _ := openTest(t)
	toWEP, fromWEP := d.Programs() // TC egress (host endpoint egress), TC ingress
	inNetNS(t, func(func(bool)) {
		mustSync(t, d, stageSnapshot(), true)
		tcp := func(src string, sport uint16, dst string, dport uint16) snapshot.Packet {
			return snapshot.Packet{Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(dst), Protocol: 6, SrcPort: sport, DstPort: dport}
		}
		nd := func(src, dst string, typ uint8) snapshot.Packet {
			return snapshot.Packet{Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(dst), Protocol: 58, ICMPType: u8(typ)}
		}
		const in, out, fresh = true, false, true
		for _, c := range []struct {
			name    string
			ingress bool
			pkt     snapshot.Packet
			clearCT bool // start with an empty conntrack map
			want    uint32
			ct      int // conntrack entries after the packet (-1: not checked)
		}{
			{"untracked allow to the host: normal policy (which denies 7000) skipped, no conntrack", in, tcp("10.1.1.1", 40000, "192.168.5.1", 7000), fresh, tcOK, 0},
			{"its reply, allowed by untracked egress, no conntrack", out, tcp("192.168.5.1", 7000, "10.1.1.1", 40000), false, tcOK, 0},
			{"untracked allow, IPv6", in, tcp("fd00:1::1", 40000, "fd00:5::1", 7000), fresh, tcOK, 0},
			{"the reply of an untracked flow needs its own allow (normal egress denies)", out, tcp("192.168.5.1", 7002, "10.1.1.1", 40000), fresh, tcShot, 0},
			{"untracked deny beats a normal allow", in, tcp("10.1.1.1", 40000, "192.168.5.1", 7001), fresh, tcShot, 0},
			{"failsafe 22 beats an untracked deny", in, tcp("10.1.1.1", 40000, "192.168.5.1", 22), fresh, tcOK, 1},
			{"outbound failsafe 9000 beats an untracked egress deny", out, tcp("192.168.5.1", 50000, "10.1.1.1", 9000), fresh, tcOK, 1},
			{"untracked egress deny beats a normal egress allow", out, tcp("192.168.5.1", 50000, "10.1.1.1", 9999), fresh, tcShot, 0},
			{"preDNAT deny to the host beats a normal allow", in, tcp("10.1.1.1", 40000, "192.168.5.1", 7100), fresh, tcShot, 0},
			{"preDNAT deny of a forwarded flow beats a forward allow", in, tcp("10.1.1.1", 40000, "192.168.5.7", 7100), fresh, tcShot, 0},
			{"host-opened flow (normal egress allows 7200)", out, tcp("192.168.5.1", 50000, "10.1.1.1", 7200), fresh, tcOK, 1},
			{"its reply is established: preDNAT (deny from 7200) not consulted", in, tcp("10.1.1.1", 7200, "192.168.5.1", 50000), false, tcOK, 1},
			{"a new flow from port 7200: preDNAT denies", in, tcp("10.1.1.1", 7200, "192.168.5.1", 80), false, tcShot, 1},
			{"forward ingress allow (recorded)", in, tcp("10.1.1.1", 40000, "192.168.5.7", 80), fresh, tcOK, 1},
			{"its reply leaves by conntrack (forward egress allows only 443)", out, tcp("192.168.5.7", 80, "10.1.1.1", 40000), false, tcOK, 1},
			{"forward ingress: tier default deny", in, tcp("10.1.1.1", 40000, "192.168.5.7", 81), fresh, tcShot, 0},
			{"forward ingress allow, IPv6", in, tcp("fd00:1::1", 40000, "fd00:5::7", 80), fresh, tcOK, 1},
			{"forward ingress deny, IPv6", in, tcp("fd00:1::1", 40000, "fd00:5::7", 81), fresh, tcShot, 0},
			{"forward egress allow (a routed, non-local source)", out, tcp("192.168.5.9", 40000, "10.1.1.1", 443), fresh, tcOK, 1},
			{"forward egress deny", out, tcp("192.168.5.9", 40000, "10.1.1.1", 444), fresh, tcShot, 0},
			{"to the host, the forward policy is not consulted (normal allows 80)", in, tcp("10.1.1.1", 40000, "192.168.5.1", 80), fresh, tcOK, 1},
			{"to the host, the normal tier default denies 443", in, tcp("10.1.1.1", 40000, "192.168.5.1", 443), fresh, tcShot, 0},
			{"untracked allow, forwarded: the forward policy still applies (allows 7000), no conntrack", in, tcp("10.1.1.1", 40000, "192.168.5.7", 7000), fresh, tcOK, 0},
			{"untracked allow, forwarded: the forward policy still applies (denies 7002)", in, tcp("10.1.1.1", 40000, "192.168.5.7", 7002), fresh, tcShot, 0},
			{"untracked allow 7002 to the host", in, tcp("10.1.1.1", 40000, "192.168.5.1", 7002), fresh, tcOK, 0},
			// ND and MLD are untracked in nftables: its raw and mangle chains police them, its
			// filter chains accept them.
			{"neighbour advertisement in: untracked deny", in, nd("fd00:5::9", "fd00:5::1", 136), fresh, tcShot, 0},
			{"neighbour solicitation in: preDNAT deny", in, nd("fd00:5::9", "fd00:5::1", 135), fresh, tcShot, 0},
			{"router solicitation in: exempt from normal policy (which denies ICMPv6)", in, nd("fd00:5::9", "fd00:5::1", 133), fresh, tcOK, 0},
			{"neighbour solicitation out: untracked egress deny", out, nd("fd00:5::1", "fd00:5::9", 135), fresh, tcShot, 0},
			{"neighbour advertisement out: exempt from normal egress (which denies ICMPv6)", out, nd("fd00:5::1", "fd00:5::9", 136), fresh, tcOK, 0},
			{"MLD report from a forwarded source: exempt (no forward egress)", out, nd("fd00:5::9", "ff02::16", 143), fresh, tcOK, 0},
		} {
			if c.clearCT {
				clearCT(t, d.CTMap())
			}
			prog := toWEP
			if c.ingress {
				prog = fromWEP
			}
			if got := run(t, prog, c.pkt); got != c.want {
				t.Errorf("%s (%v:%d→%v:%d): verdict %d, want %d", c.name, c.pkt.Src, c.pkt.SrcPort, c.pkt.Dst, c.pkt.DstPort, got, c.want)
			}
			if n := ctEntries(t, d); c.ct >= 0 && n != c.ct {
				t.Errorf("%s: %d conntrack entries, want %d", c.name, n, c.ct)
			}
		}
		// The SYN-ACK of an untracked flow that untracked egress does not allow is invalid to
		// conntrack (no flow) and dropped although normal egress allows its port, as nftables
		// drops it (ct state invalid).
		clearCT(t, d.CTMap())
		synAck := tcpFrame(netip.MustParseAddr("192.168.5.1"), netip.MustParseAddr("10.1.1.1"), 7002, 7200, tcpSYN|tcpACK)
		if got := runFrame(t, toWEP, synAck); got != tcShot {
			t.Errorf("SYN-ACK of an untracked flow without an untracked egress allow: verdict %d, want drop", got)
		}
		syn := tcpFrame(netip.MustParseAddr("192.168.5.1"), netip.MustParseAddr("10.1.1.1"), 7002, 7200, tcpSYN)
		if got := runFrame(t, toWEP, syn); got != tcOK {
			t.Errorf("a SYN on the same ports (normal egress allows 7200): verdict %d, want pass", got)
		}
	})
}

// TestWildcardHostEndpoint: a `*` host endpoint is put on the interfaces Options.Interfaces
// lists (here eth0; lo and a workload-prefixed name are covered by the render tests) and
// polices them like a named one: host traffic by its normal policy with failsafes first,
// forwarded traffic by its forward policy.
func TestWildcardHostEndpoint(t *testing.T) {
	_, dir := openTest(t)
	d, err := Open(Options{PinDir: dir + "/wild", NoAttach: true,
		Ifindex:    func(string) (int, error) { return 1, nil },
		Interfaces: func() ([]string, error) { return []string{"eth0"}, nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	toWEP, fromWEP := d.Programs()
	inNetNS(t, func(func(bool)) {
		s := stageSnapshot()
		s.HostEndpoints[0].Interface = "*"
		s.HostEndpoints[0].Untracked = snapshot.HostDirections{}
		s.HostEndpoints[0].PreDNAT = snapshot.HostDirections{}
		res := mustSync(t, d, s, true)
		if res["endpoint-put"] != 1 || res["host-put"] != 1 {
			t.Errorf("sync counts %v; want one endpoint and one host entry (eth0)", res)
		}
		tcp := func(dst string, dport uint16) snapshot.Packet {
			return snapshot.Packet{Src: netip.MustParseAddr("10.1.1.1"), Dst: netip.MustParseAddr(dst), Protocol: 6, SrcPort: 40000, DstPort: dport}
		}
		for _, c := range []struct {
			pkt  snapshot.Packet
			want uint32
		}{
			{tcp("192.168.5.1", 80), tcOK},
			{tcp("192.168.5.1", 81), tcShot},
			{tcp("192.168.5.1", 22), tcOK},
			{tcp("192.168.5.7", 80), tcOK},
			{tcp("192.168.5.7", 81), tcShot},
		} {
			clearCT(t, d.CTMap())
			if got := run(t, fromWEP, c.pkt); got != c.want {
				t.Errorf("%v:%d through the wildcard host endpoint: verdict %d, want %d", c.pkt.Dst, c.pkt.DstPort, got, c.want)
			}
		}
		clearCT(t, d.CTMap())
		fwdOut := func(dport uint16) snapshot.Packet {
			return snapshot.Packet{Src: netip.MustParseAddr("192.168.5.9"), Dst: netip.MustParseAddr("10.1.1.1"), Protocol: 6, SrcPort: 40000, DstPort: dport}
		}
		if got := run(t, toWEP, fwdOut(443)); got != tcOK {
			t.Errorf("forwarded out to port 443: verdict %d, want pass (forward egress allows it)", got)
		}
		if got := run(t, toWEP, fwdOut(444)); got != tcShot {
			t.Errorf("forwarded out to port 444: verdict %d, want drop (forward egress allows only 443)", got)
		}
		// The wildcard gone: the entries go, and traffic passes unpoliced.
		s.HostEndpoints = nil
		res = mustSync(t, d, s, false)
		if res["endpoint-del"] != 1 || res["host-del"] != 1 {
			t.Errorf("sync counts %v; want the endpoint and host entries deleted", res)
		}
		clearCT(t, d.CTMap())
		if got := run(t, fromWEP, tcp("192.168.5.1", 81)); got != tcOK {
			t.Errorf("without host endpoints: verdict %d, want pass", got)
		}
	})
}

// BenchmarkHostEndpointPacket: the cost of a packet through a host endpoint's TC ingress
// program with stageSnapshot's policies (every stage present), with BPF_PROG_TEST_RUN:
// denied new flows walk every stage that applies; an untracked allow repeats its walk for
// every packet (nothing is recorded); an established forwarded flow still meets the
// untracked stage (it applies to every packet) before its conntrack hit. "normal only" is
// the same host endpoint without its other stages.
func BenchmarkHostEndpointPacket(b *testing.B) {
	d, _ := openTest(b)
	_, fromWEP := d.Programs()
	inNetNS(b, func(func(bool)) {
		tcp := func(dst string, dport uint16) []byte {
			return frame(snapshot.Packet{Src: netip.MustParseAddr("10.1.1.1"), Dst: netip.MustParseAddr(dst), Protocol: 6, SrcPort: 40000, DstPort: dport})
		}
		all := stageSnapshot()
		normal := stageSnapshot()
		normal.HostEndpoints[0].Untracked = snapshot.HostDirections{}
		normal.HostEndpoints[0].PreDNAT = snapshot.HostDirections{}
		normal.HostEndpoints[0].Forward = snapshot.HostDirections{}
		for _, c := range []struct {
			name string
			snap *snapshot.Snapshot
			pkt  []byte
			want uint32
		}{
			{"normal-only/to-host-denied", normal, tcp("192.168.5.1", 443), tcShot},
			{"all-stages/to-host-denied", all, tcp("192.168.5.1", 443), tcShot},
			{"all-stages/forwarded-denied", all, tcp("192.168.5.7", 81), tcShot},
			{"all-stages/untracked-allowed", all, tcp("192.168.5.1", 7000), tcOK},
			{"all-stages/forwarded-established", all, tcp("192.168.5.7", 80), tcOK},
		} {
			if _, err := d.Sync(context.Background(), c.snap, true); err != nil {
				b.Fatal(err)
			}
			clearCT(b, d.CTMap())
			b.Run(c.name, func(b *testing.B) { benchProg(b, fromWEP, c.pkt, c.want) })
		}
	})
}

// TestHostEndpointServiceNAT: at a host endpoint, service DNAT runs after the preDNAT stage
// and before the forward/normal decision, and never for a packet an untracked policy allowed
// (NAT needs conntrack: nftables leaves a notrack packet's destination alone).
func TestHostEndpointServiceNAT(t *testing.T) {
	d, _ := openTest(t)
	_, fromWEP := d.Programs()
	inNetNS(t, func(func(bool)) {
		np := func(port uint16) snapshot.Service {
			return snapshot.Service{ID: fmt.Sprintf("ns/np-%d", port),
				Frontends: []snapshot.Frontend{{Addr: netip.MustParseAddr("192.168.5.1"), Port: port, Protocol: 6, Kind: "NodePort"}},
				Backends:  []snapshot.Backend{{Addr: netip.MustParseAddr("192.168.5.7"), Port: 8080, Protocol: 6, Node: "n", Ready: true, Serving: true}}}
		}
		s := &snapshot.Snapshot{
			Node:   "n",
			Config: snapshot.Config{NodeIPv4: netip.MustParsePrefix("192.168.5.1/24")},
			Policies: []snapshot.Policy{
				{ID: "raw", Tier: "default", DoNotTrack: true, Inbound: []snapshot.Rule{tcpRule(snapshot.Allow, 30080)}},
				{ID: "host", Tier: "default", Inbound: []snapshot.Rule{tcpRule(snapshot.Allow, 30081)}},
				{ID: "pre", Tier: "default", PreDNAT: true, Inbound: []snapshot.Rule{tcpRule(snapshot.Deny, 8080)}},
			},
			HostEndpoints: []snapshot.HostEndpoint{{ID: "h", Interface: "eth0",
				Normal:    snapshot.HostDirections{Ingress: tier("default", snapshot.Deny, "host")},
				Untracked: snapshot.HostDirections{Ingress: tier("default", snapshot.Pass, "raw")},
				PreDNAT:   snapshot.HostDirections{Ingress: tier("default", snapshot.Pass, "pre")},
				Forward:   snapshot.HostDirections{Ingress: tier("default", snapshot.Deny)},
			}},
			Services: []snapshot.Service{np(30080), np(30081), np(30082)},
		}
		s.Finalize()
		mustSync(t, d, s, true)
		natEntries := func() int {
			n := 0
			var k policyNatKey
			var v policyNatVal
			for it := d.objs.FnatV1.Iterate(); it.Next(&k, &v); {
				n++
			}
			return n
		}
		tcp := func(dport uint16) snapshot.Packet {
			return snapshot.Packet{Src: netip.MustParseAddr("10.1.1.1"), Dst: netip.MustParseAddr("192.168.5.1"), Protocol: 6, SrcPort: 40000, DstPort: dport}
		}
		for _, c := range []struct {
			name string
			port uint16
			want uint32
		}{
			// Untracked: not translated, so it stays host traffic, which untracked lets through.
			// Translated it would be forwarded to 192.168.5.7 and meet the forward deny.
			{"untracked NodePort: not translated, passes as host traffic", 30080, tcOK},
			// Tracked: translated to the forwarded backend, so the forward policy (deny)
			// decides, not the normal one (which allows 30081); preDNAT saw 30081, not 8080.
			{"tracked NodePort: translated, the forward policy decides", 30081, tcShot},
			{"tracked NodePort, normal policy would deny too", 30082, tcShot},
		} {
			clearCT(t, d.CTMap())
			if got := run(t, fromWEP, tcp(c.port)); got != c.want {
				t.Errorf("%s: verdict %d, want %d", c.name, got, c.want)
			}
			if n := natEntries(); n != 0 {
				t.Errorf("%s: %d NAT entries, want none (nothing allowed was translated)", c.name, n)
			}
		}
	})
}
