package snapshot

import (
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
)

// Change is one difference between two snapshots of the same node, in words a user
// understands, with the counts a CI gate can check.
type Change struct {
	Kind    string `json:"kind"` // IPSet, Policy, Profile, Endpoint, HostEndpoint, Route, VTEP, Pool, Service, Config
	ID      string `json:"id"`
	Op      string `json:"op"` // added, removed, changed
	Summary string `json:"summary"`
	// Added and Removed count IP set members for IPSet changes.
	Added   int `json:"added,omitempty"`
	Removed int `json:"removed,omitempty"`
}

// String is the change's summary.
func (c Change) String() string { return c.Summary }

// Compare lists what differs from before to after, ordered by kind then ID. Both snapshots
// must be finalized (sorted, hashes filled). Either may be nil (a node appearing or going).
func Compare(before, after *Snapshot) []Change {
	if before == nil {
		before = &Snapshot{}
	}
	if after == nil {
		after = &Snapshot{}
	}
	var out []Change
	out = append(out, compareIPSets(before, after)...)
	useB, useA := policyUse(before), policyUse(after)
	out = append(out, compareKeyed("Policy", before.Policies, after.Policies, func(p Policy) string { return p.ID },
		func(p Policy) string { return p.Hash }, func(op string, b, a *Policy) string {
			switch op {
			case "added":
				return fmt.Sprintf("policy %s (tier %s) now applies to %s", a.ID, a.Tier, count(useA[a.ID], "endpoint"))
			case "removed":
				return fmt.Sprintf("policy %s no longer applies (was on %s)", b.ID, count(useB[b.ID], "endpoint"))
			}
			what := fmt.Sprintf("policy %s rules changed (inbound %d→%d, outbound %d→%d)", a.ID, len(b.Inbound), len(a.Inbound), len(b.Outbound), len(a.Outbound))
			if useB[b.ID] != useA[a.ID] {
				what += fmt.Sprintf("; now applies to %s (was %d)", count(useA[a.ID], "endpoint"), useB[b.ID])
			}
			return what
		})...)
	for id, n := range useA {
		if m, ok := useB[id]; ok && m != n && hashOfPolicy(before, id) == hashOfPolicy(after, id) {
			out = append(out, Change{Kind: "Policy", ID: id, Op: "changed",
				Summary: fmt.Sprintf("policy %s now applies to %s (was %d)", id, count(n, "endpoint"), m)})
		}
	}
	out = append(out, compareKeyed("Profile", before.Profiles, after.Profiles, func(p Profile) string { return p.ID },
		func(p Profile) string { return p.Hash }, func(op string, b, a *Profile) string {
			switch op {
			case "added":
				return fmt.Sprintf("profile %s now in use", a.ID)
			case "removed":
				return fmt.Sprintf("profile %s no longer in use", b.ID)
			}
			return fmt.Sprintf("profile %s rules changed", a.ID)
		})...)
	out = append(out, compareKeyed("Endpoint", before.Endpoints, after.Endpoints, func(e Endpoint) string { return e.ID },
		func(e Endpoint) string { return e.Hash }, func(op string, b, a *Endpoint) string {
			switch op {
			case "added":
				return fmt.Sprintf("endpoint %s added (%s, %s)", a.ID, a.Interface, prefixes(a.Addrs))
			case "removed":
				return fmt.Sprintf("endpoint %s removed (%s)", b.ID, b.Interface)
			}
			return fmt.Sprintf("endpoint %s changed: %s", a.ID, endpointDelta(b, a))
		})...)
	out = append(out, compareKeyed("HostEndpoint", before.HostEndpoints, after.HostEndpoints, func(e HostEndpoint) string { return e.ID },
		func(e HostEndpoint) string { return e.Hash }, func(op string, b, a *HostEndpoint) string {
			if op == "changed" {
				return fmt.Sprintf("host endpoint %s policy programs changed", a.ID)
			}
			return fmt.Sprintf("host endpoint %s %s", either(a, b).ID, op)
		})...)
	routeKey := func(r Route) string { return r.Dst.String() }
	out = append(out, compareKeyed("Route", before.Routes, after.Routes, routeKey,
		func(r Route) string { return fmt.Sprint(r) }, func(op string, b, a *Route) string {
			switch op {
			case "added":
				return "route " + describeRoute(a) + " added"
			case "removed":
				return "route " + describeRoute(b) + " removed"
			}
			return fmt.Sprintf("route %s: %s → %s", a.Dst, describeRoute(b), describeRoute(a))
		})...)
	out = append(out, compareKeyed("VTEP", before.VTEPs, after.VTEPs, func(v VTEP) string { return vtepKey(v) },
		func(v VTEP) string { return fmt.Sprint(v) }, func(op string, b, a *VTEP) string {
			v := either(a, b)
			return fmt.Sprintf("VXLAN peer %s (tunnel %s, %s, via %s) %s", v.Node, v.TunnelIP, v.MAC, v.ParentIP, op)
		})...)
	out = append(out, compareKeyed("Pool", before.Pools, after.Pools, func(p Pool) string { return p.CIDR.String() },
		func(p Pool) string { return fmt.Sprint(p) }, func(op string, b, a *Pool) string {
			p := either(a, b)
			return fmt.Sprintf("pool %s (vxlan %s, natOutgoing %t) %s", p.CIDR, p.VXLANMode, p.NATOutgoing, op)
		})...)
	out = append(out, compareKeyed("Service", before.Services, after.Services, func(s Service) string { return s.ID },
		func(s Service) string { return s.Hash }, func(op string, b, a *Service) string {
			s := either(a, b)
			return fmt.Sprintf("service %s %s (%d frontends, %d backends)", s.ID, op, len(s.Frontends), len(s.Backends))
		})...)
	if d := configDelta(before.Config, after.Config); d != "" {
		out = append(out, Change{Kind: "Config", ID: "config", Op: "changed", Summary: "configuration: " + d})
	}
	slices.SortStableFunc(out, func(a, b Change) int {
		if c := strings.Compare(kindRank(a.Kind), kindRank(b.Kind)); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out
}

func kindRank(k string) string {
	i := slices.Index([]string{"Config", "Pool", "Endpoint", "HostEndpoint", "Policy", "Profile", "IPSet", "Route", "VTEP", "Service"}, k)
	return fmt.Sprintf("%02d", i)
}

func either[T any](a, b *T) *T {
	if a != nil {
		return a
	}
	return b
}

func count(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

func hashOfPolicy(s *Snapshot, id string) string {
	for i := range s.Policies {
		if s.Policies[i].ID == id {
			return s.Policies[i].Hash
		}
	}
	return ""
}

// policyUse counts, per policy, the local endpoints (workload and host) whose programs use it.
func policyUse(s *Snapshot) map[string]int {
	use := map[string]int{}
	add := func(seen map[string]bool, d Direction) {
		for _, t := range d.Tiers {
			for _, p := range t.Policies {
				seen[p] = true
			}
		}
	}
	for _, e := range s.Endpoints {
		seen := map[string]bool{}
		add(seen, e.Ingress)
		add(seen, e.Egress)
		for p := range seen {
			use[p]++
		}
	}
	for _, h := range s.HostEndpoints {
		seen := map[string]bool{}
		for _, hd := range []HostDirections{h.Normal, h.PreDNAT, h.Untracked, h.Forward} {
			add(seen, hd.Ingress)
			add(seen, hd.Egress)
		}
		for p := range seen {
			use[p]++
		}
	}
	return use
}

// compareKeyed diffs two lists sorted or not, keyed by key, changed when version differs.
func compareKeyed[T any](kind string, before, after []T, key func(T) string, version func(T) string,
	say func(op string, b, a *T) string) []Change {
	bm := make(map[string]*T, len(before))
	for i := range before {
		bm[key(before[i])] = &before[i]
	}
	var out []Change
	seen := make(map[string]bool, len(after))
	for i := range after {
		a := &after[i]
		k := key(*a)
		seen[k] = true
		b, ok := bm[k]
		switch {
		case !ok:
			out = append(out, Change{Kind: kind, ID: k, Op: "added", Summary: say("added", nil, a)})
		case version(*b) != version(*a):
			out = append(out, Change{Kind: kind, ID: k, Op: "changed", Summary: say("changed", b, a)})
		}
	}
	for i := range before {
		if k := key(before[i]); !seen[k] {
			out = append(out, Change{Kind: kind, ID: k, Op: "removed", Summary: say("removed", &before[i], nil)})
		}
	}
	return out
}

func compareIPSets(before, after *Snapshot) []Change {
	bm := map[string]*IPSet{}
	for i := range before.IPSets {
		bm[before.IPSets[i].ID] = &before.IPSets[i]
	}
	var out []Change
	seen := map[string]bool{}
	for i := range after.IPSets {
		a := &after.IPSets[i]
		seen[a.ID] = true
		b, ok := bm[a.ID]
		if !ok {
			out = append(out, Change{Kind: "IPSet", ID: a.ID, Op: "added", Added: len(a.Members),
				Summary: fmt.Sprintf("IP set %s (%s) created with %s", a.ID, a.Source, count(len(a.Members), "member"))})
			continue
		}
		add, del := MemberDelta(b.Members, a.Members)
		if add+del > 0 {
			out = append(out, Change{Kind: "IPSet", ID: a.ID, Op: "changed", Added: add, Removed: del,
				Summary: fmt.Sprintf("IP set %s (%s) +%d −%d members", a.ID, a.Source, add, del)})
		}
	}
	for i := range before.IPSets {
		b := &before.IPSets[i]
		if !seen[b.ID] {
			out = append(out, Change{Kind: "IPSet", ID: b.ID, Op: "removed", Removed: len(b.Members),
				Summary: fmt.Sprintf("IP set %s (%s) deleted (had %s)", b.ID, b.Source, count(len(b.Members), "member"))})
		}
	}
	return out
}

// MemberDelta counts members only in after (added) and only in before (removed); both
// lists must be sorted as Finalize sorts them.
func MemberDelta(before, after []Member) (added, removed int) {
	i, j := 0, 0
	for i < len(before) && j < len(after) {
		switch c := CompareMember(before[i], after[j]); {
		case c < 0:
			removed++
			i++
		case c > 0:
			added++
			j++
		default:
			i++
			j++
		}
	}
	return added + len(after) - j, removed + len(before) - i
}

func describeRoute(r *Route) string {
	switch r.Type {
	case RouteWorkload:
		return fmt.Sprintf("%s dev %s (workload)", r.Dst, r.Interface)
	case RouteBlackhole:
		return fmt.Sprintf("blackhole %s (local block)", r.Dst)
	case RouteVXLAN, RouteHost:
		return fmt.Sprintf("%s via vxlan %s dev %s (node %s)", r.Dst, r.Gateway, r.Interface, r.Node)
	case RouteDirect:
		return fmt.Sprintf("%s via %s (no encapsulation, node %s)", r.Dst, r.Gateway, r.Node)
	}
	return fmt.Sprintf("%s %s", r.Dst, r.Type)
}

func vtepKey(v VTEP) string {
	if v.IPv6 {
		return v.Node + "/v6"
	}
	return v.Node
}

func prefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

func endpointDelta(b, a *Endpoint) string {
	var what []string
	if !reflect.DeepEqual(b.Addrs, a.Addrs) {
		what = append(what, fmt.Sprintf("addresses %s → %s", prefixes(b.Addrs), prefixes(a.Addrs)))
	}
	if b.Interface != a.Interface {
		what = append(what, fmt.Sprintf("interface %s → %s", b.Interface, a.Interface))
	}
	if !reflect.DeepEqual(b.Ingress, a.Ingress) {
		what = append(what, "ingress policy program "+programDelta(b.Ingress, a.Ingress))
	}
	if !reflect.DeepEqual(b.Egress, a.Egress) {
		what = append(what, "egress policy program "+programDelta(b.Egress, a.Egress))
	}
	if !reflect.DeepEqual(b.Labels, a.Labels) {
		what = append(what, "labels")
	}
	if len(what) == 0 {
		what = append(what, "details")
	}
	return strings.Join(what, "; ")
}

// programDelta names the policies a direction gained and lost.
func programDelta(b, a Direction) string {
	names := func(d Direction) []string {
		var n []string
		for _, t := range d.Tiers {
			n = append(n, t.Policies...)
		}
		for _, p := range d.Profiles {
			n = append(n, "profile "+p)
		}
		return n
	}
	bn, an := names(b), names(a)
	var parts []string
	for _, n := range an {
		if !slices.Contains(bn, n) {
			parts = append(parts, "+"+n)
		}
	}
	for _, n := range bn {
		if !slices.Contains(an, n) {
			parts = append(parts, "−"+n)
		}
	}
	if len(parts) == 0 {
		return "reordered"
	}
	return strings.Join(parts, " ")
}

func configDelta(b, a Config) string {
	bv, av := reflect.ValueOf(b), reflect.ValueOf(a)
	var parts []string
	for i := 0; i < bv.NumField(); i++ {
		if !reflect.DeepEqual(bv.Field(i).Interface(), av.Field(i).Interface()) {
			parts = append(parts, fmt.Sprintf("%s %v → %v", bv.Type().Field(i).Name, bv.Field(i).Interface(), av.Field(i).Interface()))
		}
	}
	return strings.Join(parts, "; ")
}
