package netlink

import (
	"cmp"
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"

	"github.com/felis-dev/felis/appliers/netlink/render"
	"github.com/felis-dev/felis/diff"
)

// Fake is an in-memory kernel with the semantics the applier relies on: routes keyed by
// table, destination and metric, of any protocol; links (felis's VXLAN devices and stand-ins
// for workload veths and the uplink) with addresses; neighbour and FDB entries per device;
// per-interface sysctls that exist while their interface does. Deleting a link drops its
// routes, neighbours, FDB entries and sysctls; a link going down drops its routes, as the
// kernel does. Errors are the kernel's errnos. It is safe for concurrent use.
type Fake struct {
	mu      sync.Mutex
	links   map[string]*fakeLink
	routes  map[fakeRouteKey]render.Route
	neighs  map[string]render.Neigh // by Neigh.Key
	proxies map[string]render.ProxyNeigh
	fdb     map[string]render.FDB // by FDB.Key
	sysctls map[string]string     // by dotted key
}

type fakeLink struct {
	render.Link
	vxlan bool
}

type fakeRouteKey struct {
	table  int
	dst    netip.Prefix
	metric int
}

// NewFake returns an empty fake kernel.
func NewFake() *Fake {
	return &Fake{
		links: map[string]*fakeLink{}, routes: map[fakeRouteKey]render.Route{},
		neighs: map[string]render.Neigh{}, proxies: map[string]render.ProxyNeigh{}, fdb: map[string]render.FDB{}, sysctls: map[string]string{},
	}
}

// interfaceSysctlDefaults are the values a new interface starts with in the fake (the
// kernel's defaults on a node with forwarding on).
var interfaceSysctlDefaults = []render.Sysctl{
	{Family: "ipv4", Table: "conf", Name: "forwarding", Value: "1"},
	{Family: "ipv4", Table: "conf", Name: "proxy_arp", Value: "0"},
	{Family: "ipv4", Table: "conf", Name: "route_localnet", Value: "0"},
	{Family: "ipv4", Table: "conf", Name: "rp_filter", Value: "2"},
	{Family: "ipv4", Table: "neigh", Name: "proxy_delay", Value: "80"},
	{Family: "ipv6", Table: "conf", Name: "accept_ra", Value: "1"},
	{Family: "ipv6", Table: "conf", Name: "forwarding", Value: "1"},
	{Family: "ipv6", Table: "conf", Name: "proxy_ndp", Value: "0"},
}

// AddInterface creates a non-felis interface (a workload's host-side veth, an uplink), up,
// with addrs (their prefixes are connected subnets, as the kernel's prefix routes make them).
func (f *Fake) AddInterface(name string, addrs ...netip.Prefix) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.links[name]; ok {
		return fmt.Errorf("ip link add %s: %w", name, syscall.EEXIST)
	}
	f.addLinkLocked(&fakeLink{Link: render.Link{Name: name, Up: true, Addrs: slices.Clone(addrs)}})
	return nil
}

// DeleteInterface removes a link of any kind, with everything on it.
func (f *Fake) DeleteInterface(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.delLinkLocked(name)
}

// SetMTU changes a link's MTU, as `ip link set NAME mtu N` would behind felis's back.
func (f *Fake) SetMTU(name string, mtu int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	l, ok := f.links[name]
	if !ok {
		return fmt.Errorf("ip link set %s mtu %d: %w", name, mtu, syscall.ENODEV)
	}
	l.MTU = mtu
	return nil
}

// SetUp sets a link up or down behind felis's back; down drops its routes, as the kernel does.
func (f *Fake) SetUp(name string, up bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	l, ok := f.links[name]
	if !ok {
		return fmt.Errorf("ip link set %s: %w", name, syscall.ENODEV)
	}
	if l.Up && !up {
		f.linkDownLocked(name)
	}
	l.Up = up
	return nil
}

// AddRoute adds any route (any protocol), as `ip route add` would; no ownership checks.
func (f *Fake) AddRoute(r render.Route) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.routeAddLocked(r, false)
}

// DeleteRoute removes the route at r's table, destination and metric, whatever its owner.
func (f *Fake) DeleteRoute(r render.Route) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := fakeRouteKey{tableOf(r), r.Dst, r.Metric}
	if _, ok := f.routes[k]; !ok {
		return fmt.Errorf("ip route del %s: %w", r, syscall.ESRCH)
	}
	delete(f.routes, k)
	return nil
}

// HasRoute reports whether a route equal to r (any owner) is in the fake.
func (f *Fake) HasRoute(r render.Route) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	r.Table = tableOf(r)
	got, ok := f.routes[fakeRouteKey{r.Table, r.Dst, r.Metric}]
	return ok && got == r
}

// Dump renders everything the fake holds, sorted: links, sysctls, neighbours, FDB, routes.
func (f *Fake) Dump() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var lines []string
	for _, l := range f.links {
		if l.vxlan {
			lines = append(lines, "0 link "+l.Link.String())
		} else {
			lines = append(lines, fmt.Sprintf("0 link %s up=%v addrs=%v", l.Name, l.Up, l.Addrs))
		}
	}
	for k, v := range f.sysctls {
		lines = append(lines, "1 sysctl "+k+" = "+v)
	}
	for _, n := range f.neighs {
		lines = append(lines, "2 neigh "+n.String())
	}
	for _, p := range f.proxies {
		lines = append(lines, "2 neigh "+p.String())
	}
	for _, e := range f.fdb {
		lines = append(lines, "3 fdb "+e.String())
	}
	rs := make([]render.Route, 0, len(f.routes))
	for _, r := range f.routes {
		rs = append(rs, r)
	}
	slices.SortFunc(rs, func(a, b render.Route) int { return cmp.Or(a.Key().Compare(b.Key()), cmp.Compare(a.Metric, b.Metric)) })
	slices.Sort(lines)
	var b strings.Builder
	for _, l := range lines {
		b.WriteString(l[2:] + "\n")
	}
	for _, r := range rs {
		b.WriteString("route " + r.String() + "\n")
	}
	return b.String()
}

// Observe implements Kernel.
func (f *Fake) Observe(ctx context.Context, q Query) (render.State, error) {
	if err := ctx.Err(); err != nil {
		return render.State{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var st render.State
	want := map[string]bool{}
	for _, d := range q.Devices {
		if l, ok := f.links[d]; ok && l.vxlan {
			want[d] = true
			c := l.Link
			c.Addrs = slices.Clone(c.Addrs)
			st.Links = append(st.Links, c)
		}
	}
	for _, n := range f.neighs {
		if want[n.Dev] {
			st.Neighs = append(st.Neighs, n)
		}
	}
	for _, e := range f.fdb {
		if want[e.Dev] {
			st.FDB = append(st.FDB, e)
		}
	}
	for _, s := range q.Sysctls {
		if v, ok := f.sysctls[s.Key()]; ok {
			s.Value = v
			st.Sysctls = append(st.Sysctls, s)
		}
	}
	for _, p := range q.ProxyNeighs {
		if _, ok := f.proxies[p.Key()]; ok {
			st.ProxyNeighs = append(st.ProxyNeighs, p)
		}
	}
	for _, r := range f.routes {
		if r.Protocol == q.Protocol {
			st.Routes = append(st.Routes, r)
		}
	}
	// Table, destination and metric are unique: an unstable sort is deterministic here.
	slices.SortFunc(st.Routes, func(a, b render.Route) int {
		return cmp.Or(a.Key().Compare(b.Key()), cmp.Compare(a.Metric, b.Metric))
	})
	st.Sort()
	st.Routes, st.StrayRoutes = splitStrays(st.Routes)
	return st, nil
}

// splitStrays moves every route that shares its key with the previous one (key-sorted input)
// to strays, keeping the lowest metric in routes.
func splitStrays(rs []render.Route) (routes, strays []render.Route) {
	byKeyMetric := func(a, b render.Route) int { return cmp.Or(a.Key().Compare(b.Key()), cmp.Compare(a.Metric, b.Metric)) }
	if !slices.IsSortedFunc(rs, byKeyMetric) {
		slices.SortFunc(rs, byKeyMetric) // table, destination and metric are unique in the kernel
	}
	out := rs[:0]
	for _, r := range rs {
		if n := len(out); n > 0 && out[n-1].Key() == r.Key() {
			strays = append(strays, r)
			continue
		}
		out = append(out, r)
	}
	return out, strays
}

// Do implements Kernel.
func (f *Fake) Do(ctx context.Context, ops []render.Op) []error {
	f.mu.Lock()
	defer f.mu.Unlock()
	errs := make([]error, len(ops))
	for i, op := range ops {
		if err := ctx.Err(); err != nil {
			errs[i] = err
			continue
		}
		errs[i] = f.doLocked(op)
	}
	return errs
}

func (f *Fake) doLocked(op render.Op) error {
	switch x := op.Object.(type) {
	case render.Route:
		switch op.Kind {
		case diff.Add:
			return f.routeAddLocked(x, false)
		case diff.Replace:
			return f.routeAddLocked(x, true)
		default:
			return f.routeDelLocked(x)
		}
	case render.Link:
		switch op.Kind {
		case diff.Add:
			if _, ok := f.links[x.Name]; ok {
				return syscall.EEXIST
			}
			l := &fakeLink{Link: x, vxlan: true}
			l.Addrs = slices.Clone(x.Addrs)
			if l.MTU == 0 {
				l.MTU = 1450 // the kernel's default for a VXLAN device without a lower device
				if x.Local.Is6() {
					l.MTU = 1430
				}
			}
			if l.MAC == "" {
				l.MAC = "02:00:00:00:00:01"
			}
			f.addLinkLocked(l)
			return nil
		case diff.Replace:
			l, ok := f.links[x.Name]
			if !ok {
				return syscall.ENODEV
			}
			if x.MTU != 0 {
				l.MTU = x.MTU
			}
			if x.MAC != "" {
				l.MAC = x.MAC
			}
			l.Addrs = slices.Clone(x.Addrs)
			if l.Up && !x.Up {
				f.linkDownLocked(x.Name)
			}
			l.Up = x.Up
			return nil
		default:
			return f.delLinkLocked(x.Name)
		}
	case render.Neigh:
		if _, ok := f.links[x.Dev]; !ok {
			return syscall.ENODEV
		}
		if op.Kind == diff.Delete {
			if _, ok := f.neighs[x.Key()]; !ok {
				return syscall.ENOENT
			}
			delete(f.neighs, x.Key())
			return nil
		}
		f.neighs[x.Key()] = x
		return nil
	case render.FDB:
		if _, ok := f.links[x.Dev]; !ok {
			return syscall.ENODEV
		}
		if op.Kind == diff.Delete {
			if _, ok := f.fdb[x.Key()]; !ok {
				return syscall.ENOENT
			}
			delete(f.fdb, x.Key())
			return nil
		}
		f.fdb[x.Key()] = x
		return nil
	case render.ProxyNeigh:
		if _, ok := f.links[x.Dev]; !ok {
			return syscall.ENODEV
		}
		if op.Kind == diff.Delete {
			if _, ok := f.proxies[x.Key()]; !ok {
				return syscall.ENOENT
			}
			delete(f.proxies, x.Key())
			return nil
		}
		f.proxies[x.Key()] = x
		return nil
	case render.Sysctl:
		if op.Kind == diff.Delete {
			return syscall.EPERM
		}
		if _, ok := f.sysctls[x.Key()]; !ok {
			return syscall.ENOENT
		}
		f.sysctls[x.Key()] = x.Value
		return nil
	}
	return syscall.EINVAL
}

func (f *Fake) addLinkLocked(l *fakeLink) {
	f.links[l.Name] = l
	for _, s := range interfaceSysctlDefaults {
		s.Interface = l.Name
		f.sysctls[s.Key()] = s.Value
	}
}

func (f *Fake) delLinkLocked(name string) error {
	if _, ok := f.links[name]; !ok {
		return syscall.ENODEV
	}
	delete(f.links, name)
	for k, r := range f.routes {
		if r.Dev == name || (r.Dev == "" && r.Gateway.IsValid() && !f.reachableLocked(r.Gateway)) {
			delete(f.routes, k)
		}
	}
	for k, n := range f.neighs {
		if n.Dev == name {
			delete(f.neighs, k)
		}
	}
	for k, e := range f.fdb {
		if e.Dev == name {
			delete(f.fdb, k)
		}
	}
	for k, p := range f.proxies {
		if p.Dev == name {
			delete(f.proxies, k)
		}
	}
	for _, s := range interfaceSysctlDefaults {
		s.Interface = name
		delete(f.sysctls, s.Key())
	}
	return nil
}

// linkDownLocked drops the routes through a link, as the kernel does when it goes down (both
// families: TestKernelLinkDown checks).
func (f *Fake) linkDownLocked(name string) {
	for k, r := range f.routes {
		if r.Dev == name {
			delete(f.routes, k)
		}
	}
}

// reachableLocked reports whether gw is on a connected subnet of an up link.
func (f *Fake) reachableLocked(gw netip.Addr) bool {
	for _, l := range f.links {
		if !l.Up {
			continue
		}
		for _, a := range l.Addrs {
			if a.Bits() < a.Addr().BitLen() && a.Contains(gw) {
				return true
			}
		}
	}
	return false
}

func tableOf(r render.Route) int {
	if r.Table == 0 {
		return render.TableMain
	}
	return r.Table
}

// routeAddLocked adds r (replace: or overwrites the route at its key), checking what the kernel
// checks: the device exists and is up, a gateway is reachable unless on-link.
func (f *Fake) routeAddLocked(r render.Route, replace bool) error {
	r.Table = tableOf(r)
	k := fakeRouteKey{r.Table, r.Dst, r.Metric}
	if _, ok := f.routes[k]; ok && !replace {
		return syscall.EEXIST
	}
	if r.Dev != "" {
		l, ok := f.links[r.Dev]
		if !ok {
			return syscall.ENODEV
		}
		if !l.Up {
			return syscall.ENETDOWN // both families refuse a route to a down device
		}
	}
	if r.Gateway.IsValid() && !r.OnLink && !f.reachableLocked(r.Gateway) {
		return syscall.ENETUNREACH
	}
	if r.OnLink && r.Dev == "" {
		return syscall.EINVAL
	}
	if r.Gateway.IsValid() && !r.OnLink {
		r.Dev = "" // the kernel picks it; felis does not model it
	}
	f.routes[k] = r
	return nil
}

func (f *Fake) routeDelLocked(r render.Route) error {
	k := fakeRouteKey{tableOf(r), r.Dst, r.Metric}
	old, ok := f.routes[k]
	if !ok || old.Protocol != r.Protocol {
		return syscall.ESRCH
	}
	delete(f.routes, k)
	return nil
}
