package main

import (
	"testing"
	"time"

	"github.com/felis-dev/felis/derive"
	"github.com/felis-dev/felis/model"
	"github.com/felis-dev/felis/model/selector"
	"github.com/felis-dev/felis/model/store"
	"github.com/felis-dev/felis/snapshot"
	"github.com/felis-dev/felis/tools/synth"
)

// BenchmarkPlanOnePolicyScaleA times felis plan --node for one new policy at scale (a) of
// the derive issue (250k endpoints, 10k policies): the node's snapshot before, the change, the
// snapshot after, the comparison, nftables operations and connectivity. Loading the store is
// outside the timer (it is the datastore's cost, reported by the store benchmarks).
func BenchmarkPlanOnePolicyScaleA(b *testing.B) {
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		st := store.New()
		if _, err := st.Write(store.Batch{Upserts: synth.Generate(synth.PolicyScale())}); err != nil {
			b.Fatal(err)
		}
		pol := &model.Policy{
			Meta:     model.Meta{Key: model.Key{Kind: model.KindNetworkPolicy, Namespace: "ns-0", Name: "new-policy"}},
			Tier:     "default",
			Selector: selector.MustParse("projectcalico.org/namespace == 'ns-0'"),
			Types:    []model.PolicyType{model.PolicyTypeIngress},
			Ingress: []model.Rule{{Action: model.ActionAllow, Protocol: ptrU8(model.ProtoTCP),
				Source: model.EntityRule{Selector: selector.MustParse("has(label7)")}}},
		}
		b.StartTimer()
		start := time.Now()
		plan, err := computePlan(newPlanCmd(), st, store.Batch{Upserts: []model.Object{pol}}, nil,
			&planFlags{node: synth.LocalNode, maxFlows: 2_000_000})
		if err != nil {
			b.Fatal(err)
		}
		if !plan.changed() {
			b.Fatal("the new policy changed nothing")
		}
		b.ReportMetric(time.Since(start).Seconds(), "s/plan")
	}
}

func ptrU8(v uint8) *uint8 { return &v }

// BenchmarkReach30x2 times felis reach's evaluation over a 30-pod × 2-port matrix (870 pairs,
// 1,740 flows) on the snapshots of a 3-node cluster with 100 policies.
func BenchmarkReach30x2(b *testing.B) {
	spec := synth.PolicyScale()
	spec.Endpoints, spec.LocalEndpoints, spec.RemoteNodes, spec.Namespaces = 30, 10, 2, 3
	spec.Policies, spec.LabelKeys = 100, 20
	st := store.New()
	if _, err := st.Write(store.Batch{Upserts: synth.Generate(spec)}); err != nil {
		b.Fatal(err)
	}
	var snaps []*snapshot.Snapshot
	deriveStart := time.Now()
	for _, n := range clusterNodes(st.View()) {
		s, err := derive.Derive(st.View(), n, derive.Options{})
		if err != nil {
			b.Fatal(err)
		}
		snaps = append(snaps, s)
	}
	b.Logf("derive 3 nodes: %v", time.Since(deriveStart))
	p80, _ := snapshot.ParsePort("80/TCP")
	http, _ := snapshot.ParsePort("http")
	b.ResetTimer()
	rows := 0
	for i := 0; i < b.N; i++ {
		c := snapshot.NewCluster(snaps)
		all, err := c.Resolve("")
		if err != nil {
			b.Fatal(err)
		}
		rows = len(c.Reach(all, all, []snapshot.PortSpec{p80, http}))
	}
	if rows != 30*29*2 {
		b.Fatalf("%d rows, want %d", rows, 30*29*2)
	}
	b.ReportMetric(float64(rows), "flows")
}
