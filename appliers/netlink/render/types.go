package render

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// The VXLAN devices felis owns, named as Felix names them.
const (
	VXLANDevice   = "vxlan.calico"
	VXLANDeviceV6 = "vxlan-v6.calico"
)

// TableMain is the kernel's main routing table, the one felis programs.
const TableMain = 254

// DefaultProtocol is the route protocol felis uses when the snapshot names none.
const DefaultProtocol = 80

// RouteType is the kernel route type felis programs.
type RouteType uint8

// Route types (the kernel's RTN_UNICAST and RTN_BLACKHOLE).
const (
	Unicast   RouteType = 1
	Blackhole RouteType = 6
)

// Scope is a route scope (the kernel's RT_SCOPE_*).
type Scope uint8

// Route scopes felis uses.
const (
	ScopeUniverse Scope = 0
	ScopeLink     Scope = 253
)

// RouteKey identifies a route: felis keeps at most one route per table and destination.
type RouteKey struct {
	Table int
	Dst   netip.Prefix
}

// Compare orders keys by table, then family, address and prefix length.
func (k RouteKey) Compare(o RouteKey) int {
	return cmp.Or(cmp.Compare(k.Table, o.Table), k.Dst.Addr().Compare(o.Dst.Addr()), cmp.Compare(k.Dst.Bits(), o.Dst.Bits()))
}

// String renders the key as "DST" (main table) or "DST table N".
func (k RouteKey) String() string {
	if k.Table == TableMain || k.Table == 0 {
		return k.Dst.String()
	}
	return fmt.Sprintf("%s table %d", k.Dst, k.Table)
}

// Route is one route felis owns (marked with its protocol number).
type Route struct {
	Table    int // TableMain unless stated
	Dst      netip.Prefix
	Type     RouteType
	Dev      string     // empty: blackhole, or a gateway route whose device the kernel resolves
	Gateway  netip.Addr // zero: directly connected (scope link) or blackhole
	OnLink   bool       // the gateway is reachable on Dev without a connected subnet (VXLAN)
	Scope    Scope
	Protocol int
	// Metric is the route priority; 0 is the kernel default (IPv6 reports its default, 1024,
	// as 0 here). Felis never sets one: an observed non-zero metric is drift.
	Metric int
}

// Key returns the route's table and destination.
func (r Route) Key() RouteKey { return RouteKey{Table: r.Table, Dst: r.Dst} }

// String renders the route as `ip route` prints it, e.g.
// "10.0.1.0/26 via 10.0.1.1 dev vxlan.calico proto 80 onlink".
func (r Route) String() string {
	var b strings.Builder
	if r.Type == Blackhole {
		b.WriteString("blackhole ")
	} else if r.Type != Unicast {
		fmt.Fprintf(&b, "type(%d) ", r.Type)
	}
	b.WriteString(r.Dst.String())
	if r.Gateway.IsValid() {
		b.WriteString(" via ")
		b.WriteString(r.Gateway.String())
	}
	if r.Dev != "" {
		b.WriteString(" dev ")
		b.WriteString(r.Dev)
	}
	if r.Table != TableMain && r.Table != 0 {
		fmt.Fprintf(&b, " table %d", r.Table)
	}
	fmt.Fprintf(&b, " proto %d", r.Protocol)
	if r.Scope == ScopeLink {
		b.WriteString(" scope link")
	} else if r.Scope != ScopeUniverse {
		fmt.Fprintf(&b, " scope %d", r.Scope)
	}
	if r.Metric != 0 {
		fmt.Fprintf(&b, " metric %d", r.Metric)
	}
	if r.OnLink {
		b.WriteString(" onlink")
	}
	return b.String()
}

// Link is a VXLAN device felis owns, with its addresses.
type Link struct {
	Name     string
	VNI      int
	Port     int        // UDP destination port
	Local    netip.Addr // the node IP the tunnel's packets leave from
	Learning bool       // felis always turns learning off: FDB entries are static
	MTU      int        // 0: whatever the kernel chose (felis does not manage it)
	MAC      string     // canonical lower-case form; empty: the kernel's choice
	Addrs    []netip.Prefix
	Up       bool
}

// String renders the device as the arguments of `ip link add`, followed by its state and
// addresses, e.g. "vxlan.calico type vxlan id 4096 local 192.168.0.1 dstport 4789 nolearning
// mtu 1450 address 66:... up addr 10.0.0.1/32".
func (l Link) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s type vxlan id %d", l.Name, l.VNI)
	if l.Local.IsValid() {
		fmt.Fprintf(&b, " local %s", l.Local)
	}
	fmt.Fprintf(&b, " dstport %d", l.Port)
	if !l.Learning {
		b.WriteString(" nolearning")
	}
	if l.MTU != 0 {
		fmt.Fprintf(&b, " mtu %d", l.MTU)
	}
	if l.MAC != "" {
		fmt.Fprintf(&b, " address %s", l.MAC)
	}
	if l.Up {
		b.WriteString(" up")
	} else {
		b.WriteString(" down")
	}
	for _, a := range l.Addrs {
		fmt.Fprintf(&b, " addr %s", a)
	}
	return b.String()
}

// sameTunnel reports whether two devices agree on what the kernel cannot change in place.
func (l Link) sameTunnel(o Link) bool {
	return l.Name == o.Name && l.VNI == o.VNI && l.Port == o.Port && l.Local == o.Local && l.Learning == o.Learning
}

// equal reports whether observed o satisfies desired l (MTU 0 and MAC "" accept anything).
func (l Link) equal(o Link) bool {
	return l.sameTunnel(o) && l.Up == o.Up && (l.MTU == 0 || l.MTU == o.MTU) &&
		(l.MAC == "" || l.MAC == o.MAC) && slices.Equal(l.Addrs, o.Addrs)
}

// Neigh is a permanent neighbour entry on a felis device: a remote tunnel IP and its MAC.
type Neigh struct {
	Dev string
	IP  netip.Addr
	MAC string
}

// Key returns "DEV IP".
func (n Neigh) Key() string { return n.Dev + " " + n.IP.String() }

// String renders the entry as `ip neigh` prints it: "10.0.1.1 dev vxlan.calico lladdr MAC PERMANENT".
func (n Neigh) String() string {
	return fmt.Sprintf("%s dev %s lladdr %s PERMANENT", n.IP, n.Dev, n.MAC)
}

// FDB is a static forwarding entry on a felis device: a remote VTEP MAC and its node IP.
type FDB struct {
	Dev string
	MAC string
	Dst netip.Addr
}

// Key returns "DEV MAC".
func (f FDB) Key() string { return f.Dev + " " + f.MAC }

// String renders the entry as `bridge fdb` prints it: "MAC dev vxlan.calico dst IP self permanent".
func (f FDB) String() string {
	return fmt.Sprintf("%s dev %s dst %s self permanent", f.MAC, f.Dev, f.Dst)
}

// Sysctl is one per-interface kernel setting, e.g. net.ipv4.conf.cali1234.proxy_arp = 1.
type Sysctl struct {
	Family    string // "ipv4" or "ipv6"
	Table     string // "conf" or "neigh"
	Interface string
	Name      string
	Value     string
}

// Key returns the dotted sysctl name, e.g. "net.ipv4.conf.cali1234.proxy_arp".
func (s Sysctl) Key() string {
	return "net." + s.Family + "." + s.Table + "." + strings.ReplaceAll(s.Interface, ".", "/") + "." + s.Name
}

// Path returns the /proc/sys file of the setting.
func (s Sysctl) Path() string {
	return "/proc/sys/net/" + s.Family + "/" + s.Table + "/" + s.Interface + "/" + s.Name
}

// String renders the setting as `sysctl` prints it: "KEY = VALUE".
func (s Sysctl) String() string { return s.Key() + " = " + s.Value }

// PodGatewayV6 is the link-local gateway a Calico-style CNI gives a pod's IPv6 default route;
// the host side of the pod's veth answers for it through a proxy neighbour entry.
var PodGatewayV6 = netip.MustParseAddr("fe80::1")

// ProxyNeigh is a proxy neighbour entry on a workload interface: with proxy_ndp on, the
// kernel answers neighbour solicitations for IP there (the pod's IPv6 gateway).
type ProxyNeigh struct {
	Dev string
	IP  netip.Addr
}

// Key returns "DEV IP".
func (p ProxyNeigh) Key() string { return p.Dev + " " + p.IP.String() }

// String renders the entry as `ip -6 neigh show proxy` prints it: "fe80::1 dev cali1234 proxy".
func (p ProxyNeigh) String() string { return p.IP.String() + " dev " + p.Dev + " proxy" }

// State is a complete set of felis-owned kernel objects, desired or observed. Every slice is
// sorted by its element's key and has no duplicate keys, except StrayRoutes.
type State struct {
	Links   []Link   // by Name
	Sysctls []Sysctl // by Key
	// ProxyNeighs, like Sysctls, live on workload interfaces and are never deleted: they go
	// with the interface.
	ProxyNeighs []ProxyNeigh // by Key
	Neighs      []Neigh      // by Key
	FDB         []FDB        // by Key
	Routes      []Route      // by Key
	// StrayRoutes are felis-protocol routes that share a table and destination with a route in
	// Routes (another metric): observed drift that Plan deletes. Always empty when desired.
	StrayRoutes []Route
}

// Sort puts every slice of s in key order (stable: of two equal keys the first stays first).
func (s *State) Sort() {
	sortStable(s.Links, func(a, b Link) int { return cmp.Compare(a.Name, b.Name) })
	sortStable(s.Sysctls, func(a, b Sysctl) int { return cmp.Compare(a.Key(), b.Key()) })
	sortStable(s.ProxyNeighs, func(a, b ProxyNeigh) int { return cmp.Compare(a.Key(), b.Key()) })
	sortStable(s.Neighs, func(a, b Neigh) int { return cmp.Compare(a.Key(), b.Key()) })
	sortStable(s.FDB, func(a, b FDB) int { return cmp.Compare(a.Key(), b.Key()) })
	sortStable(s.Routes, func(a, b Route) int { return a.Key().Compare(b.Key()) })
	sortStable(s.StrayRoutes, func(a, b Route) int { return a.Key().Compare(b.Key()) })
	for i := range s.Links {
		sortStable(s.Links[i].Addrs, comparePrefix)
	}
}

// sortStable sorts vs unless it already is (snapshots and kernel dumps mostly are, and a
// stable sort of 65,536 routes is mostly memmove).
func sortStable[V any](vs []V, compare func(a, b V) int) {
	if !slices.IsSortedFunc(vs, compare) {
		slices.SortStableFunc(vs, compare)
	}
}

// String renders the state one object per line, grouped by kind in dependency order:
// "link ...", "sysctl ...", "neigh ... proxy", "neigh ...", "fdb ...", "route ...". Equal states render equally.
func (s State) String() string {
	var b strings.Builder
	for _, l := range s.Links {
		b.WriteString("link " + l.String() + "\n")
	}
	for _, x := range s.Sysctls {
		b.WriteString("sysctl " + x.String() + "\n")
	}
	for _, p := range s.ProxyNeighs {
		b.WriteString("neigh " + p.String() + "\n")
	}
	for _, n := range s.Neighs {
		b.WriteString("neigh " + n.String() + "\n")
	}
	for _, f := range s.FDB {
		b.WriteString("fdb " + f.String() + "\n")
	}
	for _, r := range s.Routes {
		b.WriteString("route " + r.String() + "\n")
	}
	for _, r := range s.StrayRoutes {
		b.WriteString("stray route " + r.String() + "\n")
	}
	return b.String()
}

func comparePrefix(a, b netip.Prefix) int {
	return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
}
