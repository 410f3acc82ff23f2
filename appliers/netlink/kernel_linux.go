package netlink

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"

	vnl "github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/felis-dev/felis/appliers/netlink/render"
	"github.com/felis-dev/felis/diff"
)

// Netlink is the real kernel: routes, links and neighbours over rtnetlink, sysctls through
// /proc/sys, all in one network namespace.
type Netlink struct {
	h  *vnl.Handle
	ns netns.NsHandle // the target namespace for /proc/sys; closed (-1): the caller's own

	mu         sync.Mutex // serialises use of rs and routesHint
	rs         *routeSocket
	routesHint int            // capacity for the next route dump: the last one's size and some
	imu        sync.Mutex     // guards indexes
	indexes    map[string]int // interface name -> index, see Do
}

// NewNetlink returns the kernel of network namespace ns; pass netns.None() for the current one.
func NewNetlink(ns netns.NsHandle) (*Netlink, error) {
	var h *vnl.Handle
	var err error
	if ns.IsOpen() {
		h, err = vnl.NewHandleAt(ns)
	} else {
		h, err = vnl.NewHandle()
	}
	if err != nil {
		return nil, fmt.Errorf("netlink: open rtnetlink socket: %w", err)
	}
	k := &Netlink{h: h, ns: ns}
	if k.rs, err = newRouteSocket(k); err != nil {
		h.Close()
		return nil, err
	}
	return k, nil
}

// Close releases the netlink sockets (not the namespace handle, which the caller owns).
func (k *Netlink) Close() {
	k.h.Close()
	k.rs.close()
}

// DefaultRPFilter reads net.ipv4.conf.default.rp_filter in the kernel's namespace: the value
// render.Options.DefaultRPFilter wants (Felix gives it to every workload interface).
func (k *Netlink) DefaultRPFilter() (string, error) {
	var v string
	err := k.inNamespace(func() error {
		b, err := os.ReadFile("/proc/sys/net/ipv4/conf/default/rp_filter")
		v = strings.TrimSpace(string(b))
		return err
	})
	if err != nil {
		return "", fmt.Errorf("netlink: sysctl net.ipv4.conf.default.rp_filter: %w", err)
	}
	return v, nil
}

// Observe implements Kernel.
func (k *Netlink) Observe(ctx context.Context, q Query) (render.State, error) {
	protocol, devices, sysctls := q.Protocol, q.Devices, q.Sysctls
	var st render.State
	links, err := k.h.LinkList()
	if err != nil {
		return st, fmt.Errorf("netlink: ip link show: %w", err)
	}
	names := make(map[int]string, len(links))
	byName := make(map[string]vnl.Link, len(links))
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
		byName[l.Attrs().Name] = l
	}
	for _, d := range devices {
		l, ok := byName[d]
		if !ok {
			continue
		}
		link, err := k.observeLink(l)
		if err != nil {
			return st, err
		}
		st.Links = append(st.Links, link)
		idx := l.Attrs().Index
		for _, fam := range []int{vnl.FAMILY_V4, vnl.FAMILY_V6} {
			ns, err := k.h.NeighList(idx, fam)
			if err != nil {
				return st, fmt.Errorf("netlink: ip neigh show dev %s: %w", d, err)
			}
			for _, n := range ns {
				ip, ok := netip.AddrFromSlice(n.IP)
				if !ok || n.State&unix.NUD_PERMANENT == 0 || len(n.HardwareAddr) == 0 {
					continue
				}
				st.Neighs = append(st.Neighs, render.Neigh{Dev: d, IP: ip.Unmap(), MAC: n.HardwareAddr.String()})
			}
		}
		fdb, err := k.h.NeighList(idx, unix.AF_BRIDGE)
		if err != nil {
			return st, fmt.Errorf("netlink: bridge fdb show dev %s: %w", d, err)
		}
		for _, n := range fdb {
			ip, ok := netip.AddrFromSlice(n.IP)
			if !ok || n.State&unix.NUD_PERMANENT == 0 || n.Flags&unix.NTF_SELF == 0 || len(n.HardwareAddr) == 0 {
				continue
			}
			st.FDB = append(st.FDB, render.FDB{Dev: d, MAC: n.HardwareAddr.String(), Dst: ip.Unmap()})
		}
	}

	k.imu.Lock()
	k.indexes = map[string]int{} // a full read starts from fresh interface indexes
	for i, n := range names {
		k.indexes[n] = i
	}
	k.imu.Unlock()
	k.mu.Lock()
	st.Routes = make([]render.Route, 0, k.routesHint)
	err = k.rs.dumpRoutes(protocol, names, func(r render.Route) { st.Routes = append(st.Routes, r) })
	k.routesHint = len(st.Routes) + len(st.Routes)/8
	k.mu.Unlock()
	if err != nil {
		return st, fmt.Errorf("netlink: ip route show table all proto %d: %w", protocol, err)
	}

	// Proxy entries: one dump per interface that should have some.
	byDev := map[string][]render.ProxyNeigh{}
	for _, p := range q.ProxyNeighs {
		byDev[p.Dev] = append(byDev[p.Dev], p)
	}
	for dev, want := range byDev {
		l, ok := byName[dev]
		if !ok {
			continue
		}
		have, err := k.h.NeighProxyList(l.Attrs().Index, vnl.FAMILY_V6)
		if err != nil {
			return st, fmt.Errorf("netlink: ip -6 neigh show proxy dev %s: %w", dev, err)
		}
		for _, p := range want {
			for _, n := range have {
				if ip, ok := netip.AddrFromSlice(n.IP); ok && ip == p.IP {
					st.ProxyNeighs = append(st.ProxyNeighs, p)
					break
				}
			}
		}
	}

	if len(sysctls) > 0 {
		err := k.inNamespace(func() error {
			for _, s := range sysctls {
				b, err := os.ReadFile(s.Path())
				if errors.Is(err, os.ErrNotExist) {
					continue // the interface is not there (yet)
				}
				if err != nil {
					return fmt.Errorf("netlink: sysctl %s: %w", s.Key(), err)
				}
				s.Value = strings.TrimSpace(string(b))
				st.Sysctls = append(st.Sysctls, s)
			}
			return nil
		})
		if err != nil {
			return st, err
		}
	}
	st.Sort()
	st.Routes, st.StrayRoutes = splitStrays(st.Routes)
	return st, ctx.Err()
}

// observeLink converts a felis-named link; one that is not VXLAN gets VNI 0 and port 0, so
// Plan re-creates it.
func (k *Netlink) observeLink(l vnl.Link) (render.Link, error) {
	a := l.Attrs()
	out := render.Link{Name: a.Name, MTU: a.MTU, MAC: a.HardwareAddr.String(), Up: a.Flags&net.FlagUp != 0}
	if v, ok := l.(*vnl.Vxlan); ok {
		out.VNI, out.Port, out.Learning = v.VxlanId, v.Port, v.Learning
		if ip, ok := netip.AddrFromSlice(v.SrcAddr); ok {
			out.Local = ip.Unmap()
		}
	}
	addrs, err := k.h.AddrList(l, vnl.FAMILY_ALL)
	if err != nil {
		return out, fmt.Errorf("netlink: ip addr show dev %s: %w", a.Name, err)
	}
	for _, ad := range addrs {
		p, ok := prefixOf(ad.IPNet)
		if !ok || p.Addr().IsLinkLocalUnicast() {
			continue // the kernel's own IPv6 link-local address
		}
		out.Addrs = append(out.Addrs, p)
	}
	return out, nil
}

// Do implements Kernel.
func (k *Netlink) Do(ctx context.Context, ops []render.Op) []error {
	errs := make([]error, len(ops))
	// Interface indexes are cached across calls: the kernel never hands out an index twice, so
	// a stale entry can only fail (ENODEV), never hit another interface; failures drop it.
	k.imu.Lock()
	if k.indexes == nil {
		k.indexes = map[string]int{}
	}
	idx := k.indexes
	k.imu.Unlock()
	index := func(name string) (int, error) {
		k.imu.Lock()
		i, ok := idx[name]
		k.imu.Unlock()
		if ok {
			return i, nil
		}
		l, err := k.h.LinkByName(name)
		if err != nil {
			var nf vnl.LinkNotFoundError
			if errors.As(err, &nf) {
				return 0, unix.ENODEV
			}
			return 0, err
		}
		k.imu.Lock()
		idx[name] = l.Attrs().Index
		k.imu.Unlock()
		return l.Attrs().Index, nil
	}
	defer func() {
		k.imu.Lock()
		defer k.imu.Unlock()
		for i, err := range errs {
			if err == nil {
				continue
			}
			switch x := ops[i].Object.(type) {
			case render.Route:
				delete(idx, x.Dev)
			case render.Neigh:
				delete(idx, x.Dev)
			case render.FDB:
				delete(idx, x.Dev)
			case render.ProxyNeigh:
				delete(idx, x.Dev)
			}
		}
	}()
	for i := 0; i < len(ops); i++ {
		if err := ctx.Err(); err != nil {
			errs[i] = err
			continue
		}
		// Runs of sysctl writes share one switch into the namespace.
		if _, ok := ops[i].Object.(render.Sysctl); ok {
			j := i
			for j < len(ops) {
				if _, ok := ops[j].Object.(render.Sysctl); !ok {
					break
				}
				j++
			}
			run := ops[i:j]
			err := k.inNamespace(func() error {
				for n, op := range run {
					s := op.Object.(render.Sysctl)
					errs[i+n] = unwrapPathError(os.WriteFile(s.Path(), []byte(s.Value), 0o644))
				}
				return nil
			})
			if err != nil {
				for n := i; n < j; n++ {
					errs[n] = err
				}
			}
			i = j - 1
			continue
		}
		// Runs of route ops go out in batches.
		if _, ok := ops[i].Object.(render.Route); ok {
			j := i
			for j < len(ops) {
				if _, ok := ops[j].Object.(render.Route); !ok {
					break
				}
				j++
			}
			k.mu.Lock()
			k.rs.writeRoutes(ops[i:j], errs[i:j], index)
			k.mu.Unlock()
			i = j - 1
			continue
		}
		errs[i] = k.do(ops[i], index)
		if l, ok := ops[i].Object.(render.Link); ok {
			k.imu.Lock()
			delete(idx, l.Name) // re-created devices get a new index
			k.imu.Unlock()
		}
	}
	return errs
}

func (k *Netlink) do(op render.Op, index func(string) (int, error)) error {
	switch x := op.Object.(type) {
	case render.Route:
		r, err := toNetlinkRoute(x, index)
		if err != nil {
			return err
		}
		switch op.Kind {
		case diff.Add:
			return k.h.RouteAdd(r)
		case diff.Replace:
			return k.h.RouteReplace(r)
		default:
			return k.h.RouteDel(r)
		}
	case render.Link:
		switch op.Kind {
		case diff.Add:
			return k.addLink(x)
		case diff.Replace:
			old, _ := op.Old.(render.Link)
			return k.updateLink(old, x)
		default:
			l, err := k.h.LinkByName(x.Name)
			if err != nil {
				return unix.ENODEV
			}
			return k.h.LinkDel(l)
		}
	case render.Neigh:
		i, err := index(x.Dev)
		if err != nil {
			return err
		}
		mac, err := net.ParseMAC(x.MAC)
		if err != nil {
			return err
		}
		n := &vnl.Neigh{LinkIndex: i, Family: family(x.IP), State: unix.NUD_PERMANENT, Type: unix.RTN_UNICAST, IP: x.IP.AsSlice(), HardwareAddr: mac}
		if op.Kind == diff.Delete {
			return k.h.NeighDel(n)
		}
		return k.h.NeighSet(n)
	case render.ProxyNeigh:
		i, err := index(x.Dev)
		if err != nil {
			return err
		}
		n := &vnl.Neigh{LinkIndex: i, Family: unix.AF_INET6, Flags: unix.NTF_PROXY, IP: x.IP.AsSlice()}
		if op.Kind == diff.Delete {
			return k.h.NeighDel(n)
		}
		return k.h.NeighSet(n)
	case render.FDB:
		i, err := index(x.Dev)
		if err != nil {
			return err
		}
		mac, err := net.ParseMAC(x.MAC)
		if err != nil {
			return err
		}
		n := &vnl.Neigh{LinkIndex: i, Family: unix.AF_BRIDGE, State: unix.NUD_PERMANENT, Flags: unix.NTF_SELF, IP: x.Dst.AsSlice(), HardwareAddr: mac}
		if op.Kind == diff.Delete {
			return k.h.NeighDel(n)
		}
		return k.h.NeighSet(n)
	}
	return unix.EINVAL
}

func (k *Netlink) addLink(x render.Link) error {
	attrs := vnl.LinkAttrs{Name: x.Name, MTU: x.MTU}
	if x.MAC != "" {
		mac, err := net.ParseMAC(x.MAC)
		if err != nil {
			return err
		}
		attrs.HardwareAddr = mac
	}
	v := &vnl.Vxlan{LinkAttrs: attrs, VxlanId: x.VNI, Port: x.Port, Learning: x.Learning}
	if x.Local.IsValid() {
		v.SrcAddr = x.Local.AsSlice()
	}
	if err := k.h.LinkAdd(v); err != nil {
		return err
	}
	l, err := k.h.LinkByName(x.Name)
	if err != nil {
		return err
	}
	return k.setLink(l, render.Link{Name: x.Name, MTU: x.MTU, MAC: x.MAC}, x)
}

func (k *Netlink) updateLink(old, x render.Link) error {
	l, err := k.h.LinkByName(x.Name)
	if err != nil {
		return unix.ENODEV
	}
	return k.setLink(l, old, x)
}

// setLink applies render.LinkChanges(old, x) to l.
func (k *Netlink) setLink(l vnl.Link, old, x render.Link) error {
	if x.MTU != 0 && x.MTU != old.MTU {
		if err := k.h.LinkSetMTU(l, x.MTU); err != nil {
			return err
		}
	}
	if x.MAC != "" && x.MAC != old.MAC {
		mac, err := net.ParseMAC(x.MAC)
		if err != nil {
			return err
		}
		if err := k.h.LinkSetHardwareAddr(l, mac); err != nil {
			return err
		}
	}
	adds, dels := diff.Members(x.Addrs, old.Addrs, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	for _, p := range dels {
		if err := k.h.AddrDel(l, &vnl.Addr{IPNet: ipNet(p)}); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return err
		}
	}
	for _, p := range adds {
		a := &vnl.Addr{IPNet: ipNet(p)}
		if p.Addr().Is6() {
			a.Flags = unix.IFA_F_NODAD // a tunnel address is unique by construction
		}
		if err := k.h.AddrReplace(l, a); err != nil {
			return err
		}
	}
	if x.Up != old.Up || x.Up {
		if x.Up {
			return k.h.LinkSetUp(l)
		}
		return k.h.LinkSetDown(l)
	}
	return nil
}

func toNetlinkRoute(x render.Route, index func(string) (int, error)) (*vnl.Route, error) {
	r := &vnl.Route{
		Table: x.Table, Dst: ipNet(x.Dst), Type: int(x.Type), Scope: vnl.Scope(x.Scope),
		Protocol: vnl.RouteProtocol(x.Protocol), Priority: x.Metric,
	}
	if x.Dst.Addr().Is6() {
		r.Family = unix.AF_INET6
	} else {
		r.Family = unix.AF_INET
	}
	if x.Gateway.IsValid() {
		r.Gw = x.Gateway.AsSlice()
	}
	if x.OnLink {
		r.Flags = unix.RTNH_F_ONLINK
	}
	if x.Dev != "" {
		i, err := index(x.Dev)
		if err != nil {
			return nil, err
		}
		r.LinkIndex = i
	}
	return r, nil
}

// inNamespace runs fn on an OS thread switched into the applier's namespace (or directly,
// when that is the caller's own).
func (k *Netlink) inNamespace(fn func() error) error {
	if !k.ns.IsOpen() {
		return fn()
	}
	ch := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			ch <- fmt.Errorf("netlink: read current namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(k.ns); err != nil {
			runtime.UnlockOSThread()
			ch <- fmt.Errorf("netlink: enter namespace: %w", err)
			return
		}
		err = fn()
		if serr := netns.Set(orig); serr != nil {
			ch <- errors.Join(err, fmt.Errorf("netlink: leave namespace: %w", serr))
			return // the thread stays locked and is discarded with this goroutine
		}
		runtime.UnlockOSThread()
		ch <- err
	}()
	return <-ch
}

// unwrapPathError returns the errno under a *PathError, so op errors read "ENOENT (...)".
func unwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func family(a netip.Addr) int {
	if a.Is6() {
		return unix.AF_INET6
	}
	return unix.AF_INET
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	ip, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	ip = ip.Unmap()
	if ip.Is4() && len(n.Mask) == 16 {
		ones -= 96
	}
	return netip.PrefixFrom(ip, ones), true
}
