package file

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// podList renders a kubectl-style List of n running pods spread over 100 nodes.
func podList(n int) string {
	var b strings.Builder
	b.WriteString("apiVersion: v1\nkind: List\nitems:\n")
	for i := range n {
		fmt.Fprintf(&b, `- apiVersion: v1
  kind: Pod
  metadata:
    name: pod-%d
    namespace: ns-%d
    labels: {app: app-%d, tier: backend}
  spec:
    nodeName: node-%d
    serviceAccountName: default
    containers:
    - name: c
      image: example/app:1
      ports:
      - {containerPort: 8080, name: http, protocol: TCP}
  status:
    phase: Running
    podIP: 10.%d.%d.%d
    podIPs: [{ip: 10.%d.%d.%d}]
`, i, i%50, i%200, i%100, i>>16&255, i>>8&255, i&255, i>>16&255, i>>8&255, i&255)
	}
	return b.String()
}

// BenchmarkLoadPath reads, parses and converts a 10,000-pod List; it reports objects/s.
func BenchmarkLoadPath(b *testing.B) {
	const n = 10_000
	path := filepath.Join(b.TempDir(), "pods.yaml")
	if err := os.WriteFile(path, []byte(podList(n)), 0o644); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		objs, problems, _, err := LoadPath(path)
		if err != nil || len(problems) != 0 || len(objs) != n {
			b.Fatalf("loaded %d objects, problems %v, err %v", len(objs), problems, err)
		}
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "objects/s")
}
