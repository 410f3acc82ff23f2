package render

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/felis-dev/felis/snapshot"
)

// rules translates a policy's or profile's rules for one direction. A snapshot rule may
// become several nft rules (one per family, and one per alternative where the IR ORs across
// fields: numeric ports vs named-port sets, a negated ICMP type+code).
func (b *builder) rules(what string, in []snapshot.Rule, untracked, profile bool) ([]Rule, error) {
	var out []Rule
	for i, r := range in {
		verdict, err := b.verdict(r.Action, untracked, profile)
		if err != nil {
			return nil, fmt.Errorf("%s: rule %d: %w", what, i, err)
		}
		variants, err := b.matches(r)
		if err != nil {
			return nil, fmt.Errorf("%s: rule %d: %w", what, i, err)
		}
		for _, v := range variants {
			out = append(out, Rule{Stmts: append(v, verdict...)})
		}
	}
	return out, nil
}

func (b *builder) verdict(a snapshot.Action, untracked, profile bool) ([]Stmt, error) {
	switch a {
	case snapshot.Allow:
		if untracked {
			return []Stmt{Notrack{}, Accept}, nil
		}
		return []Stmt{Accept}, nil
	case snapshot.Deny:
		return []Stmt{Drop}, nil
	case snapshot.Pass:
		if profile {
			return []Stmt{Return}, nil
		}
		return []Stmt{MarkSet{Bits: PassMark}, Return}, nil
	case snapshot.Log:
		return []Stmt{Log{Prefix: b.logPfx + ": "}}, nil
	}
	return nil, fmt.Errorf("action %q: want Allow, Deny, Pass or Log", a)
}

// families returns the IP families a rule can match and whether it needs a family at all.
func families(r snapshot.Rule) (fams []int, specific bool) {
	fams = []int{4, 6}
	keep := func(f ...int) {
		fams = slices.DeleteFunc(fams, func(x int) bool { return !slices.Contains(f, x) })
	}
	if r.IPVersion != 0 {
		keep(r.IPVersion)
		specific = true
	}
	if r.Protocol != nil && (*r.Protocol == 1 || *r.Protocol == 58) && (r.ICMP != nil || r.NotICMP != nil) {
		keep(map[uint8]int{1: 4, 58: 6}[*r.Protocol])
		specific = true
	}
	for _, nets := range [][]netip.Prefix{r.SrcNets, r.DstNets} {
		if len(nets) == 0 {
			continue
		}
		var present []int
		for _, p := range nets {
			present = append(present, family(p.Addr()))
		}
		keep(present...)
		specific = true
	}
	if len(r.NotSrcNets)+len(r.NotDstNets)+len(r.SrcIPSets)+len(r.NotSrcIPSets)+len(r.DstIPSets)+len(r.NotDstIPSets)+
		len(r.SrcNamedPortIPSets)+len(r.NotSrcNamedPortIPSets)+len(r.DstNamedPortIPSets)+len(r.NotDstNamedPortIPSets)+
		len(r.DstServiceIPSets) > 0 || r.ICMP != nil || r.NotICMP != nil {
		specific = true
	}
	return fams, specific
}

// matches returns the alternatives (ORed) of match statements for one rule.
func (b *builder) matches(r snapshot.Rule) ([][]Stmt, error) {
	fams, specific := families(r)
	if !specific {
		fams = []int{0}
	}
	var out [][]Stmt
	for _, fam := range fams {
		groups, err := b.groups(r, fam)
		if errors.Is(err, errNever) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, product(groups)...)
	}
	return out, nil
}

// groups returns the rule's match statements for one family as a sequence of groups; each
// group is a list of alternatives and a rule variant picks one alternative from each.
func (b *builder) groups(r snapshot.Rule, fam int) ([][][]Stmt, error) {
	var groups [][][]Stmt
	fixed := func(s ...Stmt) {
		if len(s) > 0 {
			groups = append(groups, [][]Stmt{s})
		}
	}
	if fam != 0 {
		fixed(NfProto{fam})
	}
	if r.Protocol != nil {
		fixed(L4Proto{Proto: *r.Protocol})
	} else if r.ICMP != nil || r.NotICMP != nil {
		fixed(L4Proto{Proto: map[int]uint8{4: 1, 6: 58}[fam]})
	}
	if r.NotProtocol != nil {
		fixed(L4Proto{Proto: *r.NotProtocol, Neg: true})
	}
	for _, dst := range []bool{false, true} {
		nets, notNets, sets, notSets, ports, notPorts, named, notNamed := r.SrcNets, r.NotSrcNets, r.SrcIPSets, r.NotSrcIPSets, r.SrcPorts, r.NotSrcPorts, r.SrcNamedPortIPSets, r.NotSrcNamedPortIPSets
		if dst {
			nets, notNets, sets, notSets, ports, notPorts, named, notNamed = r.DstNets, r.NotDstNets, r.DstIPSets, r.NotDstIPSets, r.DstPorts, r.NotDstPorts, r.DstNamedPortIPSets, r.NotDstNamedPortIPSets
		}
		if ps := familyPrefixes(nets, fam); len(ps) > 0 {
			fixed(AddrList{Family: fam, Dst: dst, Prefixes: ps})
		}
		if ps := familyPrefixes(notNets, fam); len(ps) > 0 {
			fixed(AddrList{Family: fam, Dst: dst, Neg: true, Prefixes: ps})
		}
		var s []Stmt
		add := func(ids []string, neg bool) error {
			for _, id := range ids {
				st, err := b.setMatch(id, fam, dst, neg)
				if err != nil {
					return err
				}
				if st != nil {
					s = append(s, st)
				}
			}
			return nil
		}
		if err := add(sets, false); err != nil {
			return nil, err
		}
		if err := add(notSets, true); err != nil {
			return nil, err
		}
		if dst {
			if err := add(r.DstServiceIPSets, false); err != nil {
				return nil, err
			}
		}
		fixed(s...)
		// Numeric ports OR named ports: one alternative each.
		var alts [][]Stmt
		if len(ports) > 0 {
			alts = append(alts, []Stmt{PortList{Dst: dst, Ranges: NormalizePorts(ports)}})
		}
		for _, id := range named {
			st, err := b.setMatch(id, fam, dst, false)
			if errors.Is(err, errNever) {
				continue // this alternative never matches; the others may
			}
			if err != nil {
				return nil, err
			}
			alts = append(alts, []Stmt{st})
		}
		if len(alts) > 0 {
			groups = append(groups, alts)
		} else if len(ports)+len(named) > 0 {
			return nil, errNever
		}
		s = nil
		if len(notPorts) > 0 {
			s = append(s, PortList{Dst: dst, Neg: true, Ranges: NormalizePorts(notPorts)})
		}
		if err := add(notNamed, true); err != nil {
			return nil, err
		}
		fixed(s...)
	}
	if r.ICMP != nil {
		s := []Stmt{ICMPType{Family: fam, Type: r.ICMP.Type}}
		if r.ICMP.Code != nil {
			s = append(s, ICMPCode{Family: fam, Code: *r.ICMP.Code})
		}
		fixed(s...)
	}
	if n := r.NotICMP; n != nil {
		if n.Code == nil {
			fixed(ICMPType{Family: fam, Type: n.Type, Neg: true})
		} else {
			groups = append(groups, [][]Stmt{
				{ICMPType{Family: fam, Type: n.Type, Neg: true}},
				{ICMPType{Family: fam, Type: n.Type}, ICMPCode{Family: fam, Code: *n.Code, Neg: true}},
			})
		}
	}
	return groups, nil
}

// errNever reports that a rule variant can never match (it needs a member of an empty set).
var errNever = errors.New("matches nothing")

// setMatch returns the match on set id for family fam: nil when it is always true (a negated
// empty set), errNever when it is always false (an empty set).
func (b *builder) setMatch(id string, fam int, dst, neg bool) (Stmt, error) {
	t, ok := b.ipSets[id]
	if !ok {
		return nil, fmt.Errorf("IP set %s: not in the snapshot", id)
	}
	if fam == 0 {
		return nil, fmt.Errorf("IP set %s: referenced by a rule without an IP family", id)
	}
	if !b.nonEmpty[SetName(id, fam)] {
		if neg {
			return nil, nil
		}
		return nil, errNever
	}
	if t == snapshot.IPSetIPPort {
		return TupleSet{Family: fam, Dst: dst, Neg: neg, Set: SetName(id, fam)}, nil
	}
	return AddrSet{Family: fam, Dst: dst, Neg: neg, Set: SetName(id, fam)}, nil
}

func familyPrefixes(in []netip.Prefix, fam int) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range in {
		if family(p.Addr()) == fam {
			out = append(out, p)
		}
	}
	return NormalizePrefixes(out)
}

// NormalizePorts sorts port ranges and merges overlapping and adjacent ones.
func NormalizePorts(in []snapshot.PortRange) []snapshot.PortRange {
	rs := slices.Clone(in)
	for i, r := range rs {
		if r.Max < r.Min {
			rs[i].Min, rs[i].Max = r.Max, r.Min
		}
	}
	slices.SortFunc(rs, func(a, b snapshot.PortRange) int { return cmp.Or(cmp.Compare(a.Min, b.Min), cmp.Compare(a.Max, b.Max)) })
	var out []snapshot.PortRange
	for _, r := range rs {
		if n := len(out); n > 0 && uint32(r.Min) <= uint32(out[n-1].Max)+1 {
			out[n-1].Max = max(out[n-1].Max, r.Max)
			continue
		}
		out = append(out, r)
	}
	return out
}

// product expands groups of alternatives into every combination, keeping group order.
func product(groups [][][]Stmt) [][]Stmt {
	out := [][]Stmt{nil}
	for _, g := range groups {
		var next [][]Stmt
		for _, prefix := range out {
			for _, alt := range g {
				next = append(next, slices.Concat(prefix, alt))
			}
		}
		out = next
	}
	return out
}
