package render

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash/fnv"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// TableName and ServicesTableName are the inet tables felis owns; it never touches another
// table. Policy (and NAT-outgoing) lives in the first, service load balancing in
// ServiceShards tables named from the second (felis-svc, felis-svc-1, …), each service in one
// of them by a hash of its ID. The kernel validates a table's whole jump graph on every commit
// that adds a jump into it, so a policy update validates only the policy graph, and a service
// update only its shard's.
const (
	TableName         = "felis"
	ServicesTableName = "felis-svc"
)

// ServiceShards is how many tables the services are spread over. Each has its own dispatch
// chains and maps: a new connection passes one frontend lookup per shard at each dstnat hook
// (only a connection's first packet sees nat chains), and a service change makes the kernel
// validate 1/ServiceShards of the services' chains.
const ServiceShards = 8

// TableID is one of the tables felis owns; the zero value is the policy table.
type TableID uint8

// The policy table and the first services table (shard 0); shard i is ServicesTable+i.
const (
	PolicyTable TableID = iota
	ServicesTable
)

// Tables lists every table felis owns: the policy table, then the services tables.
var Tables = func() []TableID {
	out := []TableID{PolicyTable}
	for i := range ServiceShards {
		out = append(out, ServicesTable+TableID(i))
	}
	return out
}()

// Name is the table's nft name.
func (id TableID) Name() string {
	switch {
	case id == PolicyTable:
		return TableName
	case id == ServicesTable:
		return ServicesTableName
	}
	return fmt.Sprintf("%s-%d", ServicesTableName, id-ServicesTable)
}

// IsServices reports whether id is one of the services tables.
func (id TableID) IsServices() bool { return id >= ServicesTable }

// ServiceTable is the services table (shard) of the service with this ID.
func ServiceTable(id string) TableID {
	h := fnv.New32a()
	h.Write([]byte(id))
	return ServicesTable + TableID(h.Sum32()%ServiceShards)
}

// Dependency levels: an object only references objects of a strictly lower level, so diff
// creates lower levels first and deletes them last.
const (
	LevelSet      = 0 // sets and the rules' anonymous sets
	LevelPolicy   = 1 // policy and profile chains (reference sets)
	LevelTier     = 2 // per-endpoint tier chains (jump to policy chains)
	LevelEndpoint = 3 // per-endpoint chains (jump to tier and profile chains)
	LevelMap      = 4 // verdict maps (elements jump to endpoint chains)
	LevelBase     = 5 // base chains (look up maps, jump to endpoint chains)
)

// Table is everything felis owns in nftables: the objects of both its tables, each naming
// its table; every slice is sorted by table, then name.
type Table struct {
	Sets   []Set
	Maps   []Map
	Chains []Chain
	// Missing lists the tables that do not exist (Observe) or are not used (RenderEndpointChains);
	// nil means all of them do or are.
	Missing []TableID
}

// Has reports whether the table id exists (is not Missing).
func (t *Table) Has(id TableID) bool { return !slices.Contains(t.Missing, id) }

// Only returns the objects of the table id, sharing t's memory (t must be sorted).
func (t Table) Only(id TableID) Table {
	return Table{
		Sets:   only(t.Sets, id, func(s *Set) TableID { return s.Table }),
		Maps:   only(t.Maps, id, func(m *Map) TableID { return m.Table }),
		Chains: only(t.Chains, id, func(c *Chain) TableID { return c.Table }),
	}
}

func only[T any](list []T, id TableID, table func(*T) TableID) []T {
	lo, _ := slices.BinarySearchFunc(list, id, func(x T, id TableID) int { return cmp.Compare(table(&x), id) })
	hi, _ := slices.BinarySearchFunc(list, id+1, func(x T, id TableID) int { return cmp.Compare(table(&x), id) })
	return list[lo:hi:hi]
}

// Set is a named nft set of addresses (an interval set) or of address·protocol·port tuples.
type Set struct {
	Table    TableID
	Name     string
	Family   int       // 4 or 6
	Concat   bool      // address . inet_proto . inet_service (named ports), not an interval set
	Pair     bool      // address . address (an earlier felis's hairpin pairs), not an interval set
	Elements []Element // sorted by Element.Compare, no duplicates, no overlaps
	// Drift is set by Observe when the kernel set holds something felis cannot have written
	// (an interval that is not a prefix): Plan then flushes and refills it.
	Drift bool
	// Timeout, when set, makes this a dynamic set of host addresses that rules fill at run
	// time ("update @set"), each entry expiring after Timeout seconds (session affinity).
	// Felis never writes or compares its elements.
	Timeout int
}

// Element is one set element: a prefix (address sets), a host address with protocol and
// port (concatenated sets), or a host address and Peer (pair sets).
type Element struct {
	Prefix netip.Prefix
	Proto  uint8
	Port   uint16
	Peer   netip.Addr
}

// Map is a verdict map to a goto into a chain: from an interface name (Family 0), or from
// a service frontend's address . protocol . port (Family 4 or 6).
type Map struct {
	Table    TableID
	Name     string
	Family   int
	Elements []MapElement // sorted by MapElement.Compare
}

// MapElement maps one key to the chain packets continue in: an interface name, or (in a
// frontend map) Addr, Proto and Port.
type MapElement struct {
	Interface string
	Addr      netip.Addr
	Proto     uint8
	Port      uint16
	Chain     string
}

// Compare orders map elements by key: interface name, then address, protocol and port.
func (e MapElement) Compare(o MapElement) int {
	return cmp.Or(cmp.Compare(e.Interface, o.Interface), e.Addr.Compare(o.Addr), cmp.Compare(e.Proto, o.Proto), cmp.Compare(e.Port, o.Port))
}

// KeyType is the map's nft key type.
func (m Map) KeyType() string {
	switch m.Family {
	case 4:
		return "ipv4_addr . inet_proto . inet_service"
	case 6:
		return "ipv6_addr . inet_proto . inet_service"
	}
	return "ifname"
}

// BaseChain is a chain's hook registration; chains without one are regular chains. Every
// felis base chain has policy accept: drops are explicit rules.
type BaseChain struct {
	Type     string // filter or nat
	Hook     string // prerouting, input, forward, output, postrouting
	Priority int
}

// Chain is a chain with its rules. Hash is the content hash of everything else; it is
// written into every rule's userdata so Observe can tell an unchanged chain without
// decoding rules. Observed chains carry Name, Base, Level and Hash but no Rules.
type Chain struct {
	Table TableID
	Name  string
	Base  *BaseChain
	Level int
	Rules []Rule
	Hash  string
}

// Rule is a sequence of statements, the last usually a verdict.
type Rule struct {
	Stmts []Stmt
}

// String renders the rule in nft syntax.
func (r Rule) String() string {
	parts := make([]string, len(r.Stmts))
	for i, s := range r.Stmts {
		parts[i] = s.String()
	}
	return strings.Join(parts, " ")
}

// Compare orders elements by prefix, then protocol, then port.
func (e Element) Compare(o Element) int {
	return cmp.Or(comparePrefix(e.Prefix, o.Prefix), cmp.Compare(e.Proto, o.Proto), cmp.Compare(e.Port, o.Port), e.Peer.Compare(o.Peer))
}

func comparePrefix(a, b netip.Prefix) int {
	return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
}

// String renders the element as nft does: "10.0.0.1", "10.0.0.0/24", "10.0.0.1 . tcp . 80".
func (e Element) String() string {
	a := prefixString(e.Prefix)
	if e.Peer.IsValid() {
		return a + " . " + e.Peer.String()
	}
	if e.Proto == 0 && e.Port == 0 {
		return a
	}
	return fmt.Sprintf("%s . %s . %d", a, protoName(e.Proto), e.Port)
}

func prefixString(p netip.Prefix) string {
	if p.IsSingleIP() {
		return p.Addr().String()
	}
	return p.String()
}

// KeyType is the set's nft key type.
func (s Set) KeyType() string {
	addr := "ipv4_addr"
	if s.Family == 6 {
		addr = "ipv6_addr"
	}
	if s.Concat {
		return addr + " . inet_proto . inet_service"
	}
	if s.Pair {
		return addr + " . " + addr
	}
	return addr
}

// Definition is everything about a set except its elements; a set whose definition changed
// cannot be updated in place.
func (s Set) Definition() string {
	if s.Timeout > 0 {
		return fmt.Sprintf("type %s; flags dynamic,timeout; timeout %ds", s.KeyType(), s.Timeout)
	}
	if s.Concat || s.Pair {
		return "type " + s.KeyType()
	}
	return "type " + s.KeyType() + "; flags interval"
}

// String renders the set in nft syntax.
func (s Set) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "\tset %s {\n\t\ttype %s\n", s.Name, s.KeyType())
	switch {
	case s.Timeout > 0:
		fmt.Fprintf(&b, "\t\tflags dynamic,timeout\n\t\ttimeout %ds\n", s.Timeout)
	case !s.Concat && !s.Pair:
		b.WriteString("\t\tflags interval\n")
	}
	if s.Drift {
		b.WriteString("\t\t# drift: holds elements felis did not write\n")
	}
	if len(s.Elements) > 0 {
		els := make([]string, len(s.Elements))
		for i, e := range s.Elements {
			els[i] = e.String()
		}
		fmt.Fprintf(&b, "\t\telements = { %s }\n", strings.Join(els, ", "))
	}
	b.WriteString("\t}\n")
	return b.String()
}

// String renders the map in nft syntax.
func (m Map) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "\tmap %s {\n\t\ttype %s : verdict\n", m.Name, m.KeyType())
	if len(m.Elements) > 0 {
		els := make([]string, len(m.Elements))
		for i, e := range m.Elements {
			els[i] = e.String()
		}
		fmt.Fprintf(&b, "\t\telements = { %s }\n", strings.Join(els, ", "))
	}
	b.WriteString("\t}\n")
	return b.String()
}

// String renders the element as `"cali1234" : goto CHAIN` or `10.96.0.1 . tcp . 80 : goto CHAIN`.
func (e MapElement) String() string {
	if e.Addr.IsValid() {
		return fmt.Sprintf("%s . %s . %d : goto %s", e.Addr, protoName(e.Proto), e.Port, e.Chain)
	}
	return fmt.Sprintf("%q : goto %s", e.Interface, e.Chain)
}

// String renders the hook line of a base chain.
func (b BaseChain) String() string {
	return fmt.Sprintf("type %s hook %s priority %d; policy accept;", b.Type, b.Hook, b.Priority)
}

// String renders the chain in nft syntax, with its level and hash as a comment.
func (c Chain) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "\tchain %s { # level %d hash %s\n", c.Name, c.Level, c.Hash)
	if c.Base != nil {
		fmt.Fprintf(&b, "\t\t%s\n", c.Base)
	}
	for _, r := range c.Rules {
		fmt.Fprintf(&b, "\t\t%s\n", r)
	}
	b.WriteString("\t}\n")
	return b.String()
}

// String renders both tables in nft syntax, sorted, as `nft list table` would each; a
// missing table is left out, an empty one is printed empty.
func (t Table) String() string {
	var b strings.Builder
	for _, id := range Tables {
		if !t.Has(id) {
			continue
		}
		o := t.Only(id)
		fmt.Fprintf(&b, "table inet %s {\n", id.Name())
		for _, s := range o.Sets {
			b.WriteString(s.String())
		}
		for _, m := range o.Maps {
			b.WriteString(m.String())
		}
		for _, c := range o.Chains {
			b.WriteString(c.String())
		}
		b.WriteString("}\n")
	}
	return b.String()
}

// ChainHash is the content hash of a chain: name, hook, level and rule text. It is 16 hex
// digits, short enough to fit every rule's userdata.
func ChainHash(c Chain) string {
	b := make([]byte, 0, 64*(len(c.Rules)+2))
	b = append(b, c.Name...)
	b = append(b, '\n')
	b = strconv.AppendInt(b, int64(c.Level), 10)
	b = append(b, '\n')
	if c.Base != nil {
		b = append(b, c.Base.String()...)
		b = append(b, '\n')
	}
	for _, r := range c.Rules {
		b = append(b, r.String()...)
		b = append(b, '\n')
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// Sort puts every slice of the table in canonical order: by table, then name.
func (t *Table) Sort() {
	slices.SortFunc(t.Sets, func(a, b Set) int { return cmp.Or(cmp.Compare(a.Table, b.Table), cmp.Compare(a.Name, b.Name)) })
	slices.SortFunc(t.Maps, func(a, b Map) int { return cmp.Or(cmp.Compare(a.Table, b.Table), cmp.Compare(a.Name, b.Name)) })
	slices.SortFunc(t.Chains, func(a, b Chain) int { return cmp.Or(cmp.Compare(a.Table, b.Table), cmp.Compare(a.Name, b.Name)) })
	slices.Sort(t.Missing)
	for i := range t.Sets {
		slices.SortFunc(t.Sets[i].Elements, Element.Compare)
	}
	for i := range t.Maps {
		slices.SortFunc(t.Maps[i].Elements, MapElement.Compare)
	}
}
