package bench

import (
	"fmt"
	"maps"
	"net/netip"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/felis-dev/felis/derive"
	"github.com/felis-dev/felis/model"
	"github.com/felis-dev/felis/model/selector"
	"github.com/felis-dev/felis/model/store"
	"github.com/felis-dev/felis/tools/synth"
)

// loadAndDerive writes the objects into a fresh store in batches, as a datastore would,
// and derives the local node's snapshot.
func loadAndDerive(b *testing.B, objs []model.Object) {
	st := store.New()
	const batch = 10_000
	for i := 0; i < len(objs); i += batch {
		if _, err := st.Write(store.Batch{Upserts: objs[i:min(i+batch, len(objs))]}); err != nil {
			b.Fatal(err)
		}
	}
	snap, err := derive.Derive(st.View(), synth.LocalNode, derive.Options{})
	if err != nil {
		b.Fatal(err)
	}
	if len(snap.Endpoints) == 0 {
		b.Fatal("no local endpoints derived")
	}
}

// benchScale measures store load + full derive; objects are generated outside the timer
// and afresh for every iteration because the store stamps them.
func benchScale(b *testing.B, spec synth.Spec) {
	b.ReportAllocs()
	var heap uint64
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		objs := synth.Generate(spec)
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		b.StartTimer()
		loadAndDerive(b, objs)
		b.StopTimer()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		heap = after.HeapAlloc - min(before.HeapAlloc, after.HeapAlloc)
		b.StartTimer()
	}
	b.ReportMetric(float64(heap)/(1<<20), "heap-MB")
}

func BenchmarkPolicyScale250k(b *testing.B) { benchScale(b, synth.PolicyScale()) }

func BenchmarkNetworkSets(b *testing.B) {
	for _, n := range []int{1_000, 10_000} {
		b.Run(fmt.Sprintf("sets=%d", n), func(b *testing.B) { benchScale(b, synth.NetworkSetScale(n)) })
	}
}

func BenchmarkTenants(b *testing.B) {
	for _, n := range []int{1_000, 10_000, 100_000} {
		b.Run(fmt.Sprintf("tenants=%d", n), func(b *testing.B) { benchScale(b, synth.TenantScale(n)) })
	}
}

// BenchmarkCycleAfterOneChange measures one Deriver cycle after a single change at scale
// (a): the cost of a cycle should follow the size of the change, not of the cluster. The
// store and the primed Deriver are shared by the sub-benchmarks; only the cycle is timed.
func BenchmarkCycleAfterOneChange(b *testing.B) {
	spec := synth.PolicyScale()
	st := store.New()
	objs := synth.Generate(spec)
	if _, err := st.Write(store.Batch{Upserts: objs}); err != nil {
		b.Fatal(err)
	}
	primeStart := time.Now()
	d := derive.NewDeriver(st, synth.LocalNode, derive.Options{})
	defer d.Close()
	if _, err := d.Derive(st.View()); err != nil {
		b.Fatal(err)
	}
	b.Logf("first Deriver cycle (full build) at scale (a): %v", time.Since(primeStart))
	var local *model.WorkloadEndpoint
	var policy *model.Policy
	for w := range store.ListOnNode[*model.WorkloadEndpoint](st.View(), model.KindWorkloadEndpoint, synth.LocalNode) {
		local = w
		break
	}
	// An active policy: one that selects the local endpoint.
	for p := range store.List[*model.Policy](st.View(), model.KindGlobalNetworkPolicy) {
		if p.Selector.Evaluate(local.Labels) {
			policy = p
			break
		}
	}
	if policy == nil {
		b.Fatal("no active policy")
	}
	cycle := func(b *testing.B, change func(i int) store.Batch) {
		var total time.Duration
		for i := 0; i < b.N; i++ {
			if _, err := st.Write(change(i)); err != nil {
				b.Fatal(err)
			}
			start := time.Now()
			if _, err := d.Derive(st.View()); err != nil {
				b.Fatal(err)
			}
			total += time.Since(start)
		}
		b.ReportMetric(float64(total.Microseconds())/float64(b.N)/1000, "ms/cycle")
	}
	b.Run("label-flip", func(b *testing.B) {
		cycle(b, func(i int) store.Batch {
			cur, _ := store.Get[*model.WorkloadEndpoint](st.View(), local.Key)
			w := *cur
			w.Labels = maps.Clone(cur.Labels)
			w.Labels["flip"] = fmt.Sprint(i % 2)
			w.Revision = 0 // a new version of the object, not a rewrite of a stored one
			return store.Batch{Upserts: []model.Object{&w}}
		})
	})
	extra := synth.Endpoint("ns-0", "extra", synth.LocalNode, netip.MustParsePrefix("10.255.0.1/32"), maps.Clone(local.Labels))
	b.Run("local-endpoint-add-remove", func(b *testing.B) {
		cycle(b, func(i int) store.Batch {
			if i%2 == 0 {
				w := *extra
				w.Revision = 0
				return store.Batch{Upserts: []model.Object{&w}}
			}
			return store.Batch{Deletes: []model.Key{extra.Key}}
		})
	})
	remote := synth.Endpoint("ns-1", "extra-remote", "node-7", freeAddress(b, st.View(), "node-7"), maps.Clone(local.Labels))
	b.Run("remote-endpoint-add-remove", func(b *testing.B) {
		cycle(b, func(i int) store.Batch {
			if i%2 == 0 {
				w := *remote
				w.Revision = 0
				return store.Batch{Upserts: []model.Object{&w}}
			}
			return store.Batch{Deletes: []model.Key{remote.Key}}
		})
	})
	b.Run("policy-edit", func(b *testing.B) {
		cycle(b, func(i int) store.Batch {
			cur, _ := store.Get[*model.Policy](st.View(), policy.Key)
			p := *cur
			p.Ingress = slices.Clone(cur.Ingress)
			r := p.Ingress[0]
			r.Destination.Ports = []model.Port{{Min: uint16(2000 + i%2), Max: uint16(2000 + i%2)}}
			p.Ingress[0] = r
			p.Revision = 0
			return store.Batch{Upserts: []model.Object{&p}}
		})
	})
	// A policy whose rule selects by a label no endpoint has yet: a new IP set over a label
	// the Deriver has not indexed by value.
	b.Run("policy-with-new-label", func(b *testing.B) {
		cycle(b, func(i int) store.Batch {
			p := *policy
			p.Key.Name = "bench-new-label"
			p.Ingress = []model.Rule{{Action: model.ActionAllow,
				Source: model.EntityRule{Selector: selector.MustParse(fmt.Sprintf("fresh%d == 'x'", i))}}}
			p.Revision = 0
			return store.Batch{Upserts: []model.Object{&p}}
		})
	})
}

// freeAddress returns an unused address in one of node's IPAM blocks, as IPAM would hand out.
func freeAddress(b *testing.B, v *store.View, node string) netip.Prefix {
	used := map[netip.Addr]bool{}
	for w := range store.ListOnNode[*model.WorkloadEndpoint](v, model.KindWorkloadEndpoint, node) {
		for _, p := range w.IPNetworks {
			used[p.Addr()] = true
		}
	}
	for blk := range store.ListOnNode[*model.IPAMBlock](v, model.KindIPAMBlock, node) {
		for a := blk.CIDR.Addr(); blk.CIDR.Contains(a); a = a.Next() {
			if !used[a] {
				return netip.PrefixFrom(a, 32)
			}
		}
	}
	b.Fatalf("node %s has no free address in its blocks", node)
	return netip.Prefix{}
}

// BenchmarkDeriverFirstBuild measures what the agent pays at start at scale (a): the
// Deriver's first, full cycle (the store is loaded outside the timer).
func BenchmarkDeriverFirstBuild(b *testing.B) {
	b.ReportAllocs()
	var cpu time.Duration
	var retained uint64
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		st := store.New()
		if _, err := st.Write(store.Batch{Upserts: synth.Generate(synth.PolicyScale())}); err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		b.StartTimer()
		start := cpuTime()
		d := derive.NewDeriver(st, synth.LocalNode, derive.Options{})
		snap, err := d.Derive(st.View())
		if err != nil {
			b.Fatal(err)
		}
		cpu += cpuTime() - start
		b.StopTimer()
		// What the agent keeps between cycles: the Deriver's state and the snapshot.
		runtime.GC()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		retained = after.HeapAlloc - min(before.HeapAlloc, after.HeapAlloc)
		runtime.KeepAlive(snap)
		d.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(cpu.Milliseconds())/float64(b.N), "cpu-ms/op")
	b.ReportMetric(float64(retained)/(1<<20), "retained-MB")
}
