package iptables

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	nft "github.com/felis-dev/felis/appliers/nftables/render"
	"github.com/felis-dev/felis/snapshot"
)

// MaxChainName is the longest chain name iptables accepts; MaxSetName the longest ipset name.
const (
	MaxChainName = 28
	MaxSetName   = 31
)

// defaultMaxElem is every set's maxelem unless the config sets IPSetsMaxSize.
const defaultMaxElem = 1048576

// hookOf places each nftables base chain in an iptables table and kernel chain; the nftables
// priority orders the hook rules within a kernel chain.
var hookOf = map[string][2]string{
	"raw-prerouting":         {"raw", "PREROUTING"},
	"raw-output":             {"raw", "OUTPUT"},
	"mangle-prerouting":      {"mangle", "PREROUTING"},
	"filter-input":           {"filter", "INPUT"},
	"filter-input-host":      {"filter", "INPUT"},
	"filter-forward":         {"filter", "FORWARD"},
	"filter-forward-hep-in":  {"filter", "FORWARD"},
	"filter-forward-wl-in":   {"filter", "FORWARD"},
	"filter-forward-hep-out": {"filter", "FORWARD"},
	"filter-output":          {"filter", "OUTPUT"},
	"filter-output-host":     {"filter", "OUTPUT"},
	"nat-postrouting":        {"nat", "POSTROUTING"},
	"nat-prerouting":         {"nat", "PREROUTING"},
	"nat-output":             {"nat", "OUTPUT"},
}

// rejectsMarked are the base chains, one per filter hook a packet can take after nat, that
// reject (drop) what a service without (local) endpoints marked in nat.
var rejectsMarked = map[string]bool{"filter-input": true, "filter-forward": true, "filter-output": true}

// ChainName is the iptables chain for an nftables chain (or "map-NAME" dispatch chain):
// "felis-" + the name when it fits 28 characters of [A-Za-z0-9._-], otherwise its first two
// words and a hash of the whole name.
func ChainName(name string) string {
	full := Prefix + name
	if len(full) <= MaxChainName && !strings.ContainsFunc(name, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.')
	}) {
		return full
	}
	sum := sha256.Sum256([]byte(name))
	h := hex.EncodeToString(sum[:])
	words := strings.SplitN(name, "-", 3)
	stem := Prefix
	if len(words) == 3 && len(words[0])+len(words[1]) <= 8 {
		stem += words[0] + "-" + words[1] + "-"
	}
	return stem + h[:MaxChainName-len(stem)]
}

// SetName is the ipset for an nftables set of the given ipset type: "felis-" + family + a
// type letter (i: hash:ip, n: hash:net, p: hash:ip,port) + a hash of the set's name, so a
// type change is a new set (the kernel swaps only sets of one type); the pool and VXLAN host
// sets keep readable names.
func SetName(nftSet string, family int, typ string) string {
	if strings.HasPrefix(nftSet, nft.SetPoolsNAT) || strings.HasPrefix(nftSet, nft.SetPoolsAll) || strings.HasPrefix(nftSet, nft.SetVXLANHosts) {
		return Prefix + nftSet
	}
	letter := map[string]string{"hash:ip": "i", "hash:net": "n", "hash:ip,port": "p"}[typ]
	sum := sha256.Sum256([]byte(nftSet))
	return fmt.Sprintf("%s%d%s-%s", Prefix, family, letter, hex.EncodeToString(sum[:8]))
}

// literalSetName is the ipset holding a rule's literal list of several prefixes.
func literalSetName(family int, prefixes []netip.Prefix) string {
	h := sha256.New()
	for _, p := range prefixes {
		h.Write([]byte(p.String() + ","))
	}
	return fmt.Sprintf("%s%d-l-%s", Prefix, family, hex.EncodeToString(h.Sum(nil)[:8]))
}

// Render returns the desired iptables ruleset for snap. It renders snap with the nftables
// renderer and translates that table, so both dataplanes share one definition of the
// semantics; see the README for how each nftables construct maps.
func Render(snap snapshot.Snapshot) (Ruleset, error) {
	table, err := nft.RenderEndpointChains(snap)
	if err != nil {
		return Ruleset{}, err
	}
	return translate(snap, table)
}

type translator struct {
	snap     snapshot.Snapshot
	types    map[string]snapshot.IPSetType // nft set name -> snapshot type
	sets     map[string]Set
	setNames map[string]string // nft set name -> ipset name
	chains   map[string]*nft.Chain
	maps     map[string]*nft.Map
	maxElem  int
	affinity map[string]int // nft dynamic sets (session affinity) -> timeout: xt_recent lists
	out      Ruleset
	rendered map[ChainKey]bool
}

func translate(snap snapshot.Snapshot, table nft.Table) (Ruleset, error) {
	t := &translator{
		snap: snap, types: map[string]snapshot.IPSetType{}, sets: map[string]Set{}, setNames: map[string]string{},
		chains: map[string]*nft.Chain{}, maps: map[string]*nft.Map{},
		maxElem: cmp.Or(snap.Config.IPSetsMaxSize, defaultMaxElem), rendered: map[ChainKey]bool{},
		affinity: map[string]int{},
	}
	for _, s := range snap.IPSets {
		for _, fam := range []int{4, 6} {
			t.types[nft.SetName(s.ID, fam)] = s.Type
		}
	}
	for _, s := range table.Sets {
		t.addSet(s)
	}
	for i := range table.Chains {
		t.chains[table.Chains[i].Name] = &table.Chains[i]
	}
	for i := range table.Maps {
		t.maps[table.Maps[i].Name] = &table.Maps[i]
	}
	type hookRef struct {
		prio int
		name string
	}
	hooks := map[ChainKey][]hookRef{}
	for _, c := range table.Chains {
		if c.Base == nil {
			continue
		}
		where, ok := hookOf[c.Name]
		if !ok {
			return Ruleset{}, fmt.Errorf("nftables base chain %s: no iptables hook for it", c.Name)
		}
		for _, fam := range []int{4, 6} {
			k := ChainKey{Family: fam, Table: where[0], Chain: where[1]}
			hooks[k] = append(hooks[k], hookRef{c.Base.Priority, c.Name})
			if err := t.chain(fam, where[0], c.Name, true); err != nil {
				return Ruleset{}, err
			}
		}
	}
	for k, refs := range hooks {
		slices.SortFunc(refs, func(a, b hookRef) int { return cmp.Or(cmp.Compare(a.prio, b.prio), cmp.Compare(a.name, b.name)) })
		h := Hook{ChainKey: k, Append: strings.EqualFold(snap.Config.ChainInsertMode, "append")}
		for _, r := range refs {
			h.Rules = append(h.Rules, "-j "+ChainName(r.name))
		}
		seed := k.Chain
		if h.Append { // the same rules in the other place are other rules
			seed += " append"
		}
		h.Hashes = hashRules(seed, h.Rules)
		t.out.Hooks = append(t.out.Hooks, h)
	}
	for _, s := range t.sets {
		t.out.Sets = append(t.out.Sets, s)
	}
	t.out.Sort()
	return t.out, nil
}

func (t *translator) addSet(s nft.Set) {
	if s.Timeout > 0 {
		t.affinity[s.Name] = s.Timeout
		return
	}
	set := Set{Family: s.Family, MaxElem: t.maxElem, Type: "hash:net"}
	switch {
	case s.Concat:
		set.Type = "hash:ip,port"
	case t.types[s.Name] == snapshot.IPSetIP && !slices.ContainsFunc(s.Elements, func(e nft.Element) bool { return !e.Prefix.IsSingleIP() }):
		set.Type = "hash:ip"
	}
	set.Name = SetName(s.Name, s.Family, set.Type)
	t.setNames[s.Name] = set.Name
	for _, e := range s.Elements {
		set.Members = append(set.Members, members(set.Type, e)...)
	}
	slices.Sort(set.Members)
	set.Members = slices.Compact(set.Members)
	t.sets[set.Name] = set
}

// members returns e in ipset syntax; hash:net cannot hold a /0, so it becomes two halves.
func members(typ string, e nft.Element) []string {
	switch typ {
	case "hash:ip":
		return []string{e.Prefix.Addr().String()}
	case "hash:ip,port":
		return []string{fmt.Sprintf("%s,%s:%d", e.Prefix.Addr(), ipsetProto(e.Proto), e.Port)}
	}
	p := e.Prefix.Masked()
	if p.Bits() == 0 {
		lo := netip.PrefixFrom(p.Addr(), 1)
		hiAddr := p.Addr().AsSlice()
		hiAddr[0] = 0x80
		hi, _ := netip.AddrFromSlice(hiAddr)
		return []string{lo.String(), netip.PrefixFrom(hi, 1).String()}
	}
	return []string{p.String()}
}

func ipsetProto(p uint8) string {
	switch p {
	case 6:
		return "tcp"
	case 17:
		return "udp"
	case 132:
		return "sctp"
	case 136:
		return "udplite"
	}
	return strconv.Itoa(int(p))
}

func protoName(p uint8) string {
	switch p {
	case 1:
		return "icmp"
	case 58:
		return "ipv6-icmp"
	}
	return ipsetProto(p)
}

// chain renders the nftables chain name into (family, table) and everything it reaches.
func (t *translator) chain(fam int, table, name string, base bool) error {
	key := ChainKey{Family: fam, Table: table, Chain: ChainName(name)}
	if t.rendered[key] {
		return nil
	}
	t.rendered[key] = true
	c, ok := t.chains[name]
	if !ok {
		return fmt.Errorf("nftables chain %s: referenced but not rendered", name)
	}
	var rules []string
	if base {
		// The accept mark says "an accept happened below"; it starts clear in every base chain.
		rules = append(rules, fmt.Sprintf("-j MARK --set-xmark 0x0/%#x", AcceptMark))
		if rejectsMarked[name] {
			rules = append(rules, fmt.Sprintf("-m mark --mark %#x/%#x -j REJECT", RejectMark, RejectMark),
				fmt.Sprintf("-m mark --mark %#x/%#x -j DROP", DropMark, DropMark))
		}
	}
	for i, r := range c.Rules {
		out, err := t.rule(fam, table, r, base)
		if err != nil {
			return fmt.Errorf("%s: chain %s rule %d (%s): %w", binary(fam), name, i, r, err)
		}
		rules = append(rules, out...)
	}
	if len(rules) == 0 {
		rules = []string{"-j RETURN"} // every chain holds a rule, so its hash is observable
	}
	t.out.Chains = append(t.out.Chains, Chain{ChainKey: key, Rules: rules, Hashes: hashRules(key.Chain, rules)})
	return nil
}

// dispatch renders a verdict map as a chain: one jump per interface, after which the accept
// mark is set, because a map's goto ends the nftables base chain whatever the target did.
func (t *translator) dispatch(fam int, table, mapName string, out bool) (string, error) {
	key := ChainKey{Family: fam, Table: table, Chain: ChainName("map-" + mapName)}
	if t.rendered[key] {
		return key.Chain, nil
	}
	t.rendered[key] = true
	m, ok := t.maps[mapName]
	if !ok {
		return "", fmt.Errorf("nftables map %s: referenced but not rendered", mapName)
	}
	flag := "-i"
	if out {
		flag = "-o"
	}
	var rules []string
	for _, e := range m.Elements {
		if m.Family != 0 && m.Family != key.Family {
			continue
		}
		if err := t.chain(key.Family, key.Table, e.Chain, false); err != nil {
			return "", err
		}
		match := flag + " " + e.Interface
		if m.Family != 0 { // a service frontend: address, protocol, port
			match = fmt.Sprintf("-d %s -p %s -m multiport --dports %d", netip.PrefixFrom(e.Addr, e.Addr.BitLen()), protoName(e.Proto), e.Port)
		}
		rules = append(rules,
			fmt.Sprintf("%s -j %s", match, ChainName(e.Chain)),
			fmt.Sprintf("%s -j MARK --set-xmark %#x/%#x", match, AcceptMark, AcceptMark))
	}
	if len(rules) == 0 {
		rules = []string{"-j RETURN"}
	}
	t.out.Chains = append(t.out.Chains, Chain{ChainKey: key, Rules: rules, Hashes: hashRules(key.Chain, rules)})
	return key.Chain, nil
}
