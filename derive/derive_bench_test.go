package derive

import (
	"fmt"
	"testing"

	"github.com/felis-dev/felis/model/store"
	"github.com/felis-dev/felis/tools/synth"
)

// benchDerive measures one full, non-incremental Derive of the local node over a store
// loaded with spec's cluster (the load is outside the timer; tools/bench measures both).
func benchDerive(b *testing.B, spec synth.Spec) {
	st := store.New()
	if _, err := st.Write(store.Batch{Upserts: synth.Generate(spec)}); err != nil {
		b.Fatal(err)
	}
	v := st.View()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		s, err := Derive(v, synth.LocalNode, Options{})
		if err != nil {
			b.Fatal(err)
		}
		if len(s.Endpoints) == 0 {
			b.Fatal("no local endpoints")
		}
	}
}

// BenchmarkDerivePolicyScale is issue 3 scale (a): 250k endpoints (200 local), 10k policies.
func BenchmarkDerivePolicyScale(b *testing.B) { benchDerive(b, synth.PolicyScale()) }

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
