package iptables

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	nft "github.com/felis-dev/felis/appliers/nftables/render"
)

// Prefix starts the name of every chain and IP set felis owns; nothing else is touched.
const Prefix = "felis-"

// Mark bits: PassMark and the services' masquerade mark are the nftables renderer's;
// AcceptMark carries an accept up the call stack to the hook rule, since an iptables ACCEPT
// would end the whole kernel chain where nftables ends only felis's base chain.
const (
	PassMark   uint32 = nft.PassMark
	AcceptMark uint32 = 0x04000000
	// RejectMark carries a service's reject from the nat table, where iptables has no
	// REJECT, to the filter chains, which reject marked packets first.
	RejectMark uint32 = 0x08000000
	// DropMark carries a drop from the nat table (a service with traffic policy Local and no
	// local endpoints), where iptables refuses DROP, to the filter chains, which drop marked
	// packets first.
	DropMark uint32 = 0x10000000
)

// Tables in the order felis writes them.
var Tables = []string{"raw", "mangle", "filter", "nat"}

// Ruleset is everything felis programs for one snapshot: IP sets, felis chains and the hook
// rules at the top of the kernel's chains. Slices are sorted (see Sort).
type Ruleset struct {
	Sets   []Set
	Chains []Chain
	Hooks  []Hook
}

// Set is one ipset: Type is hash:ip, hash:net or hash:ip,port; Members are in ipset's own
// syntax ("10.0.0.1", "10.0.0.0/24", "fd00::1,tcp:80"), sorted, without duplicates.
type Set struct {
	Name    string
	Family  int
	Type    string
	MaxElem int
	Members []string
}

// Header is the set's create line: a set whose header changed is rebuilt and swapped in.
func (s Set) Header() string {
	fam := "inet"
	if s.Family == 6 {
		fam = "inet6"
	}
	return fmt.Sprintf("create %s %s family %s hashsize 1024 maxelem %d", s.Name, s.Type, fam, s.MaxElem)
}

// sameParams says whether two sets can be updated into each other in place.
func (s Set) sameParams(o Set) bool {
	return s.Type == o.Type && s.Family == o.Family && s.MaxElem == o.MaxElem
}

// ChainKey names a chain: family (4: iptables, 6: ip6tables), table and chain.
type ChainKey struct {
	Family int
	Table  string
	Chain  string
}

// String renders the key as "ip6tables -t filter felis-x".
func (k ChainKey) String() string {
	return fmt.Sprintf("%s -t %s %s", binary(k.Family), k.Table, k.Chain)
}

func (k ChainKey) compare(o ChainKey) int {
	return cmp.Or(cmp.Compare(k.Family, o.Family), cmp.Compare(tableRank(k.Table), tableRank(o.Table)), cmp.Compare(k.Chain, o.Chain))
}

func tableRank(t string) int { return slices.Index(Tables, t) }

func binary(fam int) string {
	if fam == 6 {
		return "ip6tables"
	}
	return "iptables"
}

// Chain is a felis chain: rule bodies (what follows "-A NAME", without the hash comment) and
// their chained content hashes, one per rule.
type Chain struct {
	ChainKey
	Rules  []string
	Hashes []string
}

// Hook is felis's rules in one kernel chain (INPUT, FORWARD, ...), in order: at the top, or
// at the end when Append (FelixConfiguration chainInsertMode: Append).
type Hook struct {
	ChainKey
	Append bool
	Rules  []string
	Hashes []string
}

// line is the iptables-restore line appending one rule with its hash comment.
func line(chain, body, hash string) string {
	return "-A " + chain + " -m comment --comment \"" + Prefix[:len(Prefix)-1] + ":" + hash + "\" " + body
}

// hashRules returns each rule's hash: a hash of the previous rule's hash (the chain's name
// for the first) and the rule's body, so a rule's hash also pins everything before it.
func hashRules(chain string, rules []string) []string {
	out := make([]string, len(rules))
	prev := chain
	for i, r := range rules {
		sum := sha256.Sum256([]byte(prev + "\n" + r))
		out[i] = hex.EncodeToString(sum[:8])
		prev = out[i]
	}
	return out
}

// Sort puts the ruleset in canonical order.
func (r *Ruleset) Sort() {
	slices.SortFunc(r.Sets, func(a, b Set) int { return cmp.Compare(a.Name, b.Name) })
	slices.SortFunc(r.Chains, func(a, b Chain) int { return a.compare(b.ChainKey) })
	slices.SortFunc(r.Hooks, func(a, b Hook) int { return a.compare(b.ChainKey) })
}

// String renders the ruleset as ipset save and iptables-save would, per family and table.
func (r Ruleset) String() string {
	var b strings.Builder
	for _, s := range r.Sets {
		b.WriteString(s.Header() + "\n")
		for _, m := range s.Members {
			fmt.Fprintf(&b, "add %s %s\n", s.Name, m)
		}
	}
	for _, fam := range []int{4, 6} {
		for _, t := range Tables {
			var lines []string
			for _, c := range r.Chains {
				if c.Family == fam && c.Table == t {
					lines = append(lines, ":"+c.Chain+" - [0:0]")
				}
			}
			for _, h := range r.Hooks {
				if h.Family == fam && h.Table == t {
					for i, body := range h.Rules {
						lines = append(lines, line(h.Chain, body, h.Hashes[i]))
					}
				}
			}
			for _, c := range r.Chains {
				if c.Family == fam && c.Table == t {
					for i, body := range c.Rules {
						lines = append(lines, line(c.Chain, body, c.Hashes[i]))
					}
				}
			}
			if len(lines) > 0 {
				fmt.Fprintf(&b, "# %s\n*%s\n%s\nCOMMIT\n", binary(fam), t, strings.Join(lines, "\n"))
			}
		}
	}
	return b.String()
}
