package render

import (
	"fmt"
	"net/netip"
	"strings"
)

// FrontendVmap dispatches a packet by destination address, protocol and port through a
// frontend map: "ip daddr . meta l4proto . th dport vmap @svc-4".
type FrontendVmap struct {
	Family int
	Map    string
}

// NumgenVmap picks one of Chains uniformly at random and jumps there with goto:
// "numgen random mod 2 vmap { 0 : goto a, 1 : goto b }".
type NumgenVmap struct{ Chains []string }

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

func (FrontendVmap) isStmt() {}
func (NumgenVmap) isStmt()   {}
func (DNAT) isStmt()         {}
func (SetUpdate) isStmt()    {}

// String renders the statement in nft syntax.
func (s FrontendVmap) String() string {
	return addrField(s.Family, true) + " . meta l4proto . th dport vmap @" + s.Map
}

// String renders the statement in nft syntax.
func (s NumgenVmap) String() string {
	parts := make([]string, len(s.Chains))
	for i, c := range s.Chains {
		parts[i] = fmt.Sprintf("%d : goto %s", i, c)
	}
	return fmt.Sprintf("numgen random mod %d vmap { %s }", len(s.Chains), strings.Join(parts, ", "))
}

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
