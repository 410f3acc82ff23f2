package derive

import (
	"fmt"
	"testing"

	"github.com/felis-dev/felis/model"
	"github.com/felis-dev/felis/model/selector"
	"github.com/felis-dev/felis/model/store"
	"github.com/felis-dev/felis/tools/synth"
)

// benchDerive measures one full, non-incremental Derive of the local node over a store
// loaded with spec's cluster (the load is outside the timer; tools/bench measures both).
func benchDerive(b *testing.B, spec synth.Spec) { benchDeriveObjects(b, synth.Generate(spec)) }

// benchDeriveObjects is benchDerive over a generated cluster's objects.
func benchDeriveObjects(b *testing.B, objs []model.Object) {
	st := store.New()
	if _, err := st.Write(store.Batch{Upserts: objs}); err != nil {
		b.Fatal(err)
	}
	v := st.View()
	b.ReportAllocs()
	b.ResetTimer()
	cpu := cpuTime()
	for range b.N {
		s, err := Derive(v, synth.LocalNode, Options{})
		if err != nil {
			b.Fatal(err)
		}
		if len(s.Endpoints) == 0 {
			b.Fatal("no local endpoints")
		}
	}
	b.ReportMetric(float64((cpuTime()-cpu).Milliseconds())/float64(b.N), "cpu-ms/op")
}

// BenchmarkDerivePolicyScale is issue 3 scale (a): 250k endpoints (200 local), 10k policies.
func BenchmarkDerivePolicyScale(b *testing.B) { benchDerive(b, synth.PolicyScale()) }

// BenchmarkDerivePolicyScaleCompound is scale (a) with every rule selector made compound
// ("has(labelM) && projectcalico.org/orchestrator == 'k8s'", same members): the index still
// narrows each set to the holders of labelM, but every candidate is evaluated.
func BenchmarkDerivePolicyScaleCompound(b *testing.B) {
	benchDeriveObjects(b, compound(synth.Generate(synth.PolicyScale())))
}

// compound rewrites every policy rule's source selector S into "S && projectcalico.org/orchestrator == 'k8s'".
func compound(objs []model.Object) []model.Object {
	for _, o := range objs {
		p, ok := o.(*model.Policy)
		if !ok {
			continue
		}
		for i := range p.Ingress {
			if s := p.Ingress[i].Source.Selector; s != nil {
				p.Ingress[i].Source.Selector = selector.MustParse(s.String() + " && projectcalico.org/orchestrator == 'k8s'")
			}
		}
	}
	return objs
}

// BenchmarkDeriveNetworkSets is scale (b): 10k endpoints with 1k / 10k network sets.
func BenchmarkDeriveNetworkSets(b *testing.B) {
	for _, n := range []int{1_000, 10_000} {
		b.Run(fmt.Sprintf("sets=%d", n), func(b *testing.B) { benchDerive(b, synth.NetworkSetScale(n)) })
	}
}

// BenchmarkDeriveTenants is scale (c): 1k / 10k / 100k isolated tenants.
func BenchmarkDeriveTenants(b *testing.B) {
	for _, n := range []int{1_000, 10_000, 100_000} {
		b.Run(fmt.Sprintf("tenants=%d", n), func(b *testing.B) { benchDerive(b, synth.TenantScale(n)) })
	}
}
