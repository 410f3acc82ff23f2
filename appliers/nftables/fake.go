package nftables

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sync"

	"github.com/felis-dev/felis/appliers/nftables/render"
)

// Fake is an in-memory nftables with the kernel's transaction semantics for felis's tables:
// a batch of ops applies completely or not at all, rules and map elements may only reference
// existing sets, maps and chains, referenced objects cannot be deleted, interval elements
// cannot overlap. It is stricter than the kernel in one way: adding a set, map or chain that
// exists is an error (the kernel ignores it), which catches planner bugs. Safe for concurrent use.
type Fake struct {
	mu      sync.Mutex
	state   *fakeState
	failErr error
	applies int
}

// fakeState is the felis tables that exist; nil means none does.
type fakeState struct {
	tables map[render.TableID]*fakeTable
}

// fakeTable is one table; its rules reference its own objects only, as in the kernel.
type fakeTable struct {
	sets   map[string]*render.Set
	maps   map[string]*render.Map
	chains map[string]*render.Chain
}

// NewFake returns a fake with no felis tables.
func NewFake() *Fake { return &Fake{} }

// FailNextApply makes the next Apply fail with err and change nothing.
func (f *Fake) FailNextApply(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failErr = err
}

// Applies returns how many batches were committed.
func (f *Fake) Applies() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.applies
}

// Observe returns the table as the kernel reports it: sets and maps with their elements,
// chains with hook, level and hash but no rules. A nil table means there is none.
func (f *Fake) Observe(context.Context) (*render.Table, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.state == nil {
		return nil, nil
	}
	t := f.state.table()
	for i := range t.Chains {
		t.Chains[i].Rules = nil
	}
	return &t, nil
}

// Dump returns the whole table, rules included, in nft syntax and sorted; "" if there is no table.
func (f *Fake) Dump() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.state == nil {
		return ""
	}
	return f.state.table().String()
}

// Apply applies ops as one transaction: on error nothing changes and the error names the op.
func (f *Fake) Apply(_ context.Context, ops []Op) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.failErr; err != nil {
		f.failErr = nil
		return err
	}
	next, err := applyOps(f.state, ops)
	if err != nil {
		return err
	}
	f.state = next
	f.applies++
	return nil
}

func (s *fakeState) clone() *fakeState {
	c := &fakeState{tables: map[render.TableID]*fakeTable{}}
	if s == nil {
		return c
	}
	for id, t := range s.tables {
		c.tables[id] = &fakeTable{sets: maps.Clone(t.sets), maps: maps.Clone(t.maps), chains: maps.Clone(t.chains)}
	}
	return c
}

func newFakeTable() *fakeTable {
	return &fakeTable{sets: map[string]*render.Set{}, maps: map[string]*render.Map{}, chains: map[string]*render.Chain{}}
}

func (s *fakeState) table() render.Table {
	var t render.Table
	for _, id := range render.Tables {
		ft := s.tables[id]
		if ft == nil {
			t.Missing = append(t.Missing, id)
			continue
		}
		for _, v := range ft.sets {
			c := *v
			c.Table, c.Elements = id, slices.Clone(v.Elements)
			t.Sets = append(t.Sets, c)
		}
		for _, v := range ft.maps {
			c := *v
			c.Table, c.Elements = id, slices.Clone(v.Elements)
			t.Maps = append(t.Maps, c)
		}
		for _, v := range ft.chains {
			c := *v
			c.Table = id
			t.Chains = append(t.Chains, c)
		}
	}
	t.Sort()
	return t
}

// refs returns the sets, maps and chains a rule references.
func refs(r render.Rule) (sets, maps, chains []string) {
	for _, s := range r.Stmts {
		switch s := s.(type) {
		case render.AddrSet:
			sets = append(sets, s.Set)
		case render.TupleSet:
			sets = append(sets, s.Set)
		case render.IfVmap:
			maps = append(maps, s.Map)
		case render.FrontendVmap:
			maps = append(maps, s.Map)
		case render.SetUpdate:
			sets = append(sets, s.Set)
		case render.AddrPairSet:
			sets = append(sets, s.Set)
		case render.Verdict:
			if s.Chain != "" {
				chains = append(chains, s.Chain)
			}
		}
	}
	return sets, maps, chains
}

// applyOps returns state with ops applied, validated as the kernel validates a batch. It never
// modifies state; objects it changes are copied.
func applyOps(state *fakeState, ops []Op) (*fakeState, error) {
	s := state.clone()
	for i, op := range ops {
		if err := s.apply(op); err != nil {
			return nil, fmt.Errorf("op %d (%s): %w", i, op.short(), err)
		}
	}
	if len(s.tables) == 0 {
		return nil, nil
	}
	return s, nil
}

func (s *fakeState) apply(op Op) error {
	if int(op.Table) >= len(render.Tables) {
		return fmt.Errorf("table %d: %w", op.Table, ErrInvalid)
	}
	if op.Verb == AddTable {
		if s.tables[op.Table] == nil {
			s.tables[op.Table] = newFakeTable()
		}
		return nil
	}
	t := s.tables[op.Table]
	if t == nil {
		return fmt.Errorf("table inet %s: %w", op.Table.Name(), ErrNotFound)
	}
	return t.apply(op)
}

func (s *fakeTable) apply(op Op) error {
	switch op.Verb {
	case AddSet:
		if op.Set == nil {
			return ErrInvalid
		}
		if s.sets[op.Name] != nil {
			return ErrExists
		}
		set := *op.Set
		set.Elements = nil
		set.Drift = false
		s.sets[op.Name] = &set
		return s.addElements(op.Name, op.Set.Elements)
	case DeleteSet:
		if s.sets[op.Name] == nil {
			return ErrNotFound
		}
		if user := s.setUser(op.Name); user != "" {
			return fmt.Errorf("referenced by chain %s: %w", user, ErrInUse)
		}
		delete(s.sets, op.Name)
	case FlushSet:
		set := s.sets[op.Name]
		if set == nil {
			return ErrNotFound
		}
		c := *set
		c.Elements, c.Drift = nil, false
		s.sets[op.Name] = &c
	case AddSetElements:
		return s.addElements(op.Name, op.Elements)
	case DeleteSetElements:
		set := s.sets[op.Name]
		if set == nil {
			return ErrNotFound
		}
		c := *set
		c.Elements = slices.Clone(set.Elements)
		for _, e := range op.Elements {
			j, found := slices.BinarySearchFunc(c.Elements, e, render.Element.Compare)
			if !found {
				return fmt.Errorf("element %s: %w", e, ErrNotFound)
			}
			c.Elements = slices.Delete(c.Elements, j, j+1)
		}
		s.sets[op.Name] = &c
	case AddMap:
		if op.Map == nil {
			return ErrInvalid
		}
		if s.maps[op.Name] != nil {
			return ErrExists
		}
		s.maps[op.Name] = &render.Map{Name: op.Name, Family: op.Map.Family}
		return s.addMapElements(op.Name, op.Map.Elements)
	case DeleteMap:
		if s.maps[op.Name] == nil {
			return ErrNotFound
		}
		if user := s.mapUser(op.Name); user != "" {
			return fmt.Errorf("referenced by chain %s: %w", user, ErrInUse)
		}
		delete(s.maps, op.Name)
	case AddMapElements:
		return s.addMapElements(op.Name, op.MapElements)
	case DeleteMapElements:
		m := s.maps[op.Name]
		if m == nil {
			return ErrNotFound
		}
		c := *m
		c.Elements = slices.Clone(m.Elements)
		for _, e := range op.MapElements {
			j := slices.Index(c.Elements, e)
			if j < 0 {
				return fmt.Errorf("element %s: %w", e, ErrNotFound)
			}
			c.Elements = slices.Delete(c.Elements, j, j+1)
		}
		s.maps[op.Name] = &c
	case AddChain, ReplaceChain:
		if op.Chain == nil {
			return ErrInvalid
		}
		if op.Verb == AddChain && s.chains[op.Name] != nil {
			return ErrExists
		}
		if op.Verb == ReplaceChain && s.chains[op.Name] == nil {
			return ErrNotFound
		}
		for _, r := range op.Chain.Rules {
			sets, maps, chains := refs(r)
			for _, n := range sets {
				if s.sets[n] == nil {
					return fmt.Errorf("rule %q: set %s: %w", r, n, ErrNotFound)
				}
			}
			for _, n := range maps {
				if s.maps[n] == nil {
					return fmt.Errorf("rule %q: map %s: %w", r, n, ErrNotFound)
				}
			}
			for _, n := range chains {
				if s.chains[n] == nil && n != op.Name {
					return fmt.Errorf("rule %q: chain %s: %w", r, n, ErrNotFound)
				}
			}
		}
		c := *op.Chain
		if op.Verb == ReplaceChain {
			c.Base = s.chains[op.Name].Base // a flush keeps the hook
		}
		s.chains[op.Name] = &c
	case DeleteChain:
		if s.chains[op.Name] == nil {
			return ErrNotFound
		}
		if user := s.chainUser(op.Name); user != "" {
			return fmt.Errorf("referenced by %s: %w", user, ErrInUse)
		}
		delete(s.chains, op.Name)
	default:
		return fmt.Errorf("verb %q: %w", op.Verb, ErrInvalid)
	}
	return nil
}

func (s *fakeTable) addElements(name string, es []render.Element) error {
	set := s.sets[name]
	if set == nil {
		return ErrNotFound
	}
	c := *set
	c.Elements = slices.Clone(set.Elements)
	for _, e := range es {
		if fam := familyOf(e.Prefix.Addr()); fam != set.Family || (e.Proto != 0 || e.Port != 0) != set.Concat ||
			e.Peer.IsValid() != set.Pair || set.Pair && (familyOf(e.Peer) != fam || !e.Prefix.IsSingleIP()) {
			return fmt.Errorf("element %s does not fit set type %s: %w", e, set.KeyType(), ErrInvalid)
		}
		j, found := slices.BinarySearchFunc(c.Elements, e, render.Element.Compare)
		if found {
			continue // the kernel ignores re-adding an existing element
		}
		if !set.Concat && !set.Pair {
			for _, o := range c.Elements {
				if o.Prefix.Overlaps(e.Prefix) {
					return fmt.Errorf("element %s overlaps %s: %w", e, o, ErrExists)
				}
			}
		}
		c.Elements = slices.Insert(c.Elements, j, e)
	}
	s.sets[name] = &c
	return nil
}

func (s *fakeTable) addMapElements(name string, es []render.MapElement) error {
	m := s.maps[name]
	if m == nil {
		return ErrNotFound
	}
	c := *m
	c.Elements = slices.Clone(m.Elements)
	for _, e := range es {
		if s.chains[e.Chain] == nil {
			return fmt.Errorf("element %s: chain %s: %w", e, e.Chain, ErrNotFound)
		}
		if (m.Family != 0) != e.Addr.IsValid() || e.Addr.IsValid() && familyOf(e.Addr) != m.Family {
			return fmt.Errorf("element %s: key does not fit the map's type: %w", e, ErrInvalid)
		}
		j, found := slices.BinarySearchFunc(c.Elements, e, render.MapElement.Compare)
		if found {
			if c.Elements[j] == e {
				continue
			}
			return fmt.Errorf("element %s: key exists with another verdict: %w", e, ErrExists)
		}
		c.Elements = slices.Insert(c.Elements, j, e)
	}
	s.maps[name] = &c
	return nil
}

func (s *fakeTable) setUser(name string) string {
	for _, c := range s.chains {
		for _, r := range c.Rules {
			if sets, _, _ := refs(r); slices.Contains(sets, name) {
				return c.Name
			}
		}
	}
	return ""
}

func (s *fakeTable) mapUser(name string) string {
	for _, c := range s.chains {
		for _, r := range c.Rules {
			if _, maps, _ := refs(r); slices.Contains(maps, name) {
				return c.Name
			}
		}
	}
	return ""
}

func (s *fakeTable) chainUser(name string) string {
	for _, c := range s.chains {
		if c.Name == name {
			continue
		}
		for _, r := range c.Rules {
			if _, _, chains := refs(r); slices.Contains(chains, name) {
				return "chain " + c.Name
			}
		}
	}
	for _, m := range s.maps {
		for _, e := range m.Elements {
			if e.Chain == name {
				return "map " + m.Name
			}
		}
	}
	return ""
}

func familyOf(a netip.Addr) int {
	if a.Is4() {
		return 4
	}
	return 6
}
