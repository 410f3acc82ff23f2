package render

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/felis-dev/felis/snapshot"
)

// Instruction kinds, flags and actions: the contract with bpf-programs/policy.c.
const (
	KindIPVersion uint8 = 1
	KindProtocol  uint8 = 2
	KindICMP      uint8 = 3
	KindSet       uint8 = 4
	KindPort      uint8 = 5
	KindAction    uint8 = 16

	FlagNeg      uint8 = 1
	FlagEnd      uint8 = 2
	FlagSrc      uint8 = 4
	FlagWithPort uint8 = 8
	FlagHasCode  uint8 = 16

	ActionNext  uint8 = 0
	ActionAllow uint8 = 1
	ActionDeny  uint8 = 2
	ActionPass  uint8 = 3
	// ActionReturn ends a program without a verdict: a host endpoint stage falls through to
	// the next stage.
	ActionReturn uint8 = 4
)

// Directions index an endpoint's two programs.
const (
	DirToWorkload   = 0 // the endpoint's ingress policy (TC egress of the host-side veth)
	DirFromWorkload = 1 // the endpoint's egress policy (TC ingress of the host-side veth)
)

// Insn is one instruction of a direction program (struct insn in policy.c).
type Insn struct {
	Kind, Flags, A, B uint8
	Min, Max          uint16
	Set               uint32
	Next              uint32
}

// SetKey is one IP-set member as an LPM-trie key (struct set_key in policy.c). Bits is the
// member prefix's length; the trie's prefix length is 64 + Bits.
type SetKey struct {
	Set      uint32
	Family   uint8 // 4 or 6
	Protocol uint8
	Port     uint16
	Addr     [16]byte
	Bits     uint8
}

// String renders the key for op logs: set, family, protocol/port and prefix.
func (k SetKey) String() string {
	b := make([]byte, 0, 64)
	const hex = "0123456789abcdef"
	for i := 28; i >= 0; i -= 4 {
		b = append(b, hex[k.Set>>i&0xf])
	}
	b = append(b, ' ')
	b = k.Prefix().AppendTo(b)
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(k.Protocol), 10)
	b = append(b, '/')
	b = strconv.AppendUint(b, uint64(k.Port), 10)
	return string(b)
}

// Prefix returns the member's address prefix.
func (k SetKey) Prefix() netip.Prefix {
	if k.Family == 4 {
		return netip.PrefixFrom(netip.AddrFrom4([4]byte(k.Addr[:4])), int(k.Bits))
	}
	return netip.PrefixFrom(netip.AddrFrom16(k.Addr), int(k.Bits))
}

// Endpoint is the map entry of one workload interface, less where its programs live (the
// applier places programs in the instruction array).
type Endpoint struct {
	Prog     [2]uint32
	Len      [2]uint32
	SpoofSet uint32
	Flags    uint32 // EndpointFlag* bits
}

// EndpointFlagToHostDeny drops the endpoint's traffic to the host itself once its egress
// policy allowed it (DefaultEndpointToHostAction Deny, Felix's Drop).
const EndpointFlagToHostDeny uint32 = 1

// EndpointFlagHost marks a host endpoint's interface: no anti-spoofing; the normal programs
// police traffic to or from the host itself (DirFromWorkload holds the ingress program, run
// at TC ingress; DirToWorkload the egress program, run at TC egress), the stages in
// HostPrograms the rest (see bpf-programs/hep.h).
const EndpointFlagHost uint32 = 2

// EndpointFlagHostNoNormal marks a host endpoint interface whose normal programs never run:
// lo under a wildcard host endpoint (the nftables dataplane accepts lo before them).
const EndpointFlagHostNoNormal uint32 = 4

// failsafeRules turns failsafe ports into Allow rules placed before a host endpoint's
// policy: the destination port always, and the remote network when set (the source for
// inbound failsafes, the destination for outbound ones).
func failsafeRules(ports []snapshot.FailsafePort, inbound bool) []snapshot.Rule {
	var out []snapshot.Rule
	for _, p := range ports {
		proto := p.Protocol
		r := snapshot.Rule{Action: snapshot.Allow, Protocol: &proto, DstPorts: []snapshot.PortRange{{Min: p.Port, Max: p.Port}}}
		if p.Net.IsValid() {
			if inbound {
				r.SrcNets = []netip.Prefix{p.Net.Masked()}
			} else {
				r.DstNets = []netip.Prefix{p.Net.Masked()}
			}
		}
		out = append(out, r)
	}
	return out
}

// vxlanRules are the rules placed before a host endpoint's normal programs (and its
// failsafes) for node-to-node VXLAN, as Felix's filter chains place them before host endpoint
// policy: arriving (the normal ingress program sees only packets to a local address) on the
// VXLAN port, allowed from the other nodes' tunnel endpoints and denied from anywhere else;
// leaving (the normal egress program sees only the host's own packets) towards those
// endpoints, allowed. The untracked and preDNAT stages still come first, as in nftables.
func vxlanRules(s *snapshot.Snapshot) (in, out []snapshot.Rule) {
	udp := uint8(17)
	port := []snapshot.PortRange{{Min: s.Config.VXLANUDPPort(), Max: s.Config.VXLANUDPPort()}}
	for _, fam := range []int{4, 6} {
		hosts, on := s.VXLANHosts(fam)
		if !on {
			continue
		}
		if len(hosts) > 0 { // no nets would mean any source
			in = append(in, snapshot.Rule{Action: snapshot.Allow, IPVersion: fam, Protocol: &udp, DstPorts: port, SrcNets: hosts})
			out = append(out, snapshot.Rule{Action: snapshot.Allow, IPVersion: fam, Protocol: &udp, DstPorts: port, DstNets: hosts})
		}
		in = append(in, snapshot.Rule{Action: snapshot.Deny, IPVersion: fam, Protocol: &udp, DstPorts: port})
	}
	return in, out
}

// toHostFlags maps DefaultEndpointToHostAction to endpoint flags as the nftables renderer
// does: Deny (the default) drops, Allow and Return accept.
func toHostFlags(a snapshot.Action) (uint32, error) {
	switch a {
	case snapshot.Deny, "", "Drop":
		return EndpointFlagToHostDeny, nil
	case snapshot.Allow, "Accept", snapshot.Return:
		return 0, nil
	}
	return 0, fmt.Errorf("config: defaultEndpointToHostAction %q: want Drop, Accept or Return", a)
}

// MemberSet is one snapshot IP set: its numeric ID, type and members (shared with the
// snapshot, not copied: a million-member set costs nothing to render).
type MemberSet struct {
	ID      uint32
	Type    snapshot.IPSetType
	Members []snapshot.Member
}

// Key returns member i as an LPM-trie key (protocol and port only for ip+port sets).
func (m *MemberSet) Key(i int) SetKey {
	mem := m.Members[i]
	if m.Type == snapshot.IPSetIPPort {
		return setKey(m.ID, mem.Prefix, mem.Protocol, mem.Port)
	}
	return setKey(m.ID, mem.Prefix, 0, 0)
}

// State is the desired contents of every policy map.
type State struct {
	// Sets are the members of the sets rendering made (rule nets, anti-spoofing sources).
	Sets map[SetKey]struct{}
	// MemberSets are the snapshot's IP sets, by snapshot set ID.
	MemberSets map[string]MemberSet
	Endpoints  map[string]Endpoint // by interface name
	// SetIDs maps each set's key ("set:<snapshot id>", "nets:<prefixes>") to its numeric ID.
	SetIDs map[string]uint32
	// Programs are the programs by ID (the hash of their content; equal programs are shared
	// between endpoints and stages).
	Programs map[uint32][]Insn
	// Hosts are the host endpoint stage programs, by interface name (host endpoints only).
	Hosts map[string]HostPrograms
	// Wildcard is the `*` host endpoint, if any: ExpandWildcard puts it on interfaces.
	Wildcard *Host
	// WorkloadPrefixes are the workload interface name prefixes (never host endpoints).
	WorkloadPrefixes []string
	Warnings         []string
}

// AllSets returns every LPM-trie key: the rendered sets' and the snapshot sets' members.
func (st *State) AllSets() map[SetKey]struct{} {
	n := len(st.Sets)
	for _, m := range st.MemberSets {
		n += len(m.Members)
	}
	out := make(map[SetKey]struct{}, n)
	for k := range st.Sets {
		out[k] = struct{}{}
	}
	for _, m := range st.MemberSets {
		for i := range m.Members {
			out[m.Key(i)] = struct{}{}
		}
	}
	return out
}

// Render computes the map contents for a snapshot's workload endpoints and host endpoints.
func Render(s *snapshot.Snapshot) (*State, error) {
	flags, err := toHostFlags(s.Config.DefaultEndpointToHostAction)
	if err != nil {
		return nil, err
	}
	r := &renderer{
		s:        s,
		types:    map[string]snapshot.IPSetType{},
		policies: map[string]*snapshot.Policy{},
		profiles: map[string]*snapshot.Profile{},
		setKeys:  map[string]struct{}{},
	}
	for _, set := range s.IPSets {
		r.types[set.ID] = set.Type
		r.setKeys["set:"+set.ID] = struct{}{}
	}
	for i := range s.Policies {
		r.policies[s.Policies[i].ID] = &s.Policies[i]
	}
	for i := range s.Profiles {
		r.profiles[s.Profiles[i].ID] = &s.Profiles[i]
	}
	// Pass 1: collect every set key the programs reference, so IDs are assigned from the
	// whole, sorted key list (stable whatever the order of first use).
	r.collect = true
	for i := range s.Endpoints {
		ep := &s.Endpoints[i]
		r.program(ep.Ingress, true, nil)
		r.program(ep.Egress, false, nil)
		r.setKeys[netsKey(spoofNets(ep))] = struct{}{}
	}
	fsIn, fsOut := failsafeRules(s.Config.FailsafeInbound, true), failsafeRules(s.Config.FailsafeOutbound, false)
	vxIn, vxOut := vxlanRules(s)
	normalIn, normalOut := slices.Concat(vxIn, fsIn), slices.Concat(vxOut, fsOut)
	for i := range s.HostEndpoints {
		hep := &s.HostEndpoints[i]
		r.program(hep.Normal.Ingress, true, normalIn)
		r.program(hep.Normal.Egress, false, normalOut)
		r.stages(hep, fsIn, fsOut)
	}
	r.collect = false
	r.ids = assignIDs(slices.Sorted(mapKeys(r.setKeys)))

	st := &State{
		Sets:       map[SetKey]struct{}{},
		MemberSets: map[string]MemberSet{},
		Endpoints:  map[string]Endpoint{},
		SetIDs:     r.ids,
		Programs:   map[uint32][]Insn{},
		Hosts:      map[string]HostPrograms{},
	}
	st.WorkloadPrefixes = s.Config.InterfacePrefixes
	if len(st.WorkloadPrefixes) == 0 {
		st.WorkloadPrefixes = []string{"cali"}
	}
	for _, set := range s.IPSets {
		st.MemberSets[set.ID] = MemberSet{ID: r.ids["set:"+set.ID], Type: set.Type, Members: set.Members}
	}
	// Net lists become sets of their own.
	for key, id := range r.ids {
		if rest, ok := strings.CutPrefix(key, "nets:"); ok && rest != "" {
			for _, p := range strings.Split(rest, ",") {
				pfx, err := netip.ParsePrefix(p)
				if err != nil {
					return nil, fmt.Errorf("internal: net set key %q: %w", key, err)
				}
				st.Sets[setKey(id, pfx, 0, 0)] = struct{}{}
			}
		}
	}
	// Programs are content-addressed: endpoints with the same program share it.
	progs := map[string][]Insn{}
	type epProgs struct {
		iface string
		code  [2]string
		spoof uint32
		flags uint32
		host  *[Stages]string // host endpoints: the stage programs (len 0: none)
	}
	var eps []epProgs
	for i := range s.Endpoints {
		ep := &s.Endpoints[i]
		if ep.Interface == "" {
			st.Warnings = append(st.Warnings, fmt.Sprintf("endpoints[%s].interface: empty, endpoint not programmed", ep.ID))
			continue
		}
		e := epProgs{iface: ep.Interface, spoof: r.ids[netsKey(spoofNets(ep))], flags: flags}
		for d, dir := range []snapshot.Direction{ep.Ingress, ep.Egress} {
			code := r.program(dir, d == DirToWorkload, nil)
			k := ContentKey(code)
			progs[k] = code
			e.code[d] = k
		}
		eps = append(eps, e)
	}
	workload := map[string]bool{}
	for _, e := range eps {
		workload[e.iface] = true
	}
	wildcard := -1
	for i := range s.HostEndpoints {
		hep := &s.HostEndpoints[i]
		switch {
		case hep.Interface == "":
			st.Warnings = append(st.Warnings, fmt.Sprintf("hostEndpoints[%s].interface: empty, host endpoint not programmed", hep.ID))
			continue
		case hep.Interface == "*" && wildcard >= 0:
			st.Warnings = append(st.Warnings, fmt.Sprintf("hostEndpoints[%s].interface: a second \"*\" host endpoint (%s is programmed), not programmed", hep.ID, eps[wildcard].iface))
			continue
		case workload[hep.Interface] || (hep.Interface != "*" && st.isWorkload(hep.Interface)):
			st.Warnings = append(st.Warnings, fmt.Sprintf("hostEndpoints[%s].interface: %s is a workload interface, host endpoint not programmed", hep.ID, hep.Interface))
			continue
		}
		workload[hep.Interface] = true
		e := epProgs{iface: hep.Interface, flags: EndpointFlagHost}
		// TC egress (DirToWorkload's slot) runs the egress policy, TC ingress the ingress one.
		for d, prog := range [2][]Insn{r.program(hep.Normal.Egress, false, normalOut), r.program(hep.Normal.Ingress, true, normalIn)} {
			k := ContentKey(prog)
			progs[k] = prog
			e.code[d] = k
		}
		var stages [Stages]string
		for i, code := range r.stages(hep, fsIn, fsOut) {
			if len(code) > 0 {
				stages[i] = ContentKey(code)
				progs[stages[i]] = code
			}
		}
		e.host = &stages
		if hep.Interface == "*" {
			wildcard = len(eps)
		}
		eps = append(eps, e)
	}
	progIDs := assignIDs(slices.Sorted(mapKeys(progs)))
	for k, code := range progs {
		st.Programs[progIDs[k]] = code
	}
	for _, e := range eps {
		ep := Endpoint{
			Prog:     [2]uint32{progIDs[e.code[0]], progIDs[e.code[1]]},
			Len:      [2]uint32{uint32(len(progs[e.code[0]])), uint32(len(progs[e.code[1]]))},
			SpoofSet: e.spoof,
			Flags:    e.flags,
		}
		var hp HostPrograms
		if e.host != nil {
			for i, k := range e.host {
				if k != "" {
					hp.Prog[i], hp.Len[i] = progIDs[k], uint32(len(progs[k]))
				}
			}
		}
		switch {
		case e.iface == "*":
			st.Wildcard = &Host{Endpoint: ep, Programs: hp}
		case e.host != nil:
			st.Hosts[e.iface] = hp
			fallthrough
		default:
			st.Endpoints[e.iface] = ep
		}
	}
	return st, nil
}

type renderer struct {
	s        *snapshot.Snapshot
	types    map[string]snapshot.IPSetType
	policies map[string]*snapshot.Policy
	profiles map[string]*snapshot.Profile
	setKeys  map[string]struct{}
	collect  bool
	ids      map[string]uint32
}

// program compiles one direction: tiers (rules, Pass to the tier's end, the default Deny
// unless the default is Pass), then profiles (Pass to the profile's end), then Deny. pre
// rules (host endpoints: the VXLAN rules and failsafes) come first.
func (r *renderer) program(d snapshot.Direction, inbound bool, pre []snapshot.Rule) []Insn {
	return r.programEnd(d, inbound, pre, ActionDeny)
}

// programEnd is program ending with the action end instead of Deny (host endpoint stages end
// with Return; derive gives them no profiles).
func (r *renderer) programEnd(d snapshot.Direction, inbound bool, pre []snapshot.Rule, end uint8) []Insn {
	var code []Insn
	var fix []int
	for i := range pre {
		code = r.rule(code, &pre[i], &fix)
	}
	for _, t := range d.Tiers {
		fix = fix[:0]
		for _, id := range t.Policies {
			pol, ok := r.policies[id]
			if !ok {
				continue
			}
			rules := pol.Outbound
			if inbound {
				rules = pol.Inbound
			}
			for i := range rules {
				code = r.rule(code, &rules[i], &fix)
			}
		}
		if t.DefaultAction != snapshot.Pass {
			code = append(code, Insn{Kind: KindAction, A: ActionDeny})
		}
		for _, f := range fix {
			code[f].Next = uint32(len(code))
		}
	}
	for _, id := range d.Profiles {
		prof, ok := r.profiles[id]
		if !ok {
			continue
		}
		fix = fix[:0]
		rules := prof.Outbound
		if inbound {
			rules = prof.Inbound
		}
		for i := range rules {
			code = r.rule(code, &rules[i], &fix)
		}
		for _, f := range fix {
			code[f].Next = uint32(len(code))
		}
	}
	return append(code, Insn{Kind: KindAction, A: end})
}

// rule appends one rule: its tests as clauses (each failing clause jumps past the rule), then
// its action. Pass actions are recorded in fix for the caller to point at the section's end.
func (r *renderer) rule(code []Insn, rule *snapshot.Rule, fix *[]int) []Insn {
	start := len(code)
	clause := func(tests ...Insn) {
		for i := range tests {
			if i == len(tests)-1 {
				tests[i].Flags |= FlagEnd
			}
			code = append(code, tests[i])
		}
	}
	if rule.IPVersion == 4 || rule.IPVersion == 6 {
		clause(Insn{Kind: KindIPVersion, A: uint8(rule.IPVersion)})
	}
	if rule.Protocol != nil {
		clause(Insn{Kind: KindProtocol, A: *rule.Protocol})
	}
	if rule.NotProtocol != nil {
		clause(Insn{Kind: KindProtocol, A: *rule.NotProtocol, Flags: FlagNeg})
	}
	icmp := func(m *snapshot.ICMPMatch, flags uint8) Insn {
		in := Insn{Kind: KindICMP, A: m.Type, Flags: flags}
		if m.Code != nil {
			in.Flags |= FlagHasCode
			in.B = *m.Code
		}
		return in
	}
	if rule.ICMP != nil {
		clause(icmp(rule.ICMP, 0))
	}
	if rule.NotICMP != nil {
		clause(icmp(rule.NotICMP, FlagNeg))
	}
	// Clauses are a conjunction, so their order is free: port clauses come before set
	// clauses (LPM lookups), so a rule for another port is skipped at the cost of a compare.
	side := func(cheap bool, src uint8, nets, notNets []netip.Prefix, sets, notSets []string, ports, notPorts []snapshot.PortRange, named, notNamed []string) {
		if cheap {
			if len(ports) > 0 && len(named) == 0 {
				var or []Insn
				for _, p := range ports {
					or = append(or, Insn{Kind: KindPort, Flags: src, Min: p.Min, Max: p.Max})
				}
				clause(or...)
			}
			for _, p := range notPorts {
				clause(Insn{Kind: KindPort, Flags: src | FlagNeg, Min: p.Min, Max: p.Max})
			}
			return
		}
		if len(nets) > 0 {
			clause(Insn{Kind: KindSet, Flags: src, Set: r.netsID(nets)})
		}
		if len(notNets) > 0 {
			clause(Insn{Kind: KindSet, Flags: src | FlagNeg, Set: r.netsID(notNets)})
		}
		for _, id := range sets {
			clause(Insn{Kind: KindSet, Flags: src, Set: r.setID(id)})
		}
		for _, id := range notSets {
			clause(Insn{Kind: KindSet, Flags: src | FlagNeg, Set: r.setID(id)})
		}
		if len(named) > 0 {
			var or []Insn
			for _, p := range ports {
				or = append(or, Insn{Kind: KindPort, Flags: src, Min: p.Min, Max: p.Max})
			}
			for _, id := range named {
				or = append(or, Insn{Kind: KindSet, Flags: src | r.withPort(id), Set: r.setID(id)})
			}
			clause(or...)
		}
		for _, id := range notNamed {
			clause(Insn{Kind: KindSet, Flags: src | FlagNeg | r.withPort(id), Set: r.setID(id)})
		}
	}
	for _, cheap := range []bool{true, false} {
		side(cheap, FlagSrc, rule.SrcNets, rule.NotSrcNets, rule.SrcIPSets, rule.NotSrcIPSets, rule.SrcPorts, rule.NotSrcPorts,
			rule.SrcNamedPortIPSets, rule.NotSrcNamedPortIPSets)
		side(cheap, 0, rule.DstNets, rule.NotDstNets, rule.DstIPSets, rule.NotDstIPSets, rule.DstPorts, rule.NotDstPorts,
			rule.DstNamedPortIPSets, rule.NotDstNamedPortIPSets)
	}
	for _, id := range rule.DstServiceIPSets {
		clause(Insn{Kind: KindSet, Flags: r.withPort(id), Set: r.setID(id)})
	}
	end := uint32(len(code) + 1) // past the action
	for i := start; i < len(code); i++ {
		if code[i].Flags&FlagEnd != 0 {
			code[i].Next = end
		}
	}
	act := Insn{Kind: KindAction, A: ActionNext}
	switch rule.Action {
	case snapshot.Allow:
		act.A = ActionAllow
	case snapshot.Deny:
		act.A = ActionDeny
	case snapshot.Pass:
		act.A = ActionPass
		*fix = append(*fix, len(code))
	case snapshot.Return:
		act.A = ActionReturn
	}
	return append(code, act)
}

// withPort says whether a set is looked up with the packet's protocol and port: only ip+port
// sets hold them (the evaluator ignores protocol and port for the other types).
func (r *renderer) withPort(id string) uint8 {
	if r.types[id] == snapshot.IPSetIPPort {
		return FlagWithPort
	}
	return 0
}

func (r *renderer) setID(id string) uint32 {
	k := "set:" + id
	if r.collect {
		r.setKeys[k] = struct{}{}
		return 0
	}
	return r.ids[k]
}

func (r *renderer) netsID(nets []netip.Prefix) uint32 {
	k := netsKey(nets)
	if r.collect {
		r.setKeys[k] = struct{}{}
		return 0
	}
	return r.ids[k]
}

func netsKey(nets []netip.Prefix) string {
	ss := make([]string, 0, len(nets))
	for _, n := range nets {
		ss = append(ss, n.Masked().String())
	}
	sort.Strings(ss)
	return "nets:" + strings.Join(slices.Compact(ss), ",")
}

// spoofNets are the source prefixes an endpoint may send from.
func spoofNets(ep *snapshot.Endpoint) []netip.Prefix {
	return append(slices.Clone(ep.Addrs), ep.AllowSpoofedSources...)
}

func setKey(id uint32, p netip.Prefix, proto uint8, port uint16) SetKey {
	p = p.Masked()
	k := SetKey{Set: id, Protocol: proto, Port: port, Bits: uint8(p.Bits())}
	if p.Addr().Is4() {
		k.Family = 4
		a := p.Addr().As4()
		copy(k.Addr[:], a[:])
	} else {
		k.Family = 6
		k.Addr = p.Addr().As16()
	}
	return k
}

// assignIDs gives each key a nonzero 32-bit ID derived from its content (FNV-1a), probing
// upward on collision in sorted key order, so IDs are stable across renders and restarts.
func assignIDs(keys []string) map[string]uint32 {
	ids := make(map[string]uint32, len(keys))
	used := make(map[uint32]bool, len(keys))
	for _, k := range keys {
		h := fnv.New32a()
		h.Write([]byte(k))
		id := h.Sum32()
		for id == 0 || used[id] {
			id++
		}
		used[id] = true
		ids[k] = id
	}
	return ids
}

// ContentKey is a program's content as a string: equal keys, equal programs.
func ContentKey(code []Insn) string {
	b := make([]byte, 0, len(code)*16)
	for _, in := range code {
		b = append(b, in.Kind, in.Flags, in.A, in.B)
		b = binary.LittleEndian.AppendUint16(b, in.Min)
		b = binary.LittleEndian.AppendUint16(b, in.Max)
		b = binary.LittleEndian.AppendUint32(b, in.Set)
		b = binary.LittleEndian.AppendUint32(b, in.Next)
	}
	return string(b)
}

func mapKeys[K comparable, V any](m map[K]V) func(func(K) bool) {
	return func(yield func(K) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}
