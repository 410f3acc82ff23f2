package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/spf13/cobra"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/golden")

const exampleCluster = "file:../../examples/cluster"

// TestCommandGolden runs felis plan and felis reach on the example cluster with proposed
// changes and compares their whole output (and exit status) with testdata/golden.
func TestCommandGolden(t *testing.T) {
	for _, tc := range []struct {
		name string
		cmd  func() *cobra.Command
		args []string
	}{
		{"reach-text", newReachCmd, []string{"--datastore", exampleCluster, "--port", "80/TCP", "--port", "http", "--color", "never"}},
		{"reach-json", newReachCmd, []string{"--datastore", exampleCluster, "--from", "sel:app == 'web'", "--to", "sel:has(app)", "--port", "http", "--port", "5432/TCP", "-o", "json"}},
		{"reach-ip", newReachCmd, []string{"--datastore", exampleCluster, "--from", "ip:203.0.113.7", "--to", "sel:app == 'web'", "--port", "http", "--explain", "--color", "never"}},
		{"plan-k8s-np-added", newPlanCmd, []string{"--datastore", exampleCluster, "--all-nodes", "--with", "testdata/changes/k8s-np-isolate-worker.yaml", "--detailed-exitcode"}},
		{"plan-k8s-np-removed", newPlanCmd, []string{"--datastore", exampleCluster, "--all-nodes", "--without", "NetworkPolicy/db/default-deny-ingress", "--detailed-exitcode"}},
		{"plan-k8s-np-added-json", newPlanCmd, []string{"--datastore", exampleCluster, "--node", "node-b", "--with", "testdata/changes/k8s-np-isolate-worker.yaml", "-o", "json", "--detailed-exitcode"}},
		{"plan-tier-pass", newPlanCmd, []string{"--datastore", exampleCluster, "--all-nodes", "--with", "testdata/changes/tier-pass-kube-dns.yaml", "--detailed-exitcode"}},
		{"plan-no-change", newPlanCmd, []string{"--datastore", exampleCluster, "--all-nodes", "--with", "testdata/changes/same-tier.yaml", "--detailed-exitcode"}},
		{"plan-pool-crosssubnet", newPlanCmd, []string{"--datastore", exampleCluster, "--all-nodes", "--with", "testdata/changes/pool-crosssubnet.yaml", "--detailed-exitcode"}},
		{"plan-iptables", newPlanCmd, []string{"--datastore", exampleCluster, "--node", "node-b", "--dataplane", "iptables", "--with", "testdata/changes/k8s-np-isolate-worker.yaml", "--detailed-exitcode"}},
		{"plan-invalid-input", newPlanCmd, []string{"--datastore", exampleCluster, "--node", "node-b", "--with", "testdata/changes/invalid-and-valid.yaml", "--detailed-exitcode"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := tc.cmd()
			var out, errOut bytes.Buffer
			cmd.SetOut(&out)
			cmd.SetErr(&errOut)
			cmd.SetArgs(tc.args)
			err := cmd.Execute()
			code := 0
			var ee exitError
			switch {
			case errors.As(err, &ee):
				code = ee.code
			case err != nil:
				t.Fatalf("felis %s: %v\nstderr: %s", cmd.Name(), err, errOut.String())
			}
			got := fmt.Sprintf("# felis %s %q\n# exit status %d\n%s", cmd.Name(), tc.args, code, out.String())
			path := filepath.Join("testdata", "golden", tc.name+".txt")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run `make golden` to create it)", err)
			}
			if diff := cmp.Diff(string(want), got); diff != "" {
				t.Errorf("felis %s output differs from %s (-want +got); if the change is intended run `make golden` and review:\n%s", cmd.Name(), path, diff)
			}
		})
	}
}
