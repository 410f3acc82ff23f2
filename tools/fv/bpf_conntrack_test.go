//go:build linux

package fv_test

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"golang.org/x/sys/unix"

	"github.com/felis-dev/felis/tools/netns"
)

// Conntrack and packet parsing of the BPF dataplane with real packets: fragmented datagrams.
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
			Expect(bigUDP(e.pod("ns1/other"), server, 4000)).To(Succeed(), "IPv%d other -> server (allowed), 4,000 bytes", family)
			Expect(bigUDP(e.pod("ns1/other"), server, 100)).To(Succeed(), "IPv%d other -> server (allowed), 100 bytes", family)
			Expect(bigUDP(e.pod("ns1/client"), server, 4000)).NotTo(Succeed(), "IPv%d client -> server (denied), 4,000 bytes", family)
			Expect(bigUDP(e.pod("ns1/client"), server, 100)).NotTo(Succeed(), "IPv%d client -> server (denied), 100 bytes", family)
		}
	})
})

// bigUDP sends one datagram of size random bytes from the pod to the echo server at dst and
// expects it back whole (three tries, so one lost datagram does not read as a drop).
func bigUDP(p *netns.Pod, dst netip.AddrPort, size int) error {
	want := make([]byte, size)
	_, _ = rand.Read(want)
	return p.Do(func() error {
		conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(dst))
		if err != nil {
			return err
		}
		defer conn.Close()
		got := make([]byte, 64*1024)
		var lastErr error
		for range 3 {
			_ = conn.SetDeadline(time.Now().Add(time.Second))
			if _, err := conn.Write(want); err != nil {
				return err
			}
			n, err := conn.Read(got)
			if err == nil && bytes.Equal(got[:n], want) {
				return nil
			}
			lastErr = err
			if err == nil {
				lastErr = fmt.Errorf("echo of %d bytes, want the %d sent", n, size)
			}
		}
		return lastErr
	})
}
