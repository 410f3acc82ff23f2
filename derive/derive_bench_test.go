package derive

import (
	"fmt"
	"syscall"
	"testing"
	"time"

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

// cpuTime is the process's user and system CPU time so far: on a shared, loaded machine
// the CPU a derivation costs (the garbage collector's included) varies less than wall time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
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
