package iptables

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// Verb is what an Op does.
type Verb string

// Op verbs. Set ops are ipset restore lines; chain and hook ops are iptables-restore lines
// for one family and table.
const (
	SetCreate   Verb = "set-create"   // create a set and add its members
	SetAdd      Verb = "set-add"      // add one member
	SetDel      Verb = "set-del"      // delete one member
	SetReplace  Verb = "set-replace"  // rebuild in a temporary set and swap it in (new maxelem)
	SetDestroy  Verb = "set-destroy"  // destroy, after the rules referencing it are gone
	ChainWrite  Verb = "chain-write"  // create or flush a chain and append all its rules
	ChainDelete Verb = "chain-delete" // flush and delete a chain
	HookWrite   Verb = "hook-write"   // delete felis's rules in a kernel chain and insert the desired ones
)

// Op is one planned change. Name is the set or chain; Lines are exactly what is sent (ipset
// restore lines, or iptables-restore lines within the table's section).
type Op struct {
	Verb   Verb
	Family int
	Table  string // "" for set ops
	Name   string
	Lines  []string
}

func (o Op) isSet() bool { return o.Table == "" }

// String renders the op as a header naming the tool, table and object, then its lines.
func (o Op) String() string {
	head := "ipset " + string(o.Verb) + " " + o.Name
	if !o.isSet() {
		head = fmt.Sprintf("%s -t %s %s %s", binary(o.Family), o.Table, o.Verb, o.Name)
	}
	if len(o.Lines) == 0 {
		return head
	}
	return head + "\n\t" + strings.Join(o.Lines, "\n\t")
}

// State is what the dataplane holds of felis's: sets with members, felis chains with their
// rule hashes ("" for a rule without one), felis's rules in kernel chains, and how many
// rules each kernel chain holding some had when observed.
type State struct {
	Sets     map[string]Set
	Chains   map[ChainKey][]string
	Hooks    map[ChainKey][]HookRule
	ChainLen map[ChainKey]int
}

// HookRule is one felis rule found in a kernel chain: its 0-based position (-1: appended,
// position unknown), its text after "-A CHAIN " (what a -D needs) and its hash.
type HookRule struct {
	Index int
	Line  string
	Hash  string
}

// NewState returns an empty state.
func NewState() *State {
	return &State{Sets: map[string]Set{}, Chains: map[ChainKey][]string{}, Hooks: map[ChainKey][]HookRule{}, ChainLen: map[ChainKey]int{}}
}

// StateOf is the state the dataplane holds once r is committed.
func StateOf(r Ruleset) *State {
	s := NewState()
	for _, set := range r.Sets {
		s.Sets[set.Name] = set
	}
	for _, c := range r.Chains {
		s.Chains[c.ChainKey] = c.Hashes
	}
	for _, h := range r.Hooks {
		for i, body := range h.Rules {
			idx := i
			if h.Append {
				idx = -1
			}
			s.Hooks[h.ChainKey] = append(s.Hooks[h.ChainKey], HookRule{Index: idx, Line: strings.TrimPrefix(line(h.Chain, body, h.Hashes[i]), "-A "+h.Chain+" "), Hash: h.Hashes[i]})
		}
	}
	return s
}

// tmpSetName is where a set is rebuilt before the swap.
func tmpSetName(name string) string {
	n := Prefix + "t-" + strings.TrimPrefix(name, Prefix)
	if len(n) > MaxSetName {
		n = n[:MaxSetName]
	}
	return n
}

// Plan returns the ops that turn observed into desired (nil observed: nothing of felis's
// exists): set changes first, then per table the chains and hooks, then set destroys.
func Plan(desired Ruleset, observed *State) []Op {
	if observed == nil {
		observed = NewState()
	}
	var ops, destroys []Op
	for _, d := range desired.Sets {
		o, ok := observed.Sets[d.Name]
		switch {
		case !ok:
			ops = append(ops, Op{Verb: SetCreate, Family: d.Family, Name: d.Name, Lines: setLines(d, d.Name)})
		case !d.sameParams(o):
			tmp := tmpSetName(d.Name)
			var lines []string
			if _, stale := observed.Sets[tmp]; stale {
				lines = append(lines, "destroy "+tmp)
			}
			lines = append(lines, setLines(d, tmp)...)
			lines = append(lines, "swap "+tmp+" "+d.Name, "destroy "+tmp)
			ops = append(ops, Op{Verb: SetReplace, Family: d.Family, Name: d.Name, Lines: lines})
		default:
			ops = memberOps(ops, d, o.Members)
		}
	}
	wantSet := map[string]bool{}
	for _, d := range desired.Sets {
		wantSet[d.Name] = true
	}
	for _, name := range sortedKeys(observed.Sets) {
		if !wantSet[name] && !hasReplace(ops, name) { // a replace destroys its stale temporary set itself
			destroys = append(destroys, Op{Verb: SetDestroy, Family: observed.Sets[name].Family, Name: name, Lines: []string{"destroy " + name}})
		}
	}

	wantChain := map[ChainKey]bool{}
	for _, c := range desired.Chains {
		wantChain[c.ChainKey] = true
		if !slices.Equal(observed.Chains[c.ChainKey], c.Hashes) {
			lines := make([]string, len(c.Rules))
			for i, body := range c.Rules {
				lines[i] = line(c.Chain, body, c.Hashes[i])
			}
			ops = append(ops, Op{Verb: ChainWrite, Family: c.Family, Table: c.Table, Name: c.Chain, Lines: lines})
		}
	}
	var deletes []ChainKey
	for k := range observed.Chains {
		if !wantChain[k] {
			deletes = append(deletes, k)
		}
	}
	slices.SortFunc(deletes, ChainKey.compare)
	for _, k := range deletes {
		ops = append(ops, Op{Verb: ChainDelete, Family: k.Family, Table: k.Table, Name: k.Chain})
	}

	wantHook := map[ChainKey]bool{}
	for _, h := range desired.Hooks {
		wantHook[h.ChainKey] = true
		obs := observed.Hooks[h.ChainKey]
		if hookMatches(h, obs, observed.ChainLen[h.ChainKey]) {
			continue
		}
		lines := hookDeletes(h.Chain, obs)
		for i, body := range h.Rules {
			l := line(h.Chain, body, h.Hashes[i])
			if !h.Append {
				l = fmt.Sprintf("-I %s %d %s", h.Chain, i+1, strings.TrimPrefix(l, "-A "+h.Chain+" "))
			}
			lines = append(lines, l)
		}
		ops = append(ops, Op{Verb: HookWrite, Family: h.Family, Table: h.Table, Name: h.Chain, Lines: lines})
	}
	var stale []ChainKey
	for k := range observed.Hooks {
		if !wantHook[k] && len(observed.Hooks[k]) > 0 {
			stale = append(stale, k)
		}
	}
	slices.SortFunc(stale, ChainKey.compare)
	for _, k := range stale {
		ops = append(ops, Op{Verb: HookWrite, Family: k.Family, Table: k.Table, Name: k.Chain, Lines: hookDeletes(k.Chain, observed.Hooks[k])})
	}
	return append(ops, destroys...)
}

// memberOps appends one op per member to add or delete, walking both sorted member lists.
func memberOps(ops []Op, d Set, have []string) []Op {
	want := d.Members
	for len(want) > 0 || len(have) > 0 {
		switch {
		case len(have) == 0 || len(want) > 0 && want[0] < have[0]:
			ops = append(ops, Op{Verb: SetAdd, Family: d.Family, Name: d.Name, Lines: []string{"add " + d.Name + " " + want[0]}})
			want = want[1:]
		case len(want) == 0 || have[0] < want[0]:
			ops = append(ops, Op{Verb: SetDel, Family: d.Family, Name: d.Name, Lines: []string{"del " + d.Name + " " + have[0]}})
			have = have[1:]
		default:
			want, have = want[1:], have[1:]
		}
	}
	return ops
}

func hasReplace(ops []Op, tmp string) bool {
	return slices.ContainsFunc(ops, func(o Op) bool { return o.Verb == SetReplace && tmpSetName(o.Name) == tmp })
}

// hookMatches says whether the observed felis rules of a kernel chain are the desired ones in
// the desired place: the top, or (append mode) the end of a chain of chainLen rules.
func hookMatches(h Hook, obs []HookRule, chainLen int) bool {
	if len(obs) != len(h.Hashes) {
		return false
	}
	for i, r := range obs {
		at := i
		if h.Append {
			at = chainLen - len(obs) + i
		}
		if r.Hash != h.Hashes[i] || (r.Index != at && r.Index >= 0) {
			return false
		}
	}
	return true
}

// hookDeletes removes observed felis rules from a kernel chain by their exact text, last
// first; deleting by text, never by position, cannot hit someone else's rule.
func hookDeletes(chain string, obs []HookRule) []string {
	var out []string
	for i := len(obs) - 1; i >= 0; i-- {
		out = append(out, "-D "+chain+" "+obs[i].Line)
	}
	return out
}

func setLines(s Set, name string) []string {
	s.Name = name
	lines := make([]string, 0, len(s.Members)+1)
	lines = append(lines, s.Header())
	for _, m := range s.Members {
		lines = append(lines, "add "+name+" "+m)
	}
	return lines
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// Scripts is a plan as the binaries take it: ipset restore input before and after the
// tables, and one iptables-restore input per family and table (in Tables order).
type Scripts struct {
	IPSetBefore string
	Tables      []TableScript
	IPSetAfter  string
}

// TableScript is one iptables-restore --noflush input.
type TableScript struct {
	Family int
	Table  string
	Text   string
}

// Script assembles ops: in each table, chains to write or delete are declared (created or
// flushed) first, then hook rules change, then rules are appended, then chains deleted, so
// every reference goes before its target.
func Script(ops []Op) Scripts {
	var s Scripts
	var before, after strings.Builder
	type parts struct{ declare, hooks, appends, deletes []string }
	tables := map[ChainKey]*parts{}
	for _, o := range ops {
		if o.isSet() {
			w := &before
			if o.Verb == SetDestroy {
				w = &after
			}
			for _, l := range o.Lines {
				w.WriteString(l + "\n")
			}
			continue
		}
		k := ChainKey{Family: o.Family, Table: o.Table}
		p := tables[k]
		if p == nil {
			p = &parts{}
			tables[k] = p
		}
		switch o.Verb {
		case ChainWrite:
			p.declare = append(p.declare, ":"+o.Name+" - [0:0]")
			p.appends = append(p.appends, o.Lines...)
		case ChainDelete:
			p.declare = append(p.declare, ":"+o.Name+" - [0:0]")
			p.deletes = append(p.deletes, "-X "+o.Name)
		case HookWrite:
			p.hooks = append(p.hooks, o.Lines...)
		}
	}
	keys := make([]ChainKey, 0, len(tables))
	for k := range tables {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b ChainKey) int {
		return cmp.Or(cmp.Compare(a.Family, b.Family), cmp.Compare(tableRank(a.Table), tableRank(b.Table)))
	})
	for _, k := range keys {
		p := tables[k]
		var b strings.Builder
		b.WriteString("*" + k.Table + "\n")
		for _, l := range slices.Concat(p.declare, p.hooks, p.appends, p.deletes) {
			b.WriteString(l + "\n")
		}
		b.WriteString("COMMIT\n")
		s.Tables = append(s.Tables, TableScript{Family: k.Family, Table: k.Table, Text: b.String()})
	}
	s.IPSetBefore, s.IPSetAfter = before.String(), after.String()
	return s
}
