//go:build linux

package fv_test

import (
	"fmt"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"golang.org/x/sys/unix"

	"github.com/felis-dev/felis/tools/netns"
)

// hostEndpointOn is node1's host endpoint on interface (`*`: all of them).
const hostEndpointOn = `
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: node1-hep, labels: {role: node}}
spec:
  node: node1
  interfaceName: "{{.}}"
  expectedIPs: ["{{node4}}", "{{node6}}"]`

// hostEndpointStagePolicies select role=node, one of each kind: a normal deny-all, an
// untracked (doNotTrack) allow of TCP 7000 in and of its replies out, a preDNAT deny of TCP
// 9090, and an applyOnForward policy allowing TCP 8080 and 9090 forwarded in and TCP 9000
// forwarded out (applyOnForward policies also govern host traffic: 8080/9090 to the node and
// 9000 from it are allowed).
const hostEndpointStagePolicies = `
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: deny-all-hosts}
spec:
  selector: role == 'node'
  types: [Ingress, Egress]
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: untracked-7000}
spec:
  selector: role == 'node'
  doNotTrack: true
  applyOnForward: true
  types: [Ingress, Egress]
  ingress: [{action: Allow, protocol: TCP, destination: {ports: [7000]}}]
  egress: [{action: Allow, protocol: TCP, source: {ports: [7000]}}]
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: prednat-deny-9090}
spec:
  selector: role == 'node'
  preDNAT: true
  applyOnForward: true
  types: [Ingress]
  ingress: [{action: Deny, protocol: TCP, destination: {ports: [9090]}}]
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: forward}
spec:
  selector: role == 'node'
  applyOnForward: true
  types: [Ingress, Egress]
  ingress: [{action: Allow, protocol: TCP, destination: {ports: [8080, 9090]}}]
  egress: [{action: Allow, protocol: TCP, destination: {ports: [9000]}}]`

// hostEndpointStages runs hostEndpointStagePolicies on dp, first with a `*` host endpoint,
// then with one on eth0: node2 routes the pod network through node1; every flow must end as
// the table below says, in both families. The untracked allow works only on the named host
// endpoint: Felix ignores doNotTrack policy on a `*` one (and so does felis's derive).
func hostEndpointStages(dp string) {
	e := newEnv(dp, true)
	pod := podSpec{Namespace: "ns1", Name: "server", Labels: labels("app", "server")}
	e.addPods([]port{tcp8080, {netns.TCP, 8081}, {netns.TCP, 9090}}, pod)
	for _, p := range []uint16{22, 7000, 8081} {
		_, err := e.node.Listen(netns.TCP, p)
		Expect(err).NotTo(HaveOccurred())
	}
	for _, p := range []uint16{9000, 9001} {
		_, err := e.peer.Listen(netns.TCP, p)
		Expect(err).NotTo(HaveOccurred())
	}
	Expect(e.peer.AddRoute(netip.MustParsePrefix("10.65.0.0/24"), e.node.IPv4)).To(Succeed())
	Expect(e.peer.AddRoute(netip.MustParsePrefix("fd00:65::/64"), e.node.IPv6)).To(Succeed())
	server := e.pod(pod.key())

	type flow struct {
		from      *netns.Namespace
		what      string
		dst       netip.Addr
		port      uint16
		allow     bool
		untracked bool // allowed only by the untracked policy (not on a `*` host endpoint)
	}
	var flows []flow
	for _, v6 := range []bool{false, true} {
		nodeIP, podIP, peerIP := e.node.IPv4, server.IPv4, e.peer.IPv4
		if v6 {
			nodeIP, podIP, peerIP = e.node.IPv6, server.IPv6, e.peer.IPv6
		}
		flows = append(flows,
			flow{e.peer.Namespace, "node2 → node1, failsafe", nodeIP, 22, true, false},
			flow{e.peer.Namespace, "node2 → node1, normal policy denies", nodeIP, 8081, false, false},
			flow{e.peer.Namespace, "node2 → node1, untracked allow (replies by untracked egress)", nodeIP, 7000, false, true},
			flow{e.peer.Namespace, "node2 → pod, forward allow", podIP, 8080, true, false},
			flow{e.peer.Namespace, "node2 → pod, forward tier default deny", podIP, 8081, false, false},
			flow{e.peer.Namespace, "node2 → pod, preDNAT deny", podIP, 9090, false, false},
			flow{server.Namespace, "pod → node2, forward egress allow", peerIP, 9000, true, false},
			flow{server.Namespace, "pod → node2, forward egress tier default deny", peerIP, 9001, false, false},
		)
	}
	probe := func(want func(flow) bool) error {
		errs := make([]string, len(flows))
		var wg sync.WaitGroup
		for i, f := range flows {
			wg.Go(func() {
				r := f.from.Probe(netns.TCP, netip.AddrPortFrom(f.dst, f.port))
				check := r.Denied
				if want(f) {
					check = r.Allowed
				}
				if err := check(); err != nil {
					errs[i] = fmt.Sprintf("  %s (%v:%d): %v", f.what, f.dst, f.port, err)
				}
			})
		}
		wg.Wait()
		var bad []string
		for _, s := range errs {
			if s != "" {
				bad = append(bad, s)
			}
		}
		if len(bad) > 0 {
			return fmt.Errorf("%d of %d flows disagree:\n%s", len(bad), len(flows), strings.Join(bad, "\n"))
		}
		return nil
	}

	e.writeCluster(ns1)
	e.writePods()
	By("without host endpoints every flow passes")
	e.startAgent()
	Eventually(func() error { return probe(func(flow) bool { return true }) }).
		WithTimeout(agreeTimeout).WithPolling(100 * time.Millisecond).Should(Succeed())

	for _, iface := range []string{"*", netns.UplinkName} {
		By(fmt.Sprintf("a host endpoint on %q with untracked, preDNAT, forward and normal policies", iface))
		n := len(e.cycles())
		e.write("hostendpoint.yaml", strings.ReplaceAll(hostEndpointOn, "{{.}}", iface), hostEndpointStagePolicies)
		e.waitCycle(n, func(c cycle) bool { return c.Ops > 0 })
		Eventually(func() error { return probe(func(f flow) bool { return f.allow || (f.untracked && iface != "*") }) }).
			WithTimeout(agreeTimeout).WithPolling(100 * time.Millisecond).Should(Succeed())
	}

	By("removing the host endpoint: every flow passes again")
	n := len(e.cycles())
	e.remove("hostendpoint.yaml")
	e.waitCycle(n, func(c cycle) bool { return c.Ops > 0 })
	Eventually(func() error { return probe(func(flow) bool { return true }) }).
		WithTimeout(agreeTimeout).WithPolling(100 * time.Millisecond).Should(Succeed())
}

// nodePortPolicies select role=node: a normal deny-all, a preDNAT deny of the backend port
// 9376 (and, when denyNodePort, of the NodePort 30080), and an applyOnForward allow of 9376.
func nodePortPolicies(denyNodePort bool) string {
	ports := "[9376]"
	if denyNodePort {
		ports = "[9376, 30080]"
	}
	return `
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: deny-all-hosts}
spec:
  selector: role == 'node'
  types: [Ingress, Egress]
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: prednat}
spec:
  selector: role == 'node'
  preDNAT: true
  applyOnForward: true
  types: [Ingress]
  ingress: [{action: Deny, protocol: TCP, destination: {ports: ` + ports + `}}]
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: forward-backend}
spec:
  selector: role == 'node'
  applyOnForward: true
  types: [Ingress]
  ingress: [{action: Allow, protocol: TCP, destination: {ports: [9376]}}]`
}

// hostEndpointNodePort: node1's eth0 under a host endpoint, the web Service's NodePort 30080
// (backends on 9376) reached from node2. preDNAT policy sees the NodePort (a deny of the
// backend port 9376 does not stop it, a deny of 30080 does), forward policy the backend
// (allowing 9376 lets it through), the normal deny-all never sees the flow; node2 reaching a
// backend's 9376 directly, routed through node1, meets the preDNAT deny.
func hostEndpointNodePort(dp string) {
	e := newEnv(dp, true)
	e.addPods(nil, svcPods...)
	for _, p := range []string{"web-a", "web-b", "web-c"} {
		_, err := e.pod("app/"+p).Listen(netns.TCP, svcTarget)
		Expect(err).NotTo(HaveOccurred())
	}
	Expect(e.peer.AddRoute(netip.MustParsePrefix("10.65.0.0/24"), e.node.IPv4)).To(Succeed())
	e.writeCluster(map[string]map[string]string{"app": nil})
	e.writePods()
	e.write("service.yaml", serviceYAML, sliceYAML(map[string]bool{"web-a": true, "web-b": true, "web-c": true}))
	e.startAgent()
	np := netip.AddrPortFrom(e.node.IPv4, svcNodePort)
	direct := netip.AddrPortFrom(e.pod("app/web-a").IPv4, svcTarget)
	expect := func(nodePort, directly bool) {
		Eventually(func() error {
			var bad []string
			for _, c := range []struct {
				dst   netip.AddrPort
				allow bool
			}{{np, nodePort}, {direct, directly}} {
				r := e.peer.Probe(netns.TCP, c.dst)
				check := r.Denied
				if c.allow {
					check = r.Allowed
				}
				if err := check(); err != nil {
					bad = append(bad, fmt.Sprintf("  node2 → %s: %v", c.dst, err))
				}
			}
			if len(bad) > 0 {
				return fmt.Errorf("%s", strings.Join(bad, "\n"))
			}
			return nil
		}).WithTimeout(agreeTimeout).WithPolling(100 * time.Millisecond).Should(Succeed())
	}
	By("without a host endpoint: the NodePort and the backend directly")
	expect(true, true)

	By("preDNAT denies the backend port: the NodePort still works, the backend directly does not")
	n := len(e.cycles())
	e.write("hostendpoint.yaml", strings.ReplaceAll(hostEndpointOn, "{{.}}", netns.UplinkName), nodePortPolicies(false))
	e.waitCycle(n, func(c cycle) bool { return c.Ops > 0 })
	expect(true, false)

	By("preDNAT denies the NodePort too")
	n = len(e.cycles())
	e.write("hostendpoint.yaml", strings.ReplaceAll(hostEndpointOn, "{{.}}", netns.UplinkName), nodePortPolicies(true))
	e.waitCycle(n, func(c cycle) bool { return c.Ops > 0 })
	expect(false, false)
}

// Host endpoints on the BPF dataplane: the lifecycle spec's failsafe check, and every kind of
// host endpoint policy on a `*` and a named host endpoint, run against nftables too so both
// dataplanes are seen to give the same verdicts.
var _ = Describe("host endpoints against real packets", func() {
	Describe("dataplane bpf", Label("bpf"), func() {
		BeforeEach(func() {
			dir := GinkgoT().TempDir()
			Expect(unix.Mount("bpf", dir, "bpf", 0, "mode=0700")).To(Succeed())
			DeferCleanup(func() { Expect(unix.Unmount(dir, unix.MNT_DETACH)).To(Succeed()) })
			Expect(os.Setenv("FELIS_BPF_PIN_ROOT", dir)).To(Succeed())
			DeferCleanup(os.Unsetenv, "FELIS_BPF_PIN_ROOT")
		})
		It("keeps failsafe SSH open on a host endpoint under a deny-all", func() { failsafeUnderDenyAll("bpf") })
		It("applies untracked, preDNAT, forward and normal host endpoint policy (* and eth0)", func() { hostEndpointStages("bpf") })
		It("applies preDNAT policy before NodePort DNAT, forward policy after it", func() { hostEndpointNodePort("bpf") })
	})
	Describe("dataplane nftables", Label("nftables"), func() {
		It("applies untracked, preDNAT, forward and normal host endpoint policy (* and eth0)", func() { hostEndpointStages("nftables") })
		It("applies preDNAT policy before NodePort DNAT, forward policy after it", func() { hostEndpointNodePort("nftables") })
	})
})
