//go:build linux

package bpf

import (
	"context"
	"fmt"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/felis-dev/felis/appliers/bpf/render"
	"github.com/felis-dev/felis/snapshot"
)

// bigSnapshot has one endpoint whose ingress allows sources in one set of n /32 members.
func bigSnapshot(n int) *snapshot.Snapshot {
	s := syncSnapshot()
	members := make([]snapshot.Member, 0, n)
	for i := range n {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		members = append(members, snapshot.Member{Prefix: netip.PrefixFrom(a, 32)})
	}
	s.IPSets[0].Members = members
	return s
}

// BenchmarkSetSync1M: initial sync of 1,000,000 IP-set members into the LPM trie (render, diff
// and batched map updates), from empty maps.
func BenchmarkSetSync1M(b *testing.B) {
	d, _ := openTest(b)
	ctx := context.Background()
	big, empty := bigSnapshot(1_000_000), syncSnapshot()
	empty.IPSets[0].Members = nil
	for b.Loop() {
		b.StopTimer()
		if _, err := d.Sync(ctx, empty, true); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		res, err := d.Sync(ctx, big, false)
		if err != nil {
			b.Fatal(err)
		}
		if res.Counts["set-add"] != 1_000_000 {
			b.Fatalf("counts %v", res.Counts)
		}
	}
}

// BenchmarkSetSyncOneMember: add or remove one member of a 1,000,000-member set (whole Sync:
// render and diff of the full snapshot, then one map operation).
func BenchmarkSetSyncOneMember(b *testing.B) {
	d, _ := openTest(b)
	ctx := context.Background()
	s := bigSnapshot(1_000_000)
	if _, err := d.Sync(ctx, s, true); err != nil {
		b.Fatal(err)
	}
	full := s.IPSets[0].Members
	i := 0
	for b.Loop() {
		if i%2 == 0 {
			s.IPSets[0].Members = full[1:]
		} else {
			s.IPSets[0].Members = full
		}
		i++
		res, err := d.Sync(ctx, s, false)
		if err != nil {
			b.Fatal(err)
		}
		if res.Counts["set-add"]+res.Counts["set-del"] != 1 || len(res.Counts) != 1 {
			b.Fatalf("counts %v", res.Counts)
		}
	}
}

// BenchmarkRender1M: the pure render of the 1,000,000-member snapshot alone (the share of
// BenchmarkSetSyncOneMember that is not the kernel).
func BenchmarkRender1M(b *testing.B) {
	s := bigSnapshot(1_000_000)
	for b.Loop() {
		if _, err := render.Render(s); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPacketPath: BPF_PROG_TEST_RUN cost of one packet through the ingress program of an
// endpoint with n rules that do not match (a source-set or a port test each) before its
// verdict; the packet is denied, so conntrack never short-cuts it. "ct-hit" is an ACK of an
// allowed, established TCP flow.
func BenchmarkPacketPath(b *testing.B) {
	d, _ := openTest(b)
	toWEP, _ := d.Programs()
	ctx := context.Background()
	// "set": every rule tests the same set (the walk's lookup memo answers all but the first);
	// "distinct-set": each rule its own two-member set (an LPM lookup each).
	for _, kind := range []string{"set", "distinct-set", "port"} {
		for _, n := range []int{1, 10, 100, 1000} {
			s := syncSnapshot()
			s.Policies[0].Inbound = nil
			for i := range n {
				r := snapshot.Rule{Action: snapshot.Allow, SrcIPSets: []string{"s:a"}, Origin: snapshot.RuleOrigin{Index: i}}
				switch kind {
				case "port":
					r = snapshot.Rule{Action: snapshot.Allow, DstPorts: []snapshot.PortRange{{Min: 81, Max: 90}}, Origin: snapshot.RuleOrigin{Index: i}}
				case "distinct-set":
					id := fmt.Sprintf("s:d%d", i)
					s.IPSets = append(s.IPSets, snapshot.IPSet{ID: id, Type: snapshot.IPSetIP, Members: []snapshot.Member{
						{Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), 32)},
						{Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 2, byte(i >> 8), byte(i)}), 32)}}})
					r.SrcIPSets = []string{id}
				}
				s.Policies[0].Inbound = append(s.Policies[0].Inbound, r)
			}
			if _, err := d.Sync(ctx, s, false); err != nil {
				b.Fatal(err)
			}
			pkt := frame(packetTo80())
			b.Run(fmt.Sprintf("deny-after-%d-%s-rules", n, kind), func(b *testing.B) {
				benchProg(b, toWEP, pkt, tcShot)
			})
		}
	}
	if _, err := d.Sync(ctx, syncSnapshot(), false); err != nil {
		b.Fatal(err)
	}
	// An ACK mid-flow: allowed by policy once (loose pickup), then an established flow.
	allowed := tcpFrame(netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.1"), 1000, 80, tcpACK)
	if ret, _, err := toWEP.Test(allowed); err != nil || ret != tcOK {
		b.Fatalf("establishing the flow: %d %v", ret, err)
	}
	b.Run("ct-hit", func(b *testing.B) { benchProg(b, toWEP, allowed, tcOK) })
}

func benchProg(b *testing.B, prog *ebpf.Program, pkt []byte, want uint32) {
	ret, per, err := prog.Benchmark(pkt, b.N, nil)
	if err != nil {
		b.Fatal(err)
	}
	if ret != want {
		b.Fatalf("verdict %d, want %d", ret, want)
	}
	b.ReportMetric(float64(per.Nanoseconds()), "ns/packet")
}

// packetTo80 is a TCP packet from 10.9.9.9 to the endpoint's port 80.
func packetTo80() snapshot.Packet {
	return snapshot.Packet{Src: netip.MustParseAddr("10.9.9.9"), Dst: netip.MustParseAddr("10.0.0.1"), Protocol: 6, SrcPort: 1000, DstPort: 80}
}

// BenchmarkPolicyChange: a one-rule change in the 2,000-rule ingress policy of one endpoint
// (whole incremental Sync: render, diff, the changed program written to a fresh region of 251
// blocks, the endpoint switched, the old region freed). Generated code would instead load
// and verify a new program per endpoint (BenchmarkGenerated/load-2000-rules).
func BenchmarkPolicyChange(b *testing.B) {
	d, _ := openTest(b)
	ctx := context.Background()
	s := syncSnapshot()
	s.Policies[0].Inbound = nil
	for i := range 2000 {
		s.Policies[0].Inbound = append(s.Policies[0].Inbound, snapshot.Rule{Action: snapshot.Allow,
			DstPorts: []snapshot.PortRange{{Min: uint16(i + 1), Max: uint16(i + 1)}}, Origin: snapshot.RuleOrigin{Index: i}})
	}
	if _, err := d.Sync(ctx, s, true); err != nil {
		b.Fatal(err)
	}
	i := 0
	for b.Loop() {
		i++
		s.Policies[0].Inbound[0].DstPorts[0].Max = uint16(1 + i%2)
		res, err := d.Sync(ctx, s, false)
		if err != nil {
			b.Fatal(err)
		}
		if res.Counts["block-put"] != 251 || res.Counts["endpoint-put"] != 1 {
			b.Fatalf("counts %v", res.Counts)
		}
	}
}
