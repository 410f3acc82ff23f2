package render

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/felis-dev/felis/snapshot"
)

// Felix's defaults for a FelixConfiguration that leaves the VXLAN fields out.
const (
	defaultVNI  = 4096
	defaultPort = 4789
)

// Options are the node facts Render needs beyond the snapshot.
type Options struct {
	// DefaultRPFilter is the value of net.ipv4.conf.default.rp_filter on the node; Felix gives
	// every workload interface this value unless the endpoint may spoof sources (then 0).
	// Empty: felis leaves rp_filter alone.
	DefaultRPFilter string
}

// Render returns the kernel objects snap asks for. Invalid pieces (a route without a
// destination, a VTEP with a bad MAC, ...) are left out and reported, each naming the
// snapshot object and field; the rest is rendered regardless.
func Render(snap snapshot.Snapshot, opts Options) (State, error) {
	var st State
	var errs []error
	cfg := snap.Config
	proto := cfg.RouteProtocol
	if proto == 0 {
		proto = DefaultProtocol
	}

	devs := map[bool]string{} // IPv6? -> device felis wants for that family
	for _, fam := range []struct {
		v6      bool
		on      bool
		name    string
		tunnel  netip.Addr
		mac     string
		node    netip.Prefix
		mtu     int
		macName string
	}{
		{false, cfg.VXLANEnabled, VXLANDevice, cfg.VXLANTunnelAddr, cfg.VXLANTunnelMAC, cfg.NodeIPv4, cfg.VXLANMTU, "vxlanTunnelMAC"},
		{true, cfg.VXLANEnabledV6, VXLANDeviceV6, cfg.VXLANTunnelAddrV6, cfg.VXLANTunnelMACV6, cfg.NodeIPv6, cfg.VXLANMTUV6, "vxlanTunnelMACV6"},
	} {
		// Like Felix, a family's device exists only while VXLAN is on and this node has both a
		// tunnel address and an underlay address of that family.
		if !fam.on || !fam.tunnel.IsValid() || !fam.node.IsValid() {
			continue
		}
		mac, err := canonicalMAC(fam.mac)
		if err != nil {
			errs = append(errs, fmt.Errorf("snapshot config.%s: %w", fam.macName, err))
			continue
		}
		l := Link{
			Name: fam.name, VNI: cmpOr(cfg.VXLANVNI, defaultVNI), Port: cmpOr(cfg.VXLANPort, defaultPort),
			Local: fam.node.Addr(), MTU: fam.mtu, MAC: mac, Up: true,
			Addrs: []netip.Prefix{netip.PrefixFrom(fam.tunnel, fam.tunnel.BitLen())},
		}
		st.Links = append(st.Links, l)
		devs[fam.v6] = fam.name
	}

	for i, v := range snap.VTEPs {
		dev, ok := devs[v.IPv6]
		if !ok {
			continue // no local device of that family: nothing to reach the VTEP with
		}
		where := fmt.Sprintf("snapshot vteps[%d] (node %s)", i, v.Node)
		mac, err := canonicalMAC(v.MAC)
		switch {
		case err != nil || mac == "":
			errs = append(errs, fmt.Errorf("%s: mac %q: want a MAC address", where, v.MAC))
			continue
		case !v.TunnelIP.IsValid() || v.TunnelIP.Is6() != v.IPv6:
			errs = append(errs, fmt.Errorf("%s: tunnelIP %v: want an IPv%d address", where, v.TunnelIP, family(v.IPv6)))
			continue
		case !v.ParentIP.IsValid() || v.ParentIP.Is6() != v.IPv6:
			errs = append(errs, fmt.Errorf("%s: parentIP %v: want an IPv%d address", where, v.ParentIP, family(v.IPv6)))
			continue
		}
		st.Neighs = append(st.Neighs, Neigh{Dev: dev, IP: v.TunnelIP, MAC: mac})
		st.FDB = append(st.FDB, FDB{Dev: dev, MAC: mac, Dst: v.ParentIP})
	}

	seenIface := map[string]bool{}
	for _, ep := range snap.Endpoints {
		if ep.Interface == "" || seenIface[ep.Interface] {
			continue
		}
		seenIface[ep.Interface] = true
		st.Sysctls = append(st.Sysctls, interfaceSysctls(ep, opts)...)
		if slices.ContainsFunc(ep.Addrs, func(p netip.Prefix) bool { return p.Addr().Is6() }) {
			st.ProxyNeighs = append(st.ProxyNeighs, ProxyNeigh{Dev: ep.Interface, IP: PodGatewayV6})
		}
	}

	st.Routes = make([]Route, 0, len(snap.Routes))
	for i, r := range snap.Routes {
		rt, err := route(r, proto, devs)
		if err != nil {
			errs = append(errs, fmt.Errorf("snapshot routes[%d] (%s %v): %w", i, r.Type, r.Dst, err))
			continue
		}
		st.Routes = append(st.Routes, rt)
	}
	st.Sort()
	// Two objects with one key: keep the first, as the kernel can hold only one.
	st.Routes = dedupe(st.Routes, Route.Key, &errs, "snapshot routes: %v: more than one route for this destination; kept %q")
	st.Neighs = dedupe(st.Neighs, Neigh.Key, &errs, "snapshot vteps: %v: two VTEPs share this tunnel address; kept %q")
	st.FDB = dedupe(st.FDB, FDB.Key, &errs, "snapshot vteps: %v: two VTEPs share this MAC; kept %q")
	return st, errors.Join(errs...)
}

// dedupe drops the elements of a key-sorted slice whose key equals the previous one's.
func dedupe[V fmt.Stringer, K comparable](vs []V, key func(V) K, errs *[]error, format string) []V {
	out := vs[:0]
	for _, v := range vs {
		if n := len(out); n > 0 && key(out[n-1]) == key(v) {
			*errs = append(*errs, fmt.Errorf(format, key(v), out[n-1].String()))
			continue
		}
		out = append(out, v)
	}
	return out
}

// route converts one snapshot route.
func route(r snapshot.Route, proto int, devs map[bool]string) (Route, error) {
	if !r.Dst.IsValid() {
		return Route{}, errors.New("dst: missing or invalid prefix")
	}
	dst := r.Dst.Masked()
	out := Route{Table: TableMain, Dst: dst, Type: Unicast, Protocol: proto}
	if r.Gateway.IsValid() && r.Gateway.Is6() != dst.Addr().Is6() {
		return Route{}, fmt.Errorf("gateway %v: not the destination's address family", r.Gateway)
	}
	vxlanDev := func() string {
		if r.Interface != "" {
			return r.Interface
		}
		if d, ok := devs[dst.Addr().Is6()]; ok {
			return d
		}
		if dst.Addr().Is6() {
			return VXLANDeviceV6
		}
		return VXLANDevice
	}
	switch r.Type {
	case snapshot.RouteWorkload:
		if r.Interface == "" {
			return Route{}, errors.New("interface: a workload route needs the host-side interface")
		}
		out.Dev, out.Scope = r.Interface, ScopeLink
	case snapshot.RouteVXLAN:
		if !r.Gateway.IsValid() {
			return Route{}, errors.New("gateway: a VXLAN route needs the remote tunnel address")
		}
		out.Dev, out.Gateway, out.OnLink = vxlanDev(), r.Gateway, true
	case snapshot.RouteHost:
		// The remote tunnel address itself: on-link on the device, resolved by the
		// permanent neighbour entry for that address.
		out.Dev, out.Scope = vxlanDev(), ScopeLink
	case snapshot.RouteDirect:
		if !r.Gateway.IsValid() {
			return Route{}, errors.New("gateway: a direct route needs the remote node address")
		}
		out.Gateway = r.Gateway
	case snapshot.RouteBlackhole:
		out.Type = Blackhole
	default:
		return Route{}, fmt.Errorf("type %q: unknown route type", r.Type)
	}
	if (out.Dev == VXLANDevice || out.Dev == VXLANDeviceV6) && devs[out.Dev == VXLANDeviceV6] != out.Dev {
		return Route{}, fmt.Errorf("interface: %s is not wanted on this node (VXLAN off for the family, or no tunnel or node address)", out.Dev)
	}
	if dst.Addr().Is6() {
		out.Scope = ScopeUniverse // IPv6 routes have no scope: the kernel reports every one as global
	}
	return out, nil
}

// interfaceSysctls are the settings Felix's endpoint managers write for a workload interface:
// RAs off; IPv4 route_localnet, proxy ARP without delay, forwarding and rp_filter; IPv6 (when
// the endpoint has an IPv6 address) proxy NDP and forwarding.
func interfaceSysctls(ep snapshot.Endpoint, opts Options) []Sysctl {
	iface := ep.Interface
	out := []Sysctl{
		{"ipv6", "conf", iface, "accept_ra", "0"},
		{"ipv4", "conf", iface, "route_localnet", "1"},
		{"ipv4", "neigh", iface, "proxy_delay", "0"},
		{"ipv4", "conf", iface, "proxy_arp", "1"},
		{"ipv4", "conf", iface, "forwarding", "1"},
	}
	rp := opts.DefaultRPFilter
	if len(ep.AllowSpoofedSources) > 0 {
		rp = "0"
	}
	if rp != "" {
		out = append(out, Sysctl{"ipv4", "conf", iface, "rp_filter", rp})
	}
	for _, a := range ep.Addrs {
		if a.Addr().Is6() {
			out = append(out,
				Sysctl{"ipv6", "conf", iface, "proxy_ndp", "1"},
				Sysctl{"ipv6", "conf", iface, "forwarding", "1"})
			break
		}
	}
	return out
}

// canonicalMAC returns s in net.HardwareAddr's lower-case colon form ("" stays "").
func canonicalMAC(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	hw, err := net.ParseMAC(s)
	if err != nil || len(hw) != 6 {
		return "", fmt.Errorf("%q: want a 6-byte MAC address", s)
	}
	return hw.String(), nil
}

func cmpOr(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

func family(v6 bool) int {
	if v6 {
		return 6
	}
	return 4
}
