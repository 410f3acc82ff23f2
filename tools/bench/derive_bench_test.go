package bench

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/felis-dev/felis/derive"
	"github.com/felis-dev/felis/model"
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

// BenchmarkCycleAfterOneChange measures one derive cycle after a single change at scale (a):
// the cost of a cycle should follow the size of the change, not of the cluster.
func BenchmarkCycleAfterOneChange(b *testing.B) {
	spec := synth.PolicyScale()
	st := store.New()
	objs := synth.Generate(spec)
	if _, err := st.Write(store.Batch{Upserts: objs}); err != nil {
		b.Fatal(err)
	}
	d := derive.NewDeriver(st, synth.LocalNode, derive.Options{})
	defer d.Close()
	if _, err := d.Derive(st.View()); err != nil {
		b.Fatal(err)
	}
	var local *model.WorkloadEndpoint
	for w := range store.ListOnNode[*model.WorkloadEndpoint](st.View(), model.KindWorkloadEndpoint, synth.LocalNode) {
		local = w
		break
	}
	b.ResetTimer()
	var total time.Duration
	for i := 0; i < b.N; i++ {
		// Flip one label on one local endpoint.
		w := *local
		w.Labels = model.Labels{}
		for k, v := range local.Labels {
			w.Labels[k] = v
		}
		w.Labels["flip"] = fmt.Sprint(i % 2)
		if _, err := st.Write(store.Batch{Upserts: []model.Object{&w}}); err != nil {
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
