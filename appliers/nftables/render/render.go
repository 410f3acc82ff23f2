package render

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/felis-dev/felis/snapshot"
)

// Hook priorities, as nft names them.
const (
	PriorityRaw    = -300
	PriorityMangle = -150
	PriorityFilter = 0
	PrioritySrcNAT = 100
)

// Verdict map names: workload dispatch by direction of the workload's own traffic, and host
// endpoint dispatch per program.
const (
	MapWorkloadIngress = "wl-in"  // oifname → chain for traffic to the workload
	MapWorkloadEgress  = "wl-out" // iifname → chain for traffic from the workload
	MapHostIngress     = "hep-in"
	MapHostEgress      = "hep-out"
	MapHostPreDNAT     = "hep-pre-in"
	MapHostRawIngress  = "hep-raw-in"
	MapHostRawEgress   = "hep-raw-out"
	MapHostFwdIngress  = "hep-fwd-in"
	MapHostFwdEgress   = "hep-fwd-out"
)

// Pool set name stems: NAT-outgoing pools and all pools, one set per family; SetVXLANHosts:
// the underlay addresses of the other nodes' VXLAN tunnel endpoints (Felix's
// "all-vxlan-net"), one set per family VXLAN is enabled for.
const (
	SetPoolsNAT   = "pool-nat"
	SetPoolsAll   = "pool-all"
	SetVXLANHosts = "vxlan-hosts"
)

var (
	ctEstablished = CTState{States: []string{"established", "related"}}
	ctInvalid     = CTState{States: []string{"invalid"}}
	// Conntrack leaves neighbour discovery and MLD untracked, so the base chains' "ct state
	// untracked accept" exempts them from policy and anti-spoofing before dispatch, as Felix
	// exempts them explicitly.
	ctUntracked = CTState{States: []string{"untracked"}}
)

// SetName is the nft set holding family's members of the snapshot IP set id.
func SetName(id string, family int) string {
	return fmt.Sprintf("%s-%d", safeName(id), family)
}

// PolicyChain is the chain holding a policy's rules for one direction ("in" or "out").
func PolicyChain(id, dir string) string { return "pol-" + dir + "-" + safeName(id) }

// ProfileChain is the chain holding a profile's rules for one direction ("in" or "out").
func ProfileChain(id, dir string) string { return "prof-" + dir + "-" + safeName(id) }

// safeName keeps the characters nft accepts in an unquoted identifier and bounds the length
// (the kernel allows 256 bytes); long names end in a hash of the original so they stay unique.
func safeName(s string) string {
	b := []byte(s)
	for i, c := range b {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == '/'
		if !ok {
			b[i] = '_'
		}
	}
	if len(b) > 200 {
		sum := sha256.Sum256([]byte(s))
		return string(b[:180]) + "-" + hex.EncodeToString(sum[:8])
	}
	return string(b)
}

type builder struct {
	snap     snapshot.Snapshot
	ipSets   map[string]snapshot.IPSetType
	nonEmpty map[string]bool // nft set names that have elements
	policies map[string]*snapshot.Policy
	profiles map[string]*snapshot.Profile
	chains   map[string]Chain
	maps     map[string]*Map
	logPfx   string
}

// Render returns the desired felis table for snap. It fails, naming the resource, when the
// snapshot is inconsistent: a rule referencing an IP set it does not hold, an endpoint
// referencing a missing policy, two endpoints on one interface.
func Render(snap snapshot.Snapshot) (Table, error) { return NewRenderer().Render(snap) }

// Render returns the desired felis table for snap, as the function Render does, reusing what
// it rendered for services that did not change.
func (r *Renderer) Render(snap snapshot.Snapshot) (Table, error) {
	b := &builder{
		snap:     snap,
		ipSets:   map[string]snapshot.IPSetType{},
		nonEmpty: map[string]bool{},
		policies: map[string]*snapshot.Policy{},
		profiles: map[string]*snapshot.Profile{},
		chains:   map[string]Chain{},
		maps:     map[string]*Map{},
		logPfx:   cmp.Or(snap.Config.LogPrefix, "felis-packet"),
	}
	for _, s := range snap.IPSets {
		b.ipSets[s.ID] = s.Type
	}
	for i := range snap.Policies {
		b.policies[snap.Policies[i].ID] = &snap.Policies[i]
	}
	for i := range snap.Profiles {
		b.profiles[snap.Profiles[i].ID] = &snap.Profiles[i]
	}
	for _, name := range []string{MapWorkloadIngress, MapWorkloadEgress, MapHostIngress, MapHostEgress,
		MapHostPreDNAT, MapHostRawIngress, MapHostRawEgress, MapHostFwdIngress, MapHostFwdEgress} {
		b.maps[name] = &Map{Name: name}
	}

	var t Table
	sets, err := renderSets(snap)
	if err != nil {
		return Table{}, err
	}
	for _, s := range sets {
		if len(s.Elements) > 0 || strings.HasPrefix(s.Name, SetPoolsNAT) || strings.HasPrefix(s.Name, SetPoolsAll) || strings.HasPrefix(s.Name, SetVXLANHosts) {
			b.nonEmpty[s.Name] = true
			t.Sets = append(t.Sets, s)
		}
	}
	for _, ep := range snap.Endpoints {
		if err := b.workload(ep); err != nil {
			return Table{}, err
		}
	}
	wild := map[string]bool{}
	for _, hep := range snap.HostEndpoints {
		if err := b.hostEndpoint(hep, wild); err != nil {
			return Table{}, err
		}
	}
	if err := r.services(&snap); err != nil {
		return Table{}, err
	}
	if err := b.baseChains(wild); err != nil {
		return Table{}, err
	}
	for _, m := range b.maps {
		t.Maps = append(t.Maps, *m)
	}
	for _, c := range b.chains {
		c.Hash = ChainHash(c)
		t.Chains = append(t.Chains, c)
	}
	r.serviceTablesObjects(&t)
	t.Sort()
	if err := r.mergeInto(&t); err != nil {
		return Table{}, err
	}
	return t, nil
}

// renderSets builds one nft set per snapshot IP set and family, plus the pool sets. Render
// keeps only the non-empty ones (and the pool sets): the kernel looks sets up by walking a
// list, so every set costs, and many IP sets hold one family only. A rule matching an empty
// set cannot match and is left out; a negated match on one is always true and is dropped.
func renderSets(snap snapshot.Snapshot) ([]Set, error) {
	var out []Set
	for _, s := range snap.IPSets {
		for _, fam := range []int{4, 6} {
			set := Set{Name: SetName(s.ID, fam), Family: fam, Concat: s.Type == snapshot.IPSetIPPort}
			var prefixes []netip.Prefix
			for _, m := range s.Members {
				if family(m.Prefix.Addr()) != fam {
					continue
				}
				if set.Concat {
					if !m.Prefix.IsSingleIP() {
						return nil, fmt.Errorf("IP set %s: member %s: named-port members must be host addresses", s.ID, m.Prefix)
					}
					set.Elements = append(set.Elements, Element{Prefix: m.Prefix, Proto: m.Protocol, Port: m.Port})
				} else {
					prefixes = append(prefixes, m.Prefix)
				}
			}
			for _, p := range NormalizePrefixes(prefixes) {
				set.Elements = append(set.Elements, Element{Prefix: p})
			}
			slices.SortFunc(set.Elements, Element.Compare)
			set.Elements = slices.CompactFunc(set.Elements, func(a, b Element) bool { return a.Compare(b) == 0 })
			out = append(out, set)
		}
	}
	for _, fam := range []int{4, 6} {
		var nat, all []netip.Prefix
		for _, p := range snap.Pools {
			if family(p.CIDR.Addr()) != fam {
				continue
			}
			all = append(all, p.CIDR)
			if p.NATOutgoing {
				nat = append(nat, p.CIDR)
			}
		}
		out = append(out, prefixSet(fmt.Sprintf("%s-%d", SetPoolsNAT, fam), fam, nat), prefixSet(fmt.Sprintf("%s-%d", SetPoolsAll, fam), fam, all))
		if hosts, on := snap.VXLANHosts(fam); on {
			out = append(out, prefixSet(fmt.Sprintf("%s-%d", SetVXLANHosts, fam), fam, hosts))
		}
	}
	return out, nil
}

// vxlanRules are Felix's rules for node-to-node VXLAN, ahead of host endpoint policy (after
// the untracked and preDNAT stages, which precede the filter hooks): arriving at a local
// address on the VXLAN port, accepted from the other nodes' tunnel endpoints and dropped from
// anywhere else; leaving from a local address towards those endpoints, accepted.
func (b *builder) vxlanRules() (in, out []Rule) {
	p := b.snap.Config.VXLANUDPPort()
	port := PortList{Dst: true, Ranges: []snapshot.PortRange{{Min: p, Max: p}}}
	for _, fam := range []int{4, 6} {
		if _, on := b.snap.VXLANHosts(fam); !on {
			continue
		}
		set := fmt.Sprintf("%s-%d", SetVXLANHosts, fam)
		udp := []Stmt{NfProto{fam}, L4Proto{Proto: 17}, port}
		in = append(in,
			Rule{Stmts: slices.Concat(udp, []Stmt{AddrSet{Family: fam, Set: set}, LocalAddr{}, Accept})},
			Rule{Stmts: slices.Concat(udp, []Stmt{LocalAddr{}, Drop})})
		out = append(out, Rule{Stmts: slices.Concat(udp, []Stmt{LocalAddr{Src: true}, AddrSet{Family: fam, Dst: true, Set: set}, Accept})})
	}
	return in, out
}

func prefixSet(name string, fam int, prefixes []netip.Prefix) Set {
	s := Set{Name: name, Family: fam}
	for _, p := range NormalizePrefixes(prefixes) {
		s.Elements = append(s.Elements, Element{Prefix: p})
	}
	return s
}

func family(a netip.Addr) int {
	if a.Is4() || a.Is4In6() {
		return 4
	}
	return 6
}

// NormalizePrefixes masks, sorts and de-duplicates prefixes and drops those contained in
// another: interval sets reject overlapping elements.
func NormalizePrefixes(in []netip.Prefix) []netip.Prefix {
	ps := make([]netip.Prefix, 0, len(in))
	for _, p := range in {
		if p.IsValid() {
			ps = append(ps, p.Masked())
		}
	}
	slices.SortFunc(ps, comparePrefix)
	out := ps[:0]
	for _, p := range ps {
		if n := len(out); n > 0 && out[n-1].Bits() <= p.Bits() && out[n-1].Contains(p.Addr()) {
			continue
		}
		out = append(out, p)
	}
	return out
}

func (b *builder) addChain(c Chain) error {
	if _, dup := b.chains[c.Name]; dup {
		return fmt.Errorf("chain %s rendered twice (two endpoints on one interface?)", c.Name)
	}
	if len(c.Rules) == 0 {
		// Every chain holds at least one rule so its hash is observable.
		c.Rules = []Rule{{Stmts: []Stmt{Return}}}
	}
	b.chains[c.Name] = c
	return nil
}

func (b *builder) mapElement(mapName, iface, chain string) {
	m := b.maps[mapName]
	m.Elements = append(m.Elements, MapElement{Interface: iface, Chain: chain})
}

func (b *builder) workload(ep snapshot.Endpoint) error {
	if ep.Interface == "" {
		return fmt.Errorf("WorkloadEndpoint %s: interface: empty", ep.ID)
	}
	in, out := "wl-in-"+safeName(ep.Interface), "wl-out-"+safeName(ep.Interface)
	var inPre, outPre []Rule
	for _, fam := range []int{4, 6} {
		var allowed []netip.Prefix
		for _, p := range slices.Concat(ep.Addrs, ep.AllowSpoofedSources) {
			if family(p.Addr()) == fam {
				allowed = append(allowed, p)
			}
		}
		r := Rule{Stmts: []Stmt{NfProto{fam}}}
		if len(allowed) > 0 {
			r.Stmts = append(r.Stmts, AddrList{Family: fam, Neg: true, Prefixes: NormalizePrefixes(allowed)})
		}
		r.Stmts = append(r.Stmts, Drop)
		outPre = append(outPre, r)
	}
	what := "WorkloadEndpoint " + ep.ID
	if err := b.endpointChains(what+" ingress", in, ep.Ingress, "in", inPre, true); err != nil {
		return err
	}
	if err := b.endpointChains(what+" egress", out, ep.Egress, "out", outPre, true); err != nil {
		return err
	}
	b.mapElement(MapWorkloadIngress, ep.Interface, in)
	b.mapElement(MapWorkloadEgress, ep.Interface, out)
	return nil
}

func (b *builder) failsafe(ports []snapshot.FailsafePort, inbound bool) []Rule {
	var out []Rule
	for _, p := range ports {
		var r Rule
		if p.Net.IsValid() {
			fam := family(p.Net.Addr())
			r.Stmts = append(r.Stmts, NfProto{fam}, AddrList{Family: fam, Dst: !inbound, Prefixes: []netip.Prefix{p.Net.Masked()}})
		}
		r.Stmts = append(r.Stmts, L4Proto{Proto: p.Protocol}, PortList{Dst: true, Ranges: []snapshot.PortRange{{Min: p.Port, Max: p.Port}}}, Accept)
		out = append(out, r)
	}
	return out
}

func (b *builder) hostEndpoint(hep snapshot.HostEndpoint, wild map[string]bool) error {
	if hep.Interface == "" {
		// Only expectedIPs: the applier places it on the interfaces carrying them
		// (appliers.ResolvingHostEndpoints) before rendering; unplaced, it governs nothing.
		return nil
	}
	suffix := "-" + safeName(hep.Interface)
	if hep.Interface == "*" {
		suffix = ""
	}
	cfg := b.snap.Config
	fsIn, fsOut := b.failsafe(cfg.FailsafeInbound, true), b.failsafe(cfg.FailsafeOutbound, false)
	progs := []struct {
		mapName, chain, dir string
		d                   snapshot.Direction
		pre                 []Rule
		normal              bool
	}{
		{MapHostIngress, "he-in", "in", hep.Normal.Ingress, fsIn, true},
		{MapHostEgress, "he-out", "out", hep.Normal.Egress, fsOut, true},
		{MapHostPreDNAT, "he-pre-in", "in", hep.PreDNAT.Ingress, fsIn, false},
		{MapHostRawIngress, "he-raw-in", "in", hep.Untracked.Ingress, fsIn, false},
		{MapHostRawEgress, "he-raw-out", "out", hep.Untracked.Egress, fsOut, false},
		{MapHostFwdIngress, "he-fwd-in", "in", hep.Forward.Ingress, nil, false},
		{MapHostFwdEgress, "he-fwd-out", "out", hep.Forward.Egress, nil, false},
	}
	for _, p := range progs {
		name := p.chain + suffix
		if err := b.endpointChains("HostEndpoint "+hep.ID+" "+p.chain, name, p.d, p.dir, p.pre, p.normal); err != nil {
			return err
		}
		if hep.Interface == "*" {
			wild[p.mapName] = true
		} else {
			b.mapElement(p.mapName, hep.Interface, name)
		}
	}
	return nil
}

// endpointChains renders an endpoint's chain for one program and its tier chains: pre rules,
// each tier in order (a Pass skips the rest of its tier; the tier's end applies its default
// action), then, for normal programs, the profiles and a final drop. Other programs (preDNAT,
// untracked, forward) fall through when nothing decided.
func (b *builder) endpointChains(what, name string, d snapshot.Direction, dir string, pre []Rule, normal bool) error {
	rules := slices.Clone(pre)
	for k, tier := range d.Tiers {
		tc := Chain{Name: fmt.Sprintf("%s-t%d", name, k), Level: LevelTier}
		tc.Rules = append(tc.Rules, Rule{Stmts: []Stmt{MarkSet{Bits: PassMark, Clear: true}}})
		for _, id := range tier.Policies {
			chain, err := b.policyChain(id, dir)
			if err != nil {
				return fmt.Errorf("%s: tier %s: %w", what, tier.Tier, err)
			}
			tc.Rules = append(tc.Rules, Rule{Stmts: []Stmt{Jump(chain)}}, Rule{Stmts: []Stmt{MarkTest{Bits: PassMark}, Return}})
		}
		switch tier.DefaultAction {
		case snapshot.Pass:
		case snapshot.Deny, "":
			tc.Rules = append(tc.Rules, Rule{Stmts: []Stmt{Drop}})
		default:
			return fmt.Errorf("%s: tier %s: defaultAction %q: want Deny or Pass", what, tier.Tier, tier.DefaultAction)
		}
		if err := b.addChain(tc); err != nil {
			return err
		}
		rules = append(rules, Rule{Stmts: []Stmt{Jump(tc.Name)}})
	}
	if len(d.Tiers) > 0 {
		rules = append(rules, Rule{Stmts: []Stmt{MarkSet{Bits: PassMark, Clear: true}}})
	}
	if normal {
		for _, id := range d.Profiles {
			chain, err := b.profileChain(id, dir)
			if err != nil {
				return fmt.Errorf("%s: %w", what, err)
			}
			rules = append(rules, Rule{Stmts: []Stmt{Jump(chain)}})
		}
		rules = append(rules, Rule{Stmts: []Stmt{Drop}})
	}
	return b.addChain(Chain{Name: name, Level: LevelEndpoint, Rules: rules})
}

func (b *builder) policyChain(id, dir string) (string, error) {
	name := PolicyChain(id, dir)
	if _, done := b.chains[name]; done {
		return name, nil
	}
	p, ok := b.policies[id]
	if !ok {
		return "", fmt.Errorf("policy %s: not in the snapshot", id)
	}
	src := p.Inbound
	if dir == "out" {
		src = p.Outbound
	}
	rules, err := b.rules(fmt.Sprintf("%s %s", p.Kind, p.ID), src, p.DoNotTrack, false)
	if err != nil {
		return "", err
	}
	return name, b.addChain(Chain{Name: name, Level: LevelPolicy, Rules: rules})
}

func (b *builder) profileChain(id, dir string) (string, error) {
	name := ProfileChain(id, dir)
	if _, done := b.chains[name]; done {
		return name, nil
	}
	p, ok := b.profiles[id]
	if !ok {
		return "", fmt.Errorf("profile %s: not in the snapshot", id)
	}
	src := p.Inbound
	if dir == "out" {
		src = p.Outbound
	}
	rules, err := b.rules("Profile "+p.ID, src, false, true)
	if err != nil {
		return "", err
	}
	return name, b.addChain(Chain{Name: name, Level: LevelPolicy, Rules: rules})
}

// baseChains renders the hooked chains: conntrack shortcuts, dispatch through the verdict
// maps, unknown workload interfaces dropped, host endpoints, NAT outgoing.
func (b *builder) baseChains(wild map[string]bool) error {
	prefixes := b.snap.Config.InterfacePrefixes
	if len(prefixes) == 0 {
		prefixes = []string{"cali"}
	}
	wl := func(out bool, v Verdict) []Rule {
		var rs []Rule
		for _, p := range prefixes {
			rs = append(rs, Rule{Stmts: []Stmt{IfName{Out: out, Name: p, Prefix: true}, v}})
		}
		return rs
	}
	vmap := func(out bool, m string) []Rule {
		rs := []Rule{{Stmts: []Stmt{IfVmap{Out: out, Map: m}}}}
		if wild[m] {
			// The wildcard host endpoint's chain for this map is the map name's "he-" form.
			rs = append(rs, Rule{Stmts: []Stmt{Jump("he" + strings.TrimPrefix(m, "hep"))}})
		}
		return rs
	}
	rule := func(s ...Stmt) Rule { return Rule{Stmts: s} }
	est := rule(ctEstablished, Accept)
	// IPv6 neighbour discovery and MLD are accepted explicitly, as Felix does: conntrack does
	// not leave every such packet untracked, and a pod whose solicitation for its fe80::1
	// gateway met anti-spoofing (its source is link-local) would lose IPv6 altogether. Towards
	// the host a workload may solicit but not advertise itself as a router (no type 134);
	// towards workloads the host may also send router advertisements.
	ndIn := rule(NfProto{6}, L4Proto{Proto: 58}, ICMPv6Types{Types: []uint8{130, 131, 132, 133, 135, 136, 143}}, Accept)
	ndOut := rule(NfProto{6}, L4Proto{Proto: 58}, ICMPv6Types{Types: []uint8{130, 131, 132, 134, 135, 136, 143}}, Accept)
	conntrack := []Rule{est, rule(ctInvalid, Drop), rule(ctUntracked, Accept)}
	// An accept ends only its own base chain: the host chains at the same hooks must exempt
	// untracked traffic and neighbour discovery again, or a pod's neighbour solicitation, and a
	// host endpoint's under a deny-all, is dropped there.
	hostConntrack := []Rule{est, rule(ctUntracked, Accept)}
	var toHost Verdict
	switch b.snap.Config.DefaultEndpointToHostAction {
	case snapshot.Deny, "", "Drop":
		toHost = Drop
	case snapshot.Allow, "Accept", "Return":
		toHost = Accept
	default:
		return fmt.Errorf("config: defaultEndpointToHostAction %q: want Drop, Accept or Return", b.snap.Config.DefaultEndpointToHostAction)
	}
	lo := func(out bool) Rule { return rule(IfName{Out: out, Name: "lo"}, Accept) }
	vxlanIn, vxlanOut := b.vxlanRules()
	filter := func(hook string, prio int) *BaseChain {
		return &BaseChain{Type: "filter", Hook: hook, Priority: prio}
	}
	base := []Chain{
		{Name: "raw-prerouting", Base: filter("prerouting", PriorityRaw),
			Rules: slices.Concat(wl(false, Return), vmap(false, MapHostRawIngress))},
		{Name: "raw-output", Base: filter("output", PriorityRaw),
			Rules: slices.Concat(wl(true, Return), vmap(true, MapHostRawEgress))},
		{Name: "mangle-prerouting", Base: filter("prerouting", PriorityMangle),
			Rules: slices.Concat([]Rule{est}, wl(false, Return), vmap(false, MapHostPreDNAT))},
		{Name: "filter-input", Base: filter("input", PriorityFilter),
			Rules: slices.Concat(conntrack, []Rule{ndIn}, vmap(false, MapWorkloadEgress), wl(false, Drop))},
		{Name: "filter-input-host", Base: filter("input", PriorityFilter+1),
			Rules: slices.Concat(hostConntrack, []Rule{ndIn}, vxlanIn, wl(false, toHost), []Rule{lo(false)}, vmap(false, MapHostIngress))},
		{Name: "filter-forward", Base: filter("forward", PriorityFilter),
			Rules: slices.Concat(conntrack, vmap(false, MapWorkloadEgress), wl(false, Drop))},
		{Name: "filter-forward-hep-in", Base: filter("forward", PriorityFilter+1),
			Rules: slices.Concat([]Rule{est}, wl(false, Return), vmap(false, MapHostFwdIngress))},
		{Name: "filter-forward-wl-in", Base: filter("forward", PriorityFilter+2),
			Rules: slices.Concat([]Rule{est}, vmap(true, MapWorkloadIngress), wl(true, Drop))},
		{Name: "filter-forward-hep-out", Base: filter("forward", PriorityFilter+3),
			Rules: slices.Concat([]Rule{est}, wl(true, Return), vmap(true, MapHostFwdEgress))},
		{Name: "filter-output", Base: filter("output", PriorityFilter),
			Rules: slices.Concat(conntrack, []Rule{ndOut}, vmap(true, MapWorkloadIngress), wl(true, Drop))},
		{Name: "filter-output-host", Base: filter("output", PriorityFilter+1),
			Rules: slices.Concat(hostConntrack, []Rule{ndOut}, wl(true, Return), []Rule{lo(true)}, vxlanOut, vmap(true, MapHostEgress))},
		{Name: "nat-postrouting", Base: &BaseChain{Type: "nat", Hook: "postrouting", Priority: PrioritySrcNAT},
			Rules: []Rule{
				rule(MarkTest{Bits: MasqMark}, Masquerade{}),
				rule(NfProto{4}, AddrSet{Family: 4, Set: SetPoolsNAT + "-4"}, AddrSet{Family: 4, Dst: true, Neg: true, Set: SetPoolsAll + "-4"}, Masquerade{}),
				rule(NfProto{6}, AddrSet{Family: 6, Set: SetPoolsNAT + "-6"}, AddrSet{Family: 6, Dst: true, Neg: true, Set: SetPoolsAll + "-6"}, Masquerade{}),
			}},
	}
	for _, c := range base {
		c.Level = LevelBase
		if err := b.addChain(c); err != nil {
			return err
		}
	}
	return nil
}
