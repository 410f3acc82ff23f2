package netlink

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/felis-dev/felis/appliers/netlink/render"
	"github.com/felis-dev/felis/diff"
	"github.com/felis-dev/felis/snapshot"
)

// benchSnapshot is a node with VXLAN on and n remote /26 blocks spread over 256 remote nodes,
// each reached over VXLAN via its node's tunnel address: n routes, 256 neighbours, 256 FDB entries.
func benchSnapshot(n int) snapshot.Snapshot {
	s := snapshot.Snapshot{Config: scenarioSnapshot().Config}
	s.Config.VXLANEnabledV6 = false
	for node := range 256 {
		tunnel := netip.AddrFrom4([4]byte{100, 64, byte(node), 1})
		s.VTEPs = append(s.VTEPs, snapshot.VTEP{
			Node: fmt.Sprint(node), TunnelIP: tunnel, MAC: fmt.Sprintf("66:aa:00:00:01:%02x", node),
			ParentIP: netip.AddrFrom4([4]byte{192, 168, 56, byte(node)}),
		})
	}
	for i := range n {
		// Block i is 10.(i>>10).((i>>2)&255).((i&3)<<6)/26, on node i%256.
		dst := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 10), byte(i >> 2), byte(i&3) << 6}), 26)
		gw := netip.AddrFrom4([4]byte{100, 64, byte(i % 256), 1})
		s.Routes = append(s.Routes, snapshot.Route{Dst: dst, Type: snapshot.RouteVXLAN, Gateway: gw})
	}
	return s
}

func benchState(b *testing.B, n int) render.State {
	st, err := render.Render(benchSnapshot(n), render.Options{})
	if err != nil {
		b.Fatal(err)
	}
	return st
}

// withoutRoutes is st with only the device, neighbours and FDB entries.
func withoutRoutes(st render.State) render.State {
	st.Routes = nil
	return st
}

const benchRoutes = 65536

// cpuMeter reports CPU time per op, user and system (kernel work on our behalf) apart, which
// shared, loaded machines distort far less than wall time.
type cpuMeter struct{ user, sys time.Duration }

func cpuTimes() (user, sys time.Duration) {
	var ru unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano())
}

func cpuTime() time.Duration {
	u, s := cpuTimes()
	return u + s
}

func startCPU(b *testing.B) *cpuMeter {
	b.ResetTimer()
	u, s := cpuTimes()
	return &cpuMeter{user: u, sys: s}
}

// report reports user+system CPU per op (less excluded, setup time spent with the timer
// stopped), and for long ops the system share of all CPU used (setup included).
func (m *cpuMeter) report(b *testing.B, excluded time.Duration) {
	u, s := cpuTimes()
	total := u - m.user + s - m.sys - excluded
	b.ReportMetric(float64(total)/float64(b.N), "cpu-ns/op")
	// The user/system split is sampled at clock ticks: only meaningful for long ops.
	if total/time.Duration(b.N) > 50*time.Millisecond {
		b.ReportMetric(100*float64(s-m.sys)/float64(u-m.user+s-m.sys), "sys-%")
	}
}

// BenchmarkResync measures a full resync of 65,536 routes: observe + plan + apply into a table
// that holds none of them (the VXLAN device, neighbours and FDB entries already exist).
func BenchmarkResync(b *testing.B) {
	ctx := context.Background()
	k := newRealKernel(b)
	want := benchState(b, benchRoutes)
	m := startCPU(b)
	var excluded time.Duration
	for range b.N {
		b.StopTimer()
		setup := cpuTime()
		// Leave the device, drop every route (re-creating the device is the quickest flush).
		if _, err := New(k, Options{}).Sync(ctx, render.State{}); err != nil {
			b.Fatal(err)
		}
		if _, err := New(k, Options{}).Sync(ctx, withoutRoutes(want)); err != nil {
			b.Fatal(err)
		}
		a := New(k, Options{})
		excluded += cpuTime() - setup
		b.StartTimer()
		res, err := a.Sync(ctx, want)
		if err != nil {
			b.Fatal(err)
		}
		if len(res.Ops) != benchRoutes {
			b.Fatalf("%d ops, want %d", len(res.Ops), benchRoutes)
		}
	}
	m.report(b, excluded)
	b.ReportMetric(float64(benchRoutes)*float64(b.N)/b.Elapsed().Seconds(), "routes/s")
}

// BenchmarkResyncNoop measures observe + plan of 65,536 routes that are all in place.
func BenchmarkResyncNoop(b *testing.B) {
	ctx := context.Background()
	k := newRealKernel(b)
	want := benchState(b, benchRoutes)
	a := New(k, Options{})
	if _, err := a.Sync(ctx, want); err != nil {
		b.Fatal(err)
	}
	m := startCPU(b)
	for range b.N {
		res, err := a.Resync(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if len(res.Ops) != 0 {
			b.Fatalf("%d ops, want 0", len(res.Ops))
		}
	}
	m.report(b, 0)
	b.ReportMetric(float64(benchRoutes)*float64(b.N)/b.Elapsed().Seconds(), "routes/s")
}

// BenchmarkDelta measures the hot path with 65,536 routes in place: one block added or
// removed (alternately) is planned against the committed state and applied.
func BenchmarkDelta(b *testing.B) {
	ctx := context.Background()
	k := newRealKernel(b)
	want := benchState(b, benchRoutes)
	plus := benchState(b, benchRoutes+1)
	a := New(k, Options{})
	if _, err := a.Sync(ctx, want); err != nil {
		b.Fatal(err)
	}
	m := startCPU(b)
	for i := range b.N {
		next := plus
		if i%2 == 1 {
			next = want
		}
		res, err := a.Sync(ctx, next)
		if err != nil {
			b.Fatal(err)
		}
		if len(res.Ops) != 1 {
			b.Fatalf("%d ops, want 1", len(res.Ops))
		}
	}
	m.report(b, 0)
}

// BenchmarkPlanDelta measures the pure part of the hot path alone: plan one block against
// 65,536 committed routes.
func BenchmarkPlanDelta(b *testing.B) {
	want := benchState(b, benchRoutes)
	plus := benchState(b, benchRoutes+1)
	m := startCPU(b)
	for range b.N {
		if ops := render.Plan(plus, want); len(ops) != 1 || ops[0].Kind != diff.Add {
			b.Fatalf("ops %v", ops)
		}
	}
	m.report(b, 0)
}

// BenchmarkRender measures rendering a snapshot with 65,536 routes.
func BenchmarkRender(b *testing.B) {
	s := benchSnapshot(benchRoutes)
	m := startCPU(b)
	for range b.N {
		if _, err := render.Render(s, render.Options{}); err != nil {
			b.Fatal(err)
		}
	}
	m.report(b, 0)
}

// BenchmarkResyncFake measures the applier's own cost of a 65,536-route resync into an empty
// table and of a no-op resync, against the Fake (no kernel): the figure comparable to Felix's
// routetable benchmark, which runs against a mock netlink.
func BenchmarkResyncFake(b *testing.B) {
	ctx := context.Background()
	want := benchState(b, benchRoutes)
	b.Run("empty", func(b *testing.B) {
		m := startCPU(b)
		var excluded time.Duration
		for range b.N {
			b.StopTimer()
			setup := cpuTime()
			f := NewFake()
			a := New(f, Options{})
			if _, err := a.Sync(ctx, withoutRoutes(want)); err != nil {
				b.Fatal(err)
			}
			a = New(f, Options{})
			excluded += cpuTime() - setup
			b.StartTimer()
			if _, err := a.Sync(ctx, want); err != nil {
				b.Fatal(err)
			}
		}
		m.report(b, excluded)
	})
	b.Run("noop", func(b *testing.B) {
		a := New(NewFake(), Options{})
		if _, err := a.Sync(ctx, want); err != nil {
			b.Fatal(err)
		}
		m := startCPU(b)
		for range b.N {
			if res, err := a.Resync(ctx); err != nil || len(res.Ops) != 0 {
				b.Fatal(err, len(res.Ops))
			}
		}
		m.report(b, 0)
	})
}
