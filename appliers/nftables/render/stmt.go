package render

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/felis-dev/felis/snapshot"
)

// Stmt is one statement of a rule: a match, a side effect or a verdict. The concrete types
// below are the whole vocabulary; the applier compiles each to kernel expressions.
type Stmt interface {
	String() string
	isStmt()
}

// PassMark is the packet-mark bit a policy's Pass sets so its tier chain skips the rest of
// the tier; every tier chain clears it first. It lies outside kube-proxy's 0xc000.
const PassMark uint32 = 0x01000000

// NfProto matches the packet's family: "meta nfproto ipv4".
type NfProto struct{ Family int }

// L4Proto matches the transport protocol: "meta l4proto tcp", "meta l4proto != 17".
type L4Proto struct {
	Proto uint8
	Neg   bool
}

// AddrSet matches the source or destination address against a named set: "ip saddr @s".
type AddrSet struct {
	Family   int
	Dst, Neg bool
	Set      string
}

// AddrList matches the address against literal prefixes: "ip6 daddr != { ::1, fd00::/8 }".
type AddrList struct {
	Family   int
	Dst, Neg bool
	Prefixes []netip.Prefix // sorted, non-overlapping
}

// PortList matches the transport port: "th dport { 80, 8000-8080 }".
type PortList struct {
	Dst, Neg bool
	Ranges   []snapshot.PortRange // sorted, non-overlapping
}

// TupleSet matches (address, protocol, port) against a concatenated set:
// "ip daddr . meta l4proto . th dport @n".
type TupleSet struct {
	Family   int
	Dst, Neg bool
	Set      string
}

// ICMPType matches an ICMP (or ICMPv6) type: "icmp type 8", "icmpv6 type != 128".
type ICMPType struct {
	Family int
	Type   uint8
	Neg    bool
}

// ICMPCode matches an ICMP (or ICMPv6) code: "icmp code 0".
type ICMPCode struct {
	Family int
	Code   uint8
	Neg    bool
}

// ICMPv6Types matches any of the listed ICMPv6 types: "icmpv6 type { 133, 135 }".
type ICMPv6Types struct{ Types []uint8 }

// CTState matches any of the conntrack states: "ct state established,related".
type CTState struct{ States []string } // of: invalid, established, related, new, untracked

// IfName matches the input or output interface name, exactly or by prefix ("cali*").
type IfName struct {
	Out    bool
	Name   string
	Prefix bool
	Neg    bool
}

// IfVmap dispatches on the interface name through a verdict map: "iifname vmap @m".
type IfVmap struct {
	Out bool
	Map string
}

// MarkTest matches packets whose mark has all of Bits set: "meta mark & 0x1 == 0x1".
type MarkTest struct{ Bits uint32 }

// MarkSet sets (Clear false) or clears (Clear true) mark bits: "meta mark set meta mark | 0x1".
type MarkSet struct {
	Bits  uint32
	Clear bool
}

// LocalAddr matches packets whose destination (or, Src, source) address is one of the
// host's own: "fib daddr type local".
type LocalAddr struct{ Src bool }

// Log logs the packet with a prefix and continues.
type Log struct{ Prefix string }

// Notrack exempts the packet from connection tracking.
type Notrack struct{}

// Masquerade source-NATs the packet to the outgoing interface's address.
type Masquerade struct{}

// Verdict ends a rule: accept, drop, return, or jump/goto Chain.
type Verdict struct {
	Kind  string
	Chain string
}

// Verdicts.
var (
	Accept = Verdict{Kind: "accept"}
	Drop   = Verdict{Kind: "drop"}
	Return = Verdict{Kind: "return"}
)

// Jump returns a jump to chain.
func Jump(chain string) Verdict { return Verdict{Kind: "jump", Chain: chain} }

func (NfProto) isStmt()     {}
func (L4Proto) isStmt()     {}
func (AddrSet) isStmt()     {}
func (AddrList) isStmt()    {}
func (PortList) isStmt()    {}
func (TupleSet) isStmt()    {}
func (ICMPType) isStmt()    {}
func (ICMPCode) isStmt()    {}
func (ICMPv6Types) isStmt() {}
func (CTState) isStmt()     {}
func (IfName) isStmt()      {}
func (IfVmap) isStmt()      {}
func (MarkTest) isStmt()    {}
func (MarkSet) isStmt()     {}
func (LocalAddr) isStmt()   {}
func (Log) isStmt()         {}
func (Notrack) isStmt()     {}
func (Masquerade) isStmt()  {}
func (Verdict) isStmt()     {}

func neg(n bool) string {
	if n {
		return "!= "
	}
	return ""
}

func ipKeyword(family int) string {
	if family == 6 {
		return "ip6"
	}
	return "ip"
}

func addrField(family int, dst bool) string {
	if dst {
		return ipKeyword(family) + " daddr"
	}
	return ipKeyword(family) + " saddr"
}

func portField(dst bool) string {
	if dst {
		return "th dport"
	}
	return "th sport"
}

func icmpKeyword(family int) string {
	if family == 6 {
		return "icmpv6"
	}
	return "icmp"
}

func protoName(p uint8) string {
	switch p {
	case 1:
		return "icmp"
	case 6:
		return "tcp"
	case 17:
		return "udp"
	case 58:
		return "ipv6-icmp"
	case 132:
		return "sctp"
	case 136:
		return "udplite"
	}
	return strconv.Itoa(int(p))
}

func braces(items []string) string {
	if len(items) == 1 {
		return items[0]
	}
	return "{ " + strings.Join(items, ", ") + " }"
}

// String implements Stmt.
func (s NfProto) String() string { return "meta nfproto ipv" + strconv.Itoa(s.Family) }

// String implements Stmt.
func (s L4Proto) String() string { return "meta l4proto " + neg(s.Neg) + protoName(s.Proto) }

// String implements Stmt.
func (s AddrSet) String() string { return addrField(s.Family, s.Dst) + " " + neg(s.Neg) + "@" + s.Set }

// String implements Stmt.
func (s AddrList) String() string {
	items := make([]string, len(s.Prefixes))
	for i, p := range s.Prefixes {
		items[i] = prefixString(p)
	}
	return addrField(s.Family, s.Dst) + " " + neg(s.Neg) + braces(items)
}

// String implements Stmt.
func (s PortList) String() string {
	items := make([]string, len(s.Ranges))
	for i, r := range s.Ranges {
		if r.Min == r.Max {
			items[i] = strconv.Itoa(int(r.Min))
		} else {
			items[i] = fmt.Sprintf("%d-%d", r.Min, r.Max)
		}
	}
	return portField(s.Dst) + " " + neg(s.Neg) + braces(items)
}

// String implements Stmt.
func (s TupleSet) String() string {
	return addrField(s.Family, s.Dst) + " . meta l4proto . " + portField(s.Dst) + " " + neg(s.Neg) + "@" + s.Set
}

// String implements Stmt.
func (s ICMPType) String() string {
	return fmt.Sprintf("%s type %s%d", icmpKeyword(s.Family), neg(s.Neg), s.Type)
}

// String implements Stmt.
func (s ICMPCode) String() string {
	return fmt.Sprintf("%s code %s%d", icmpKeyword(s.Family), neg(s.Neg), s.Code)
}

// String implements Stmt.
func (s ICMPv6Types) String() string {
	items := make([]string, len(s.Types))
	for i, t := range s.Types {
		items[i] = strconv.Itoa(int(t))
	}
	return "icmpv6 type " + braces(items)
}

// String implements Stmt.
func (s CTState) String() string { return "ct state " + strings.Join(s.States, ",") }

// String implements Stmt.
func (s IfName) String() string {
	kw := "iifname"
	if s.Out {
		kw = "oifname"
	}
	name := s.Name
	if s.Prefix {
		name += "*"
	}
	return fmt.Sprintf("%s %s%q", kw, neg(s.Neg), name)
}

// String implements Stmt.
func (s IfVmap) String() string {
	if s.Out {
		return "oifname vmap @" + s.Map
	}
	return "iifname vmap @" + s.Map
}

// String implements Stmt.
func (s MarkTest) String() string { return fmt.Sprintf("meta mark & 0x%08x == 0x%08x", s.Bits, s.Bits) }

// String implements Stmt.
func (s MarkSet) String() string {
	if s.Clear {
		return fmt.Sprintf("meta mark set meta mark & 0x%08x", ^s.Bits)
	}
	return fmt.Sprintf("meta mark set meta mark | 0x%08x", s.Bits)
}

// String implements Stmt.
func (s LocalAddr) String() string {
	if s.Src {
		return "fib saddr type local"
	}
	return "fib daddr type local"
}

// String implements Stmt.
func (s Log) String() string { return fmt.Sprintf("log prefix %q", s.Prefix) }

// String implements Stmt.
func (Notrack) String() string { return "notrack" }

// String implements Stmt.
func (Masquerade) String() string { return "masquerade" }

// String implements Stmt.
func (s Verdict) String() string {
	if s.Chain != "" {
		return s.Kind + " " + s.Chain
	}
	return s.Kind
}
