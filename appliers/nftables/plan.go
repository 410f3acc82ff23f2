package nftables

import (
	"cmp"
	"slices"

	"github.com/felis-dev/felis/appliers/nftables/render"
	"github.com/felis-dev/felis/diff"
)

// Plan returns the ops that turn observed (nil: no felis tables) into desired, in an order the
// kernel accepts within one batch. Each felis table is planned on its own (nothing references
// across tables), the policy table first: its sets, then chains by level, then maps and base
// chains are created or rewritten; deletions follow in reverse. Sets and maps change element
// by element; a chain is rewritten whole, and only when its content hash changed. An object
// that moved to another table is deleted from the old one and created in the new. Both
// tables are expected sorted, as Render and Observe return them: unsorted object lists are
// sorted on a copy, but element lists must already be sorted. Plan is pure.
func Plan(desired render.Table, observed *render.Table) []Op {
	desired = byTable(desired)
	var obs render.Table
	if observed != nil {
		obs = byTable(*observed)
	}
	var ops []Op
	for _, id := range render.Tables {
		d, o := desired.Only(id), obs.Only(id)
		exists := observed != nil && observed.Has(id)
		if !exists && len(d.Sets)+len(d.Maps)+len(d.Chains) == 0 {
			continue // nothing wanted in a table that does not exist: do not create it
		}
		if exists && same(d, o) {
			// The common case for the table a cycle did not touch (a policy change leaves
			// 30,000 service chains alone): settled without sorting or diffing.
			continue
		}
		first := len(ops)
		if !exists {
			ops = append(ops, Op{Verb: AddTable})
		}
		ops = planTable(ops, sorted(d), sorted(o))
		for i := first; i < len(ops); i++ {
			ops[i].Table = id
		}
	}
	return ops
}

// planTable appends the ops that turn observed into desired, both of one table.
func planTable(ops []Op, desired, obs render.Table) []Op {
	type step struct {
		rank int
		del  bool
		ops  []Op
	}
	var steps []step
	for _, d := range diff.PlanSorted(ptrs(desired.Sets), ptrs(obs.Sets), func(s *render.Set) string { return s.Name }, equalSet,
		func(string, *render.Set) int { return render.LevelSet }) {
		steps = append(steps, step{d.Rank, d.Kind == diff.Delete, setOps(d)})
	}
	for _, d := range diff.PlanSorted(ptrs(desired.Maps), ptrs(obs.Maps), func(m *render.Map) string { return m.Name }, equalMap,
		func(string, *render.Map) int { return render.LevelMap }) {
		steps = append(steps, step{d.Rank, d.Kind == diff.Delete, mapOps(d)})
	}
	for _, d := range diff.PlanSorted(ptrs(desired.Chains), ptrs(obs.Chains), func(c *render.Chain) string { return c.Name }, equalChain, chainRank) {
		steps = append(steps, step{d.Rank, d.Kind == diff.Delete, chainOps(d)})
	}
	// Each kind's steps are already in order; merge them: creates and rewrites by ascending
	// level, then deletes by descending level.
	slices.SortStableFunc(steps, func(a, b step) int {
		if a.del != b.del {
			if a.del {
				return 1
			}
			return -1
		}
		if a.del {
			return cmp.Compare(b.rank, a.rank)
		}
		return cmp.Compare(a.rank, b.rank)
	})
	for _, s := range steps {
		ops = append(ops, s.ops...)
	}
	return ops
}

func ptrs[T any](s []T) []*T {
	out := make([]*T, len(s))
	for i := range s {
		out[i] = &s[i]
	}
	return out
}

// byTable returns t with its object lists ordered by table, copying only when one is not.
func byTable(t render.Table) render.Table {
	ordered := func(n int, table func(int) render.TableID) bool {
		for i := 1; i < n; i++ {
			if table(i-1) > table(i) {
				return false
			}
		}
		return true
	}
	if ordered(len(t.Sets), func(i int) render.TableID { return t.Sets[i].Table }) &&
		ordered(len(t.Maps), func(i int) render.TableID { return t.Maps[i].Table }) &&
		ordered(len(t.Chains), func(i int) render.TableID { return t.Chains[i].Table }) {
		return t
	}
	c := render.Table{Sets: slices.Clone(t.Sets), Maps: slices.Clone(t.Maps), Chains: slices.Clone(t.Chains), Missing: t.Missing}
	slices.SortStableFunc(c.Sets, func(a, b render.Set) int { return cmp.Compare(a.Table, b.Table) })
	slices.SortStableFunc(c.Maps, func(a, b render.Map) int { return cmp.Compare(a.Table, b.Table) })
	slices.SortStableFunc(c.Chains, func(a, b render.Chain) int { return cmp.Compare(a.Table, b.Table) })
	return c
}

// same reports whether two object lists of one table hold the same objects, element for
// element, as when a Renderer re-rendered nothing in that table: then no op is needed, in
// whatever order the lists are. It is a fast path (strings the renderer reused compare by
// pointer): false says nothing.
func same(d, o render.Table) bool {
	if len(d.Sets) != len(o.Sets) || len(d.Maps) != len(o.Maps) || len(d.Chains) != len(o.Chains) {
		return false
	}
	for i := range d.Chains {
		if d.Chains[i].Name != o.Chains[i].Name || !equalChain(&d.Chains[i], &o.Chains[i]) {
			return false
		}
	}
	for i := range d.Maps {
		if d.Maps[i].Name != o.Maps[i].Name || !equalMap(&d.Maps[i], &o.Maps[i]) {
			return false
		}
	}
	for i := range d.Sets {
		if d.Sets[i].Name != o.Sets[i].Name || !equalSet(&d.Sets[i], &o.Sets[i]) {
			return false
		}
	}
	return true
}

// sorted returns t with its set, map and chain lists in canonical order, copying only when
// one is out of order.
func sorted(t render.Table) render.Table {
	byName := func(key func(int) (render.TableID, string), n int) bool {
		for i := 1; i < n; i++ {
			pt, pn := key(i - 1)
			ct, cn := key(i)
			if pt > ct || pt == ct && pn >= cn {
				return false
			}
		}
		return true
	}
	ok := byName(func(i int) (render.TableID, string) { return t.Sets[i].Table, t.Sets[i].Name }, len(t.Sets)) &&
		byName(func(i int) (render.TableID, string) { return t.Maps[i].Table, t.Maps[i].Name }, len(t.Maps)) &&
		byName(func(i int) (render.TableID, string) { return t.Chains[i].Table, t.Chains[i].Name }, len(t.Chains))
	// Element lists are trusted to be sorted (Render and Observe sort them): checking every
	// element would cost more than the rest of a plan.
	if ok {
		return t
	}
	c := render.Table{Sets: slices.Clone(t.Sets), Maps: slices.Clone(t.Maps), Chains: slices.Clone(t.Chains), Missing: slices.Clone(t.Missing)}
	for i := range c.Sets {
		c.Sets[i].Elements = slices.Clone(c.Sets[i].Elements)
	}
	for i := range c.Maps {
		c.Maps[i].Elements = slices.Clone(c.Maps[i].Elements)
	}
	c.Sort()
	return c
}

func chainRank(_ string, c *render.Chain) int {
	if c.Base != nil {
		return render.LevelBase
	}
	return c.Level
}

func sameBase(a, b *render.BaseChain) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

func equalSet(d, o *render.Set) bool {
	if d.Timeout > 0 || o.Timeout > 0 {
		// Dynamic sets: the packets own the elements.
		return d.Definition() == o.Definition() && d.Family == o.Family
	}
	return !o.Drift && d.Family == o.Family && d.Concat == o.Concat && d.Pair == o.Pair && sameSetElements(d.Elements, o.Elements)
}

func equalMap(d, o *render.Map) bool {
	return d.Family == o.Family && sameElements(d.Elements, o.Elements)
}

// sameSetElements is slices.Equal, at once when both are the same memory.
func sameSetElements(a, b []render.Element) bool {
	if len(a) == len(b) && len(a) > 0 && &a[0] == &b[0] {
		return true
	}
	return slices.Equal(a, b)
}

// sameElements is slices.Equal, at once when both are the same memory (a Renderer hands out
// the same frontend elements while no service changes).
func sameElements(a, b []render.MapElement) bool {
	if len(a) == len(b) && len(a) > 0 && &a[0] == &b[0] {
		return true
	}
	return slices.Equal(a, b)
}

func equalChain(d, o *render.Chain) bool { return d.Hash == o.Hash && sameBase(d.Base, o.Base) }

func setOps(d diff.Op[string, *render.Set]) []Op {
	switch d.Kind {
	case diff.Add:
		return []Op{{Verb: AddSet, Name: d.New.Name, Set: d.New}}
	case diff.Delete:
		return []Op{{Verb: DeleteSet, Name: d.Old.Name}}
	}
	want, have := d.New, d.Old
	if want.Definition() != have.Definition() {
		// The kernel cannot change a set's type in place; set names encode their family and
		// kind, so this only happens to a set someone else altered.
		return []Op{{Verb: DeleteSet, Name: have.Name}, {Verb: AddSet, Name: want.Name, Set: want}}
	}
	if want.Timeout > 0 {
		return nil
	}
	if have.Drift {
		ops := []Op{{Verb: FlushSet, Name: want.Name, Set: want}}
		if len(want.Elements) > 0 {
			ops = append(ops, Op{Verb: AddSetElements, Name: want.Name, Set: want, Elements: want.Elements})
		}
		return ops
	}
	w, h := trimCommon(want.Elements, have.Elements)
	adds, dels := diff.Members(w, h, render.Element.Compare)
	var ops []Op
	// Deletes first: in an interval set a new prefix may only fit once an old one is gone.
	if len(dels) > 0 {
		ops = append(ops, Op{Verb: DeleteSetElements, Name: want.Name, Set: want, Elements: dels})
	}
	if len(adds) > 0 {
		ops = append(ops, Op{Verb: AddSetElements, Name: want.Name, Set: want, Elements: adds})
	}
	return ops
}

// trimCommon returns two sorted element lists without their common head and tail: a few
// changed elements among thousands (a service added) then cost a scan of == comparisons
// instead of a merge with Compare. What it trims is in both lists, so the diff is the same.
func trimCommon[T comparable](a, b []T) ([]T, []T) {
	i := 0
	for i < len(a) && i < len(b) && a[i] == b[i] {
		i++
	}
	a, b = a[i:], b[i:]
	j := 0
	for j < len(a) && j < len(b) && a[len(a)-1-j] == b[len(b)-1-j] {
		j++
	}
	return a[:len(a)-j], b[:len(b)-j]
}

func compareMapElement(a, b render.MapElement) int {
	return cmp.Or(a.Compare(b), cmp.Compare(a.Chain, b.Chain))
}

func mapOps(d diff.Op[string, *render.Map]) []Op {
	switch d.Kind {
	case diff.Add:
		return []Op{{Verb: AddMap, Name: d.New.Name, Map: d.New}}
	case diff.Delete:
		return []Op{{Verb: DeleteMap, Name: d.Old.Name}}
	}
	if d.New.Family != d.Old.Family {
		// A key type cannot change in place; only someone else's edit can cause this.
		return []Op{{Verb: DeleteMap, Name: d.Old.Name}, {Verb: AddMap, Name: d.New.Name, Map: d.New}}
	}
	w, h := trimCommon(d.New.Elements, d.Old.Elements)
	adds, dels := diff.Members(w, h, compareMapElement)
	var ops []Op
	// Deletes first: an interface whose target chain changed is deleted and re-added.
	if len(dels) > 0 {
		ops = append(ops, Op{Verb: DeleteMapElements, Name: d.New.Name, MapElements: dels})
	}
	if len(adds) > 0 {
		ops = append(ops, Op{Verb: AddMapElements, Name: d.New.Name, MapElements: adds})
	}
	return ops
}

func chainOps(d diff.Op[string, *render.Chain]) []Op {
	switch d.Kind {
	case diff.Add:
		return []Op{{Verb: AddChain, Name: d.New.Name, Chain: d.New}}
	case diff.Delete:
		return []Op{{Verb: DeleteChain, Name: d.Old.Name}}
	}
	if !sameBase(d.New.Base, d.Old.Base) {
		// A hook cannot be changed in place; only base chains have one and nothing
		// references a base chain, so delete and re-add it.
		return []Op{{Verb: DeleteChain, Name: d.Old.Name}, {Verb: AddChain, Name: d.New.Name, Chain: d.New}}
	}
	return []Op{{Verb: ReplaceChain, Name: d.New.Name, Chain: d.New}}
}
