package store

import (
	"fmt"
	"net/netip"
	"runtime"
	"sync"
	"testing"

	"github.com/felis-dev/felis/model"
)

// benchEndpoint is a realistic converted pod: Calico's labels, two profiles, one IP, a named port.
func benchEndpoint(i, nodes int) *model.WorkloadEndpoint {
	ns := fmt.Sprintf("ns-%d", i%50)
	node := fmt.Sprintf("node-%04d", i%nodes)
	pod := fmt.Sprintf("app-%d-7c9f8d6b5-%05d", i%200, i)
	return &model.WorkloadEndpoint{
		Meta:          model.Meta{Key: model.Key{Kind: model.KindWorkloadEndpoint, Namespace: ns, Name: node + "-k8s-" + pod + "-eth0"}, Source: model.Source{Name: "kubernetes"}},
		Node:          node,
		Orchestrator:  "k8s",
		Workload:      pod,
		Endpoint:      "eth0",
		InterfaceName: fmt.Sprintf("cali%011x", i),
		IPNetworks:    []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32)},
		Profiles:      []string{"kns." + ns, "ksa." + ns + ".default"},
		Labels: model.Labels{
			"app":                              fmt.Sprintf("app-%d", i%200),
			"pod-template-hash":                "7c9f8d6b5",
			"app.kubernetes.io/name":           fmt.Sprintf("app-%d", i%200),
			"tier":                             []string{"frontend", "backend", "db"}[i%3],
			"projectcalico.org/namespace":      ns,
			"projectcalico.org/orchestrator":   "k8s",
			"projectcalico.org/serviceaccount": "default",
		},
		Ports:          []model.NamedPort{{Name: "http", Protocol: model.ProtoTCP, Port: 8080}},
		ServiceAccount: "default",
	}
}

// BenchmarkWrite measures upsert throughput (objects/s) in batches of 1 and of 1000, into a
// store holding the key space being rewritten. The figure includes building the objects.
func BenchmarkWrite(b *testing.B) {
	for _, tc := range []struct{ batch, keys int }{{1, 10_000}, {1000, 100_000}} {
		b.Run(fmt.Sprintf("batch=%d", tc.batch), func(b *testing.B) {
			s := New()
			s.RegisterConsumer("derive")
			objs := make([]model.Object, tc.batch)
			i := 0
			for b.Loop() {
				for j := range objs {
					objs[j] = benchEndpoint(i%tc.keys, 1000)
					i++
				}
				if _, err := s.Write(Batch{Upserts: objs}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*tc.batch)/b.Elapsed().Seconds(), "objects/s")
		})
	}
}

// BenchmarkWriteDelete measures a delete+re-create cycle in batches of 1000, which keeps a
// tombstone per key until the consumer acks.
func BenchmarkWriteDelete(b *testing.B) {
	s := New()
	c := s.RegisterConsumer("derive")
	const batch = 1000
	objs := make([]model.Object, batch)
	keys := make([]model.Key, batch)
	i := 0
	for b.Loop() {
		for j := range objs {
			objs[j] = benchEndpoint(i%100_000, 1000)
			keys[j] = objs[j].GetMeta().Key
			i++
		}
		if _, err := s.Write(Batch{Upserts: objs}); err != nil {
			b.Fatal(err)
		}
		rev, err := s.Write(Batch{Deletes: keys})
		if err != nil {
			b.Fatal(err)
		}
		c.Ack(rev)
	}
	b.ReportMetric(float64(2*b.N*batch)/b.Elapsed().Seconds(), "objects/s")
}

// BenchmarkMemory100kEndpoints reports the heap a store of 100k workload endpoints takes:
// bytes/object in total, and store-bytes/object for the store's indexes alone (the objects
// themselves excluded).
func BenchmarkMemory100kEndpoints(b *testing.B) {
	const n = 100_000
	for b.Loop() {
		var m0, m1, m2 runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&m0)
		objs := make([]model.Object, n)
		for i := range objs {
			objs[i] = benchEndpoint(i, 1000)
		}
		runtime.GC()
		runtime.ReadMemStats(&m1)
		s := New()
		for i := 0; i < n; i += 1000 {
			if _, err := s.Write(Batch{Upserts: objs[i : i+1000]}); err != nil {
				b.Fatal(err)
			}
		}
		clear(objs) // only the store keeps them now
		runtime.GC()
		runtime.ReadMemStats(&m2)
		if got := s.View().Count(model.KindWorkloadEndpoint); got != n {
			b.Fatalf("store holds %d endpoints, want %d", got, n)
		}
		b.ReportMetric(float64(m2.HeapAlloc-m0.HeapAlloc)/n, "bytes/object")
		b.ReportMetric((float64(m2.HeapAlloc)-float64(m1.HeapAlloc)+float64(8*n))/n, "store-bytes/object")
		runtime.KeepAlive(s)
	}
}

var (
	bigStoreOnce sync.Once
	bigStore     *Store
)

// big250k is a store of 250k endpoints over 500 nodes (500 per node), built once.
func big250k(b *testing.B) *Store {
	bigStoreOnce.Do(func() {
		s := New()
		objs := make([]model.Object, 0, 1000)
		for i := range 250_000 {
			objs = append(objs, benchEndpoint(i, 500))
			if len(objs) == cap(objs) {
				if _, err := s.Write(Batch{Upserts: objs}); err != nil {
					b.Fatal(err)
				}
				objs = objs[:0]
			}
		}
		bigStore = s
	})
	return bigStore
}

// BenchmarkListOnNode250k lists one node's 500 endpoints out of 250k.
func BenchmarkListOnNode250k(b *testing.B) {
	v := big250k(b).View()
	n := 0
	for b.Loop() {
		n = 0
		for range ListOnNode[*model.WorkloadEndpoint](v, model.KindWorkloadEndpoint, "node-0123") {
			n++
		}
	}
	if n != 500 {
		b.Fatalf("listed %d endpoints, want 500", n)
	}
	b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "endpoints/s")
}

// BenchmarkView250k is the cost of taking a view of a 250k-endpoint store.
func BenchmarkView250k(b *testing.B) {
	s := big250k(b)
	for b.Loop() {
		_ = s.View()
	}
}

// BenchmarkReplaceUnchanged100k is a resync that finds nothing to do: one source's 100k
// endpoints replaced by equal copies (scan, compare, no write).
func BenchmarkReplaceUnchanged100k(b *testing.B) {
	s := New()
	objs := make([]model.Object, 100_000)
	for i := range objs {
		objs[i] = benchEndpoint(i, 1000)
	}
	rev, err := s.Write(Batch{Upserts: objs})
	if err != nil {
		b.Fatal(err)
	}
	fresh := make([]model.Object, len(objs))
	for i := range fresh {
		fresh[i] = benchEndpoint(i, 1000)
	}
	same := func(a, b model.Object) bool { return a.GetMeta().Key == b.GetMeta().Key }
	for b.Loop() {
		got, err := s.Replace("kubernetes", fresh, same)
		if err != nil || got != rev {
			b.Fatalf("Replace: revision %d, error %v; want %d, nil", got, err, rev)
		}
	}
	b.ReportMetric(float64(b.N*len(fresh))/b.Elapsed().Seconds(), "objects/s")
}
