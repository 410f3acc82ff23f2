package hns

import (
	"fmt"
	"math/rand/v2"
	"net/netip"

	"github.com/felis-dev/felis/snapshot"
)

var genPrefixes = []netip.Prefix{
	netip.MustParsePrefix("10.0.0.0/16"), netip.MustParsePrefix("10.0.1.0/24"),
	netip.MustParsePrefix("10.0.1.0/28"), netip.MustParsePrefix("10.0.2.5/32"),
	netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("0.0.0.0/0"),
	netip.MustParsePrefix("192.168.0.0/24"), netip.MustParsePrefix("10.0.1.7/32"),
	netip.MustParsePrefix("fd00::/64"), netip.MustParsePrefix("fd00::1:0/112"),
	netip.MustParsePrefix("::/0"), netip.MustParsePrefix("fd00::7/128"),
}

var genPorts = []uint16{1, 53, 79, 80, 443, 1000, 8080, 9000, 65535}

func pick[T any](r *rand.Rand, l []T) T { return l[r.IntN(len(l))] }

func u8(v uint8) *uint8 { return &v }

func genNets(r *rand.Rand) []netip.Prefix {
	var out []netip.Prefix
	for range 1 + r.IntN(2) {
		out = append(out, pick(r, genPrefixes))
	}
	return out
}

func genPortRanges(r *rand.Rand) []snapshot.PortRange {
	var out []snapshot.PortRange
	for range 1 + r.IntN(2) {
		a, b := pick(r, genPorts), pick(r, genPorts)
		out = append(out, snapshot.PortRange{Min: min(a, b), Max: max(a, b)})
	}
	return out
}

func genRule(r *rand.Rand, addrSets, portSets []string) snapshot.Rule {
	var rule snapshot.Rule
	switch x := r.IntN(100); {
	case x < 40:
		rule.Action = snapshot.Allow
	case x < 60:
		rule.Action = snapshot.Deny
	case x < 90:
		rule.Action = snapshot.Pass
	default:
		rule.Action = snapshot.Log
	}
	if r.IntN(8) == 0 {
		rule.IPVersion = pick(r, []int{4, 6})
	}
	switch x := r.IntN(100); {
	case x < 30:
		rule.Protocol = u8(6)
	case x < 50:
		rule.Protocol = u8(17)
	case x < 55:
		rule.Protocol = u8(pick(r, []uint8{1, 58, 132}))
	}
	if r.IntN(7) == 0 {
		rule.NotProtocol = u8(pick(r, []uint8{6, 17, 1}))
	}
	side := func(nets, notNets *[]netip.Prefix, sets, notSets *[]string, ports, notPorts *[]snapshot.PortRange, named, notNamed *[]string) {
		if r.IntN(100) < 20 {
			*nets = genNets(r)
		}
		if r.IntN(100) < 12 {
			*notNets = genNets(r)
		}
		if r.IntN(100) < 15 {
			*sets = append(*sets, pick(r, addrSets))
		}
		if r.IntN(100) < 10 {
			*notSets = append(*notSets, pick(r, addrSets))
		}
		if rule.Protocol != nil && (*rule.Protocol == 6 || *rule.Protocol == 17) {
			if r.IntN(100) < 30 {
				*ports = genPortRanges(r)
			}
			if r.IntN(100) < 15 {
				*notPorts = genPortRanges(r)
			}
			if r.IntN(100) < 20 {
				*named = append(*named, pick(r, portSets))
			}
			if r.IntN(100) < 10 {
				*notNamed = append(*notNamed, pick(r, portSets))
			}
		}
	}
	// Source ports are rare in real policy; keep them rarer so the probe space stays small.
	if r.IntN(3) == 0 {
		side(&rule.SrcNets, &rule.NotSrcNets, &rule.SrcIPSets, &rule.NotSrcIPSets, &rule.SrcPorts, &rule.NotSrcPorts, &rule.SrcNamedPortIPSets, &rule.NotSrcNamedPortIPSets)
	} else {
		var ports, notPorts []snapshot.PortRange
		var named, notNamed []string
		side(&rule.SrcNets, &rule.NotSrcNets, &rule.SrcIPSets, &rule.NotSrcIPSets, &ports, &notPorts, &named, &notNamed)
	}
	side(&rule.DstNets, &rule.NotDstNets, &rule.DstIPSets, &rule.NotDstIPSets, &rule.DstPorts, &rule.NotDstPorts, &rule.DstNamedPortIPSets, &rule.NotDstNamedPortIPSets)
	if r.IntN(20) == 0 {
		rule.DstServiceIPSets = []string{pick(r, portSets)}
	}
	return rule
}

// randomSnapshot builds a small node snapshot exercising every construct of the rule IR that
// HNS can express (no ICMP type matches, ports only with TCP/UDP).
func randomSnapshot(r *rand.Rand) *snapshot.Snapshot {
	s := &snapshot.Snapshot{Node: "node-1"}
	var addrSets, portSets []string
	for i := range 3 {
		set := snapshot.IPSet{ID: fmt.Sprintf("ns:%d", i), Type: snapshot.IPSetNet}
		for range 1 + r.IntN(3) {
			set.Members = append(set.Members, snapshot.Member{Prefix: pick(r, genPrefixes)})
		}
		if r.IntN(2) == 0 { // often hold a local endpoint, so local-side set matches bite
			set.Members = append(set.Members, snapshot.Member{Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, 1, byte(3 + 4*r.IntN(3))}), 32)})
		}
		set.Members = snapshot.SortMembers(set.Members)
		s.IPSets = append(s.IPSets, set)
		addrSets = append(addrSets, set.ID)
	}
	for i := range 2 {
		set := snapshot.IPSet{ID: fmt.Sprintf("n:%d", i), Type: snapshot.IPSetIPPort}
		for range 1 + r.IntN(4) {
			a := pick(r, []string{"10.0.1.7/32", "10.0.2.5/32", "10.0.1.3/32", "fd00::7/128", "10.0.9.9/32"})
			set.Members = append(set.Members, snapshot.Member{Prefix: netip.MustParsePrefix(a),
				Protocol: pick(r, []uint8{6, 6, 17}), Port: pick(r, []uint16{80, 443, 8080, 53})})
		}
		set.Members = snapshot.SortMembers(set.Members)
		s.IPSets = append(s.IPSets, set)
		portSets = append(portSets, set.ID)
	}
	addrSets = append(addrSets, "s:missing")
	portSets = append(portSets, "n:missing")

	tiers := []string{"security", "platform", "default"}
	polTier := map[string]string{}
	var polIDs []string
	for i := range 2 + r.IntN(5) {
		p := snapshot.Policy{ID: fmt.Sprintf("p%d", i), Name: fmt.Sprintf("p%d", i), Tier: pick(r, tiers)}
		for range r.IntN(4) {
			p.Inbound = append(p.Inbound, genRule(r, addrSets, portSets))
		}
		for range r.IntN(4) {
			p.Outbound = append(p.Outbound, genRule(r, addrSets, portSets))
		}
		s.Policies = append(s.Policies, p)
		polTier[p.ID] = p.Tier
		polIDs = append(polIDs, p.ID)
	}
	var profIDs []string
	for i := range 1 + r.IntN(2) {
		p := snapshot.Profile{ID: fmt.Sprintf("prof%d", i)}
		for range r.IntN(3) {
			p.Inbound = append(p.Inbound, genRule(r, addrSets, portSets))
		}
		for range r.IntN(3) {
			p.Outbound = append(p.Outbound, genRule(r, addrSets, portSets))
		}
		s.Profiles = append(s.Profiles, p)
		profIDs = append(profIDs, p.ID)
	}
	direction := func() snapshot.Direction {
		var d snapshot.Direction
		for _, t := range tiers {
			var pols []string
			for _, id := range polIDs {
				if polTier[id] == t && r.IntN(3) > 0 {
					pols = append(pols, id)
				}
			}
			if r.IntN(15) == 0 {
				pols = append(pols, "missing-policy")
			}
			if len(pols) == 0 {
				continue
			}
			def := snapshot.Deny
			if r.IntN(2) == 0 {
				def = snapshot.Pass
			}
			d.Tiers = append(d.Tiers, snapshot.TierPolicies{Tier: t, DefaultAction: def, Policies: pols})
		}
		for _, id := range profIDs {
			if r.IntN(3) > 0 {
				d.Profiles = append(d.Profiles, id)
			}
		}
		if r.IntN(15) == 0 {
			d.Profiles = append(d.Profiles, "missing-profile")
		}
		return d
	}
	for i := range 1 + r.IntN(3) {
		ep := snapshot.Endpoint{ID: fmt.Sprintf("ns/ep%d", i), Namespace: "ns", Workload: fmt.Sprintf("w%d", i)}
		ep.Addrs = []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, 1, byte(3 + 4*i)}), 32)}
		if r.IntN(3) == 0 {
			ep.Addrs = append(ep.Addrs, netip.PrefixFrom(netip.AddrFrom16([16]byte{0xfd, 15: byte(3 + 4*i)}), 128))
		}
		ep.Ingress, ep.Egress = direction(), direction()
		s.Endpoints = append(s.Endpoints, ep)
	}
	return s
}
