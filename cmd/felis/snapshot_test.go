package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/felis-dev/felis/derive"
	"github.com/felis-dev/felis/snapshot"
)

// TestSnapshot runs the command on golden scenarios: YAML output is the golden file byte for
// byte, JSON output decodes to the same snapshot, and problems go to stderr while the
// snapshot of the valid rest is still printed.
func TestSnapshot(t *testing.T) {
	const dir = "../../golden/gnp-selector-ipset"
	want, err := os.ReadFile(dir + "/snapshot.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if err := runSnapshot(context.Background(), "file:"+dir+"/input.yaml", "node-1", "yaml", derive.Options{}, &out, &errOut); err != nil {
		t.Fatalf("yaml: %v", err)
	}
	if diff := cmp.Diff(string(want), out.String()); diff != "" {
		t.Errorf("yaml output differs from %s/snapshot.yaml (-want +got):\n%s", dir, diff)
	}
	if errOut.Len() != 0 {
		t.Errorf("stderr for valid input: %q", errOut.String())
	}

	out.Reset()
	if err := runSnapshot(context.Background(), "file:"+dir+"/input.yaml", "node-1", "json", derive.Options{}, &out, &errOut); err != nil {
		t.Fatalf("json: %v", err)
	}
	fromJSON, err := snapshot.Decode(out.Bytes())
	if err != nil {
		t.Fatalf("decode json output: %v", err)
	}
	fromYAML, err := snapshot.Decode(want)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := fromJSON.YAML()
	b, _ := fromYAML.YAML()
	if !bytes.Equal(a, b) {
		t.Errorf("json and yaml outputs disagree:\n%s", cmp.Diff(string(b), string(a)))
	}

	out.Reset()
	errOut.Reset()
	if err := runSnapshot(context.Background(), "file:../../examples/invalid", "node-a", "yaml", derive.Options{}, &out, &errOut); err != nil {
		t.Fatalf("invalid input: %v", err)
	}
	if !strings.Contains(errOut.String(), "GlobalNetworkPolicy security.broken-selector: spec.ingress[0].source.selector") {
		t.Errorf("stderr lacks the broken selector problem:\n%s", errOut.String())
	}
	if !strings.Contains(out.String(), "node: node-a") {
		t.Errorf("no snapshot printed for invalid input:\n%s", out.String())
	}

	for _, tt := range []struct{ node, output, want string }{
		{"", "yaml", "--node is required"},
		{"n", "xml", `-o "xml"`},
	} {
		if err := runSnapshot(context.Background(), "file:"+dir, tt.node, tt.output, derive.Options{}, &out, &errOut); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("node %q -o %s: err = %v, want %q", tt.node, tt.output, err, tt.want)
		}
	}
}
