//go:build linux

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/felis-dev/felis/tools/netns"
)

func TestLoadTopology(t *testing.T) {
	tests := []struct {
		name, json, wantErr string
		wantNodes           int
	}{
		{"demo", "", "", 1},
		{"two nodes", `{"nodes":[{"name":"a"},{"name":"b","subnet":1}]}`, "", 2},
		{"no nodes", `{"nodes":[]}`, "nodes: at least one node", 0},
		{"unnamed node", `{"nodes":[{"pods":[]}]}`, "nodes[0].name: empty", 0},
		{"negative subnet", `{"nodes":[{"name":"a","subnet":-1}]}`, "nodes[0].subnet: negative", 0},
		{"unknown field", `{"nodes":[{"name":"a","ip":"1.2.3.4"}]}`, "unknown field", 0},
		{"bad address", `{"nodes":[{"name":"a","pods":[{"name":"p","ipv4":"10.0.0.300"}]}]}`, "10.0.0.300", 0},
	}
	for _, tt := range tests {
		path := ""
		if tt.json != "" {
			path = filepath.Join(t.TempDir(), "topo.json")
			if err := os.WriteFile(path, []byte(tt.json), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		topo, err := loadTopology(path)
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("%s: unexpected error %v", tt.name, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("%s: error %v, want one containing %q", tt.name, err, tt.wantErr)
		case tt.wantErr == "" && len(topo.Nodes) != tt.wantNodes:
			t.Errorf("%s: %d nodes, want %d", tt.name, len(topo.Nodes), tt.wantNodes)
		}
	}
}

func TestUpProbeDown(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root to create network namespaces")
	}
	prefix := fmt.Sprintf("felisclitest%d", os.Getpid())
	t.Cleanup(func() { _, _ = netns.RemoveAll(prefix) })
	topo := filepath.Join(t.TempDir(), "topo.json")
	if err := os.WriteFile(topo, []byte(`{"nodes":[
		{"name":"n1","pods":[{"namespace":"default","name":"a","ipv4":"10.65.1.2","ipv6":"fd00:65:1::2"}]},
		{"name":"n2","subnet":1,"pods":[{"namespace":"default","name":"b","ipv4":"10.65.2.2"}]}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := up([]string{"--config", topo, "--prefix", prefix}); err != nil {
		t.Fatalf("up: %v", err)
	}
	got := existingWithPrefix(prefix)
	want := []string{prefix + "-n1", prefix + "-n1-default-a", prefix + "-n2", prefix + "-n2-default-b", prefix + "-underlay"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("namespaces after up: %v, want %v", got, want)
	}
	if err := up([]string{"--config", topo, "--prefix", prefix}); err == nil {
		t.Errorf("a second up with the same prefix succeeded")
	}
	// Node n1 reaches n2 across the underlay's two subnets; pod a reaches its node.
	for _, c := range []struct {
		from, to string
		want     int
	}{
		{"n1", "192.168.57.1", 0},
		{"n1-default-a", "192.168.56.1", 0},
		{"n1-default-a", "192.0.2.1:9", 3},
	} {
		code, err := probe([]string{"--prefix", prefix, "--from", c.from, "--to", c.to, "--timeout", "1s"})
		if err != nil || code != c.want {
			t.Errorf("probe from %s to %s: code %d, err %v; want %d", c.from, c.to, code, err, c.want)
		}
	}
	if err := down([]string{"--prefix", prefix}); err != nil {
		t.Fatalf("down: %v", err)
	}
	if left := existingWithPrefix(prefix); len(left) != 0 {
		t.Errorf("namespaces left after down: %v", left)
	}
}
