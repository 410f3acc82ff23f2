package hns

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/felis-dev/felis/snapshot"
)

// Options tune the render.
type Options struct {
	// HostAddrs, when set, adds Calico's "allow-host-to-endpoint" rule: an In Allow at
	// HostToEndpointPriority from these addresses, ahead of all policy. It is outside the
	// snapshot's semantics (felis's evaluator polices host traffic like any other), so the
	// default is none.
	HostAddrs []netip.Prefix
	// MaxEntries bounds one direction's compiled list before priorities are assigned
	// (flattening Pass and negations can multiply rules). Zero means 100000.
	MaxEntries int
}

// Render computes the HNS state a snapshot asks for: one ACL list per local workload endpoint
// and one RemoteSubnetRoute per VXLAN route to a remote block. Endpoints whose policy HNS
// cannot express carry Err; route problems are returned in Desired.Errs.
func Render(s *snapshot.Snapshot, opts Options) Desired {
	if opts.MaxEntries == 0 {
		opts.MaxEntries = 100000
	}
	base := compiler{
		sets:        map[string]*snapshot.IPSet{},
		policies:    map[string]*snapshot.Policy{},
		profiles:    map[string]*snapshot.Profile{},
		maxEntries:  opts.MaxEntries,
		addrCache:   map[string]addrSet{},
		memberCache: map[memberKey][]box{},
	}
	for i := range s.IPSets {
		base.sets[s.IPSets[i].ID] = &s.IPSets[i]
	}
	for i := range s.Policies {
		base.policies[s.Policies[i].ID] = &s.Policies[i]
	}
	for i := range s.Profiles {
		base.profiles[s.Profiles[i].ID] = &s.Profiles[i]
	}
	var d Desired
	for i := range s.Endpoints {
		d.Endpoints = append(d.Endpoints, renderEndpoint(base, &s.Endpoints[i], opts))
	}
	slices.SortFunc(d.Endpoints, func(a, b EndpointACL) int { return strings.Compare(a.Endpoint, b.Endpoint) })
	d.Routes, d.Errs = renderRoutes(s)
	return d
}

func renderEndpoint(c compiler, ep *snapshot.Endpoint, opts Options) EndpointACL {
	acl := EndpointACL{Endpoint: ep.ID}
	for _, p := range ep.Addrs {
		acl.Addrs = append(acl.Addrs, p.Addr())
	}
	c.local = addrsOf(append(slices.Clone(ep.Addrs), ep.AllowSpoofedSources...))
	if c.local.empty() {
		c.local = fullAddrs() // no address to narrow the local side to
	}
	if len(opts.HostAddrs) > 0 {
		acl.Rules = append(acl.Rules, Rule{Direction: In, Priority: HostToEndpointPriority, Action: Allow,
			Type: Switch, Protocol: AnyProtocol, RemoteAddresses: addrsOf(opts.HostAddrs).allPrefixes()})
	}
	for _, dir := range []struct {
		inbound bool
		d       snapshot.Direction
	}{{true, ep.Ingress}, {false, ep.Egress}} {
		c.inbound = dir.inbound
		name := "egress"
		if dir.inbound {
			name = "ingress"
		}
		prog, err := c.program(dir.d)
		if err != nil {
			return EndpointACL{Endpoint: acl.Endpoint, Addrs: acl.Addrs, Err: fmt.Errorf("endpoint %s %s: %w", ep.ID, name, err)}
		}
		rules, err := c.toRules(optimize(prog))
		if err != nil {
			return EndpointACL{Endpoint: acl.Endpoint, Addrs: acl.Addrs, Err: fmt.Errorf("endpoint %s %s: %w", ep.ID, name, err)}
		}
		if err := assignPriorities(rules); err != nil {
			return EndpointACL{Endpoint: acl.Endpoint, Addrs: acl.Addrs, Err: fmt.Errorf("endpoint %s %s: %w", ep.ID, name, err)}
		}
		acl.Rules = append(acl.Rules, rules...)
	}
	return acl
}

func (a addrSet) allPrefixes() []netip.Prefix {
	return append(a.prefixes(true), a.prefixes(false)...)
}

// toRules turns compiled entries into HNS rules (one per address family and list chunk).
func (c *compiler) toRules(prog []entry) ([]Rule, error) {
	dir := Out
	if c.inbound {
		dir = In
	}
	var out []Rule
	for _, e := range prog {
		b := e.b
		local, remote, lPorts, rPorts := b.src, b.dst, b.sPort, b.dPort
		if c.inbound {
			local, remote, lPorts, rPorts = b.dst, b.src, b.dPort, b.sPort
		}
		proto := AnyProtocol
		if b.proto >= 0 {
			proto = uint16(b.proto)
		}
		portsRestricted := !lPorts.equal(fullPorts) || !rPorts.equal(fullPorts)
		if portsRestricted && proto != 6 && proto != 17 {
			name := "any protocol"
			if b.proto >= 0 {
				name = "protocol " + snapshot.ProtocolName(uint8(b.proto))
			}
			return nil, fmt.Errorf("port match on %s (HNS matches ports for TCP and UDP only): %w", name, ErrUnsupported)
		}
		var lp, rp []snapshot.PortRange
		if !lPorts.equal(fullPorts) {
			lp = portRanges(lPorts)
		}
		if !rPorts.equal(fullPorts) {
			rp = portRanges(rPorts)
		}
		action := Block
		if e.allow {
			action = Allow
		}
		unconstrained := func(v4 bool) bool {
			full := fullV6
			if v4 {
				full = fullV4
			}
			return remote.fam(v4).equal(full) && local.fam(v4).equal(c.local.fam(v4))
		}
		all := true
		for _, v4 := range []bool{true, false} {
			if !c.local.fam(v4).empty() && (local.fam(v4).empty() || !unconstrained(v4)) {
				all = false
			}
		}
		emit := func(la, ra []netip.Prefix) {
			for _, lc := range chunk(la) {
				for _, rc := range chunk(ra) {
					for _, lpc := range chunk(lp) {
						for _, rpc := range chunk(rp) {
							out = append(out, Rule{Direction: dir, Action: action, Type: Switch, Protocol: proto,
								LocalAddresses: lc, RemoteAddresses: rc, LocalPorts: lpc, RemotePorts: rpc})
						}
					}
				}
			}
		}
		if all {
			emit(nil, nil)
			continue
		}
		for _, v4 := range []bool{true, false} {
			if local.fam(v4).empty() {
				continue
			}
			var la, ra []netip.Prefix
			if !local.fam(v4).equal(c.local.fam(v4)) {
				la = local.prefixes(v4)
			}
			if unconstrained(v4) || !remote.fam(v4).equal(familyFull(v4)) {
				ra = remote.prefixes(v4)
			}
			emit(la, ra)
		}
	}
	return out, nil
}

func familyFull(v4 bool) spans {
	if v4 {
		return fullV4
	}
	return fullV6
}

// chunk splits a list into pieces of at most MaxListEntries; an empty list is one empty piece.
func chunk[T any](l []T) [][]T {
	if len(l) == 0 {
		return [][]T{nil}
	}
	var out [][]T
	for len(l) > MaxListEntries {
		out = append(out, l[:MaxListEntries])
		l = l[MaxListEntries:]
	}
	return append(out, l)
}

// assignPriorities numbers one direction's rules from PolicyRuleBasePriority: one priority per
// rule when they fit, else one per run of equal actions (equal-priority rules then never
// disagree, so HNS's tie-break cannot change a verdict).
func assignPriorities(rules []Rule) error {
	span := int(PolicyRuleMaxPriority-PolicyRuleBasePriority) + 1
	if len(rules) <= span {
		for i := range rules {
			rules[i].Priority = PolicyRuleBasePriority + uint16(i)
		}
		return nil
	}
	p := int(PolicyRuleBasePriority)
	for i := range rules {
		if i > 0 && rules[i].Action != rules[i-1].Action {
			p++
		}
		if p > int(PolicyRuleMaxPriority) {
			return fmt.Errorf("%d rules in %d runs of equal action need priorities beyond %d: %w",
				len(rules), p-int(PolicyRuleBasePriority)+1, PolicyRuleMaxPriority, ErrPriorityLimit)
		}
		rules[i].Priority = uint16(p)
	}
	return nil
}

// renderRoutes programs each VXLAN route to a remote block through the owning node's VTEP, as
// Calico's Windows VXLAN manager does. Routes without a VTEP are skipped (the VTEP has not
// been seen yet); a VNI beyond HNS's 16-bit isolation ID is an error.
func renderRoutes(s *snapshot.Snapshot) ([]RemoteSubnetRoute, []error) {
	type vtepKey struct {
		node string
		v6   bool
	}
	vteps := map[vtepKey]snapshot.VTEP{}
	for _, v := range s.VTEPs {
		vteps[vtepKey{v.Node, v.IPv6}] = v
	}
	var out []RemoteSubnetRoute
	var errs []error
	for _, r := range s.Routes {
		if r.Type != snapshot.RouteVXLAN {
			continue
		}
		v, ok := vteps[vtepKey{r.Node, r.Dst.Addr().Is6()}]
		if !ok {
			continue
		}
		vni := s.Config.VXLANVNI
		if vni <= 0 || vni > 0xffff {
			errs = append(errs, fmt.Errorf("route %s: config.vxlanVNI %d does not fit HNS's 16-bit IsolationId", r.Dst, vni))
			continue
		}
		out = append(out, RemoteSubnetRoute{
			DestinationPrefix:           r.Dst.Masked(),
			IsolationID:                 uint16(vni),
			ProviderAddress:             v.ParentIP,
			DistributedRouterMacAddress: strings.ReplaceAll(strings.ToLower(v.MAC), ":", "-"),
		})
	}
	slices.SortFunc(out, func(a, b RemoteSubnetRoute) int {
		return snapshot.ComparePrefix(a.DestinationPrefix, b.DestinationPrefix)
	})
	return out, errs
}
