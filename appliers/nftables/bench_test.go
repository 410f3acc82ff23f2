//go:build linux

package nftables

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/felis-dev/felis/appliers/internal/fixture"
	"github.com/felis-dev/felis/appliers/nftables/render"
	"github.com/felis-dev/felis/snapshot"
	"golang.org/x/sys/unix"
)

// The scale of Felix's nftables benchmark: 2,000 IP sets (rendered as 4,000 nft sets, one per
// family) and 2,000 policies (2,000 policy chains plus 400 endpoint and tier chains).
const benchN, benchMembers = 2000, 10

func reportMS(b *testing.B, d time.Duration) {
	b.ReportMetric(float64(d.Microseconds())/1000/float64(b.N), "ms/op")
}

// reportCPU reports the process's CPU time since start per op, and its system (kernel) part:
// the kernel's work on our netlink batches runs in our threads, and on a shared machine CPU
// time is less inflated than wall time by waiting for a core. It includes the garbage
// collector's background work.
func reportCPU(b *testing.B, start cpuSample) {
	end := takeCPU()
	n := float64(b.N)
	b.ReportMetric(float64((end.user+end.sys-start.user-start.sys).Microseconds())/1000/n, "cpu-ms/op")
	b.ReportMetric(float64((end.sys-start.sys).Microseconds())/1000/n, "sys-ms/op")
}

type cpuSample struct{ user, sys time.Duration }

func takeCPU() cpuSample {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return cpuSample{}
	}
	return cpuSample{time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano())}
}

// BenchmarkKernelFullResync programs the whole table into an empty netns: plan + one batch.
func BenchmarkKernelFullResync(b *testing.B) {
	desired := mustRender(b, fixture.Scaled(benchN, benchMembers))
	ctx := context.Background()
	var total time.Duration
	for range b.N {
		b.StopTimer()
		k := newKernel(b)
		b.StartTimer()
		start := time.Now()
		if err := k.Apply(ctx, Plan(desired, nil)); err != nil {
			b.Fatal(err)
		}
		total += time.Since(start)
	}
	reportMS(b, total)
	b.ReportMetric(float64(len(desired.Sets)), "sets")
	b.ReportMetric(float64(len(desired.Chains)), "chains")
}

// BenchmarkKernelObserve reads the full table back (the periodic resync's read).
func BenchmarkKernelObserve(b *testing.B) {
	desired := mustRender(b, fixture.Scaled(benchN, benchMembers))
	ctx := context.Background()
	k := newKernel(b)
	if err := k.Apply(ctx, Plan(desired, nil)); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		if _, err := k.Observe(ctx); err != nil {
			b.Fatal(err)
		}
	}
	reportMS(b, time.Since(start))
}

// timedKernel is a Kernel that adds up the time its Applies take: marshalling the batch and
// the kernel processing it, as opposed to render and plan.
type timedKernel struct {
	*Kernel
	apply time.Duration
}

func (k *timedKernel) Apply(ctx context.Context, ops []Op) error {
	start := time.Now()
	defer func() { k.apply += time.Since(start) }()
	return k.Kernel.Apply(ctx, ops)
}

// hotPath measures plan + apply through an Applier, alternating between two tables.
func hotPath(b *testing.B, a, c render.Table, wantOps int) {
	ctx := context.Background()
	k := &timedKernel{Kernel: newKernel(b)}
	ap := NewApplier(k)
	if _, err := ap.Sync(ctx, a); err != nil {
		b.Fatal(err)
	}
	tables := []render.Table{c, a}
	b.ResetTimer()
	k.apply = 0
	cpu := takeCPU()
	start := time.Now()
	for i := range b.N {
		ops, err := ap.Sync(ctx, tables[i%2])
		if err != nil {
			b.Fatal(err)
		}
		if len(ops) != wantOps {
			b.Fatalf("%d ops, want %d:\n%s", len(ops), wantOps, Script(ops))
		}
	}
	reportMS(b, time.Since(start))
	reportCPU(b, cpu)
	b.ReportMetric(float64(k.apply.Microseconds())/1000/float64(b.N), "apply-ms/op")
}

// BenchmarkKernelChainUpdate changes one policy rule on top of the full table.
func BenchmarkKernelChainUpdate(b *testing.B) {
	s := fixture.Scaled(benchN, benchMembers)
	a := mustRender(b, s)
	s.Policies[7].Inbound[0].DstPorts = []snapshot.PortRange{{Min: 4242, Max: 4242}}
	hotPath(b, a, mustRender(b, s), 1)
}

// BenchmarkKernelSetDelta adds and removes one member of one set on top of the full table.
func BenchmarkKernelSetDelta(b *testing.B) {
	s := fixture.Scaled(benchN, benchMembers)
	a := mustRender(b, s)
	s.IPSets[7].Members = append(s.IPSets[7].Members, snapshot.Member{Prefix: netip.MustParsePrefix("10.99.99.99/32")})
	hotPath(b, a, mustRender(b, s), 1)
}

// BenchmarkPlanNoChange is the hot path's cost when nothing changed.
func BenchmarkPlanNoChange(b *testing.B) {
	a := mustRender(b, fixture.Scaled(benchN, benchMembers))
	for range b.N {
		if ops := Plan(a, &a); len(ops) != 0 {
			b.Fatal(ops)
		}
	}
}

// BenchmarkRender renders the scaled snapshot.
func BenchmarkRender(b *testing.B) {
	s := fixture.Scaled(benchN, benchMembers)
	for range b.N {
		if _, err := render.Render(s); err != nil {
			b.Fatal(err)
		}
	}
}
