//go:build linux

package bpf

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/felis-dev/felis/snapshot"
)

// icmpErr4 is an IPv4 ICMP error from src to dst embedding inner (an IP packet, Ethernet
// header stripped), cut to its IP header and 8 bytes as routers send it.
func icmpErr4(src, dst netip.Addr, typ, code uint8, inner []byte) []byte {
	ihl := int(inner[0]&0xf) * 4
	inner = inner[:min(len(inner), ihl+8)]
	b := append([]byte{typ, code, 0, 0, 0, 0, 0x05, 0xdc}, inner...) // MTU 1500 (fragmentation needed)
	return v4frag(src, dst, 1, 99, 0, false, b)
}

// icmpErr6 is an ICMPv6 error embedding inner (an IPv6 packet, Ethernet header stripped).
func icmpErr6(src, dst netip.Addr, typ, code uint8, inner []byte) []byte {
	b := make([]byte, 8, 8+len(inner))
	b[0], b[1] = typ, code
	binary.BigEndian.PutUint32(b[4:], 1280) // MTU (packet too big)
	return v6frame(src, dst, hdr{58, append(b, inner...)})
}

// TestRelatedICMP: ICMP errors whose embedded packet belongs to a known flow pass without
// policy, at either end of the flow (the workload as client or as server), IPv4 and IPv6
// (packet too big for PMTU discovery included); errors about unknown flows, truncated or
// about other errors are dropped, whatever policy says, as the nftables dataplane drops them
// (conntrack attaches no entry: ct state invalid); errors never create or refresh flows.
func TestRelatedICMP(t *testing.T) {
	d, _ := openTest(t)
	toWEP, fromWEP := d.Programs()
	s := syncSnapshot() // ingress: only sources in s:a (10.0.0.2, 10.0.0.3)
	s.Endpoints[0].Addrs = append(s.Endpoints[0].Addrs, netip.MustParsePrefix("fd00::1/128"))
	s.Profiles = []snapshot.Profile{{ID: "all", Outbound: []snapshot.Rule{{Action: snapshot.Allow}}}}
	s.Endpoints[0].Egress = snapshot.Direction{Profiles: []string{"all"}}
	mustSync(t, d, s, true)

	ep4, peer4, client4 := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.9.9.9"), netip.MustParseAddr("10.0.0.2")
	router4 := netip.MustParseAddr("192.0.2.1")
	ep6, peer6, router6 := netip.MustParseAddr("fd00::1"), netip.MustParseAddr("2001:db8::9"), netip.MustParseAddr("2001:db8::1")
	tcp4 := func(src, dst netip.Addr, sport, dport uint16) []byte {
		return v4frag(src, dst, 6, 1, 0, false, l4ports(6, sport, dport).body)
	}
	out := tcp4(ep4, peer4, 40000, 443)     // the workload's flow out
	other := tcp4(ep4, peer4, 40001, 443)   // never sent
	in := tcp4(client4, ep4, 5000, 80)      // a flow into the workload (ingress allows 10.0.0.2)
	replyIn := tcp4(ep4, client4, 80, 5000) // the workload's reply in that flow
	echoOut := v4frag(ep4, peer4, 1, 2, 0, false, []byte{8, 0, 0, 0, 0x12, 0x34, 0, 1})
	udp6 := v6frame(ep6, peer6, l4ports(17, 5353, 53))
	udp6Other := v6frame(ep6, peer6, l4ports(17, 5354, 53))
	udp6Opts := v6frame(ep6, peer6, extOpts(60, 0), l4ports(17, 5355, 53))
	udp6OptsSent := v6frame(ep6, peer6, extOpts(60, 0), l4ports(17, 5355, 53))

	type step struct {
		name  string
		prog  *ebpf.Program
		frame []byte
		want  uint32
	}
	steps := []step{
		{"fragmentation needed, no flow yet: invalid", toWEP, icmpErr4(router4, ep4, 3, 4, out[14:]), tcShot},
		{"flow out", fromWEP, out, tcOK},
		{"fragmentation needed for the flow", toWEP, icmpErr4(router4, ep4, 3, 4, out[14:]), tcOK},
		{"port unreachable for the flow", toWEP, icmpErr4(peer4, ep4, 3, 3, out[14:]), tcOK},
		{"time exceeded for the flow", toWEP, icmpErr4(router4, ep4, 11, 0, out[14:]), tcOK},
		{"parameter problem for the flow", toWEP, icmpErr4(router4, ep4, 12, 0, out[14:]), tcOK},
		{"fragmentation needed for another port: invalid", toWEP, icmpErr4(router4, ep4, 3, 4, other[14:]), tcShot},
		{"the flow's tuple, but not an error type (echo request)", toWEP,
			v4frag(router4, ep4, 1, 3, 0, false, append([]byte{8, 0, 0, 0, 0, 0, 0, 0}, out[14:14+28]...)), tcShot},
		{"embedded header truncated: invalid", toWEP, icmpErr4(router4, ep4, 3, 4, out[14:14+20])[:14+20+8+20+2], tcShot},
		{"error about an error about the flow: invalid", toWEP,
			icmpErr4(router4, ep4, 3, 4, icmpErr4(ep4, peer4, 3, 4, out[14:])[14:]), tcShot},

		// The workload as server: an error about its reply, from a router on the way.
		{"flow in", toWEP, in, tcOK},
		{"time exceeded for the workload's reply", toWEP, icmpErr4(router4, ep4, 11, 0, replyIn[14:]), tcOK},
		// And the workload reporting an error about the inbound flow passes egress (allowed
		// anyway here) and records nothing.
		{"workload's port unreachable about the inbound flow", fromWEP, icmpErr4(ep4, client4, 3, 3, in[14:]), tcOK},

		{"echo request out", fromWEP, echoOut, tcOK},
		{"time exceeded for the echo request", toWEP, icmpErr4(router4, ep4, 11, 0, echoOut[14:]), tcOK},

		// IPv6: PMTU discovery.
		{"v6 packet too big, no flow yet: invalid", toWEP, icmpErr6(router6, ep6, 2, 0, udp6[14:]), tcShot},
		{"v6 flow out", fromWEP, udp6, tcOK},
		{"v6 packet too big for the flow", toWEP, icmpErr6(router6, ep6, 2, 0, udp6[14:]), tcOK},
		{"v6 destination unreachable for the flow", toWEP, icmpErr6(router6, ep6, 1, 4, udp6[14:]), tcOK},
		{"v6 time exceeded for the flow", toWEP, icmpErr6(router6, ep6, 3, 0, udp6[14:]), tcOK},
		{"v6 parameter problem for the flow", toWEP, icmpErr6(router6, ep6, 4, 0, udp6[14:]), tcOK},
		{"v6 packet too big for another port: invalid", toWEP, icmpErr6(router6, ep6, 2, 0, udp6Other[14:]), tcShot},
		{"v6 flow out with a destination options header", fromWEP, udp6OptsSent, tcOK},
		{"v6 packet too big embedding extension headers", toWEP, icmpErr6(router6, ep6, 2, 0, udp6Opts[14:]), tcOK},
	}
	before := -1
	for i, st := range steps {
		if i == len(steps)-1 {
			before = countEntries(t, d)
		}
		if got := runFrame(t, st.prog, st.frame); got != st.want {
			t.Errorf("%s: verdict %d, want %d", st.name, got, st.want)
		}
	}
	if n := countEntries(t, d); n != before {
		t.Errorf("conntrack entries after a related error: %d, before %d", n, before)
	}
	// Errors are never flows: the workload's port unreachable that egress allowed recorded
	// nothing, so an error about it is not related.
	var k policyCtKey
	var v policyCtVal
	for it := d.CTMap().Iterate(); it.Next(&k, &v); {
		if k.Icmp == 3 || k.Icmp == 11 || k.Icmp == 12 {
			t.Errorf("conntrack entry for an ICMP error: %+v", k)
		}
	}
	// An error from a source policy allows about an unknown flow is invalid: dropped before
	// policy, counted as invalid. So is one about an unknown IPv6 flow from an allowed source.
	invalid := func() uint64 { // conntrack INVALID drops (C_INVALID) at TC egress, any interface
		var k policyCounterKey
		var v, sum uint64
		for it := d.objs.FcntV1.Iterate(); it.Next(&k, &v); {
			if k.Kind == 7 && k.Dir == 0 {
				sum += v
			}
		}
		return sum
	}
	n := invalid()
	if got := runFrame(t, toWEP, icmpErr4(client4, ep4, 3, 3, other[14:])); got != tcShot {
		t.Errorf("error from 10.0.0.2 (allowed by policy) about an unknown flow: %d, want drop", got)
	}
	if got := invalid(); got != n+1 {
		t.Errorf("invalid counter %d after an unrelated error, want %d", got, n+1)
	}
}
