package selector

import (
	"fmt"
	"testing"

	"github.com/projectcalico/calico/libcalico-go/lib/selector/parser"
)

// benchEndpoint is a realistic pod: Deployment and Helm labels of its own, plus the
// namespace profile's and service-account profile's labels it inherits.
func benchEndpoint(extra int) *Labels {
	own := map[string]string{
		"app":                              "checkout",
		"app.kubernetes.io/name":           "checkout",
		"app.kubernetes.io/instance":       "checkout-prod",
		"app.kubernetes.io/version":        "1.14.2",
		"app.kubernetes.io/managed-by":     "Helm",
		"helm.sh/chart":                    "checkout-0.3.1",
		"pod-template-hash":                "7c9f8d6b5",
		"tier":                             "backend",
		"projectcalico.org/namespace":      "shop",
		"projectcalico.org/orchestrator":   "k8s",
		"projectcalico.org/serviceaccount": "checkout",
	}
	for i := range extra {
		own[fmt.Sprintf("extra.example.com/label-%d", i)] = "v"
	}
	ns := map[string]string{
		"pcns.projectcalico.org/name":      "shop",
		"pcns.kubernetes.io/metadata.name": "shop",
		"pcns.team":                        "payments",
	}
	sa := map[string]string{"pcsa.projectcalico.org/name": "checkout"}
	return NewLabels(own, ns, sa)
}

func BenchmarkMatch(b *testing.B) {
	for _, size := range []struct {
		name  string
		extra int
	}{{"15labels", 0}, {"35labels", 20}} {
		labels := benchEndpoint(size.extra)
		for _, tc := range []struct{ name, expr string }{
			{"has", "has(pcsa.projectcalico.org/name)"},
			{"has-absent", "has(role)"},
			{"eq", "app == 'checkout'"},
			{"in-and-has", "tier in {'frontend', 'backend', 'db'} && has(pod-template-hash)"},
			{"ns-and-app", "pcns.projectcalico.org/name == 'shop' && app.kubernetes.io/name in {'checkout', 'cart'}"},
		} {
			sel := MustParse(tc.expr)
			b.Run(size.name+"/"+tc.name, func(b *testing.B) {
				matched := 0
				for b.Loop() {
					if sel.EvaluateLabels(labels) {
						matched++
					}
				}
				if matched != 0 && matched != b.N {
					b.Fatalf("verdict changed between iterations")
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "matches/s")
			})
		}
	}
}

// BenchmarkMatchMapAsLabels is the baseline: Calico's map path, which converts each
// looked-up handle to a string and interns the value on every lookup.
func BenchmarkMatchMapAsLabels(b *testing.B) {
	labels := parser.MapAsLabels(benchEndpoint(0).Map())
	sel := MustParse("tier in {'frontend', 'backend', 'db'} && has(pod-template-hash)")
	for b.Loop() {
		sel.EvaluateLabels(labels)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "matches/s")
}

// BenchmarkNewLabels measures the one-off cost of flattening and interning an endpoint.
func BenchmarkNewLabels(b *testing.B) {
	own := benchEndpoint(0).Map()
	ns := map[string]string{"pcns.projectcalico.org/name": "shop", "pcns.team": "payments"}
	for b.Loop() {
		NewLabels(own, ns)
	}
}
