//go:build linux

package netns

import (
	"context"
	"maps"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// hostLinks lists `ip -o link` of the host namespace with counters stripped, sorted.
func hostLinks(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("ip", "-o", "link", "show").Output()
	if err != nil {
		t.Fatalf("ip link show: %v", err)
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		// Keep "N: name: <flags> ... state X" and drop what traffic changes.
		fields := strings.Fields(l)
		keep := []string{}
		for i := 0; i < len(fields); i++ {
			if fields[i] == "link/ether" || fields[i] == "altname" {
				i++
				continue
			}
			keep = append(keep, fields[i])
		}
		lines = append(lines, strings.Join(keep, " "))
	}
	slices.Sort(lines)
	return lines
}

// namespacesWithPrefix lists RunDir entries starting with prefix.
func namespacesWithPrefix(t *testing.T, prefix string) []string {
	t.Helper()
	entries, err := os.ReadDir(RunDir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatalf("read %s: %v", RunDir, err)
	}
	var names []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			names = append(names, e.Name())
		}
	}
	return names
}

func TestSelfTest(t *testing.T) {
	RequireRoot(t)
	linksBefore := hostLinks(t)
	h, err := NewHarness(Options{ProbeTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			_ = h.Close()
		}
	})

	t.Run("one node", func(t *testing.T) { testOneNode(t, h) })
	t.Run("two nodes on an underlay", func(t *testing.T) { testTwoNodes(t, h) })
	t.Run("cross subnet", func(t *testing.T) { testCrossSubnet(t, h) })

	prefix := h.Prefix() + "-"
	if got := namespacesWithPrefix(t, prefix); len(got) == 0 {
		t.Fatalf("no namespace with prefix %s exists before Close; the test built nothing", prefix)
	}
	if err := h.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	closed = true
	if got := namespacesWithPrefix(t, prefix); len(got) != 0 {
		t.Errorf("namespaces left after Close: %v", got)
	}
	if diff := cmp.Diff(linksBefore, hostLinks(t)); diff != "" {
		t.Errorf("host namespace links changed (-before +after):\n%s", diff)
	}
}

func testOneNode(t *testing.T, h *Harness) {
	node, err := h.NewNode("node1")
	if err != nil {
		t.Fatal(err)
	}
	a, err := node.NewPod(PodOptions{Namespace: "ns1", Name: "a",
		IPv4: netip.MustParseAddr("10.65.0.2"), IPv6: netip.MustParseAddr("fd00:65::2")})
	if err != nil {
		t.Fatal(err)
	}
	b, err := node.NewPod(PodOptions{Namespace: "ns1", Name: "b",
		IPv4: netip.MustParseAddr("10.65.0.3"), IPv6: netip.MustParseAddr("fd00:65::3")})
	if err != nil {
		t.Fatal(err)
	}
	if a.HostInterface != VethName("", "ns1", "a") {
		t.Errorf("host interface %q, want %q", a.HostInterface, VethName("", "ns1", "a"))
	}
	if _, err := node.Netlink().LinkByName(a.HostInterface); err != nil {
		t.Errorf("host side %s not in node namespace: %v", a.HostInterface, err)
	}
	var listeners []*Listener
	for _, proto := range []Protocol{TCP, UDP} {
		l, err := b.Listen(proto, 8080)
		if err != nil {
			t.Fatal(err)
		}
		listeners = append(listeners, l)
	}
	defer func() {
		// a reached b from its own address of each family (UDP may have retried a datagram, so
		// only the TCP counts are exact).
		for _, l := range listeners {
			got := l.Sources()
			if !maps.EqualFunc(got, map[netip.Addr]int{a.IPv4: 1, a.IPv6: 1}, func(n, want int) bool {
				return n == want || l.Protocol == UDP && n > want
			}) {
				t.Errorf("%s listener sources %v, want one each from %s and %s", l.Protocol, got, a.IPv4, a.IPv6)
			}
		}
	}()
	for _, dst := range b.Addrs() {
		for _, proto := range []Protocol{TCP, UDP, ICMP} {
			port := uint16(8080)
			if proto == ICMP {
				port = 0
			}
			r := a.ExpectAllowed(t, proto, netip.AddrPortFrom(dst, port))
			t.Logf("%s", r)
			// And back the other way for ICMP (no listener needed in a).
			if proto == ICMP {
				b.ExpectAllowed(t, ICMP, netip.AddrPortFrom(a.IPv4, 0))
			}
		}
		// Nothing listens on 9090: the helpers must tell a refusal from a drop.
		for _, proto := range []Protocol{TCP, UDP} {
			r := a.Probe(proto, netip.AddrPortFrom(dst, 9090))
			if r.Outcome != Refused {
				t.Errorf("probe to a closed port: got %s, want Refused", r)
			}
			if r.Denied() == nil {
				t.Errorf("Denied() accepted a refusal: %s", r)
			}
		}
	}
	// Rejected and dropped traffic: the node answers ICMP unreachable for one range and
	// silently blackholes another; the helpers must tell the two apart.
	for _, r := range []struct {
		dst  string
		kind int
	}{
		{"192.0.2.0/24", unix.RTN_UNREACHABLE}, {"2001:db8:1::/48", unix.RTN_UNREACHABLE},
		{"198.51.100.0/24", unix.RTN_BLACKHOLE}, {"2001:db8:2::/48", unix.RTN_BLACKHOLE},
	} {
		if err := node.Netlink().RouteAdd(&netlink.Route{Dst: ipNet(netip.MustParsePrefix(r.dst)), Type: r.kind}); err != nil {
			t.Fatalf("add %s route: %v", r.dst, err)
		}
	}
	// The kernel rate-limits ICMP errors per destination (about one a second after a small
	// burst), so only the first probe towards the unreachable range is sure to see the error;
	// later ones may time out. Both count as denied.
	for _, dst := range []string{"192.0.2.10", "2001:db8:1::10"} {
		for i, proto := range []Protocol{ICMP, TCP, UDP} {
			r := a.Probe(proto, netip.AddrPortFrom(netip.MustParseAddr(dst), 80))
			if i == 0 && r.Outcome != Unreachable {
				t.Errorf("got %s, want Unreachable", r)
			}
			if err := r.Denied(); err != nil {
				t.Errorf("Denied(): %v", err)
			}
		}
	}
	for _, dst := range []string{"198.51.100.10", "2001:db8:2::10"} {
		for _, proto := range []Protocol{ICMP, TCP, UDP} {
			r := a.Probe(proto, netip.AddrPortFrom(netip.MustParseAddr(dst), 80))
			if r.Outcome != Timeout {
				t.Errorf("got %s, want Timeout", r)
			}
			if r.Elapsed > 3*time.Second {
				t.Errorf("%s took longer than 3s with a 1s timeout", r)
			}
		}
	}

	// Exec and Start run binaries inside the namespace.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := a.Exec(ctx, "ip", "-o", "addr", "show", "dev", "eth0")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "10.65.0.2/32") || !strings.Contains(string(out), "fd00:65::2/128") {
		t.Errorf("pod eth0 addresses:\n%s\nwant 10.65.0.2/32 and fd00:65::2/128", out)
	}
	out, err = a.Exec(ctx, "ip", "route", "show", "default")
	if err != nil {
		t.Fatal(err)
	}
	if want := "default via 169.254.1.1 dev eth0 onlink"; !strings.Contains(string(out), want) {
		t.Errorf("pod routes:\n%s\nwant %q", out, want)
	}
	p, err := node.Start(ctx, "sleep", "60")
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(); err != nil {
		t.Errorf("stop: %v", err)
	}
	select {
	case <-p.Done():
	default:
		t.Errorf("process still running after Stop")
	}
}

func testTwoNodes(t *testing.T, h *Harness) {
	u, err := h.NewUnderlay("underlay")
	if err != nil {
		t.Fatal(err)
	}
	n1, err := u.NewNode("node2")
	if err != nil {
		t.Fatal(err)
	}
	n2, err := u.NewNode("node3")
	if err != nil {
		t.Fatal(err)
	}
	if n1.IPv4 != netip.MustParseAddr("192.168.56.1") || n2.IPv4 != netip.MustParseAddr("192.168.56.2") {
		t.Errorf("node addresses %s, %s; want 192.168.56.1, 192.168.56.2", n1.IPv4, n2.IPv4)
	}
	a, err := n1.NewPod(PodOptions{Name: "x", IPv4: netip.MustParseAddr("10.66.1.2"), IPv6: netip.MustParseAddr("fd00:66:1::2")})
	if err != nil {
		t.Fatal(err)
	}
	b, err := n2.NewPod(PodOptions{Name: "y", IPv4: netip.MustParseAddr("10.66.2.2"), IPv6: netip.MustParseAddr("fd00:66:2::2")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Listen(TCP, 80); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Listen(UDP, 53); err != nil {
		t.Fatal(err)
	}
	// Nodes see each other over the underlay.
	n1.ExpectAllowed(t, ICMP, netip.AddrPortFrom(n2.IPv4, 0))
	n1.ExpectAllowed(t, ICMP, netip.AddrPortFrom(n2.IPv6, 0))
	// Without routes the pods cannot meet (the underlay router drops unknown pod subnets).
	if r := a.Probe(ICMP, netip.AddrPortFrom(b.IPv4, 0)); r.Allowed() == nil {
		t.Errorf("pods on two nodes reached each other before any route was added: %s", r)
	}
	// Plain routes via the underlay, as no-encap routing would program.
	mustRoute(t, n1, netip.MustParsePrefix("10.66.2.0/24"), n2.IPv4)
	mustRoute(t, n1, netip.MustParsePrefix("fd00:66:2::/64"), n2.IPv6)
	mustRoute(t, n2, netip.MustParsePrefix("10.66.1.0/24"), n1.IPv4)
	mustRoute(t, n2, netip.MustParsePrefix("fd00:66:1::/64"), n1.IPv6)
	for _, dst := range b.Addrs() {
		a.ExpectAllowed(t, TCP, netip.AddrPortFrom(dst, 80))
		a.ExpectAllowed(t, UDP, netip.AddrPortFrom(dst, 53))
		a.ExpectAllowed(t, ICMP, netip.AddrPortFrom(dst, 0))
	}
}

func testCrossSubnet(t *testing.T, h *Harness) {
	u, err := h.NewUnderlay("underlay2")
	if err != nil {
		t.Fatal(err)
	}
	k, err := u.AddSubnet()
	if err != nil {
		t.Fatal(err)
	}
	n1, err := u.NewNode("node4")
	if err != nil {
		t.Fatal(err)
	}
	n2, err := u.NewNodeOnSubnet(k, "node5")
	if err != nil {
		t.Fatal(err)
	}
	if !n2.Subnet4.Contains(n2.IPv4) || n1.Subnet4 == n2.Subnet4 {
		t.Errorf("node5 %s in %s should be on another subnet than node4's %s", n2.IPv4, n2.Subnet4, n1.Subnet4)
	}
	// Routed through the underlay's router, both families.
	n1.ExpectAllowed(t, ICMP, netip.AddrPortFrom(n2.IPv4, 0))
	n1.ExpectAllowed(t, ICMP, netip.AddrPortFrom(n2.IPv6, 0))
}

func mustRoute(t *testing.T, n *Node, dst netip.Prefix, via netip.Addr) {
	t.Helper()
	if err := n.AddRoute(dst, via); err != nil {
		t.Fatal(err)
	}
}
