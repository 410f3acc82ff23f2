package hns

import (
	"net/netip"

	"github.com/felis-dev/felis/snapshot"
)

// Packet is what HNS's ACL matching looks at, seen from the endpoint: its local and remote
// address and port, and the protocol. Ports are 0 for protocols without ports.
type Packet struct {
	Local, Remote         netip.Addr
	Protocol              uint8
	LocalPort, RemotePort uint16
}

// Matches reports whether r matches p as HNS would (protocol, address lists, and port lists
// for TCP and UDP). Direction and rule type are the caller's business.
func (r Rule) Matches(p Packet) bool {
	if r.Protocol != AnyProtocol && r.Protocol != uint16(p.Protocol) {
		return false
	}
	if len(r.LocalAddresses) > 0 && !prefixesContain(r.LocalAddresses, p.Local) {
		return false
	}
	if len(r.RemoteAddresses) > 0 && !prefixesContain(r.RemoteAddresses, p.Remote) {
		return false
	}
	if len(r.LocalPorts) > 0 && !portsContain(r.LocalPorts, p.LocalPort) {
		return false
	}
	if len(r.RemotePorts) > 0 && !portsContain(r.RemotePorts, p.RemotePort) {
		return false
	}
	return true
}

func prefixesContain(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func portsContain(rs []snapshot.PortRange, port uint16) bool {
	for _, r := range rs {
		if port >= r.Min && port <= r.Max {
			return true
		}
	}
	return false
}

// Verdict is the outcome of HNS evaluating an endpoint's ACL list for one packet.
type Verdict struct {
	Action Action
	// Rule is the index of the deciding rule in the list, or -1 when no Switch rule matched
	// and HNS's default (allow) applied.
	Rule int
	// Ambiguous is set when rules of the deciding priority disagree: HNS's tie-break among
	// equal priorities is unspecified, so such a list is wrong whatever HNS picks.
	Ambiguous bool
}

// Evaluate runs a packet through an ACL list the way HNS's switch does: only Switch rules of
// the packet's direction count, the lowest priority number among matching rules decides, and
// a packet no rule matches is allowed (the VFP port default).
func Evaluate(rules []Rule, dir Direction, p Packet) Verdict {
	v := Verdict{Action: Allow, Rule: -1}
	for i, r := range rules {
		if r.Direction != dir || r.Type != Switch && r.Type != "" || !r.Matches(p) {
			continue
		}
		switch {
		case v.Rule < 0 || r.Priority < rules[v.Rule].Priority:
			v = Verdict{Action: r.Action, Rule: i}
		case r.Priority == rules[v.Rule].Priority && r.Action != v.Action:
			v.Ambiguous = true
		}
	}
	return v
}
