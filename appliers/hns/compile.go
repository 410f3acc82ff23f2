package hns

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/felis-dev/felis/snapshot"
)

// compiler turns one direction of one endpoint's program into a first-match entry list.
type compiler struct {
	sets     map[string]*snapshot.IPSet
	policies map[string]*snapshot.Policy
	profiles map[string]*snapshot.Profile
	inbound  bool
	local    addrSet // the endpoint's own addresses: every packet's local side
	// maxEntries bounds the list while it is built (the flattening can grow multiplicatively).
	maxEntries int
	// Caches shared by every endpoint of one render: sets flattened once.
	addrCache   map[string]addrSet
	memberCache map[memberKey][]box
}

type memberKey struct {
	id  string
	src bool
}

func v4Only() addrSet { return addrSet{v4: fullV4} }
func v6Only() addrSet { return addrSet{v6: fullV6} }

// catchAll matches every packet the endpoint can see in this direction.
func (c *compiler) catchAll() box {
	b := fullBox()
	c.setLocal(&b, c.local)
	return b.norm()
}

func (c *compiler) setLocal(b *box, a addrSet) {
	if c.inbound {
		b.dst = a
	} else {
		b.src = a
	}
}

// program compiles a direction: tiers, then profiles, then the final Block.
func (c *compiler) program(d snapshot.Direction) ([]entry, error) {
	// Lists are built back to front, so they are held reversed: prepending is appending.
	block := []entry{{b: c.catchAll()}}
	next := block
	var err error
	for j := len(d.Profiles) - 1; j >= 0; j-- {
		prof, ok := c.profiles[d.Profiles[j]]
		if !ok {
			continue
		}
		rules := prof.Outbound
		if c.inbound {
			rules = prof.Inbound
		}
		// A Pass in a profile ends that profile: it continues with the next one, as does
		// falling off its end.
		if next, err = c.rules(rules, next, next, "profile "+prof.ID); err != nil {
			return nil, err
		}
	}
	for t := len(d.Tiers) - 1; t >= 0; t-- {
		tier := d.Tiers[t]
		var rules []snapshot.Rule
		for _, id := range tier.Policies {
			pol, ok := c.policies[id]
			if !ok {
				continue
			}
			if c.inbound {
				rules = append(rules, pol.Inbound...)
			} else {
				rules = append(rules, pol.Outbound...)
			}
		}
		fall := block
		if tier.DefaultAction == snapshot.Pass {
			fall = next
		}
		if next, err = c.rules(rules, next, fall, "tier "+tier.Tier); err != nil {
			return nil, err
		}
	}
	slices.Reverse(next)
	return next, nil
}

// rules compiles a rule list given where Pass goes and what follows the list (both reversed,
// as is the result).
func (c *compiler) rules(rules []snapshot.Rule, pass, fall []entry, where string) ([]entry, error) {
	rest := slices.Clip(fall) // appending must copy, never write into a list shared with pass
	for i := len(rules) - 1; i >= 0; i-- {
		r := &rules[i]
		if r.Action != snapshot.Allow && r.Action != snapshot.Deny && r.Action != snapshot.Pass {
			continue // Log (and anything else) never decides
		}
		pos, exc, err := c.match(r)
		if err != nil {
			name := r.Origin.Name
			if r.Origin.Namespace != "" {
				name = r.Origin.Namespace + "/" + name
			}
			return nil, fmt.Errorf("%s: %s %s %s rule %d: %w", where, r.Origin.Kind, name, r.Origin.Direction, r.Origin.Index, err)
		}
		if len(pos) == 0 {
			continue
		}
		var exp []entry
		for _, b := range pos {
			for _, e := range exc {
				if x, ok := b.intersect(e); ok {
					exp = append(exp, restrictRev(rest, x)...)
				}
			}
			switch r.Action {
			case snapshot.Pass:
				exp = append(exp, restrictRev(pass, b)...)
			default:
				exp = append(exp, entry{b: b, allow: r.Action == snapshot.Allow})
			}
		}
		for k := len(exp) - 1; k >= 0; k-- {
			rest = append(rest, exp[k])
		}
		if len(rest) > c.maxEntries {
			return nil, fmt.Errorf("%s: flattening needs more than %d entries: %w", where, c.maxEntries, ErrPriorityLimit)
		}
	}
	return rest, nil
}

// match returns a rule's match as a union of boxes (pos) minus a union of boxes (exc), the
// negations that are not a single dimension. An empty pos means the rule matches nothing.
func (c *compiler) match(r *snapshot.Rule) (pos, exc []box, err error) {
	if r.ICMP != nil {
		return nil, nil, fmt.Errorf("icmp type/code match: %w", ErrUnsupported)
	}
	if r.NotICMP != nil {
		return nil, nil, fmt.Errorf("notICMP type/code match: %w", ErrUnsupported)
	}
	base := fullBox()
	if r.Protocol != nil {
		base.proto = int(*r.Protocol)
	}
	if r.NotProtocol != nil {
		switch {
		case r.Protocol == nil:
			exc = append(exc, box{proto: int(*r.NotProtocol), src: fullAddrs(), dst: fullAddrs(), sPort: fullPorts, dPort: fullPorts})
		case *r.Protocol == *r.NotProtocol:
			return nil, nil, nil
		}
	}
	base.src = c.sideAddrs(r.SrcNets, r.NotSrcNets, r.SrcIPSets, r.NotSrcIPSets)
	base.dst = c.sideAddrs(r.DstNets, r.NotDstNets, r.DstIPSets, r.NotDstIPSets)
	switch r.IPVersion {
	case 4:
		base.src, base.dst = base.src.intersect(v4Only()), base.dst.intersect(v4Only())
	case 6:
		base.src, base.dst = base.src.intersect(v6Only()), base.dst.intersect(v6Only())
	}
	if c.inbound {
		base.dst = base.dst.intersect(c.local)
	} else {
		base.src = base.src.intersect(c.local)
	}
	base.sPort = fullPorts.subtract(portsOf(r.NotSrcPorts))
	base.dPort = fullPorts.subtract(portsOf(r.NotDstPorts))
	base = base.norm()
	if base.empty() {
		return nil, nil, nil
	}
	pos = []box{base}
	for _, side := range []struct {
		src   bool
		ports []snapshot.PortRange
		named []string
	}{{true, r.SrcPorts, r.SrcNamedPortIPSets}, {false, r.DstPorts, r.DstNamedPortIPSets}} {
		if len(side.ports) == 0 && len(side.named) == 0 {
			continue
		}
		var alts []box
		if len(side.ports) > 0 {
			b := fullBox()
			if side.src {
				b.sPort = portsOf(side.ports)
			} else {
				b.dPort = portsOf(side.ports)
			}
			alts = append(alts, b)
		}
		for _, id := range side.named {
			alts = append(alts, c.memberBoxes(id, side.src)...)
		}
		pos = cross(pos, alts)
	}
	for _, id := range r.DstServiceIPSets {
		pos = cross(pos, c.memberBoxes(id, false))
	}
	for _, id := range r.NotSrcNamedPortIPSets {
		exc = append(exc, c.memberBoxes(id, true)...)
	}
	for _, id := range r.NotDstNamedPortIPSets {
		exc = append(exc, c.memberBoxes(id, false)...)
	}
	return pos, exc, nil
}

// sideAddrs is the address set one side of a rule allows.
func (c *compiler) sideAddrs(nets, notNets []netip.Prefix, sets, notSets []string) addrSet {
	a := fullAddrs()
	if len(nets) > 0 {
		a = addrsOf(nets)
	}
	a = a.subtract(addrsOf(notNets))
	for _, id := range sets {
		a = a.intersect(c.setAddrs(id))
	}
	for _, id := range notSets {
		a = a.subtract(c.setAddrs(id))
	}
	return a
}

// setAddrs is what an IP set matches in an address-only context: an ip+port set's members
// carry a protocol and port, so (as in the evaluator) they match no bare address.
func (c *compiler) setAddrs(id string) addrSet {
	if a, ok := c.addrCache[id]; ok {
		return a
	}
	a := c.flattenSet(id)
	c.addrCache[id] = a
	return a
}

func (c *compiler) flattenSet(id string) addrSet {
	s, ok := c.sets[id]
	if !ok {
		return addrSet{}
	}
	var ps []netip.Prefix
	for _, m := range s.Members {
		if s.Type != snapshot.IPSetIPPort || m.Protocol == 0 && m.Port == 0 {
			ps = append(ps, m.Prefix)
		}
	}
	return addrsOf(ps)
}

// memberBoxes is the union of boxes an (address, protocol, port) set matches on one side;
// members sharing protocol and port share a box.
func (c *compiler) memberBoxes(id string, src bool) []box {
	k := memberKey{id, src}
	if bs, ok := c.memberCache[k]; ok {
		return bs
	}
	bs := c.flattenMembers(id, src)
	c.memberCache[k] = bs
	return bs
}

func (c *compiler) flattenMembers(id string, src bool) []box {
	s, ok := c.sets[id]
	if !ok {
		return nil
	}
	type key struct {
		proto uint8
		port  uint16
	}
	var order []key
	groups := map[key][]netip.Prefix{}
	for _, m := range s.Members {
		k := key{}
		if s.Type == snapshot.IPSetIPPort {
			k = key{m.Protocol, m.Port}
		}
		if _, seen := groups[k]; !seen {
			order = append(order, k)
		}
		groups[k] = append(groups[k], m.Prefix)
	}
	out := make([]box, 0, len(order))
	for _, k := range order {
		b := fullBox()
		addrs := addrsOf(groups[k])
		if src {
			b.src = addrs
		} else {
			b.dst = addrs
		}
		if s.Type == snapshot.IPSetIPPort {
			b.proto = int(k.proto)
			port := spans{{u128{0, uint64(k.port)}, u128{0, uint64(k.port)}}}
			if src {
				b.sPort = port
			} else {
				b.dPort = port
			}
		}
		out = append(out, b.norm())
	}
	return out
}

// optimizeLimit is the longest list optimize works on.
const optimizeLimit = 5000

// optimize removes entries that cannot decide anything and merges neighbours.
func optimize(prog []entry) []entry {
	if len(prog) > optimizeLimit {
		return prog // the pairwise passes below are quadratic; long lists go out as they are
	}
	// 1. An entry covered by an earlier one never matches first.
	kept := make([]entry, 0, len(prog))
	for _, e := range prog {
		shadowed := false
		for _, k := range kept {
			if k.b.covers(e.b) {
				shadowed = true
				break
			}
		}
		if !shadowed {
			kept = append(kept, e)
		}
	}
	// 2. A Block entry no later Allow entry overlaps is redundant: whatever later entry
	// catches its packets (the final catch-all at least) blocks them too.
	var rev []entry
	for i := len(kept) - 1; i >= 0; i-- {
		e := kept[i]
		if !e.allow && i != len(kept)-1 {
			redundant := true
			for _, l := range rev {
				if l.allow && l.b.overlaps(e.b) {
					redundant = false
					break
				}
			}
			if redundant {
				continue
			}
		}
		rev = append(rev, e)
	}
	kept = kept[:0]
	for i := len(rev) - 1; i >= 0; i-- {
		kept = append(kept, rev[i])
	}
	// 3. Within a run of equal actions order does not matter: merge boxes whose union is a box.
	var out []entry
	for i := 0; i < len(kept); {
		j := i
		for j < len(kept) && kept[j].allow == kept[i].allow {
			j++
		}
		run := append([]entry(nil), kept[i:j]...)
		if len(run) <= 512 {
			// Greedy passes: fold each entry into the first earlier one it merges with.
			for changed := true; changed; {
				changed = false
				var merged []entry
				for _, e := range run {
					folded := false
					for k := range merged {
						if m, ok := merged[k].b.merge(e.b); ok {
							merged[k].b, folded, changed = m, true, true
							break
						}
					}
					if !folded {
						merged = append(merged, e)
					}
				}
				run = merged
			}
		}
		out = append(out, run...)
		i = j
	}
	return out
}
