package snapshot

import (
	"fmt"
	"net/netip"
	"slices"
)

// Packet is the part of a packet policy evaluation looks at.
type Packet struct {
	Src, Dst         netip.Addr
	Protocol         uint8
	SrcPort, DstPort uint16
	ICMPType         *uint8 // for ICMP/ICMPv6 packets
	ICMPCode         *uint8
}

// Verdict is the outcome of evaluating one direction of one endpoint.
type Verdict struct {
	Action Action `json:"action"` // Allow or Deny
	// Decider says what decided: "rule" (Tier/Policy/Profile and Index set), "tier-default"
	// (the end of Tier with no rule deciding), "profile-default" (no profile rule matched, or
	// the endpoint has neither policies nor profiles), or "outside" (an address that is not a
	// felis endpoint: felis does not police that side).
	Decider string `json:"decider"`
	Tier    string `json:"tier,omitempty"`
	Policy  string `json:"policy,omitempty"`
	Profile string `json:"profile,omitempty"`
	Index   int    `json:"index"` // 0-based index of the rule in its resource's direction (Rule.Origin), when Decider is "rule"
}

// String renders the verdict as a short explanation.
func (v Verdict) String() string {
	switch v.Decider {
	case "rule":
		if v.Profile != "" {
			return fmt.Sprintf("%s by profile %s rule %d", v.Action, v.Profile, v.Index)
		}
		return fmt.Sprintf("%s by tier %s policy %s rule %d", v.Action, v.Tier, v.Policy, v.Index)
	case "tier-default":
		return fmt.Sprintf("%s by end of tier %s", v.Action, v.Tier)
	case "outside":
		return "not policed (address outside the cluster's endpoints)"
	default:
		return fmt.Sprintf("%s by default (no profile rule matched)", v.Action)
	}
}

// Evaluator answers policy questions about one snapshot. Build it once with NewEvaluator;
// it only reads the snapshot.
type Evaluator struct {
	s        *Snapshot
	sets     map[string]*IPSet
	policies map[string]*Policy
	profiles map[string]*Profile
}

// NewEvaluator indexes a snapshot for evaluation.
func NewEvaluator(s *Snapshot) *Evaluator {
	e := &Evaluator{s: s, sets: map[string]*IPSet{}, policies: map[string]*Policy{}, profiles: map[string]*Profile{}}
	for i := range s.IPSets {
		e.sets[s.IPSets[i].ID] = &s.IPSets[i]
	}
	for i := range s.Policies {
		e.policies[s.Policies[i].ID] = &s.Policies[i]
	}
	for i := range s.Profiles {
		e.profiles[s.Profiles[i].ID] = &s.Profiles[i]
	}
	return e
}

// Endpoint returns the local endpoint with the given ID.
func (e *Evaluator) Endpoint(id string) (*Endpoint, bool) {
	i, ok := slices.BinarySearchFunc(e.s.Endpoints, id, func(ep Endpoint, id string) int {
		switch {
		case ep.ID < id:
			return -1
		case ep.ID > id:
			return 1
		}
		return 0
	})
	if !ok {
		for j := range e.s.Endpoints { // tolerate an unsorted snapshot
			if e.s.Endpoints[j].ID == id {
				return &e.s.Endpoints[j], true
			}
		}
		return nil, false
	}
	return &e.s.Endpoints[i], true
}

// Ingress evaluates a packet arriving at a local endpoint.
func (e *Evaluator) Ingress(ep *Endpoint, p Packet) Verdict { return e.Program(ep.Ingress, true, p) }

// Egress evaluates a packet leaving a local endpoint.
func (e *Evaluator) Egress(ep *Endpoint, p Packet) Verdict { return e.Program(ep.Egress, false, p) }

// Program evaluates one direction's program: tiers in order (a rule's Allow or Deny decides;
// Pass skips to the next tier; Log continues; the end of a tier applies its default action),
// then profiles (the first Allow or Deny decides; no match denies).
func (e *Evaluator) Program(d Direction, inbound bool, p Packet) Verdict {
	pick := func(in, out []Rule) []Rule {
		if inbound {
			return in
		}
		return out
	}
tiers:
	for _, t := range d.Tiers {
		for _, id := range t.Policies {
			pol, ok := e.policies[id]
			if !ok {
				continue
			}
			r := e.decide(pick(pol.Inbound, pol.Outbound), p)
			switch {
			case r == nil:
				continue
			case r.Action == Pass:
				continue tiers
			}
			return Verdict{Action: r.Action, Decider: "rule", Tier: t.Tier, Policy: id, Index: r.Origin.Index}
		}
		if t.DefaultAction == Pass {
			continue
		}
		return Verdict{Action: Deny, Decider: "tier-default", Tier: t.Tier}
	}
	for _, id := range d.Profiles {
		prof, ok := e.profiles[id]
		if !ok {
			continue
		}
		// Pass in a profile ends that profile; the next one is consulted.
		if r := e.decide(pick(prof.Inbound, prof.Outbound), p); r != nil && r.Action != Pass {
			return Verdict{Action: r.Action, Decider: "rule", Profile: id, Index: r.Origin.Index}
		}
	}
	return Verdict{Action: Deny, Decider: "profile-default"}
}

// decide returns the first rule that matches p and decides something (Allow, Deny or Pass;
// Log only records and evaluation goes on), or nil.
func (e *Evaluator) decide(rules []Rule, p Packet) *Rule {
	for i := range rules {
		switch rules[i].Action {
		case Allow, Deny, Pass:
			if e.Match(&rules[i], p) {
				return &rules[i]
			}
		}
	}
	return nil
}

// Match reports whether a rule's match criteria (everything but the action) match p.
func (e *Evaluator) Match(r *Rule, p Packet) bool {
	if r.IPVersion == 4 && !p.Src.Is4() || r.IPVersion == 6 && !p.Src.Is6() {
		return false
	}
	if r.Protocol != nil && *r.Protocol != p.Protocol {
		return false
	}
	if r.NotProtocol != nil && *r.NotProtocol == p.Protocol {
		return false
	}
	if r.ICMP != nil && !icmpMatch(r.ICMP, p) {
		return false
	}
	if r.NotICMP != nil && icmpMatch(r.NotICMP, p) {
		return false
	}
	return e.sideMatch(p.Src, p.SrcPort, p.Protocol, r.SrcNets, r.NotSrcNets, r.SrcIPSets, r.NotSrcIPSets,
		r.SrcPorts, r.NotSrcPorts, r.SrcNamedPortIPSets, r.NotSrcNamedPortIPSets) &&
		e.sideMatch(p.Dst, p.DstPort, p.Protocol, r.DstNets, r.NotDstNets, r.DstIPSets, r.NotDstIPSets,
			r.DstPorts, r.NotDstPorts, r.DstNamedPortIPSets, r.NotDstNamedPortIPSets) &&
		e.allSetsContain(r.DstServiceIPSets, p.Dst, p.Protocol, p.DstPort)
}

func icmpMatch(m *ICMPMatch, p Packet) bool {
	if p.Protocol != 1 && p.Protocol != 58 || p.ICMPType == nil || *p.ICMPType != m.Type {
		return false
	}
	return m.Code == nil || p.ICMPCode != nil && *p.ICMPCode == *m.Code
}

func (e *Evaluator) sideMatch(addr netip.Addr, port uint16, proto uint8,
	nets, notNets []netip.Prefix, sets, notSets []string,
	ports, notPorts []PortRange, namedSets, notNamedSets []string) bool {
	if len(nets) > 0 && !anyContains(nets, addr) {
		return false
	}
	if anyContains(notNets, addr) {
		return false
	}
	for _, id := range sets {
		if !e.setContains(id, addr, 0, 0) {
			return false
		}
	}
	for _, id := range notSets {
		if e.setContains(id, addr, 0, 0) {
			return false
		}
	}
	if len(ports) > 0 || len(namedSets) > 0 {
		ok := inRanges(ports, port)
		for _, id := range namedSets {
			if ok {
				break
			}
			ok = e.setContains(id, addr, proto, port)
		}
		if !ok {
			return false
		}
	}
	if inRanges(notPorts, port) {
		return false
	}
	for _, id := range notNamedSets {
		if e.setContains(id, addr, proto, port) {
			return false
		}
	}
	return true
}

func (e *Evaluator) allSetsContain(ids []string, addr netip.Addr, proto uint8, port uint16) bool {
	for _, id := range ids {
		if !e.setContains(id, addr, proto, port) {
			return false
		}
	}
	return true
}

// setContains reports membership; for ip+port sets protocol and port must match too. A set
// the snapshot does not hold matches nothing.
func (e *Evaluator) setContains(id string, addr netip.Addr, proto uint8, port uint16) bool {
	s, ok := e.sets[id]
	if !ok {
		return false
	}
	for _, m := range s.Members {
		if !m.Prefix.Contains(addr) {
			continue
		}
		if s.Type != IPSetIPPort || m.Protocol == proto && m.Port == port {
			return true
		}
	}
	return false
}

func anyContains(nets []netip.Prefix, a netip.Addr) bool {
	for _, n := range nets {
		if n.Contains(a) {
			return true
		}
	}
	return false
}

func inRanges(rs []PortRange, port uint16) bool {
	for _, r := range rs {
		if port >= r.Min && port <= r.Max {
			return true
		}
	}
	return false
}
