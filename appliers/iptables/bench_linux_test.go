//go:build linux

package iptables

import (
	"context"
	"github.com/felis-dev/felis/appliers/internal/fixture"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/felis-dev/felis/snapshot"
)

// The nftables applier's scale (BENCHMARKS.md): 2,000 IP sets of 10 members and 2,000
// policies of one rule on 200 endpoints.
const benchN, benchMembers = 2000, 10

func reportMS(b *testing.B, d time.Duration) {
	b.ReportMetric(float64(d.Microseconds())/1000/float64(b.N), "ms/op")
}

// BenchmarkRender translates the snapshot (nftables render included).
func BenchmarkRender(b *testing.B) {
	snap := fixture.Scaled(benchN, benchMembers)
	var rs Ruleset
	for b.Loop() {
		rs = mustRender(b, snap)
	}
	b.ReportMetric(float64(len(rs.Chains)), "chains")
	b.ReportMetric(float64(len(rs.Sets)), "sets")
}

// BenchmarkPlanNoChange is the hot path when nothing changed.
func BenchmarkPlanNoChange(b *testing.B) {
	desired := mustRender(b, fixture.Scaled(benchN, benchMembers))
	st := StateOf(desired)
	for b.Loop() {
		if ops := Plan(desired, st); len(ops) != 0 {
			b.Fatal(len(ops))
		}
	}
}

func forBackends(b *testing.B, f func(b *testing.B, backend string)) {
	for _, backend := range []string{BackendLegacy, BackendNFT} {
		b.Run(backend, func(b *testing.B) { f(b, backend) })
	}
}

// BenchmarkKernelFullResync programs everything into an empty netns: plan + ipset restore +
// one iptables-restore per family and table.
func BenchmarkKernelFullResync(b *testing.B) {
	desired := mustRender(b, fixture.Scaled(benchN, benchMembers))
	forBackends(b, func(b *testing.B, backend string) {
		ctx := context.Background()
		var total time.Duration
		for range b.N {
			b.StopTimer()
			k := newTestKernel(b, backend)
			b.StartTimer()
			start := time.Now()
			if err := Apply(ctx, k, Plan(desired, nil)); err != nil {
				b.Fatal(err)
			}
			total += time.Since(start)
		}
		reportMS(b, total)
	})
}

// BenchmarkKernelObserve reads everything back (the periodic resync's read).
func BenchmarkKernelObserve(b *testing.B) {
	desired := mustRender(b, fixture.Scaled(benchN, benchMembers))
	forBackends(b, func(b *testing.B, backend string) {
		ctx := context.Background()
		k := newTestKernel(b, backend)
		if err := Apply(ctx, k, Plan(desired, nil)); err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		for range b.N {
			if _, err := Observe(ctx, k); err != nil {
				b.Fatal(err)
			}
		}
		reportMS(b, time.Since(start))
	})
}

// benchDelta measures plan + apply (not render) of change on top of the full program.
func benchDelta(b *testing.B, change func(s *snapshot.Snapshot, i int), want ...Verb) {
	base := fixture.Scaled(benchN, benchMembers)
	forBackends(b, func(b *testing.B, backend string) {
		ctx := context.Background()
		k := newTestKernel(b, backend)
		a := NewApplier(k)
		if _, err := a.Sync(ctx, mustRender(b, base)); err != nil {
			b.Fatal(err)
		}
		var total time.Duration
		for i := range b.N {
			s := fixture.Scaled(benchN, benchMembers)
			change(&s, i)
			d := mustRender(b, s)
			start := time.Now()
			ops, err := a.Sync(ctx, d)
			total += time.Since(start)
			if err != nil {
				b.Fatal(err)
			}
			if len(ops) != 1 || !slices.Contains(want, ops[0].Verb) {
				b.Fatalf("ops: %s", opsText(ops))
			}
		}
		reportMS(b, total)
	})
}

// BenchmarkKernelChainUpdate changes one policy's rule: one chain rewritten.
func BenchmarkKernelChainUpdate(b *testing.B) {
	benchDelta(b, func(s *snapshot.Snapshot, i int) {
		s.Policies[7].Inbound[0].DstPorts[0] = snapshot.PortRange{Min: uint16(20000 + i), Max: uint16(20000 + i)}
	}, ChainWrite)
}

// BenchmarkKernelSetDelta adds one member to one set, then removes it: one ipset op each.
func BenchmarkKernelSetDelta(b *testing.B) {
	benchDelta(b, func(s *snapshot.Snapshot, i int) {
		if i%2 == 0 {
			s.IPSets[7].Members = append(s.IPSets[7].Members, snapshot.Member{Prefix: netip.MustParsePrefix("10.250.0.1/32")})
		}
	}, SetAdd, SetDel)
}
