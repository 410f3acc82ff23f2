//go:build linux

package fv_test

import (
	"net/netip"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"golang.org/x/sys/unix"

	"github.com/felis-dev/felis/tools/netns"
)

// The BPF dataplane runs the same policy scenario table as nftables. Its maps and links are
// pinned on a bpffs mounted for each spec (FELIS_BPF_PIN_ROOT), unmounted afterwards, which
// also releases the pinned TCX links.
var _ = Describe("felis agent against real packets, dataplane bpf", Label("bpf"), func() {
	var pinRoot string
	BeforeEach(func() { pinRoot = bpfPinRoot() })

	DescribeTable("policy scenarios agree with felis reach",
		func(sc scenario) { runScenario("bpf", sc) },
		policyScenarios)

	ports := []port{tcp8080, udp8080}
	It("restores deleted endpoint entries and a deleted set member on resync", func() {
		e := newEnv("bpf", false)
		e.addPods(ports, ns1Pods...)
		e.writeCluster(ns1)
		e.writePods()
		e.write("policy.yaml", serverFromClient)
		e.startAgent("--resync-interval", "2s")
		flows := e.flowsAmong(ports)
		want := []want{
			{"ns1/client", "ns1/server", tcp8080, allow},
			{"ns1/other", "ns1/server", tcp8080, deny},
		}
		expectVerdicts(flows, e.expectPacketsAgree(flows), want)

		By("deleting every endpoint entry and the client's IPv4 address from every set")
		dir := filepath.Join(pinRoot, e.node.NodeName)
		eps, err := ebpf.LoadPinnedMap(filepath.Join(dir, "feps_v2"), nil)
		Expect(err).NotTo(HaveOccurred())
		defer eps.Close()
		var idx uint32
		var val [32]byte
		var idxs []uint32
		for it := eps.Iterate(); it.Next(&idx, &val); {
			idxs = append(idxs, idx)
		}
		Expect(idxs).NotTo(BeEmpty())
		for _, i := range idxs {
			Expect(eps.Delete(i)).To(Succeed())
		}
		sets, err := ebpf.LoadPinnedMap(filepath.Join(dir, "fsets_v1"), nil)
		Expect(err).NotTo(HaveOccurred())
		defer sets.Close()
		client := e.pod("ns1/client").IPv4.As4()
		var k setKey
		var one uint8
		var dels []setKey
		for it := sets.Iterate(); it.Next(&k, &one); {
			if k.Family == 4 && [4]byte(k.Addr[:4]) == client && k.Prefixlen == 64+32 {
				dels = append(dels, k)
			}
		}
		Expect(dels).NotTo(BeEmpty())
		for _, k := range dels {
			Expect(sets.Delete(k)).To(Succeed())
		}

		By("waiting for a full resync that puts them back")
		n := len(e.cycles())
		c := e.waitCycle(n, func(c cycle) bool { return c.Full && c.Ops > 0 })
		Expect(c.Counts).To(HaveKeyWithValue("endpoint-put", len(idxs)), c.Line)
		Expect(c.Counts).To(HaveKeyWithValue("set-add", len(dels)), c.Line)
		expectVerdicts(flows, e.expectPacketsAgree(flows), want)
	})

	It("changes only set members when a label flips", func() {
		e := newEnv("bpf", false)
		expectLabelFlipIsTwoSetAdds(e)
	})

	It("keeps enforcing while the agent is down, and a restarted agent adopts maps and links with no operation", func() {
		e := newEnv("bpf", false)
		e.addPods(ports, ns1Pods...)
		e.writeCluster(ns1)
		e.writePods()
		e.write("policy.yaml", serverFromClient)
		e.startAgent()
		flows := e.flowsAmong(ports)
		want := []want{
			{"ns1/client", "ns1/server", tcp8080, allow},
			{"ns1/other", "ns1/server", tcp8080, deny},
		}
		expectVerdicts(flows, e.expectPacketsAgree(flows), want)

		By("killing the agent: the pinned links keep the program attached")
		e.daemonKill9()
		expectVerdicts(flows, e.expectPacketsAgree(flows), want)

		By("restarting it")
		e.startAgent()
		c := e.cycles()[0]
		Expect(c.Full).To(BeTrue(), c.Line)
		Expect(c.Ops).To(BeZero(), c.Line)
		Expect(c.Counts).To(Equal(map[string]int{"link-adopt": 2 * len(ns1Pods), "data-link-adopt": 2, "data-out-link-adopt": 2, "lo-out-link-adopt": 1}), c.Line) // the service programs on eth0 and eth0p (data interfaces) and lo's egress
		expectVerdicts(flows, e.expectPacketsAgree(flows), want)
	})

	It("drops pod-to-host traffic under DefaultEndpointToHostAction Drop and passes it under Accept", func() {
		e := newEnv("bpf", false)
		e.addPods(ports, ns1Pods...)
		e.writeCluster(ns1)
		e.writePods()
		l, err := e.node.Listen(netns.TCP, 7070)
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(l.Close)
		e.startAgent()
		client := e.pod("ns1/client")
		host := netip.AddrPortFrom(e.node.IPv4, 7070)
		Expect(client.Probe(netns.TCP, host).Denied()).To(Succeed(), "pod to node under the default Drop")
		server := netip.AddrPortFrom(e.addr("ns1/server", 4), 8080)
		Expect(client.Probe(netns.TCP, server).Allowed()).To(Succeed(), "pod to pod under the default Drop")

		By("setting defaultEndpointToHostAction: Accept")
		n := len(e.cycles())
		e.write("felixconfig.yaml", `apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata: {name: default}
spec: {defaultEndpointToHostAction: Accept}`)
		e.waitCycle(n, func(c cycle) bool { return c.Ops > 0 })
		Expect(client.Probe(netns.TCP, host).Allowed()).To(Succeed(), "pod to node under Accept")
	})

	Describe("attached with clsact + cls_bpf (the fallback for kernels without TCX)", func() {
		BeforeEach(func() {
			Expect(os.Setenv("FELIS_BPF_ATTACH", "clsact")).To(Succeed())
			DeferCleanup(os.Unsetenv, "FELIS_BPF_ATTACH")
		})
		DescribeTable("policy scenarios agree with felis reach",
			func(sc scenario) { runScenario("bpf", sc) },
			policyScenarios[1], policyScenarios[6], policyScenarios[7])
	})
})

// setKey is struct set_key of bpf-programs/policy.c.
type setKey struct {
	Prefixlen uint32
	Set       uint32
	Family    uint8
	Proto     uint8
	Port      uint16
	Addr      [16]byte
}

// bpfPinRoot mounts a private bpffs for the spec, points the agent at it
// (FELIS_BPF_PIN_ROOT) and undoes both at the spec's end; it returns the mount point.
func bpfPinRoot() string {
	dir := GinkgoT().TempDir()
	Expect(unix.Mount("bpf", dir, "bpf", 0, "mode=0700")).To(Succeed())
	DeferCleanup(func() { Expect(unix.Unmount(dir, unix.MNT_DETACH)).To(Succeed()) })
	Expect(os.Setenv("FELIS_BPF_PIN_ROOT", dir)).To(Succeed())
	DeferCleanup(os.Unsetenv, "FELIS_BPF_PIN_ROOT")
	return dir
}
