package render

import (
	"strings"

	"github.com/felis-dev/felis/snapshot"
)

// Host endpoint stages: the programs around a host endpoint's normal policy, in the order
// of the nftables dataplane's hooks (index into HostPrograms; HS_* in bpf-programs/hep.h).
const (
	StageUntrackedIn  = iota // doNotTrack ingress: every packet arriving, before conntrack
	StageUntrackedOut        // doNotTrack egress: every packet the host sends, before conntrack
	StagePreDNATIn           // preDNAT ingress: new flows arriving, before service DNAT
	StageForwardIn           // applyOnForward ingress: new flows forwarded from the interface
	StageForwardOut          // applyOnForward egress: new flows forwarded to the interface
	Stages
)

// HostPrograms is a host endpoint interface's stage programs (struct hep_progs in hep.h);
// a stage without policy has length 0 and is skipped.
type HostPrograms struct {
	Prog [Stages]uint32
	Len  [Stages]uint32
}

// Host is a host endpoint's map entries before they are put on an interface.
type Host struct {
	Endpoint Endpoint
	Programs HostPrograms
}

// stages compiles a host endpoint's stage programs. Untracked and preDNAT programs start
// with the failsafe ports, which end the stage without a verdict (in nftables their accept
// ends only the raw or mangle chain: the packet stays tracked and meets the later stages,
// which open the same ports); forward programs have no failsafes, as in nftables. A stage
// with no tier is left empty: nothing in it could decide.
func (r *renderer) stages(hep *snapshot.HostEndpoint, fsIn, fsOut []snapshot.Rule) [Stages][]Insn {
	ret := func(rules []snapshot.Rule) []snapshot.Rule {
		out := make([]snapshot.Rule, len(rules))
		for i, rule := range rules {
			rule.Action = snapshot.Return
			out[i] = rule
		}
		return out
	}
	var out [Stages][]Insn
	for i, s := range [Stages]struct {
		d       snapshot.Direction
		inbound bool
		pre     []snapshot.Rule
	}{
		StageUntrackedIn:  {hep.Untracked.Ingress, true, ret(fsIn)},
		StageUntrackedOut: {hep.Untracked.Egress, false, ret(fsOut)},
		StagePreDNATIn:    {hep.PreDNAT.Ingress, true, ret(fsIn)},
		StageForwardIn:    {hep.Forward.Ingress, true, nil},
		StageForwardOut:   {hep.Forward.Egress, false, nil},
	} {
		if len(s.d.Tiers) == 0 {
			continue
		}
		out[i] = r.programEnd(s.d, s.inbound, s.pre, ActionReturn)
	}
	return out
}

// isWorkload says whether an interface name has a workload prefix: the nftables dataplane
// hands such interfaces to the workload chains before any host endpoint sees them.
func (st *State) isWorkload(iface string) bool {
	for _, p := range st.WorkloadPrefixes {
		if strings.HasPrefix(iface, p) {
			return true
		}
	}
	return false
}

// ExpandWildcard puts the `*` host endpoint on every interface in ifaces that has no named
// host endpoint and no workload prefix, as the nftables dataplane applies it to every
// interface its verdict maps do not name. lo gets only the untracked and preDNAT stages: the
// nftables filter chains accept lo before the normal programs.
func (st *State) ExpandWildcard(ifaces []string) {
	if st.Wildcard == nil {
		return
	}
	for _, name := range ifaces {
		if _, named := st.Endpoints[name]; named || st.isWorkload(name) {
			continue
		}
		ep := st.Wildcard.Endpoint
		if name == "lo" {
			ep.Flags |= EndpointFlagHostNoNormal
		}
		st.Endpoints[name] = ep
		st.Hosts[name] = st.Wildcard.Programs
	}
}
