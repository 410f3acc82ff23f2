//go:build linux

package fv_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/felis-dev/felis/tools/netns"
)

// TestMultiNode runs felis agent (nftables policy, netlink routing) on two nodes joined by an
// underlay bridge, with one pod on each wired only on the pod side (felis programs the host
// routes and proxy-ARP), and checks with real packets: cross-node TCP/UDP/ICMP over VXLAN;
// switching the pool to no encapsulation moves every route off the VXLAN device with none
// left behind; policy applies across nodes; removing a node takes its routes, FDB and
// neighbour entries away on the other node.
func TestMultiNode(t *testing.T) {
	netns.RequireRoot(t)
	RegisterTestingT(t) // the YAML builders shared with the Ginkgo specs assert with gomega
	bin := buildFelis(t)
	h := netns.New(t)
	u, err := h.NewUnderlay("ul")
	if err != nil {
		t.Fatal(err)
	}
	type nodeInfo struct {
		node   *netns.Node
		pod    *netns.Pod
		block  string // 10.66.N.0/26
		tunnel string // 10.66.N.0
		mac    string
	}
	var nodes []*nodeInfo
	for i := 1; i <= 2; i++ {
		n, err := u.NewNode(fmt.Sprintf("node%d", i))
		if err != nil {
			t.Fatal(err)
		}
		pod, err := n.NewPod(netns.PodOptions{Namespace: "mn", Name: fmt.Sprintf("pod%d", i),
			IPv4: netip.MustParseAddr(fmt.Sprintf("10.66.%d.2", i)), SkipHostWiring: true})
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, &nodeInfo{node: n, pod: pod, block: fmt.Sprintf("10.66.%d.0/26", i),
			tunnel: fmt.Sprintf("10.66.%d.0", i), mac: fmt.Sprintf("66:00:00:00:00:%02x", i)})
	}
	dir := t.TempDir()
	write := func(name, body string) {
		t.Helper()
		if err := writeAtomic(dir, name, body); err != nil {
			t.Fatal(err)
		}
	}
	nodeYAML := func(n *nodeInfo) string {
		return vxlanNodeYAML(n.node, netip.MustParsePrefix(n.block), netip.MustParseAddr(n.tunnel), n.mac, netip.Prefix{})
	}
	podDoc := func(n *nodeInfo) string {
		return podYAML(podSpec{Namespace: "mn", Name: n.pod.PodName, Labels: labels("app", n.pod.PodName)}, n.pod, n.node.NodeName)
	}
	pool := func(mode string) string {
		return ipPoolYAML(multiNodePool, mode) + "---\n" + namespaceYAML("mn", nil) + "---\n" + serviceAccountYAML("mn", "default")
	}
	write("cluster.yaml", pool("Always"))
	for _, n := range nodes {
		write(n.node.NodeName+".yaml", nodeYAML(n)+"---\n"+podDoc(n))
	}

	for _, n := range nodes {
		p, err := n.node.Start(context.Background(), bin, "agent", "--datastore", "file:"+dir, "--node", n.node.NodeName,
			"--resync-interval", "5s", "--coalesce", "20ms")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("agent on %s:\n%s", n.node.NodeName, p.Output())
			}
		})
	}
	listeners := func(proto netns.Protocol, port uint16) {
		for _, n := range nodes {
			if _, err := n.pod.Listen(proto, port); err != nil {
				t.Fatal(err)
			}
		}
	}
	listeners(netns.TCP, 8080)
	listeners(netns.UDP, 5353)
	a, b := nodes[0], nodes[1]
	dst := func(p *netns.Pod, port uint16) netip.AddrPort { return netip.AddrPortFrom(p.IPv4, port) }
	eventually := func(what string, cond func() error) {
		t.Helper()
		pollUntil(t, 15*time.Second, 200*time.Millisecond, what, cond)
	}
	routes := func(n *nodeInfo, args ...string) string {
		out, err := n.node.Exec(context.Background(), "ip", append([]string{"-4", "route", "show", "proto", "80"}, args...)...)
		if err != nil {
			if strings.Contains(err.Error(), "Cannot find device") {
				return "" // no VXLAN device, so no route through it
			}
			t.Fatalf("ip route on %s: %v", n.node.NodeName, err)
		}
		return string(out)
	}

	// 1. Over VXLAN: both directions, TCP, UDP and ICMP.
	for _, pair := range [][2]*nodeInfo{{a, b}, {b, a}} {
		from, to := pair[0], pair[1]
		eventually(fmt.Sprintf("VXLAN TCP %s -> %s", from.pod.Name, to.pod.Name), func() error {
			return from.pod.Probe(netns.TCP, dst(to.pod, 8080)).Allowed()
		})
		if err := from.pod.Probe(netns.UDP, dst(to.pod, 5353)).Allowed(); err != nil {
			t.Errorf("VXLAN UDP %s -> %s: %v", from.pod.Name, to.pod.Name, err)
		}
		if err := from.pod.Probe(netns.ICMP, dst(to.pod, 0)).Allowed(); err != nil {
			t.Errorf("VXLAN ICMP %s -> %s: %v", from.pod.Name, to.pod.Name, err)
		}
	}
	if r := routes(a, "dev", "vxlan.calico"); !strings.Contains(r, b.block) {
		t.Fatalf("node1 has no VXLAN route to node2's block %s:\n%s", b.block, r)
	}

	// 1b. A deny-all `*` host endpoint on both nodes: the host refuses what its policy does not
	// allow (a node's own TCP port), yet VXLAN between the nodes passes ahead of host endpoint
	// policy, as Felix lets it, so pod-to-pod traffic across nodes keeps working.
	if _, err := b.node.Listen(netns.TCP, 7070); err != nil {
		t.Fatal(err)
	}
	hostEndpoints := ""
	for _, n := range nodes {
		hostEndpoints += fmt.Sprintf(`---
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: %s-all}
spec: {node: %s, interfaceName: "*"}
`, n.node.NodeName, n.node.NodeName)
	}
	write("hostendpoints.yaml", hostEndpoints)
	eventually("deny-all host endpoint on node2", func() error {
		return a.node.Probe(netns.TCP, netip.AddrPortFrom(b.node.IPv4, 7070)).Denied()
	})
	for _, pair := range [][2]*nodeInfo{{a, b}, {b, a}} {
		from, to := pair[0], pair[1]
		if err := from.pod.Probe(netns.TCP, dst(to.pod, 8080)).Allowed(); err != nil {
			t.Errorf("VXLAN TCP %s -> %s under deny-all host endpoints: %v", from.pod.Name, to.pod.Name, err)
		}
		if err := from.pod.Probe(netns.UDP, dst(to.pod, 5353)).Allowed(); err != nil {
			t.Errorf("VXLAN UDP %s -> %s under deny-all host endpoints: %v", from.pod.Name, to.pod.Name, err)
		}
	}
	if err := os.Remove(filepath.Join(dir, "hostendpoints.yaml")); err != nil {
		t.Fatal(err)
	}
	eventually("host endpoints gone", func() error {
		return a.node.Probe(netns.TCP, netip.AddrPortFrom(b.node.IPv4, 7070)).Allowed()
	})

	// 2. The pool stops encapsulating: routes move to the underlay, none stays on vxlan.calico.
	write("cluster.yaml", pool("Never"))
	eventually("direct route to node2's block, VXLAN device gone", func() error {
		if _, err := a.node.Exec(context.Background(), "ip", "link", "show", "vxlan.calico"); err == nil {
			return fmt.Errorf("vxlan.calico still exists with no VXLAN pool")
		}
		if r := routes(a, b.block); !strings.Contains(r, "via "+b.node.IPv4.String()) {
			return fmt.Errorf("route to %s is %q, want via %s", b.block, strings.TrimSpace(r), b.node.IPv4)
		}
		if r := routes(a, "dev", "vxlan.calico"); strings.TrimSpace(r) != "" {
			return fmt.Errorf("stale VXLAN routes left:\n%s", r)
		}
		return nil
	})
	for _, pair := range [][2]*nodeInfo{{a, b}, {b, a}} {
		from, to := pair[0], pair[1]
		eventually(fmt.Sprintf("no-encap TCP %s -> %s", from.pod.Name, to.pod.Name), func() error {
			return from.pod.Probe(netns.TCP, dst(to.pod, 8080)).Allowed()
		})
		if err := from.pod.Probe(netns.UDP, dst(to.pod, 5353)).Allowed(); err != nil {
			t.Errorf("no-encap UDP %s -> %s: %v", from.pod.Name, to.pod.Name, err)
		}
		if err := from.pod.Probe(netns.ICMP, dst(to.pod, 0)).Allowed(); err != nil {
			t.Errorf("no-encap ICMP %s -> %s: %v", from.pod.Name, to.pod.Name, err)
		}
	}

	// 3. Policy across nodes: pod2 accepts only app=nobody, so pod1 on the other node is denied.
	write("policy.yaml", `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: only-nobody, namespace: mn}
spec:
  podSelector: {matchLabels: {app: pod2}}
  policyTypes: [Ingress]
  ingress: [{from: [{podSelector: {matchLabels: {app: nobody}}}]}]
`)
	eventually("cross-node deny", func() error { return a.pod.Probe(netns.TCP, dst(b.pod, 8080)).Denied() })
	if err := b.pod.Probe(netns.TCP, dst(a.pod, 8080)).Allowed(); err != nil {
		t.Errorf("the other direction is still open: %v", err)
	}
	if err := os.Remove(filepath.Join(dir, "policy.yaml")); err != nil {
		t.Fatal(err)
	}

	// 4. Back to VXLAN, then node2 leaves: node1 drops its routes, FDB and neighbour entries.
	write("cluster.yaml", pool("Always"))
	neigh := func() string {
		out, _ := a.node.Exec(context.Background(), "ip", "neigh", "show", "dev", "vxlan.calico")
		fdb, _ := a.node.Exec(context.Background(), "bridge", "fdb", "show", "dev", "vxlan.calico")
		return string(out) + string(fdb)
	}
	eventually("VXLAN peer programmed again", func() error {
		if !strings.Contains(neigh(), b.mac) {
			return fmt.Errorf("no neighbour/FDB entry for node2's VTEP %s:\n%s", b.mac, neigh())
		}
		return a.pod.Probe(netns.TCP, dst(b.pod, 8080)).Allowed()
	})
	// Pod deletion: node2 drops the route to its pod (and proxy settings with the interface).
	if r := routes(b, b.pod.IPv4.String()); !strings.Contains(r, b.pod.HostInterface) {
		t.Fatalf("node2 has no route to its pod via %s:\n%s", b.pod.HostInterface, r)
	}
	write(b.node.NodeName+".yaml", nodeYAML(b))
	eventually("pod2's route removed on node2", func() error {
		if r := routes(b, b.pod.IPv4.String()); strings.TrimSpace(r) != "" {
			return fmt.Errorf("route to the deleted pod remains: %s", r)
		}
		return nil
	})
	if err := os.Remove(filepath.Join(dir, b.node.NodeName+".yaml")); err != nil {
		t.Fatal(err)
	}
	eventually("node2 forgotten on node1", func() error {
		if r := routes(a); strings.Contains(r, b.block) || strings.Contains(r, b.pod.IPv4.String()) {
			return fmt.Errorf("routes to node2 remain:\n%s", r)
		}
		if n := neigh(); strings.Contains(n, b.mac) || strings.Contains(n, b.tunnel) {
			return fmt.Errorf("neighbour/FDB entries for node2 remain:\n%s", n)
		}
		return nil
	})
}

// multiNodePool is the IP pool of the multi-node specs; node i owns block 10.66.i.0/26.
const multiNodePool = "10.66.0.0/16"

// vxlanNodeYAML is the Kubernetes Node of an underlay node with the address and VXLAN tunnel
// annotations Calico writes, and the IPAM block affine to it (as a Kubernetes datastore stores it);
// with a valid block6 also its IPv6 address and that IPv6 block.
func vxlanNodeYAML(n *netns.Node, block netip.Prefix, tunnel netip.Addr, mac string, block6 netip.Prefix) string {
	blocks := []netip.Prefix{block}
	ann := map[string]string{
		"projectcalico.org/IPv4Address":         fmt.Sprintf("%s/%d", n.IPv4, n.Subnet4.Bits()),
		"projectcalico.org/IPv4VXLANTunnelAddr": tunnel.String(),
		"projectcalico.org/VXLANTunnelMACAddr":  mac,
	}
	addrs := []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: n.IPv4.String()}}
	if block6.IsValid() {
		blocks = append(blocks, block6)
		ann["projectcalico.org/IPv6Address"] = fmt.Sprintf("%s/%d", n.IPv6, n.Subnet6.Bits())
		addrs = append(addrs, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: n.IPv6.String()})
	}
	node := toYAML(&corev1.Node{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Node"},
		ObjectMeta: metav1.ObjectMeta{
			Name:        n.NodeName,
			Labels:      map[string]string{"kubernetes.io/hostname": n.NodeName},
			Annotations: ann,
		},
		Status: corev1.NodeStatus{Addresses: addrs},
	})
	for _, b := range blocks {
		node += fmt.Sprintf(`---
apiVersion: crd.projectcalico.org/v1
kind: IPAMBlock
metadata: {name: %s}
spec: {cidr: "%s", affinity: "host:%s", allocations: [], unallocated: [], attributes: [], strictAffinity: false}
`, strings.NewReplacer(".", "-", "/", "-", ":", "-").Replace(b.String()), b, n.NodeName)
	}
	return node
}

// ipPoolYAML is a Calico IPv4 pool with the given vxlanMode (Always, CrossSubnet, Never), no
// IPIP and no NAT outgoing.
func ipPoolYAML(cidr, vxlanMode string) string {
	return fmt.Sprintf(`apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: pool}
spec: {cidr: %s, vxlanMode: %s, ipipMode: Never, blockSize: 26, natOutgoing: false, nodeSelector: all()}
`, cidr, vxlanMode)
}

// ipPool6YAML is a Calico IPv6 pool without encapsulation (routes via the nodes' IPv6
// addresses) and no NAT outgoing.
func ipPool6YAML(cidr string) string {
	return fmt.Sprintf(`apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: pool6}
spec: {cidr: "%s", vxlanMode: Never, ipipMode: Never, blockSize: 122, natOutgoing: false, nodeSelector: all()}
`, cidr)
}

// writeAtomic writes a datastore file under a temporary name and renames it, so a watching
// agent never reads half a file.
func writeAtomic(dir, name, body string) error {
	tmp := filepath.Join(dir, "."+name+".tmp")
	if err := os.WriteFile(tmp, []byte(body), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, name))
}

// buildFelis builds the felis binary for the test.
func buildFelis(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "felis")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/felis-dev/felis/cmd/felis")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build felis: %v\n%s", err, out)
	}
	return bin
}

// TestMultiNodeVXLANUnderHostEndpoints runs felis agent on two nodes in every dataplane with a
// deny-all `*` host endpoint on both: the hosts refuse a port their policy does not open, yet
// pod-to-pod TCP and UDP across the nodes keeps working over VXLAN, which Felix lets through
// ahead of host endpoint policy.
func TestMultiNodeVXLANUnderHostEndpoints(t *testing.T) {
	netns.RequireRoot(t)
	RegisterTestingT(t)
	bin := buildFelis(t)
	for _, dp := range []string{"nftables", "iptables", "bpf"} {
		t.Run(dp, func(t *testing.T) {
			h := netns.New(t)
			u, err := h.NewUnderlay("ul")
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			write := func(name, body string) {
				t.Helper()
				if err := writeAtomic(dir, name, body); err != nil {
					t.Fatal(err)
				}
			}
			write("cluster.yaml", ipPoolYAML(multiNodePool, "Always")+"---\n"+namespaceYAML("mn", nil)+"---\n"+serviceAccountYAML("mn", "default"))
			var nodes []*netns.Node
			var pods []*netns.Pod
			hostEndpoints := ""
			for i := 1; i <= 2; i++ {
				n, err := u.NewNode(fmt.Sprintf("node%d", i))
				if err != nil {
					t.Fatal(err)
				}
				pod, err := n.NewPod(netns.PodOptions{Namespace: "mn", Name: fmt.Sprintf("pod%d", i),
					IPv4: netip.MustParseAddr(fmt.Sprintf("10.66.%d.2", i)), SkipHostWiring: true})
				if err != nil {
					t.Fatal(err)
				}
				nodes, pods = append(nodes, n), append(pods, pod)
				write(n.NodeName+".yaml", vxlanNodeYAML(n, netip.MustParsePrefix(fmt.Sprintf("10.66.%d.0/26", i)),
					netip.MustParseAddr(fmt.Sprintf("10.66.%d.0", i)), fmt.Sprintf("66:00:00:00:00:%02x", i), netip.Prefix{})+
					"---\n"+podYAML(podSpec{Namespace: "mn", Name: pod.PodName, Labels: labels("app", pod.PodName)}, pod, n.NodeName))
				hostEndpoints += fmt.Sprintf("---\napiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {name: %s-all}\nspec: {node: %s, interfaceName: \"*\"}\n",
					n.NodeName, n.NodeName)
				for _, l := range []struct {
					proto netns.Protocol
					port  uint16
				}{{netns.TCP, 8080}, {netns.UDP, 5353}} {
					if _, err := pod.Listen(l.proto, l.port); err != nil {
						t.Fatal(err)
					}
				}
				if _, err := n.Listen(netns.TCP, 7070); err != nil {
					t.Fatal(err)
				}
			}
			write("hostendpoints.yaml", hostEndpoints)
			for _, n := range nodes {
				p, err := n.Start(context.Background(), bin, "agent", "--datastore", "file:"+dir, "--node", n.NodeName,
					"--dataplane", dp, "--resync-interval", "5s", "--coalesce", "20ms")
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() {
					if t.Failed() {
						t.Logf("agent on %s:\n%s", n.NodeName, p.Output())
					}
				})
			}
			eventually := func(what string, cond func() error) {
				t.Helper()
				pollUntil(t, 15*time.Second, 200*time.Millisecond, what, cond)
			}
			eventually("the pods reach each other across the nodes", func() error {
				for i, from := range pods {
					to := pods[1-i]
					if err := from.Probe(netns.TCP, netip.AddrPortFrom(to.IPv4, 8080)).Allowed(); err != nil {
						return err
					}
					if err := from.Probe(netns.UDP, netip.AddrPortFrom(to.IPv4, 5353)).Allowed(); err != nil {
						return err
					}
				}
				return nil
			})
			for i, n := range nodes {
				if err := nodes[1-i].Probe(netns.TCP, netip.AddrPortFrom(n.IPv4, 7070)).Denied(); err != nil {
					t.Errorf("%s's host endpoint lets its TCP port 7070 in: %v", n.NodeName, err)
				}
			}
		})
	}
}

// pollUntil calls cond every interval until it returns nil, and fails the test with what and
// cond's last error if that has not happened within the given time.
func pollUntil(t *testing.T, within, interval time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	var err error
	for time.Now().Before(deadline) {
		if err = cond(); err == nil {
			return
		}
		time.Sleep(interval)
	}
	t.Fatalf("%s: %v", what, err)
}
