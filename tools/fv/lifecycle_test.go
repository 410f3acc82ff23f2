//go:build linux

package fv_test

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/google/go-cmp/cmp"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/felis-dev/felis/tools/netns"
)

// serverFromClient admits app=client to app=server on TCP 8080 (and isolates the server).
const serverFromClient = `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: server-ingress, namespace: ns1}
spec:
  podSelector: {matchLabels: {app: server}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {app: client}}}]
    ports: [{protocol: TCP, port: 8080}]`

// serverFromOtherUDP admits only app=other to app=server, only on UDP 8080.
const serverFromOtherUDP = `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: server-ingress, namespace: ns1}
spec:
  podSelector: {matchLabels: {app: server}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {app: other}}}]
    ports: [{protocol: UDP, port: 8080}]`

// hostEndpointDenyAll puts node1's eth0 under a host endpoint whose only policy denies
// everything in both directions.
const hostEndpointDenyAll = `
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: node1-eth0, labels: {role: node}}
spec:
  node: node1
  interfaceName: eth0
  expectedIPs: ["{{node4}}", "{{node6}}"]
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: deny-all-hosts}
spec:
  selector: role == 'node'
  types: [Ingress, Egress]`

// nftTable is the felis table as `nft -j` prints it: the parts the specs look at.
type nftTable struct {
	Chains map[string][]nftRule // rules by chain name
	Sets   map[string][]any     // elements by set name (maps too)
}

type nftRule struct {
	Handle int
	Expr   json.RawMessage
}

// table reads the felis table of the node with `nft -j list table inet felis`.
func (e *env) table() nftTable {
	out, err := e.nft("-j", "list", "table", "inet", "felis")
	Expect(err).NotTo(HaveOccurred())
	var doc struct {
		Nftables []map[string]json.RawMessage `json:"nftables"`
	}
	Expect(json.Unmarshal([]byte(out), &doc)).To(Succeed(), "nft -j printed:\n%s", out)
	t := nftTable{Chains: map[string][]nftRule{}, Sets: map[string][]any{}}
	for _, obj := range doc.Nftables {
		switch {
		case obj["chain"] != nil:
			var c struct{ Name string }
			Expect(json.Unmarshal(obj["chain"], &c)).To(Succeed())
			t.Chains[c.Name] = t.Chains[c.Name][:0:0]
		case obj["rule"] != nil:
			var r struct {
				Chain  string
				Handle int
				Expr   json.RawMessage
			}
			Expect(json.Unmarshal(obj["rule"], &r)).To(Succeed())
			t.Chains[r.Chain] = append(t.Chains[r.Chain], nftRule{Handle: r.Handle, Expr: r.Expr})
		case obj["set"] != nil || obj["map"] != nil:
			raw := obj["set"]
			if raw == nil {
				raw = obj["map"]
			}
			var s struct {
				Name string
				Elem []any
			}
			Expect(json.Unmarshal(raw, &s)).To(Succeed())
			t.Sets[s.Name] = s.Elem
		}
	}
	return t
}

// listTable is `nft list table inet felis`, the text the drift spec compares.
func (e *env) listTable() string {
	out, err := e.nft("list", "table", "inet", "felis")
	Expect(err).NotTo(HaveOccurred())
	return out
}

var _ = Describe("felis agent lifecycle against real packets", func() {
	for _, dp := range dataplanes {
		Describe("dataplane "+dp, Label(dp), func() {
			ports := []port{tcp8080, udp8080}

			It("keeps failsafe SSH open on a host endpoint under a deny-all", func() { failsafeUnderDenyAll(dp) })

			It("admits an outside client by ipBlock, as felis reach says", func() {
				e := newEnv(dp, true)
				e.addPods(ports, ns1Pods...)
				// node2 reaches the pods through node1, as a router in front of a cluster would.
				Expect(e.peer.AddRoute(netip.MustParsePrefix("10.65.0.0/24"), e.node.IPv4)).To(Succeed())
				Expect(e.peer.AddRoute(netip.MustParsePrefix("fd00:65::/64"), e.node.IPv6)).To(Succeed())
				e.writeCluster(ns1)
				e.writePods()
				e.write("policy.yaml", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: server-from-outside, namespace: ns1}
spec:
  podSelector: {matchLabels: {app: server}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - ipBlock: {cidr: "{{peer4}}/32"}
    - ipBlock: {cidr: "{{peer6}}/128"}
    ports: [{protocol: TCP, port: 8080}]`)
				flows := e.flowsFromOutside(ports)
				expectVerdicts(flows, e.oracle(flows), []want{
					{outsideClient, "ns1/server", tcp8080, allow},
					{outsideClient, "ns1/server", udp8080, deny},
					{outsideClient, "ns1/server", icmpEcho, deny},
					{outsideClient, "ns1/client", udp8080, allow},
				})
				e.startAgent()
				e.expectPacketsAgree(flows)
			})

			It("applies a policy edit while running", func() {
				e := newEnv(dp, false)
				e.addPods(ports, ns1Pods...)
				e.writeCluster(ns1)
				e.writePods()
				e.write("policy.yaml", serverFromClient)
				e.startAgent()
				flows := e.flowsAmong(ports)
				expectVerdicts(flows, e.expectPacketsAgree(flows), []want{
					{"ns1/client", "ns1/server", tcp8080, allow},
					{"ns1/other", "ns1/server", udp8080, deny},
				})

				By("rewriting the policy: now only other, only on UDP 8080")
				n := len(e.cycles())
				e.write("policy.yaml", serverFromOtherUDP)
				e.waitCycle(n, func(c cycle) bool { return c.Ops > 0 })
				expectVerdicts(flows, e.expectPacketsAgree(flows), []want{
					{"ns1/client", "ns1/server", tcp8080, deny},
					{"ns1/other", "ns1/server", udp8080, allow},
					{"ns1/other", "ns1/server", tcp8080, deny},
				})

				By("removing the policy file: the server is open again")
				n = len(e.cycles())
				e.remove("policy.yaml")
				e.waitCycle(n, func(c cycle) bool { return c.Ops > 0 })
				expectVerdicts(flows, e.expectPacketsAgree(flows), []want{
					{"ns1/client", "ns1/server", tcp8080, allow},
					{"ns1/other", "ns1/server", udp8080, allow},
				})
			})

			It("cleans up after a pod is deleted", func() {
				e := newEnv(dp, false)
				e.addPods(ports, ns1Pods...)
				e.writeCluster(ns1)
				e.writePods()
				// A source set holding every pod's addresses, so the deleted pod is in a set too.
				e.write("policy.yaml", strings.ReplaceAll(serverFromClient,
					"{podSelector: {matchLabels: {app: client}}}", "{podSelector: {}}"))
				e.startAgent()
				e.expectPacketsAgree(e.flowsAmong(ports))

				gone := e.pod("ns1/other")
				traces := []string{gone.HostInterface, gone.IPv4.String(), gone.IPv6.String()}
				before := e.listTable()
				for _, s := range traces {
					Expect(before).To(ContainSubstring(s), "the felis table should mention the pod before it is deleted")
				}

				By("deleting ns1/other from the datastore")
				n := len(e.cycles())
				e.writePods("ns1/client", "ns1/server")
				e.waitCycle(n, func(c cycle) bool { return c.Ops > 0 })
				t := e.table()
				for _, m := range []string{"wl-in", "wl-out"} {
					Expect(fmt.Sprint(t.Sets[m])).NotTo(ContainSubstring(gone.HostInterface), "map %s still dispatches the deleted pod's interface", m)
				}
				for name := range t.Chains {
					Expect(name).NotTo(ContainSubstring(gone.HostInterface), "chain of the deleted pod left behind")
				}
				after := e.listTable()
				for _, s := range traces {
					Expect(after).NotTo(ContainSubstring(s), "the felis table still mentions the deleted pod")
				}
				Expect(after).To(ContainSubstring(e.pod("ns1/client").HostInterface))
				e.expectPacketsAgree(e.flowsAmong(ports, "ns1/client", "ns1/server"))

				By("dropping what the deleted pod's interface still sends: felis no longer knows it")
				for _, dst := range e.pod("ns1/server").Addrs() {
					Expect(gone.Probe(netns.TCP, netip.AddrPortFrom(dst, 8080)).Denied()).To(Succeed())
				}
			})

			It("repairs drift (rules and set elements deleted or added with nft) at the next resync, exactly", func() {
				e := newEnv(dp, false)
				e.addPods(ports, ns1Pods...)
				e.writeCluster(ns1)
				e.writePods()
				e.write("policy.yaml", serverFromClient)
				e.startAgent("--resync-interval", "2s")
				flows := e.flowsAmong(ports)
				e.expectPacketsAgree(flows)
				before := e.listTable()

				t := e.table()
				var chain string
				var handle int
				for _, name := range sortedKeys(t.Chains) {
					if strings.HasPrefix(name, "pol-in-") && len(t.Chains[name]) > 0 {
						chain, handle = name, t.Chains[name][0].Handle
						break
					}
				}
				Expect(chain).NotTo(BeEmpty(), "no policy chain with rules in the felis table:\n%s", before)
				var set, elem string
				for _, name := range sortedKeys(t.Sets) {
					if !strings.HasPrefix(name, "s_") || !strings.HasSuffix(name, "-4") {
						continue
					}
					for _, el := range t.Sets[name] {
						if s, ok := el.(string); ok {
							set, elem = name, s
							break
						}
					}
					if set != "" {
						break
					}
				}
				Expect(set).NotTo(BeEmpty(), "no selector set with a single-address element in the felis table:\n%s", before)

				server := "wl-in-" + e.pod("ns1/server").HostInterface
				Expect(t.Chains).To(HaveKey(server))
				stray := "10.65.0.99"
				drift := []string{
					fmt.Sprintf("delete rule inet felis %s handle %d", chain, handle),
					fmt.Sprintf("insert rule inet felis %s accept", server), // would open the isolated server
					fmt.Sprintf("delete element inet felis %s { %s }", set, elem),
					fmt.Sprintf("add element inet felis %s { %s }", set, stray),
				}
				By("drifting the table with nft: " + strings.Join(drift, "; "))
				n := len(e.cycles())
				_, err := e.nft(strings.Join(drift, "; "))
				Expect(err).NotTo(HaveOccurred())
				drifted := e.table()
				Expect(drifted.Chains[chain]).To(HaveLen(len(t.Chains[chain])-1), "nft did not delete the rule")
				Expect(drifted.Chains[server]).To(HaveLen(len(t.Chains[server])+1), "nft did not insert the rule")
				Expect(drifted.Sets[set]).To(ContainElement(stray))
				Expect(drifted.Sets[set]).NotTo(ContainElement(elem))

				c := e.waitCycle(n, func(c cycle) bool { return c.Full && c.Ops > 0 })
				Expect(c.Counts).To(Equal(map[string]int{"add element": 1, "delete element": 1, "replace chain": 2}),
					"the resync should rewrite exactly the two edited chains and undo the two element changes: %s", c.Line)
				if diff := cmp.Diff(before, e.listTable()); diff != "" {
					Fail("the felis table after the resync differs from before the drift (-before +after):\n" + diff)
				}
				e.expectPacketsAgree(flows)
			})

			It("programs only set elements when one pod label flips", func() {
				e := newEnv(dp, false)
				e.addPods(ports,
					podSpec{Namespace: "ns1", Name: "a", Labels: labels("color", "red")},
					podSpec{Namespace: "ns1", Name: "b", Labels: labels("color", "red")},
					podSpec{Namespace: "ns1", Name: "c", Labels: labels("color", "blue")},
				)
				e.writeCluster(ns1)
				e.writePods()
				e.write("policy.yaml", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-red, namespace: ns1}
spec:
  podSelector: {}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {color: red}}}]`, `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-blue, namespace: ns1}
spec:
  podSelector: {}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {color: blue}}}]
    ports: [{protocol: TCP, port: 8080}]`)
				e.startAgent()
				flows := e.flowsAmong(ports)
				expectVerdicts(flows, e.expectPacketsAgree(flows), []want{
					{"ns1/a", "ns1/b", udp8080, allow},
					{"ns1/c", "ns1/b", udp8080, deny},
					{"ns1/c", "ns1/b", tcp8080, allow},
				})

				By("flipping ns1/a from red to blue")
				n := len(e.cycles())
				spec := e.specs["ns1/a"]
				spec.Labels = labels("color", "blue")
				e.specs["ns1/a"] = spec
				e.writePods()
				c := e.waitCycle(n, func(c cycle) bool { return c.Ops > 0 })
				Expect(c.Full).To(BeFalse(), "the cycle after the flip should diff against the last commit: %s", c.Line)
				// a leaves the red source set and joins the blue one, in each family.
				Expect(c.Counts).To(Equal(map[string]int{"add element": 2, "delete element": 2}),
					"a label flip must touch only set elements: %s", c.Line)
				expectVerdicts(flows, e.expectPacketsAgree(flows), []want{
					{"ns1/a", "ns1/b", udp8080, deny},
					{"ns1/a", "ns1/b", tcp8080, allow},
					{"ns1/b", "ns1/c", udp8080, allow},
				})
			})
		})
	}
})

// failsafeUnderDenyAll: node1's eth0 under a host endpoint whose policy denies everything;
// from node2, 22/TCP stays open (failsafe) and 8080/TCP closes, in both families, as felis's
// derived verdicts say. Every dataplane runs it.
func failsafeUnderDenyAll(dp string) {
	e := newEnv(dp, true)
	hostPorts := []port{{netns.TCP, 22}, tcp8080}
	for _, p := range hostPorts {
		_, err := e.node.Listen(p.Protocol, p.Number)
		Expect(err).NotTo(HaveOccurred())
	}
	type hostFlow struct {
		dst  netip.Addr
		port port
	}
	var flows []hostFlow
	for _, a := range []netip.Addr{e.node.IPv4, e.node.IPv6} {
		for _, p := range hostPorts {
			flows = append(flows, hostFlow{a, p})
		}
	}
	probeAll := func() []netns.Result {
		out := make([]netns.Result, len(flows))
		var wg sync.WaitGroup
		for i, f := range flows {
			wg.Go(func() { out[i] = e.peer.Probe(f.port.Protocol, netip.AddrPortFrom(f.dst, f.port.Number)) })
		}
		wg.Wait()
		return out
	}
	By("reaching both ports from the other node before felis runs")
	for _, r := range probeAll() {
		Expect(r.Allowed()).To(Succeed())
	}

	e.writeCluster(nil)
	e.write("policy.yaml", hostEndpointDenyAll)
	d := loadDerived(e.dir)
	verdicts := make([]verdict, len(flows))
	for i, f := range flows {
		src := e.peer.IPv4
		if f.dst.Is6() {
			src = e.peer.IPv6
		}
		verdicts[i] = d.hostIngress("node1", netns.UplinkName, src, f.dst, f.port.Protocol, f.port.Number)
		wantAction := deny
		if f.port.Number == 22 {
			wantAction = allow
		}
		Expect(verdicts[i].Action).To(Equal(wantAction), "derived verdict for %s:%s (%s)", f.dst, f.port, verdicts[i].Why)
	}

	By("starting felis agent: 22/TCP stays open (failsafe), 8080/TCP closes, in both families")
	e.startAgent()
	Eventually(func() error {
		var bad []string
		for i, r := range probeAll() {
			if err := agrees(verdicts[i], r); err != nil {
				bad = append(bad, fmt.Sprintf("  node2 -> node1 %s: derived %s (%s); the packet: %s", flows[i].port, verdicts[i].Action, verdicts[i].Why, r))
			}
		}
		if len(bad) > 0 {
			return fmt.Errorf("host endpoint flows disagree:\n%s", strings.Join(bad, "\n"))
		}
		return nil
	}).WithTimeout(agreeTimeout).WithPolling(100 * time.Millisecond).Should(Succeed())
}
