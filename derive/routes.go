package derive

import (
	"cmp"
	"net/netip"
	"slices"

	"github.com/felis-dev/felis/model"
	"github.com/felis-dev/felis/model/store"
	"github.com/felis-dev/felis/snapshot"
)

// The VXLAN devices felis programs, named as Felix names them.
const (
	VXLANDevice   = "vxlan.calico"
	VXLANDeviceV6 = "vxlan-v6.calico"
)

// Routing returns node's desired routes (by Dst, then Type), the remote VTEPs (by Node, IPv4
// first) and every IP pool (by CIDR), following Felix's L3 route routeResolver, VXLAN routeResolver and
// route managers:
//
//   - every local workload address gets a RouteWorkload via its host-side interface;
//   - a ipamBlock affine to this node gets a RouteBlackhole when it lies in a VXLAN pool (with
//     VXLAN on for its family) or a no-encap pool, and is wider than /32 (/128);
//   - a ipamBlock affine to another node, and every workload address on another node that is not
//     inside a ipamBlock affine to that node (a borrowed IP, routed as a /32 or /128), goes to that
//     node by its pool's mode: VXLAN Always → RouteVXLAN via the node's tunnel address;
//     CrossSubnet → RouteDirect via the node's IP when that IP is inside this node's subnet,
//     else RouteVXLAN; Never → RouteDirect on the same subnet, else no route (across subnets
//     a no-encap pool needs BGP, which felis does not speak);
//   - a remote node's VXLAN tunnel address gets a RouteHost (on-link on the VXLAN device) only
//     where Felix programs one: when it is borrowed from another node's ipamBlock, or is itself a
//     /32 (/128) block;
//   - nothing leads to an address outside every pool, into an IPIP pool (no IPIP support), to
//     a node that is not in the store or lacks the needed address, over VXLAN while VXLAN is
//     off for that family or this node has no tunnel address for it. Disabled pools route like
//     enabled ones, as in Felix: disabling a pool only stops new allocations.
//
// When a local workload, a borrowed workload, a tunnel address and a ipamBlock share a
// destination, the first of those wins, as the routeResolver's longest-match walk decides.
func Routing(v *store.View, node string, cfg snapshot.Config) (routes []snapshot.Route, vteps []snapshot.VTEP, pools []snapshot.Pool) {
	return routing(v, node, cfg, nil)
}

// routing is Routing over every workload endpoint of the view in ID order (weps), or, when
// weps is nil, reading them from the view.
func routing(v *store.View, node string, cfg snapshot.Config, weps []*model.WorkloadEndpoint) (routes []snapshot.Route, vteps []snapshot.VTEP, pools []snapshot.Pool) {
	base, vteps, pools := remoteRouting(v, node, cfg, weps)
	var local []*model.WorkloadEndpoint
	for w := range store.ListOnNode[*model.WorkloadEndpoint](v, model.KindWorkloadEndpoint, node) {
		local = append(local, w)
	}
	return OverlayRoutes(base, LocalWorkloadRoutes(local)), vteps, pools
}

// LocalWorkloadRoutes are the routes to this node's workloads: each address via its
// host-side interface. weps must be in ID order: when two endpoints claim one address, the
// first wins, as in Routing. The result is sorted by destination.
func LocalWorkloadRoutes(weps []*model.WorkloadEndpoint) []snapshot.Route {
	seen := map[netip.Prefix]bool{}
	var out []snapshot.Route
	for _, w := range weps {
		if w.InterfaceName == "" {
			continue
		}
		for _, p := range w.IPNetworks {
			p = p.Masked()
			if !seen[p] {
				seen[p] = true
				out = append(out, snapshot.Route{Dst: p, Type: snapshot.RouteWorkload, Interface: w.InterfaceName})
			}
		}
	}
	slices.SortFunc(out, func(a, b snapshot.Route) int { return cmpPrefix(a.Dst, b.Dst) })
	return out
}

// OverlayRoutes merges two lists sorted by destination into a new one; a local route
// replaces a base route to the same destination (a local workload wins every other target).
func OverlayRoutes(base, local []snapshot.Route) []snapshot.Route {
	out := make([]snapshot.Route, 0, len(base)+len(local))
	i, j := 0, 0
	for i < len(base) || j < len(local) {
		switch {
		case j == len(local):
			out = append(out, base[i])
			i++
		case i == len(base):
			out = append(out, local[j])
			j++
		default:
			switch c := cmpPrefix(base[i].Dst, local[j].Dst); {
			case c < 0:
				out = append(out, base[i])
				i++
			case c > 0:
				out = append(out, local[j])
				j++
			default:
				out = append(out, local[j])
				i, j = i+1, j+1
			}
		}
	}
	return out
}

// RemoteRouting is Routing without the routes to this node's own workloads: what depends on
// nodes, pools, blocks, configuration and the workloads of other nodes. Routes are sorted by
// destination.
func RemoteRouting(v *store.View, node string, cfg snapshot.Config) (routes []snapshot.Route, vteps []snapshot.VTEP, pools []snapshot.Pool) {
	return remoteRouting(v, node, cfg, nil)
}

// remoteRouting is RemoteRouting over weps as routing takes them.
func remoteRouting(v *store.View, node string, cfg snapshot.Config, weps []*model.WorkloadEndpoint) (routes []snapshot.Route, vteps []snapshot.VTEP, pools []snapshot.Pool) {
	r := newRouteResolver(v, node, cfg)
	all := store.List[*model.WorkloadEndpoint](v, model.KindWorkloadEndpoint)
	if weps != nil {
		all = slices.Values(weps)
	}
	for w := range all {
		if w.Node == node || w.Node == "" {
			continue
		}
		for _, p := range w.IPNetworks {
			p = p.Masked()
			if b, ok := r.blockFor(p); ok && b.node == w.Node {
				continue // covered by the node's own ipamBlock route
			}
			r.add(p, routeTarget{kind: targetWorkload, node: w.Node})
		}
	}
	for _, n := range r.nodes {
		if n.Key.Name == node {
			continue
		}
		for _, a := range []netip.Addr{n.VXLANTunnelAddr, n.VXLANTunnelAddrV6} {
			if !a.IsValid() {
				continue
			}
			p := netip.PrefixFrom(a, a.BitLen())
			// Otherwise the tunnel address is reached through its node's ipamBlock route.
			if b, ok := r.blockFor(p); ok && (b.node != n.Key.Name || b.cidr == p) {
				r.add(p, routeTarget{kind: targetTunnel, node: n.Key.Name})
			}
		}
	}
	for _, b := range r.blocks {
		if b.node != "" {
			r.add(b.cidr, routeTarget{kind: targetBlock, node: b.node})
		}
	}

	for dst, t := range r.targets {
		if rt, ok := r.route(dst, t); ok {
			routes = append(routes, rt)
		}
	}
	slices.SortFunc(routes, func(a, b snapshot.Route) int {
		return cmp.Or(cmpPrefix(a.Dst, b.Dst), cmp.Compare(a.Type, b.Type))
	})

	for _, n := range r.nodes {
		if n.Key.Name == node {
			continue
		}
		if cfg.VXLANEnabled && n.VXLANTunnelAddr.IsValid() && n.IPv4Address.IsValid() {
			vteps = append(vteps, snapshot.VTEP{
				Node: n.Key.Name, TunnelIP: n.VXLANTunnelAddr, MAC: vtepMAC(n.Key.Name, n.VXLANTunnelMAC, false),
				ParentIP: n.IPv4Address.Addr(),
			})
		}
		if cfg.VXLANEnabledV6 && n.VXLANTunnelAddrV6.IsValid() && n.IPv6Address.IsValid() {
			vteps = append(vteps, snapshot.VTEP{
				Node: n.Key.Name, TunnelIP: n.VXLANTunnelAddrV6, MAC: vtepMAC(n.Key.Name, n.VXLANTunnelMACV6, true),
				ParentIP: n.IPv6Address.Addr(), IPv6: true,
			})
		}
	}

	for _, p := range r.pools {
		mode := string(p.VXLANMode)
		if mode == "" {
			mode = string(model.EncapNever)
		}
		pools = append(pools, snapshot.Pool{CIDR: p.CIDR, VXLANMode: mode, NATOutgoing: p.NATOutgoing, Disabled: p.Disabled})
	}
	return routes, vteps, pools
}

// routeTargetKind says what a destination is; a higher kind wins a shared destination.
type routeTargetKind int

const (
	targetBlock routeTargetKind = iota + 1
	targetTunnel
	targetWorkload // on another node
	targetLocalWorkload
)

// routeTarget is where a destination leads before the encapsulation rules are applied.
type routeTarget struct {
	kind  routeTargetKind
	node  string // the node it leads to ("" for local workloads)
	iface string // local workloads only
}

// ipamBlock is an IPAM ipamBlock and the node it is affine to ("" for none).
type ipamBlock struct {
	cidr netip.Prefix
	node string
}

// routeResolver holds one Routing call's indexes.
type routeResolver struct {
	node      string
	cfg       snapshot.Config
	local     *model.Node
	nodes     []*model.Node // by name
	nodeByKey map[string]*model.Node
	pools     []*model.IPPool // by CIDR
	blocks    []ipamBlock     // in the order added
	blockAt   map[netip.Prefix]int
	blockLens []int // distinct ipamBlock prefix lengths, longest first
	targets   map[netip.Prefix]routeTarget
}

func newRouteResolver(v *store.View, node string, cfg snapshot.Config) *routeResolver {
	r := &routeResolver{
		node: node, cfg: cfg,
		nodeByKey: map[string]*model.Node{},
		blockAt:   map[netip.Prefix]int{},
		targets:   map[netip.Prefix]routeTarget{},
	}
	for n := range store.List[*model.Node](v, model.KindNode) {
		r.nodes = append(r.nodes, n)
		r.nodeByKey[n.Key.Name] = n
	}
	slices.SortFunc(r.nodes, func(a, b *model.Node) int { return cmp.Compare(a.Key.Name, b.Key.Name) })
	r.local = r.nodeByKey[node]

	for p := range store.List[*model.IPPool](v, model.KindIPPool) {
		if p.CIDR.IsValid() {
			r.pools = append(r.pools, p)
		}
	}
	slices.SortFunc(r.pools, func(a, b *model.IPPool) int {
		return cmp.Or(cmpPrefix(a.CIDR, b.CIDR), cmp.Compare(a.Key.Name, b.Key.Name))
	})

	// IPAM blocks carry their affinity; a confirmed BlockAffinity stands in for a ipamBlock
	// the store does not hold.
	for b := range store.List[*model.IPAMBlock](v, model.KindIPAMBlock) {
		r.addBlock(b.CIDR, b.AffinityNode)
	}
	for a := range store.List[*model.BlockAffinity](v, model.KindBlockAffinity) {
		if a.State == "" || a.State == "confirmed" {
			r.addBlock(a.CIDR, a.Node)
		}
	}
	for _, b := range r.blocks {
		if !slices.Contains(r.blockLens, b.cidr.Bits()) {
			r.blockLens = append(r.blockLens, b.cidr.Bits())
		}
	}
	slices.SortFunc(r.blockLens, func(a, b int) int { return cmp.Compare(b, a) })
	return r
}

// addBlock records a ipamBlock unless one with the same CIDR is already known: IPAMBlocks are
// added before BlockAffinities, each in store ID order, so the first one wins.
func (r *routeResolver) addBlock(cidr netip.Prefix, node string) {
	if !cidr.IsValid() {
		return
	}
	cidr = cidr.Masked()
	if _, ok := r.blockAt[cidr]; ok {
		return
	}
	r.blockAt[cidr] = len(r.blocks)
	r.blocks = append(r.blocks, ipamBlock{cidr: cidr, node: node})
}

// blockFor returns the most specific ipamBlock containing p.
func (r *routeResolver) blockFor(p netip.Prefix) (ipamBlock, bool) {
	for _, bits := range r.blockLens {
		if bits > p.Bits() {
			continue
		}
		if i, ok := r.blockAt[netip.PrefixFrom(p.Addr(), bits).Masked()]; ok && r.blocks[i].cidr.Addr().BitLen() == p.Addr().BitLen() {
			return r.blocks[i], true
		}
	}
	return ipamBlock{}, false
}

// poolFor returns the most specific pool containing p.
func (r *routeResolver) poolFor(p netip.Prefix) *model.IPPool {
	var best *model.IPPool
	for _, pool := range r.pools {
		if pool.CIDR.Bits() <= p.Bits() && pool.CIDR.Contains(p.Addr()) && (best == nil || pool.CIDR.Bits() > best.CIDR.Bits()) {
			best = pool
		}
	}
	return best
}

// add records dst's routeTarget unless a stronger (or an equal, earlier) one is already there.
func (r *routeResolver) add(dst netip.Prefix, t routeTarget) {
	if old, ok := r.targets[dst]; ok && old.kind >= t.kind {
		return
	}
	r.targets[dst] = t
}

// route turns a destination's routeTarget into a route, if Felix would program one.
func (r *routeResolver) route(dst netip.Prefix, t routeTarget) (snapshot.Route, bool) {
	if t.kind == targetLocalWorkload {
		return snapshot.Route{Dst: dst, Type: snapshot.RouteWorkload, Interface: t.iface}, true
	}
	pool := r.poolFor(dst)
	if pool == nil {
		return snapshot.Route{}, false
	}
	v6 := dst.Addr().Is6()
	vxlan := pool.VXLANMode == model.EncapAlways || pool.VXLANMode == model.EncapCrossSubnet
	ipip := pool.IPIPMode == model.EncapAlways || pool.IPIPMode == model.EncapCrossSubnet
	vxlanOn := r.cfg.VXLANEnabled
	if v6 {
		vxlanOn = r.cfg.VXLANEnabledV6
	}
	if (vxlan && !vxlanOn) || (!vxlan && ipip) {
		return snapshot.Route{}, false
	}

	if t.node == r.node {
		// A local block: drop what no more specific route claims. /32 and /128 blocks are
		// left alone so they never shadow the workload route CNI is about to add.
		if t.kind == targetBlock && dst.Bits() < dst.Addr().BitLen() {
			return snapshot.Route{Dst: dst, Type: snapshot.RouteBlackhole}, true
		}
		return snapshot.Route{}, false
	}

	remote := r.nodeByKey[t.node]
	if remote == nil {
		return snapshot.Route{}, false
	}
	nodeIP := remote.IPv4Address
	if v6 {
		nodeIP = remote.IPv6Address
	}
	crossSubnet := pool.VXLANMode == model.EncapCrossSubnet || pool.IPIPMode == model.EncapCrossSubnet
	if (crossSubnet || !vxlan) && nodeIP.IsValid() && r.sameSubnet(nodeIP.Addr()) {
		return snapshot.Route{Dst: dst, Type: snapshot.RouteDirect, Gateway: nodeIP.Addr(), Node: t.node}, true
	}
	if !vxlan {
		return snapshot.Route{}, false
	}

	dev, localTunnel, remoteTunnel := VXLANDevice, r.cfg.VXLANTunnelAddr, remote.VXLANTunnelAddr
	if v6 {
		dev, localTunnel, remoteTunnel = VXLANDeviceV6, r.cfg.VXLANTunnelAddrV6, remote.VXLANTunnelAddrV6
	}
	// Both ends need a VTEP: this node to have a VXLAN device, the remote node to have an
	// FDB/neighbour entry to send to.
	localIP := r.cfg.NodeIPv4
	if v6 {
		localIP = r.cfg.NodeIPv6
	}
	if !localTunnel.IsValid() || !localIP.IsValid() || !remoteTunnel.IsValid() || !nodeIP.IsValid() {
		return snapshot.Route{}, false
	}
	if t.kind == targetTunnel {
		return snapshot.Route{Dst: dst, Type: snapshot.RouteHost, Interface: dev, Node: t.node}, true
	}
	return snapshot.Route{Dst: dst, Type: snapshot.RouteVXLAN, Interface: dev, Gateway: remoteTunnel, Node: t.node}, true
}

// sameSubnet reports whether addr lies in this node's own subnet of its family.
func (r *routeResolver) sameSubnet(addr netip.Addr) bool {
	if r.local == nil {
		return false
	}
	own := r.local.IPv4Address
	if addr.Is6() {
		own = r.local.IPv6Address
	}
	return own.IsValid() && own.Contains(addr)
}
