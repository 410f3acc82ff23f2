//go:build linux

package fv_test

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	. "github.com/onsi/gomega"

	"github.com/felis-dev/felis/tools/netns"
)

// TestHostEndpointByExpectedIPs runs felis agent in every dataplane on a node with a deny-all
// host endpoint that has expectedIPs and no interfaceName, and checks with real packets that
// it governs whichever interface carries its address, as Felix resolves it: none at first
// (the node's port is open), eth0 once the address is added there (refused), and no longer
// eth0 once the address moves to another interface (open again).
func TestHostEndpointByExpectedIPs(t *testing.T) {
	netns.RequireRoot(t)
	RegisterTestingT(t)
	bin := buildFelis(t)
	const expected = "10.99.0.2"
	for _, dp := range []string{"nftables", "iptables", "bpf"} {
		t.Run(dp, func(t *testing.T) {
			h := netns.New(t)
			u, err := h.NewUnderlay("ul")
			if err != nil {
				t.Fatal(err)
			}
			var nodes []*netns.Node
			for i := 1; i <= 2; i++ {
				n, err := u.NewNode(fmt.Sprintf("node%d", i))
				if err != nil {
					t.Fatal(err)
				}
				nodes = append(nodes, n)
			}
			client, node := nodes[0], nodes[1]
			if _, err := node.Listen(netns.TCP, 7070); err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			write := func(name, body string) {
				t.Helper()
				if err := writeAtomic(dir, name, body); err != nil {
					t.Fatal(err)
				}
			}
			write("cluster.yaml", ipPoolYAML(multiNodePool, "Never"))
			write("node.yaml", vxlanNodeYAML(node, netip.MustParsePrefix("10.66.2.0/26"), netip.MustParseAddr("10.66.2.0"), "66:00:00:00:00:02", netip.Prefix{})+
				fmt.Sprintf("---\napiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {name: by-ip}\nspec: {node: %s, expectedIPs: [%q]}\n", node.NodeName, expected))
			p, err := node.Start(context.Background(), bin, "agent", "--datastore", "file:"+dir, "--node", node.NodeName,
				"--dataplane", dp, "--resync-interval", "1s", "--coalesce", "20ms")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("agent on %s:\n%s", node.NodeName, p.Output())
				}
			})
			ip := func(args ...string) {
				t.Helper()
				if out, err := node.Exec(context.Background(), "ip", args...); err != nil {
					t.Fatalf("ip %v: %v\n%s", args, err, out)
				}
			}
			port := netip.AddrPortFrom(node.IPv4, 7070)
			eventually := func(what string, cond func() error) {
				t.Helper()
				pollUntil(t, 20*time.Second, 300*time.Millisecond, what, cond)
			}
			// No interface carries the address: the host endpoint governs nothing.
			time.Sleep(2 * time.Second) // the agent's first cycles
			if err := client.Probe(netns.TCP, port).Allowed(); err != nil {
				t.Fatalf("no interface carries %s, yet: %v", expected, err)
			}
			// The address on eth0: the host endpoint governs eth0.
			ip("addr", "add", expected+"/32", "dev", netns.UplinkName)
			eventually("eth0 governed once it carries the expected IP", func() error { return client.Probe(netns.TCP, port).Denied() })
			// The address moves to another interface: the policy follows it, eth0 is open.
			ip("link", "add", "hep0", "type", "veth", "peer", "name", "hep0p")
			ip("link", "set", "hep0", "up")
			ip("link", "set", "hep0p", "up")
			ip("addr", "del", expected+"/32", "dev", netns.UplinkName)
			ip("addr", "add", expected+"/32", "dev", "hep0")
			eventually("eth0 released once the address moved to hep0", func() error { return client.Probe(netns.TCP, port).Allowed() })
		})
	}
}
