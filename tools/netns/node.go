//go:build linux

package netns

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// UplinkName is the node interface facing the underlay (or its stand-in), like a real eth0.
const UplinkName = "eth0"

// Node is a network namespace standing in for a Kubernetes node: lo up, IPv4 and IPv6
// forwarding on, and an uplink with an address and default routes, as a real node has.
type Node struct {
	*Namespace
	// NodeName is the name given at creation ("node1"), the one felis's --node flag takes.
	NodeName string
	// IPv4 and IPv6 are the uplink addresses (the node IPs felis's Node resource carries).
	IPv4, IPv6 netip.Addr
	// Subnet4 and Subnet6 are the uplink's connected subnets.
	Subnet4, Subnet6 netip.Prefix
	// Gateway4 and Gateway6 are the default-route next hops.
	Gateway4, Gateway6 netip.Addr
}

// nodeSysctls make a namespace forward like a node; they are per-namespace, never the host's.
var nodeSysctls = map[string]string{
	"net/ipv4/ip_forward":              "1",
	"net/ipv4/conf/all/forwarding":     "1",
	"net/ipv4/conf/default/forwarding": "1",
	"net/ipv6/conf/all/forwarding":     "1",
	"net/ipv6/conf/default/forwarding": "1",
}

// subnetAddrs returns the IPv4 and IPv6 subnets of underlay subnet k: 192.168.(56+k).0/24 and
// fd00:(56+k)::/64.
func subnetAddrs(k int) (netip.Prefix, netip.Prefix) {
	v4 := netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 168, byte(56 + k), 0}), 24)
	v6 := netip.MustParsePrefix(fmt.Sprintf("fd00:%d::/64", 56+k))
	return v4, v6
}

// hostAddr returns host number i in subnet p (for IPv6 the same digits, ::i in hex form of the
// decimal text, so node 12 is fd00:56::12 next to 192.168.56.12).
func hostAddr(p netip.Prefix, i int) netip.Addr {
	if p.Addr().Is4() {
		b := p.Addr().As4()
		b[3] = byte(i)
		return netip.AddrFrom4(b)
	}
	return netip.MustParseAddr(fmt.Sprintf("%s%d", p.Addr().String(), i))
}

// NewNode creates a stand-alone node: its uplink eth0 (192.168.56.1/24, fd00:56::1/64) is one
// end of a veth pair whose other end (eth0p) stays in the same namespace, with default routes
// via .254 / ::254 on-link. That is enough for proxy-ARP to answer for routable addresses and
// for pods on this node to reach each other; use an Underlay for several nodes.
func (h *Harness) NewNode(name string) (*Node, error) {
	ns, err := h.newNamespace(name)
	if err != nil {
		return nil, err
	}
	if err := ns.SetSysctls(nodeSysctls); err != nil {
		return nil, err
	}
	v4, v6 := subnetAddrs(0)
	n := &Node{
		Namespace: ns, NodeName: name,
		IPv4: hostAddr(v4, 1), IPv6: hostAddr(v6, 1), Subnet4: v4, Subnet6: v6,
		Gateway4: hostAddr(v4, 254), Gateway6: hostAddr(v6, 254),
	}
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: UplinkName}, PeerName: UplinkName + "p"}
	if err := ns.nl.LinkAdd(veth); err != nil {
		return nil, fmt.Errorf("netns: node %s: ip link add %s type veth peer %sp: %w", name, UplinkName, UplinkName, err)
	}
	peer, err := ns.nl.LinkByName(UplinkName + "p")
	if err != nil {
		return nil, fmt.Errorf("netns: node %s: find %sp: %w", name, UplinkName, err)
	}
	if err := ns.nl.LinkSetUp(peer); err != nil {
		return nil, fmt.Errorf("netns: node %s: set %sp up: %w", name, UplinkName, err)
	}
	if err := n.configureUplink(true); err != nil {
		return nil, err
	}
	if err := n.waitOperUp(UplinkName); err != nil {
		return nil, err
	}
	return n, nil
}

// configureUplink brings eth0 up with the node addresses and adds the default routes (on-link
// when the gateway does not exist, as for a stand-alone node).
func (n *Node) configureUplink(onlink bool) error {
	link, err := n.nl.LinkByName(UplinkName)
	if err != nil {
		return fmt.Errorf("netns: node %s: find %s: %w", n.NodeName, UplinkName, err)
	}
	for _, a := range []netip.Prefix{
		netip.PrefixFrom(n.IPv4, n.Subnet4.Bits()),
		netip.PrefixFrom(n.IPv6, n.Subnet6.Bits()),
	} {
		if err := n.nl.AddrAdd(link, &netlink.Addr{IPNet: ipNet(a), Flags: unix.IFA_F_NODAD}); err != nil {
			return fmt.Errorf("netns: node %s: ip addr add %s dev %s: %w", n.NodeName, a, UplinkName, err)
		}
	}
	if err := n.nl.LinkSetUp(link); err != nil {
		return fmt.Errorf("netns: node %s: set %s up: %w", n.NodeName, UplinkName, err)
	}
	for _, gw := range []netip.Addr{n.Gateway4, n.Gateway6} {
		dst := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
		if gw.Is6() {
			dst = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
		}
		r := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: ipNet(dst), Gw: gw.AsSlice()}
		if onlink {
			r.Flags = int(netlink.FLAG_ONLINK)
		}
		if err := n.nl.RouteAdd(r); err != nil {
			return fmt.Errorf("netns: node %s: ip route add default via %s dev %s: %w", n.NodeName, gw, UplinkName, err)
		}
	}
	return nil
}

// Underlay is a namespace holding one bridge per subnet that joins nodes by veth, and routing
// between its subnets: the network between Kubernetes nodes. Subnet k is 192.168.(56+k).0/24
// and fd00:(56+k)::/64; the underlay is the router at .254 / ::254 on each, and node i of a
// subnet gets .i / ::i. Its methods are not safe for concurrent use.
type Underlay struct {
	*Namespace
	subnets []*underlaySubnet
}

type underlaySubnet struct {
	bridge     string
	v4, v6     netip.Prefix
	nextHostID int
}

// NewUnderlay creates the underlay namespace with its first subnet (index 0).
func (h *Harness) NewUnderlay(name string) (*Underlay, error) {
	ns, err := h.newNamespace(name)
	if err != nil {
		return nil, err
	}
	if err := ns.SetSysctls(nodeSysctls); err != nil {
		return nil, err
	}
	u := &Underlay{Namespace: ns}
	if _, err := u.AddSubnet(); err != nil {
		return nil, err
	}
	return u, nil
}

// AddSubnet adds another bridge and subnet, routed to the others by the underlay (for
// cross-subnet tests), and returns its index.
func (u *Underlay) AddSubnet() (int, error) {
	k := len(u.subnets)
	if k >= 100 {
		return 0, fmt.Errorf("netns: underlay %s: too many subnets", u.Name)
	}
	v4, v6 := subnetAddrs(k)
	s := &underlaySubnet{bridge: fmt.Sprintf("br%d", k), v4: v4, v6: v6, nextHostID: 1}
	snoop := false
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: s.bridge}, MulticastSnooping: &snoop}
	if err := u.nl.LinkAdd(br); err != nil {
		return 0, fmt.Errorf("netns: underlay %s: ip link add %s type bridge: %w", u.Name, s.bridge, err)
	}
	link, err := u.nl.LinkByName(s.bridge)
	if err != nil {
		return 0, fmt.Errorf("netns: underlay %s: find %s: %w", u.Name, s.bridge, err)
	}
	for _, a := range []netip.Prefix{
		netip.PrefixFrom(hostAddr(v4, 254), v4.Bits()),
		netip.PrefixFrom(hostAddr(v6, 254), v6.Bits()),
	} {
		if err := u.nl.AddrAdd(link, &netlink.Addr{IPNet: ipNet(a), Flags: unix.IFA_F_NODAD}); err != nil {
			return 0, fmt.Errorf("netns: underlay %s: ip addr add %s dev %s: %w", u.Name, a, s.bridge, err)
		}
	}
	if err := u.nl.LinkSetUp(link); err != nil {
		return 0, fmt.Errorf("netns: underlay %s: set %s up: %w", u.Name, s.bridge, err)
	}
	u.subnets = append(u.subnets, s)
	return k, nil
}

// SubnetCount returns how many subnets the underlay has.
func (u *Underlay) SubnetCount() int { return len(u.subnets) }

// Subnets returns the IPv4 and IPv6 prefixes of subnet k.
func (u *Underlay) Subnets(k int) (netip.Prefix, netip.Prefix) { return subnetAddrs(k) }

// NewNode creates a node attached to subnet 0.
func (u *Underlay) NewNode(name string) (*Node, error) { return u.NewNodeOnSubnet(0, name) }

// NewNodeOnSubnet creates a node whose eth0 is a veth into subnet k's bridge, with the next free
// host number there and default routes via the underlay's router address.
func (u *Underlay) NewNodeOnSubnet(k int, name string) (*Node, error) {
	if k < 0 || k >= len(u.subnets) {
		return nil, fmt.Errorf("netns: underlay %s: no subnet %d (add it with AddSubnet)", u.Name, k)
	}
	s := u.subnets[k]
	if s.nextHostID > 253 {
		return nil, fmt.Errorf("netns: underlay %s: subnet %d is full", u.Name, k)
	}
	id := s.nextHostID
	s.nextHostID++
	ns, err := u.h.newNamespace(name)
	if err != nil {
		return nil, err
	}
	if err := ns.SetSysctls(nodeSysctls); err != nil {
		return nil, err
	}
	n := &Node{
		Namespace: ns, NodeName: name,
		IPv4: hostAddr(s.v4, id), IPv6: hostAddr(s.v6, id), Subnet4: s.v4, Subnet6: s.v6,
		Gateway4: hostAddr(s.v4, 254), Gateway6: hostAddr(s.v6, 254),
	}
	port := fmt.Sprintf("s%dn%d", k, id)
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: port, MasterIndex: 0},
		PeerName:      UplinkName,
		PeerNamespace: netlink.NsFd(int(ns.handle)),
	}
	if err := u.nl.LinkAdd(veth); err != nil {
		return nil, fmt.Errorf("netns: underlay %s: ip link add %s type veth peer %s netns %s: %w", u.Name, port, UplinkName, ns.Name, err)
	}
	portLink, err := u.nl.LinkByName(port)
	if err != nil {
		return nil, fmt.Errorf("netns: underlay %s: find %s: %w", u.Name, port, err)
	}
	br, err := u.nl.LinkByName(s.bridge)
	if err != nil {
		return nil, fmt.Errorf("netns: underlay %s: find %s: %w", u.Name, s.bridge, err)
	}
	if err := u.nl.LinkSetMaster(portLink, br); err != nil {
		return nil, fmt.Errorf("netns: underlay %s: ip link set %s master %s: %w", u.Name, port, s.bridge, err)
	}
	if err := u.nl.LinkSetUp(portLink); err != nil {
		return nil, fmt.Errorf("netns: underlay %s: set %s up: %w", u.Name, port, err)
	}
	if err := n.configureUplink(false); err != nil {
		return nil, err
	}
	if err := u.waitOperUp(port); err != nil {
		return nil, err
	}
	if err := u.waitOperUp(s.bridge); err != nil { // a bridge gets carrier with its first port
		return nil, err
	}
	if err := n.waitOperUp(UplinkName); err != nil {
		return nil, err
	}
	for _, gw := range []netip.Addr{n.Gateway4, n.Gateway6} {
		if err := n.waitReachable(gw); err != nil {
			return nil, err
		}
	}
	return n, nil
}

// waitReachable pings addr until it answers, for at most five seconds. A node joining the
// underlay sometimes loses its first neighbour solicitations (the kernel retries only after a
// second), so nodes are handed out only once their router answers, as a booted node's would.
func (n *Node) waitReachable(addr netip.Addr) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		r := n.ProbeTimeout(ICMP, netip.AddrPortFrom(addr, 0), 300*time.Millisecond)
		if r.Outcome == Allowed {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("netns: node %s: underlay router %s unreachable after 5s: %s", n.NodeName, addr, r)
		}
	}
}
