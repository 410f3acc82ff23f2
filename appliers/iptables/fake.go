package iptables

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// builtinChains are each table's kernel chains.
var builtinChains = map[string][]string{
	"raw":    {"PREROUTING", "OUTPUT"},
	"mangle": {"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"},
	"filter": {"INPUT", "FORWARD", "OUTPUT"},
	"nat":    {"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"},
}

// builtinTargets are the targets that are not chains.
var builtinTargets = map[string]bool{"ACCEPT": true, "DROP": true, "RETURN": true, "MARK": true, "LOG": true,
	"CT": true, "NOTRACK": true, "MASQUERADE": true, "REJECT": true, "SNAT": true, "DNAT": true}

// Fake is an in-memory iptables, ip6tables and ipset with their restore semantics: a table's
// restore commits at COMMIT or not at all, rules may only jump to existing chains and match
// existing sets of their family, a chain or set in use cannot be deleted, ipset restore stops
// at the first failing line. Dump prints everything sorted. It is safe for concurrent use.
type Fake struct {
	mu     sync.Mutex
	tables map[int]map[string]*fakeTable
	sets   map[string]*fakeSet
	fail   error
	runs   int
}

type fakeTable struct {
	chains map[string][]string // chain -> rule text after "-A CHAIN "
}

type fakeSet struct {
	header  Set
	members map[string]bool
}

// NewFake returns an empty fake dataplane.
func NewFake() *Fake {
	f := &Fake{tables: map[int]map[string]*fakeTable{}, sets: map[string]*fakeSet{}}
	for _, fam := range []int{4, 6} {
		f.tables[fam] = map[string]*fakeTable{}
		for t, chains := range builtinChains {
			ft := &fakeTable{chains: map[string][]string{}}
			for _, c := range chains {
				ft.chains[c] = nil
			}
			f.tables[fam][t] = ft
		}
	}
	return f
}

// FailNext makes the next restore (iptables or ipset) fail with err, changing nothing.
func (f *Fake) FailNext(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail = err
}

// Restores counts the restore invocations so far (iptables and ipset).
func (f *Fake) Restores() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.runs
}

// Save implements Runner.
func (f *Fake) Save(_ context.Context, family int) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.save(family), nil
}

func (f *Fake) save(family int) string {
	var b strings.Builder
	for _, t := range Tables {
		ft := f.tables[family][t]
		fmt.Fprintf(&b, "*%s\n", t)
		builtins := builtinChains[t]
		for _, c := range builtins {
			fmt.Fprintf(&b, ":%s ACCEPT [0:0]\n", c)
		}
		users := slices.Sorted(maps.Keys(ft.chains))
		users = slices.DeleteFunc(users, func(c string) bool { return slices.Contains(builtins, c) })
		for _, c := range users {
			fmt.Fprintf(&b, ":%s - [0:0]\n", c)
		}
		for _, c := range slices.Concat(builtins, users) {
			for _, r := range ft.chains[c] {
				fmt.Fprintf(&b, "-A %s %s\n", c, r)
			}
		}
		b.WriteString("COMMIT\n")
	}
	return b.String()
}

// IPSetSave implements Runner.
func (f *Fake) IPSetSave(context.Context) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var b strings.Builder
	for _, name := range slices.Sorted(maps.Keys(f.sets)) {
		s := f.sets[name]
		b.WriteString(s.header.Header() + "\n")
		for _, m := range slices.Sorted(maps.Keys(s.members)) {
			fmt.Fprintf(&b, "add %s %s\n", name, m)
		}
	}
	return b.String(), nil
}

// Dump returns ipset save and both families' iptables-save output, sorted.
func (f *Fake) Dump() string {
	sets, _ := f.IPSetSave(context.Background())
	f.mu.Lock()
	defer f.mu.Unlock()
	return sets + "# iptables\n" + f.save(4) + "# ip6tables\n" + f.save(6)
}

// Restore implements Runner: one table's iptables-restore --noflush script.
func (f *Fake) Restore(_ context.Context, family int, script string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.runs++
	if err := f.fail; err != nil {
		f.fail = nil
		return err
	}
	var cur *fakeTable
	name := ""
	for n, l := range strings.Split(script, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		fail := func(format string, a ...any) error {
			return fmt.Errorf("%s-restore: line %d failed (%s): %s", binary(family), n+1, l, fmt.Sprintf(format, a...))
		}
		switch {
		case strings.HasPrefix(l, "*"):
			name = l[1:]
			orig, ok := f.tables[family][name]
			if !ok {
				return fail("no table %s", name)
			}
			cur = &fakeTable{chains: maps.Clone(orig.chains)}
			continue
		case cur == nil:
			return fail("no table")
		case l == "COMMIT":
			f.tables[family][name] = cur
			cur = nil
			continue
		}
		if err := f.command(family, cur, name, l); err != nil {
			return fail("%v", err)
		}
	}
	if cur != nil {
		return fmt.Errorf("%s-restore: no COMMIT", binary(family))
	}
	return nil
}

func (f *Fake) command(family int, t *fakeTable, table, l string) error {
	if strings.HasPrefix(l, ":") {
		chain, _, _ := strings.Cut(l[1:], " ")
		if slices.Contains(builtinChains[table], chain) {
			return nil
		}
		t.chains[chain] = nil // create, or flush with --noflush
		return nil
	}
	verb, rest, _ := strings.Cut(l, " ")
	chain, spec, _ := strings.Cut(rest, " ")
	rules, ok := t.chains[chain]
	if !ok {
		return fmt.Errorf("chain %s does not exist", chain)
	}
	switch verb {
	case "-A", "-I":
		pos := len(rules)
		if verb == "-I" {
			pos = 0
			if first, after, ok := strings.Cut(spec, " "); ok {
				if n, err := strconv.Atoi(first); err == nil {
					if n < 1 || n > len(rules)+1 {
						return fmt.Errorf("index %d out of range", n)
					}
					pos, spec = n-1, after
				}
			}
		}
		if err := f.checkRefs(family, t, spec); err != nil {
			return err
		}
		t.chains[chain] = slices.Insert(slices.Clone(rules), pos, spec)
	case "-D":
		i := slices.Index(rules, spec)
		if i < 0 {
			return fmt.Errorf("bad rule (does a matching rule exist in that chain?)")
		}
		t.chains[chain] = slices.Delete(slices.Clone(rules), i, i+1)
	case "-F":
		t.chains[chain] = nil
	case "-X":
		if slices.Contains(builtinChains[table], chain) {
			return fmt.Errorf("cannot delete built-in chain %s", chain)
		}
		if len(rules) > 0 {
			return fmt.Errorf("chain %s is not empty", chain)
		}
		for c, rs := range t.chains {
			for _, r := range rs {
				if slices.Contains(targets(r), chain) {
					return fmt.Errorf("chain %s is referenced by %s", chain, c)
				}
			}
		}
		delete(t.chains, chain)
	default:
		return fmt.Errorf("unknown command %s", verb)
	}
	return nil
}

// targets returns the chains and sets a rule names (-j/-g targets, --match-set names).
func targets(rule string) []string {
	var out []string
	f := strings.Fields(rule)
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "-j" || f[i] == "-g" || f[i] == "--match-set" {
			out = append(out, f[i+1])
		}
	}
	return out
}

func (f *Fake) checkRefs(family int, t *fakeTable, rule string) error {
	fs := strings.Fields(rule)
	for i := 0; i+1 < len(fs); i++ {
		switch fs[i] {
		case "-j", "-g":
			if builtinTargets[fs[i+1]] {
				continue
			}
			if _, ok := t.chains[fs[i+1]]; !ok {
				return fmt.Errorf("couldn't load target `%s'", fs[i+1])
			}
		case "--match-set":
			s, ok := f.sets[fs[i+1]]
			if !ok {
				return fmt.Errorf("set %s doesn't exist", fs[i+1])
			}
			if s.header.Family != family {
				return fmt.Errorf("set %s is of the other family", fs[i+1])
			}
		}
	}
	return nil
}

// IPSetRestore implements Runner: lines apply one by one; the first failure stops the rest.
func (f *Fake) IPSetRestore(_ context.Context, script string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.runs++
	if err := f.fail; err != nil {
		f.fail = nil
		return err
	}
	for n, l := range strings.Split(script, "\n") {
		fs := strings.Fields(l)
		if len(fs) == 0 {
			continue
		}
		if err := f.ipset(fs); err != nil {
			return fmt.Errorf("ipset restore: line %d (%s): %w", n+1, l, err)
		}
	}
	return nil
}

func (f *Fake) ipset(fs []string) error {
	if len(fs) < 2 {
		return fmt.Errorf("missing set name")
	}
	name := fs[1]
	s, exists := f.sets[name]
	need := func() error {
		if !exists {
			return fmt.Errorf("the set with the given name does not exist")
		}
		return nil
	}
	switch fs[0] {
	case "create":
		if exists {
			return fmt.Errorf("set cannot be created: set with the same name already exists")
		}
		if len(name) > MaxSetName {
			return fmt.Errorf("set name too long")
		}
		st := NewState()
		if err := ParseIPSetSave(st, strings.Join(fs, " ")); err != nil || len(fs) < 3 {
			return fmt.Errorf("bad create line")
		}
		h := st.Sets[name]
		if h.Type != "hash:ip" && h.Type != "hash:net" && h.Type != "hash:ip,port" {
			return fmt.Errorf("unknown set type %s", h.Type)
		}
		f.sets[name] = &fakeSet{header: h, members: map[string]bool{}}
	case "add", "del":
		if err := need(); err != nil {
			return err
		}
		if len(fs) < 3 {
			return fmt.Errorf("missing element")
		}
		m, err := canonicalMember(s.header.Type, fs[2])
		if err != nil {
			return err
		}
		if err := checkMember(s.header, m); err != nil {
			return err
		}
		if fs[0] == "add" {
			if s.members[m] {
				return fmt.Errorf("element cannot be added to the set: it's already added")
			}
			if len(s.members) >= s.header.MaxElem {
				return fmt.Errorf("hash is full, cannot add more elements")
			}
			s.members[m] = true
		} else {
			if !s.members[m] {
				return fmt.Errorf("element cannot be deleted from the set: it's not added")
			}
			delete(s.members, m)
		}
	case "flush":
		if err := need(); err != nil {
			return err
		}
		s.members = map[string]bool{}
	case "destroy":
		if err := need(); err != nil {
			return err
		}
		for fam := range f.tables {
			for _, t := range f.tables[fam] {
				for _, rs := range t.chains {
					for _, r := range rs {
						if slices.Contains(targets(r), name) {
							return fmt.Errorf("set cannot be destroyed: it is in use by a kernel component")
						}
					}
				}
			}
		}
		delete(f.sets, name)
	case "swap":
		if err := need(); err != nil {
			return err
		}
		if len(fs) < 3 {
			return fmt.Errorf("missing second set")
		}
		o, ok := f.sets[fs[2]]
		if !ok {
			return fmt.Errorf("the set with the given name does not exist")
		}
		if s.header.Family != o.header.Family || s.header.Type != o.header.Type {
			return fmt.Errorf("the sets cannot be swapped: their type does not match")
		}
		s.header.Name, o.header.Name = fs[2], name
		f.sets[name], f.sets[fs[2]] = o, s
	default:
		return fmt.Errorf("unknown command %s", fs[0])
	}
	return nil
}

func checkMember(h Set, m string) error {
	addr, _, _ := strings.Cut(m, ",")
	addr, _, _ = strings.Cut(addr, "/")
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return err
	}
	if a.Is4() != (h.Family == 4) {
		return fmt.Errorf("element %s is of the other family", m)
	}
	if h.Type == "hash:net" {
		if p, err := netip.ParsePrefix(m); err == nil && p.Bits() == 0 {
			return fmt.Errorf("zero prefix length is not allowed in hash:net")
		}
	}
	return nil
}
