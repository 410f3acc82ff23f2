//go:build linux

package bpf

import (
	"context"
	"fmt"
	"net/netip"
	"testing"

	"github.com/felis-dev/felis/snapshot"
)

// servicesSnapshot is syncSnapshot with n ClusterIP services (10.96.0.0/16 onwards, TCP 80)
// of two ready backends each (port 8080).
func servicesSnapshot(n int) *snapshot.Snapshot {
	s := syncSnapshot()
	for i := range n {
		v := func(a byte) netip.Addr { return netip.AddrFrom4([4]byte{a, byte(i >> 16), byte(i >> 8), byte(i)}) }
		svc := snapshot.Service{ID: fmt.Sprintf("ns/svc-%05d", i),
			Frontends: []snapshot.Frontend{{Addr: netip.AddrFrom4([4]byte{10, 96 + byte(i>>16), byte(i >> 8), byte(i)}), Protocol: 6, Port: 80, Kind: "ClusterIP", PortName: "http"}}}
		for _, a := range []byte{11, 12} {
			svc.Backends = append(svc.Backends, snapshot.Backend{Addr: v(a), Protocol: 6, Port: 8080, PortName: "http", Node: "n", Ready: true, Serving: true})
		}
		s.Services = append(s.Services, svc)
	}
	s.Finalize()
	return s
}

// BenchmarkServicesSync10k: 10,000 services × 2 endpoints written into empty maps by a full
// sync (render every service, read the maps, diff, batched updates: 20,000 backends and
// 10,000 frontends).
func BenchmarkServicesSync10k(b *testing.B) {
	d, _ := openTest(b)
	ctx := context.Background()
	big, empty := servicesSnapshot(10_000), servicesSnapshot(0)
	for b.Loop() {
		b.StopTimer()
		if _, err := d.Sync(ctx, empty, false); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		res, err := d.Sync(ctx, big, true)
		if err != nil {
			b.Fatal(err)
		}
		if res.Counts["frontend-put"] != 10_000 || res.Counts["backend-put"] != 20_000 {
			b.Fatalf("counts %v", res.Counts)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/sync")
}

// BenchmarkServicesAddOne: with 10,000 services programmed, one more service added (and, in
// the next iteration, removed): the whole Sync of the snapshot, i.e. what the agent's cycle
// costs in the applier.
func BenchmarkServicesAddOne(b *testing.B) {
	d, _ := openTest(b)
	ctx := context.Background()
	base, more := servicesSnapshot(10_000), servicesSnapshot(10_001)
	if _, err := d.Sync(ctx, base, true); err != nil {
		b.Fatal(err)
	}
	i := 0
	for b.Loop() {
		s := more
		if i%2 == 1 {
			s = base
		}
		i++
		res, err := d.Sync(ctx, s, false)
		if err != nil {
			b.Fatal(err)
		}
		if n := res.Counts["frontend-put"] + res.Counts["frontend-del"]; n != 1 {
			b.Fatalf("counts %v", res.Counts)
		}
	}
}

// BenchmarkServicePacket: per-packet cost with BPF_PROG_TEST_RUN at the workload's TC
// ingress (felis_from_wep). BPF_PROG_TEST_RUN repeats the program on one skb, keeping its
// rewrites, so the NATed cases use two services that DNAT to each other (10.96.0.1:80 →
// 10.96.0.2:80 → 10.96.0.1:80): every run DNATs a packet to a frontend. "new flow" runs
// under an egress policy that denies it (so no entry is recorded and every run is new:
// NAT lookup, frontend, random backend, rewrite, policy, drop); "established" under one
// that allows it (NAT entry hit, rewrite, conntrack hit). The baselines are the same
// packets without services.
func BenchmarkServicePacket(b *testing.B) {
	d, _ := openTest(b)
	_, fromWEP := d.Programs()
	ctx := context.Background()
	fe1, fe2 := netip.MustParseAddr("10.96.0.1"), netip.MustParseAddr("10.96.0.2")
	pingPong := []snapshot.Service{
		{ID: "ns/a", Frontends: []snapshot.Frontend{{Addr: fe1, Protocol: 6, Port: 80, Kind: "ClusterIP"}},
			Backends: []snapshot.Backend{{Addr: fe2, Protocol: 6, Port: 80, Ready: true}}},
		{ID: "ns/b", Frontends: []snapshot.Frontend{{Addr: fe2, Protocol: 6, Port: 80, Kind: "ClusterIP"}},
			Backends: []snapshot.Backend{{Addr: fe1, Protocol: 6, Port: 80, Ready: true}}},
	}
	pkt := segment{Src: ap("10.0.0.1:1000"), Dst: netip.AddrPortFrom(fe1, 80), Proto: 6}.build()
	for _, c := range []struct {
		name     string
		allow    bool
		services bool
		want     uint32
	}{
		{"new-flow-dnat-denied", false, true, tcShot},
		{"new-flow-no-service-denied", false, false, tcShot},
		{"established-nat", true, true, tcOK},
		{"established-no-service", true, false, tcOK},
	} {
		s := syncSnapshot()
		if c.allow {
			s.Profiles = []snapshot.Profile{{ID: "all", Outbound: []snapshot.Rule{{Action: snapshot.Allow}}}}
		} else {
			s.Profiles = []snapshot.Profile{{ID: "all", Outbound: []snapshot.Rule{{Action: snapshot.Deny}}}}
		}
		s.Endpoints[0].Egress = snapshot.Direction{Profiles: []string{"all"}}
		if c.services {
			s.Services = pingPong
		}
		s.Finalize()
		if _, err := d.Sync(ctx, s, true); err != nil {
			b.Fatal(err)
		}
		clearCT(b, d.CTMap())
		if c.allow { // establish both legs of the ping-pong
			for range 2 {
				if ret, _, err := fromWEP.Test(pkt); err != nil || ret != tcOK {
					b.Fatalf("establishing: %d %v", ret, err)
				}
			}
		}
		b.Run(c.name, func(b *testing.B) { benchProg(b, fromWEP, pkt, c.want) })
	}
}
