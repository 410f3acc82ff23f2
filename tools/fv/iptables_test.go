//go:build linux

package fv_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// The iptables dataplane runs the same scenario table as nftables (policyScenarios), once per
// flavour of the iptables binaries, plus drift and minimality specs that read iptables and
// ipset directly. (The lifecycle specs read the nft table, so they stay nftables-only.)
var _ = Describe("felis agent against real packets, dataplane iptables", Label("iptables"), func() {
	for _, backend := range []string{"legacy", "nft"} {
		Describe("backend "+backend, Label("iptables-"+backend), func() {
			BeforeEach(func() {
				// felis agent takes its --iptables-backend default from here.
				Expect(os.Setenv("FELIS_IPTABLES_BACKEND", backend)).To(Succeed())
				DeferCleanup(os.Unsetenv, "FELIS_IPTABLES_BACKEND")
			})

			DescribeTable("policy scenarios agree with felis reach",
				func(sc scenario) { runScenario("iptables", sc) },
				policyScenarios)

			ports := []port{tcp8080, udp8080}
			It("restores a deleted hook rule and a deleted ipset member on resync", func() {
				e := newEnv("iptables", false)
				e.dumpOnFailure(backend)
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

				By("deleting felis's FORWARD hook rules and the client's address from the policy's source set")
				save := e.iptables(backend, "save")
				hooks := 0
				for _, l := range strings.Split(save, "\n") {
					if strings.HasPrefix(l, "-A FORWARD ") && strings.Contains(l, "felis:") {
						hooks++
					}
				}
				Expect(hooks).To(BeNumerically(">", 0), "iptables-save:\n%s", save)
				for range hooks { // felis's hook rules are the first ones
					e.iptables(backend, "-w", "-D", "FORWARD", "1")
				}
				set := e.setHolding(e.pod("ns1/client").IPv4.String())
				e.exec("ipset", "del", set, e.pod("ns1/client").IPv4.String())

				By("waiting for a full resync that writes the hook rules and adds the member back")
				n := len(e.cycles())
				c := e.waitCycle(n, func(c cycle) bool { return c.Full && c.Ops > 0 })
				Expect(c.Counts).To(HaveKeyWithValue("hook-write", 1), c.Line)
				Expect(c.Counts).To(HaveKeyWithValue("set-add", 1), c.Line)
				expectVerdicts(flows, e.expectPacketsAgree(flows), want)
			})

			It("changes only ipset members when a label flips", func() {
				e := newEnv("iptables", false)
				e.dumpOnFailure(backend)
				expectLabelFlipIsTwoSetAdds(e)
			})
		})
	}
})

// dumpOnFailure prints felis's iptables rules and ipsets when the spec fails.
func (e *env) dumpOnFailure(backend string) {
	DeferCleanup(func() {
		if !CurrentSpecReport().Failed() {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, cmd := range [][]string{{"iptables-" + backend + "-save"}, {"ip6tables-" + backend + "-save"}, {"ipset", "save"}} {
			out, err := e.node.Exec(ctx, cmd[0], cmd[1:]...)
			GinkgoWriter.Printf("--- %s (err %v):\n%s\n", strings.Join(cmd, " "), err, out)
		}
	})
}

// exec runs a command in the node namespace and returns its output.
func (e *env) exec(name string, args ...string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := e.node.Exec(ctx, name, args...)
	Expect(err).NotTo(HaveOccurred(), "%s %s: %s", name, strings.Join(args, " "), out)
	return string(out)
}

// iptables runs iptables-BACKEND (or iptables-BACKEND-save for "save") in the node namespace.
func (e *env) iptables(backend string, args ...string) string {
	if len(args) == 1 && args[0] == "save" {
		return e.exec("iptables-" + backend + "-save")
	}
	return e.exec("iptables-"+backend, args...)
}

// setHolding names the felis ipset (not a pool set) that holds member.
func (e *env) setHolding(member string) string {
	cur := ""
	for _, l := range strings.Split(e.exec("ipset", "save"), "\n") {
		f := strings.Fields(l)
		if len(f) == 3 && f[0] == "add" && strings.HasPrefix(f[1], "felis-4") && (f[2] == member || f[2] == member+"/32") {
			cur = f[1]
		}
	}
	Expect(cur).NotTo(BeEmpty(), fmt.Sprintf("no felis set holds %s", member))
	return cur
}
