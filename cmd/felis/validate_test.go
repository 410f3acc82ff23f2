package main

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestValidate(t *testing.T) {
	tests := []struct {
		name     string
		spec     string
		wantOut  []string
		wantCode int // 0: nil error
		wantErr  string
	}{{
		name: "the demo cluster is valid",
		spec: "file:../../examples/cluster",
	}, {
		name: "every broken example is reported, sorted by file and line",
		spec: "file:../../examples/invalid",
		wantOut: []string{
			`../../examples/invalid/policies.yaml:15: GlobalNetworkPolicy security.broken-selector: spec.ingress[0].source.selector: invalid selector "app == 'web' &&": unexpected token: TokEOF()`,
			`../../examples/invalid/policies.yaml:26: NetworkPolicy backend/wrong-action: spec.egress[0].action: invalid action "Accept"; expected Allow, Deny, Log or Pass`,
			`../../examples/invalid/policies.yaml:43: NetworkPolicy frontend/bad-ipblock: spec.ingress[0].from[0].ipBlock.cidr: invalid CIDR "10.0.0.0/33"; expected address/prefix-length`,
			`../../examples/invalid/pools.yaml:1: IPPool bad-pool: spec.cidr: invalid CIDR "10.300.0.0/16"; expected address/prefix-length`,
			`../../examples/invalid/pools.yaml:1: IPPool bad-pool: spec.vxlanMode: invalid mode "Sometimes"; expected Always, CrossSubnet or Never`,
			`../../examples/invalid/pools.yaml:9: GlobalNetworkSet office: duplicate: GlobalNetworkSet office is already defined at ../../examples/invalid/netsets.yaml:2; this definition is ignored`,
			`../../examples/invalid/pools.yaml:19: kind: required (every resource needs apiVersion and kind)`,
			`../../examples/invalid/syntax.yaml:10: invalid YAML: did not find expected ',' or '}'`,
		},
		wantCode: 1,
	}, {
		name:     "a single file",
		spec:     "../../examples/invalid/syntax.yaml",
		wantOut:  []string{`../../examples/invalid/syntax.yaml:10: invalid YAML: did not find expected ',' or '}'`},
		wantCode: 1,
	}, {
		name:    "a missing path is an error, not a problem list",
		spec:    "file:../../examples/does-not-exist",
		wantErr: "no such file or directory",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			err := runValidate(context.Background(), tt.spec, &out, &errOut)
			var got []string
			if s := strings.TrimSuffix(out.String(), "\n"); s != "" {
				got = strings.Split(s, "\n")
			}
			if diff := cmp.Diff(tt.wantOut, got); diff != "" {
				t.Errorf("stdout (-want +got):\n%s", diff)
			}
			var ee exitError
			switch {
			case tt.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("error = %v, want one containing %q", err, tt.wantErr)
				}
			case tt.wantCode == 0 && err != nil:
				t.Errorf("error = %v, want nil", err)
			case tt.wantCode != 0 && (!errors.As(err, &ee) || ee.code != tt.wantCode):
				t.Errorf("error = %v, want exit status %d", err, tt.wantCode)
			}
			if tt.wantErr == "" && !strings.Contains(errOut.String(), "objects loaded") {
				t.Errorf("stderr has no summary: %q", errOut.String())
			}
		})
	}
}

func TestValidateCommandDefaults(t *testing.T) {
	cmd := newValidateCmd()
	if got := cmd.Flags().Lookup("datastore").DefValue; got != "file:examples/cluster" {
		t.Errorf("--datastore default = %q, want file:examples/cluster", got)
	}
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs([]string{"--datastore", "file:../../examples/cluster"})
	if err := cmd.Execute(); err != nil {
		t.Fatalf("validate examples/cluster: %v (stderr %q)", err, errOut.String())
	}
	if out.Len() != 0 {
		t.Errorf("stdout = %q, want nothing", out.String())
	}
	want := "felis validate: skipped 1 v1 ConfigMap (a kind felis does not use)\n"
	if !strings.HasPrefix(errOut.String(), want) {
		t.Errorf("stderr = %q, want it to start with %q", errOut.String(), want)
	}
}
