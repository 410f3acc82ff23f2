//go:build linux

package nftables

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/felis-dev/felis/appliers/internal/fixture"
	"github.com/felis-dev/felis/appliers/nftables/render"
	"github.com/felis-dev/felis/snapshot"
)

// kube-proxy's scale for its nftables partial-sync work: 10,000 services with 2 endpoints.
const benchServices, benchEndpoints = 10000, 2

// plainServices is n ClusterIP services of one TCP port with `backends` ready endpoints.
func plainServices(n, backends int) snapshot.Snapshot {
	s := snapshot.Snapshot{Node: "node-1"}
	for i := range n {
		svc := snapshot.Service{ID: fmt.Sprintf("ns%d/svc%d", i%100, i),
			Frontends: []snapshot.Frontend{{Addr: netip.AddrFrom4([4]byte{10, 96, byte(i >> 8), byte(i)}), Protocol: 6, Port: 80, Kind: "ClusterIP", PortName: "http"}}}
		for j := range backends {
			k := i*backends + j
			svc.Backends = append(svc.Backends, snapshot.Backend{Addr: netip.AddrFrom4([4]byte{10, byte(1 + k>>16), byte(k >> 8), byte(k)}),
				Protocol: 6, Port: 8080, PortName: "http", Node: "node-2", Ready: true, Serving: true})
		}
		s.Services = append(s.Services, svc)
	}
	s.Finalize()
	return s
}

// BenchmarkKernelServicesFull programs 10,000 services × 2 endpoints into an empty netns:
// render, plan and one batch (kube-proxy's nftables mode: ~9 minutes before its partial-sync
// work). It reports each phase: render, plan, encode (marshalling the batch, user space) and
// commit (the kernel processing it, from sendmsg to its answer).
func BenchmarkKernelServicesFull(b *testing.B) {
	snap := plainServices(benchServices, benchEndpoints)
	var total, render, plan, encode, commit time.Duration
	chains, msgs := 0, 0
	var cpu, sys time.Duration
	for range b.N {
		b.StopTimer()
		k := newKernel(b)
		b.StartTimer()
		c0 := takeCPU()
		t0 := time.Now()
		desired := mustRender(b, snap)
		t1 := time.Now()
		ops := Plan(desired, nil)
		t2 := time.Now()
		batch, err := k.encode(ops)
		if err != nil {
			b.Fatal(err)
		}
		t3 := time.Now()
		if err := k.commit(batch); err != nil {
			b.Fatal(err)
		}
		t4 := time.Now()
		c1 := takeCPU()
		cpu += c1.user + c1.sys - c0.user - c0.sys
		sys += c1.sys - c0.sys
		render, plan, encode, commit = render+t1.Sub(t0), plan+t2.Sub(t1), encode+t3.Sub(t2), commit+t4.Sub(t3)
		total += t4.Sub(t0)
		chains, msgs = len(desired.Chains), len(batch.msgs)
	}
	reportMS(b, total)
	per := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(b.N) }
	b.ReportMetric(per(cpu), "cpu-ms/op")
	b.ReportMetric(per(sys), "sys-ms/op")
	b.ReportMetric(per(render), "render-ms/op")
	b.ReportMetric(per(plan), "plan-ms/op")
	b.ReportMetric(per(encode), "encode-ms/op")
	b.ReportMetric(per(commit), "commit-ms/op")
	b.ReportMetric(float64(chains), "chains")
	b.ReportMetric(float64(msgs), "messages")
}

// BenchmarkKernelServiceAdd adds one service (2 endpoints) on top of 10,000, and removes it
// again, alternately: render (a Renderer that remembers the unchanged services, as the agent
// keeps one), plan against what was committed, one batch (kube-proxy after its partial-sync
// work: 141 ms).
func BenchmarkKernelServiceAdd(b *testing.B) {
	base := plainServices(benchServices, benchEndpoints)
	more := plainServices(benchServices+1, benchEndpoints)
	ctx := context.Background()
	k := &timedKernel{Kernel: newKernel(b)}
	ap := NewApplier(k)
	r := render.NewRenderer()
	first, err := r.Render(base)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := ap.Sync(ctx, first); err != nil {
		b.Fatal(err)
	}
	snaps := []snapshot.Snapshot{more, base}
	var renderTime time.Duration
	b.ResetTimer()
	k.apply = 0
	cpu := takeCPU()
	start := time.Now()
	for i := range b.N {
		t0 := time.Now()
		desired, err := r.Render(snaps[i%2])
		if err != nil {
			b.Fatal(err)
		}
		renderTime += time.Since(t0)
		ops, err := ap.Sync(ctx, desired)
		if err != nil {
			b.Fatal(err)
		}
		if len(ops) != 4 { // the two endpoint chains, the service port's chain, the map element
			b.Fatalf("%d ops, want 4:\n%s", len(ops), Script(ops))
		}
	}
	reportMS(b, time.Since(start))
	reportCPU(b, cpu)
	b.ReportMetric(float64(renderTime.Microseconds())/1000/float64(b.N), "render-ms/op")
	b.ReportMetric(float64(k.apply.Microseconds())/1000/float64(b.N), "apply-ms/op")
}

// BenchmarkKernelChainUpdateWithServices is BenchmarkKernelChainUpdate (one policy rule
// changed on top of 2,000 sets and policies) with 10,000 services in their tables too: what
// the services cost the policy hot path. Both tables come from one Renderer, as in the agent,
// so the unchanged service objects are shared between them (Plan settles their tables by
// identity); two cold Renders would make Plan compare 30,000 chains by value instead.
func BenchmarkKernelChainUpdateWithServices(b *testing.B) {
	s := fixture.Scaled(benchN, benchMembers)
	s.Services = plainServices(benchServices, benchEndpoints).Services
	r := render.NewRenderer()
	a, err := r.Render(s)
	if err != nil {
		b.Fatal(err)
	}
	s.Policies[7].Inbound[0].DstPorts = []snapshot.PortRange{{Min: 4242, Max: 4242}}
	c, err := r.Render(s)
	if err != nil {
		b.Fatal(err)
	}
	hotPath(b, a, c, 1)
}
