package render

import (
	"fmt"
	"net/netip"
)

// FrontendVmap dispatches a packet by destination address, protocol and port through a
// frontend map: "ip daddr . meta l4proto . th dport vmap @svc-4".
type FrontendVmap struct {
	Family int
	Map    string
}

// RandomOneIn matches with probability 1/Mod, drawing a fresh random number:
// "numgen random mod 3 == 0". A chain of them picks one of N targets uniformly: the i-th
// (from 0) of N-1 rules matches one in N-i, the last target takes what is left (iptables'
// statistic cascade). One fresh draw per rule costs no set, where kube-proxy's
// "numgen random mod N vmap { ... }" costs an anonymous map per service, and the kernel
// resolves each anonymous map of a batch by walking the whole transaction: quadratic in a
// full sync of thousands of services.
type RandomOneIn struct{ Mod uint32 }

// DNAT rewrites the destination to Addr and Port: "dnat ip to 10.0.0.1:8080". The rule must
// match the transport protocol first (nft needs one to rewrite a port).
type DNAT struct {
	Addr netip.Addr
	Port uint16
}

// SetUpdate adds the packet's source address to a dynamic set, or refreshes its timeout:
// "update @aff { ip saddr }".
type SetUpdate struct {
	Family int
	Set    string
}

// Reject answers the packet with an ICMP (ICMPv6) port unreachable and drops it: "reject".
type Reject struct{}

// AddrPairSet matches when the packet's source and destination address pair is in a pair
// set: "ip saddr . ip daddr @hairpin-4". No longer rendered (endpoint chains mark hairpin
// traffic): it and Set.Pair remain so the hairpin sets and chain an earlier felis programmed
// compile, read back and are deleted on upgrade (TestKernelServicesDropPairSetHairpin).
type AddrPairSet struct {
	Family int
	Set    string
}

// CTStatus matches connections whose conntrack status has the bit: "ct status dnat".
type CTStatus struct{ Status string } // dnat

func (AddrPairSet) isStmt() {}
func (CTStatus) isStmt()    {}

// String renders the statement in nft syntax.
func (s AddrPairSet) String() string {
	return addrField(s.Family, false) + " . " + addrField(s.Family, true) + " @" + s.Set
}

// String renders the statement in nft syntax.
func (s CTStatus) String() string { return "ct status " + s.Status }

func (Reject) isStmt()       {}
func (FrontendVmap) isStmt() {}
func (RandomOneIn) isStmt()  {}
func (DNAT) isStmt()         {}
func (SetUpdate) isStmt()    {}

// String renders the statement in nft syntax.
func (Reject) String() string { return "reject" }

// String renders the statement in nft syntax.
func (s FrontendVmap) String() string {
	return addrField(s.Family, true) + " . meta l4proto . th dport vmap @" + s.Map
}

// String renders the statement in nft syntax.
func (s RandomOneIn) String() string { return fmt.Sprintf("numgen random mod %d == 0", s.Mod) }

// String renders the statement in nft syntax.
func (s DNAT) String() string {
	if s.Addr.Is6() {
		return fmt.Sprintf("dnat ip6 to [%s]:%d", s.Addr, s.Port)
	}
	return fmt.Sprintf("dnat ip to %s:%d", s.Addr, s.Port)
}

// String renders the statement in nft syntax.
func (s SetUpdate) String() string {
	return fmt.Sprintf("update @%s { %s }", s.Set, addrField(s.Family, false))
}
