//go:build linux

package netns

import (
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// DefaultInterfacePrefix is the host-side veth name prefix Calico uses for pods.
const DefaultInterfacePrefix = "cali"

// PodInterfaceName is the interface inside the pod.
const PodInterfaceName = "eth0"

// hostVethMAC is the MAC Calico's CNI gives every host-side veth.
var hostVethMAC = net.HardwareAddr{0xee, 0xee, 0xee, 0xee, 0xee, 0xee}

// Gateways the pod routes through; nothing owns these addresses, the host side answers for
// them by proxy-ARP (IPv4) and a proxy neighbour entry with proxy_ndp (IPv6).
var (
	PodGateway4 = netip.MustParseAddr("169.254.1.1")
	PodGateway6 = netip.MustParseAddr("fe80::1")
)

// VethName returns the host-side interface name of a pod as Calico names it: prefix followed by
// the first 11 hex digits of SHA-1("NAMESPACE.PODNAME"). An empty prefix means "cali".
func VethName(prefix, namespace, pod string) string {
	if prefix == "" {
		prefix = DefaultInterfacePrefix
	}
	sum := sha1.Sum([]byte(namespace + "." + pod))
	return prefix + hex.EncodeToString(sum[:])[:11]
}

// PodOptions describe a pod to wire to a node.
type PodOptions struct {
	// Namespace is the Kubernetes namespace; empty means "default".
	Namespace string
	// Name is the pod name (required).
	Name string
	// IPv4 and IPv6 are the pod addresses; at least one must be valid.
	IPv4, IPv6 netip.Addr
	// InterfacePrefix replaces "cali" in the host-side interface name.
	InterfacePrefix string
	// SkipHostWiring leaves out what felis's agent programs itself: the host routes to the pod
	// addresses, proxy-ARP, proxy-NDP and the fe80::1 proxy neighbour on the host side.
	SkipHostWiring bool
	// MTU of both veth ends; zero keeps the kernel default.
	MTU int
}

// Pod is a network namespace wired to a node like a Calico-style CNI plugin wires a pod.
type Pod struct {
	*Namespace
	// Node is the node the pod runs on.
	Node *Node
	// PodNamespace and PodName are the Kubernetes namespace and name.
	PodNamespace, PodName string
	// HostInterface is the host-side veth in the node namespace (cali...).
	HostInterface string
	// IPv4 and IPv6 are the pod addresses (invalid when not configured).
	IPv4, IPv6 netip.Addr
	// MAC is the pod's eth0 hardware address.
	MAC net.HardwareAddr
}

// NewPod creates a pod namespace and wires it to the node as Calico's CNI plugin does: a veth
// pair with eth0 in the pod and the cali... end (MAC ee:ee:ee:ee:ee:ee) in the node; the pod IP
// as /32 (/128) on eth0 with default routes via 169.254.1.1 and fe80::1 on-link; and, unless
// SkipHostWiring, on the host side proxy_arp=1, proxy_ndp=1 with a proxy entry for fe80::1,
// proxy delays 0, and a scope-link route to each pod address via the cali... interface.
func (n *Node) NewPod(opts PodOptions) (*Pod, error) {
	if opts.Name == "" {
		return nil, fmt.Errorf("netns: node %s: pod name is empty", n.NodeName)
	}
	if opts.Namespace == "" {
		opts.Namespace = "default"
	}
	if !opts.IPv4.Is4() && !opts.IPv6.Is6() {
		return nil, fmt.Errorf("netns: pod %s/%s: needs an IPv4 or IPv6 address", opts.Namespace, opts.Name)
	}
	if opts.IPv4.IsValid() && !opts.IPv4.Is4() {
		return nil, fmt.Errorf("netns: pod %s/%s: IPv4: %s is not an IPv4 address", opts.Namespace, opts.Name, opts.IPv4)
	}
	if opts.IPv6.IsValid() && (!opts.IPv6.Is6() || opts.IPv6.Is4In6()) {
		return nil, fmt.Errorf("netns: pod %s/%s: IPv6: %s is not an IPv6 address", opts.Namespace, opts.Name, opts.IPv6)
	}
	ns, err := n.h.newNamespace(fmt.Sprintf("%s-%s-%s", n.NodeName, opts.Namespace, opts.Name))
	if err != nil {
		return nil, err
	}
	p := &Pod{
		Namespace: ns, Node: n,
		PodNamespace: opts.Namespace, PodName: opts.Name,
		HostInterface: VethName(opts.InterfacePrefix, opts.Namespace, opts.Name),
		IPv4:          opts.IPv4, IPv6: opts.IPv6,
	}
	if err := p.wire(opts); err != nil {
		return nil, fmt.Errorf("netns: pod %s/%s on node %s: %w", opts.Namespace, opts.Name, n.NodeName, err)
	}
	return p, nil
}

// Addrs returns the configured pod addresses, IPv4 first.
func (p *Pod) Addrs() []netip.Addr {
	var out []netip.Addr
	for _, a := range []netip.Addr{p.IPv4, p.IPv6} {
		if a.IsValid() {
			out = append(out, a)
		}
	}
	return out
}

func (p *Pod) wire(opts PodOptions) error {
	node := p.Node
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: p.HostInterface, HardwareAddr: hostVethMAC, MTU: opts.MTU},
		PeerName:      PodInterfaceName,
		PeerNamespace: netlink.NsFd(int(p.handle)),
		PeerMTU:       uint32(max(opts.MTU, 0)),
	}
	if err := node.nl.LinkAdd(veth); err != nil {
		return fmt.Errorf("ip link add %s type veth peer %s netns %s: %w", p.HostInterface, PodInterfaceName, p.Name, err)
	}
	hostLink, err := node.nl.LinkByName(p.HostInterface)
	if err != nil {
		return fmt.Errorf("find %s: %w", p.HostInterface, err)
	}

	// Pod side: eth0 up, /32 and /128, default routes via the link-local gateways on-link.
	podLink, err := p.nl.LinkByName(PodInterfaceName)
	if err != nil {
		return fmt.Errorf("find %s in pod: %w", PodInterfaceName, err)
	}
	p.MAC = podLink.Attrs().HardwareAddr
	for _, a := range p.Addrs() {
		if err := p.nl.AddrAdd(podLink, &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(a, a.BitLen())), Flags: unix.IFA_F_NODAD}); err != nil {
			return fmt.Errorf("ip addr add %s/%d dev %s: %w", a, a.BitLen(), PodInterfaceName, err)
		}
	}
	if err := p.nl.LinkSetUp(podLink); err != nil {
		return fmt.Errorf("set %s up in pod: %w", PodInterfaceName, err)
	}
	for _, gw := range []netip.Addr{PodGateway4, PodGateway6} {
		if (gw.Is4() && !p.IPv4.IsValid()) || (gw.Is6() && !p.IPv6.IsValid()) {
			continue
		}
		dst := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
		if gw.Is6() {
			dst = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
		}
		r := &netlink.Route{LinkIndex: podLink.Attrs().Index, Dst: ipNet(dst), Gw: gw.AsSlice(), Flags: int(netlink.FLAG_ONLINK)}
		if err := p.nl.RouteAdd(r); err != nil {
			return fmt.Errorf("ip route add default via %s dev %s onlink (in pod): %w", gw, PodInterfaceName, err)
		}
	}

	// Host side: up; the L3 wiring only when asked.
	if err := node.nl.LinkSetUp(hostLink); err != nil {
		return fmt.Errorf("set %s up: %w", p.HostInterface, err)
	}
	if err := node.waitOperUp(p.HostInterface); err != nil {
		return err
	}
	if err := p.waitOperUp(PodInterfaceName); err != nil {
		return err
	}
	if p.IPv6.IsValid() {
		if err := node.waitIPv6Ready(p.HostInterface); err != nil {
			return err
		}
		if err := p.waitIPv6Ready(PodInterfaceName); err != nil {
			return err
		}
	}
	if opts.SkipHostWiring {
		return nil
	}
	return p.WireHost()
}

// WireHost does the host-side wiring NewPod skips with SkipHostWiring: proxy-ARP and proxy-NDP
// sysctls, the fe80::1 proxy neighbour, and scope-link routes to the pod addresses.
func (p *Pod) WireHost() error {
	node, ifName := p.Node, p.HostInterface
	hostLink, err := node.nl.LinkByName(ifName)
	if err != nil {
		return fmt.Errorf("find %s: %w", ifName, err)
	}
	sysctls := map[string]string{}
	if p.IPv4.IsValid() {
		sysctls["net/ipv4/conf/"+ifName+"/forwarding"] = "1"
		sysctls["net/ipv4/conf/"+ifName+"/proxy_arp"] = "1"
		sysctls["net/ipv4/neigh/"+ifName+"/proxy_delay"] = "0"
	}
	if p.IPv6.IsValid() {
		sysctls["net/ipv6/conf/"+ifName+"/forwarding"] = "1"
		sysctls["net/ipv6/conf/"+ifName+"/proxy_ndp"] = "1"
		sysctls["net/ipv6/neigh/"+ifName+"/proxy_delay"] = "0"
	}
	if err := node.SetSysctls(sysctls); err != nil {
		return err
	}
	if p.IPv6.IsValid() {
		proxy := &netlink.Neigh{LinkIndex: hostLink.Attrs().Index, Family: netlink.FAMILY_V6, Flags: netlink.NTF_PROXY, IP: PodGateway6.AsSlice()}
		if err := node.nl.NeighAdd(proxy); err != nil {
			return fmt.Errorf("ip -6 neigh add proxy %s dev %s: %w", PodGateway6, ifName, err)
		}
	}
	for _, a := range p.Addrs() {
		r := &netlink.Route{LinkIndex: hostLink.Attrs().Index, Scope: netlink.SCOPE_LINK, Dst: ipNet(netip.PrefixFrom(a, a.BitLen()))}
		if err := node.nl.RouteAdd(r); err != nil {
			return fmt.Errorf("ip route add %s dev %s scope link: %w", a, ifName, err)
		}
	}
	return nil
}
