//go:build linux

package fv_test

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"golang.org/x/sys/unix"

	"github.com/felis-dev/felis/tools/netns"
)

// Conntrack and packet parsing of the BPF dataplane with real packets: fragmented datagrams,
// a connection that outlives a policy change.
var _ = Describe("bpf conntrack and packet parsing against real packets", Label("bpf"), func() {
	BeforeEach(func() {
		dir := GinkgoT().TempDir()
		Expect(unix.Mount("bpf", dir, "bpf", 0, "mode=0700")).To(Succeed())
		DeferCleanup(func() { Expect(unix.Unmount(dir, unix.MNT_DETACH)).To(Succeed()) })
		Expect(os.Setenv("FELIS_BPF_PIN_ROOT", dir)).To(Succeed())
		DeferCleanup(os.Unsetenv, "FELIS_BPF_PIN_ROOT")
	})

	It("passes a UDP datagram larger than the MTU when policy allows it, both ways, and drops it when not", func() {
		e := newEnv("bpf", false)
		e.addPods([]port{udp8080}, ns1Pods...)
		e.writeCluster(ns1)
		e.writePods()
		e.write("policy.yaml", serverFromOtherUDP)
		e.startAgent()
		for _, family := range []int{4, 6} {
			server := netip.AddrPortFrom(e.addr("ns1/server", family), 8080)
			// 4,000 bytes leave the pod as three fragments (MTU 1500); the echo comes back
			// fragmented too (the reply's first fragment passes by conntrack).
			Expect(e.pod("ns1/other").EchoUDP(server, 4000)).To(Succeed(), "IPv%d other -> server (allowed), 4,000 bytes", family)
			Expect(e.pod("ns1/other").EchoUDP(server, 100)).To(Succeed(), "IPv%d other -> server (allowed), 100 bytes", family)
			Expect(e.pod("ns1/client").EchoUDP(server, 4000)).NotTo(Succeed(), "IPv%d client -> server (denied), 4,000 bytes", family)
			Expect(e.pod("ns1/client").EchoUDP(server, 100)).NotTo(Succeed(), "IPv%d client -> server (denied), 100 bytes", family)
		}
	})

	It("keeps a TCP connection opened before a deny policy (as Calico's BPF mode does) and denies new ones", func() {
		e := newEnv("bpf", false)
		e.addPods([]port{tcp8080}, ns1Pods...)
		e.writeCluster(ns1)
		e.writePods()
		e.startAgent()
		client := e.pod("ns1/client")
		var conns []net.Conn
		for _, family := range []int{4, 6} {
			server := netip.AddrPortFrom(e.addr("ns1/server", family), 8080)
			var c net.Conn
			Expect(client.Do(func() (err error) {
				c, err = net.DialTimeout("tcp", server.String(), 2*time.Second)
				return err
			})).To(Succeed(), "IPv%d connection before any policy", family)
			DeferCleanup(c.Close)
			Expect(echoOn(c)).To(Succeed(), "IPv%d echo before the policy", family)
			conns = append(conns, c)
		}

		By("isolating the server (ingress from nobody)")
		n := len(e.cycles())
		e.write("policy.yaml", `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: server-isolated, namespace: ns1}
spec:
  podSelector: {matchLabels: {app: server}}
  policyTypes: [Ingress]`)
		e.waitCycle(n, func(c cycle) bool { return c.Ops > 0 })
		for i, family := range []int{4, 6} {
			Expect(echoOn(conns[i])).To(Succeed(), "IPv%d established connection after the deny policy", family)
			server := netip.AddrPortFrom(e.addr("ns1/server", family), 8080)
			Expect(client.Probe(netns.TCP, server).Denied()).To(Succeed(), "IPv%d new connection after the deny policy", family)
		}
	})
})

// echoOn writes a token on an open connection to an echo server and expects it back.
func echoOn(c net.Conn) error {
	want := make([]byte, 32)
	_, _ = rand.Read(want)
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write(want); err != nil {
		return err
	}
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("echo %x, want %x", got, want)
	}
	return nil
}
