package nftables

import (
	"cmp"
	"slices"

	"github.com/felis-dev/felis/appliers/nftables/render"
	"github.com/felis-dev/felis/diff"
)

// object is one diffable object of the table: exactly one field is set.
type object struct {
	set   *render.Set
	m     *render.Map
	chain *render.Chain
}

func objects(t *render.Table) map[string]object {
	out := map[string]object{}
	if t == nil {
		return out
	}
	for i := range t.Sets {
		out["set:"+t.Sets[i].Name] = object{set: &t.Sets[i]}
	}
	for i := range t.Maps {
		out["map:"+t.Maps[i].Name] = object{m: &t.Maps[i]}
	}
	for i := range t.Chains {
		out["chain:"+t.Chains[i].Name] = object{chain: &t.Chains[i]}
	}
	return out
}

func rank(_ string, o object) int {
	switch {
	case o.set != nil:
		return render.LevelSet
	case o.m != nil:
		return render.LevelMap
	}
	if o.chain.Base != nil {
		return render.LevelBase
	}
	return o.chain.Level
}

func sameBase(a, b *render.BaseChain) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

func equal(d, o object) bool {
	switch {
	case d.set != nil:
		return o.set != nil && !o.set.Drift && d.set.Definition() == o.set.Definition() &&
			slices.EqualFunc(d.set.Elements, o.set.Elements, func(a, b render.Element) bool { return a.Compare(b) == 0 })
	case d.m != nil:
		return o.m != nil && slices.Equal(d.m.Elements, o.m.Elements)
	}
	return o.chain != nil && d.chain.Hash == o.chain.Hash && sameBase(d.chain.Base, o.chain.Base)
}

// Plan returns the ops that turn observed (nil: no felis table) into desired, in an order the
// kernel accepts within one batch: sets, then chains by level, then maps and base chains are
// created or rewritten; deletions follow in reverse. Sets and maps change element by element;
// a chain is rewritten whole, and only when its content hash changed. Plan is pure.
func Plan(desired render.Table, observed *render.Table) []Op {
	var ops []Op
	if observed == nil {
		ops = append(ops, Op{Verb: AddTable})
	}
	for _, d := range diff.Plan(objects(&desired), objects(observed), equal, rank) {
		switch {
		case d.New.set != nil || d.Old.set != nil:
			ops = append(ops, setOps(d)...)
		case d.New.m != nil || d.Old.m != nil:
			ops = append(ops, mapOps(d)...)
		default:
			ops = append(ops, chainOps(d)...)
		}
	}
	return ops
}

func setOps(d diff.Op[string, object]) []Op {
	switch d.Kind {
	case diff.Add:
		return []Op{{Verb: AddSet, Name: d.New.set.Name, Set: d.New.set}}
	case diff.Delete:
		return []Op{{Verb: DeleteSet, Name: d.Old.set.Name}}
	}
	want, have := d.New.set, d.Old.set
	if want.Definition() != have.Definition() {
		// The kernel cannot change a set's type in place; set names encode their family and
		// kind, so this only happens to a set someone else altered.
		return []Op{{Verb: DeleteSet, Name: have.Name}, {Verb: AddSet, Name: want.Name, Set: want}}
	}
	if have.Drift {
		ops := []Op{{Verb: FlushSet, Name: want.Name}}
		if len(want.Elements) > 0 {
			ops = append(ops, Op{Verb: AddSetElements, Name: want.Name, Set: want, Elements: want.Elements})
		}
		return ops
	}
	adds, dels := diff.Members(want.Elements, have.Elements, render.Element.Compare)
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

func compareMapElement(a, b render.MapElement) int {
	return cmp.Or(cmp.Compare(a.Interface, b.Interface), cmp.Compare(a.Chain, b.Chain))
}

func mapOps(d diff.Op[string, object]) []Op {
	switch d.Kind {
	case diff.Add:
		return []Op{{Verb: AddMap, Name: d.New.m.Name, Map: d.New.m}}
	case diff.Delete:
		return []Op{{Verb: DeleteMap, Name: d.Old.m.Name}}
	}
	adds, dels := diff.Members(d.New.m.Elements, d.Old.m.Elements, compareMapElement)
	var ops []Op
	// Deletes first: an interface whose target chain changed is deleted and re-added.
	if len(dels) > 0 {
		ops = append(ops, Op{Verb: DeleteMapElements, Name: d.New.m.Name, MapElements: dels})
	}
	if len(adds) > 0 {
		ops = append(ops, Op{Verb: AddMapElements, Name: d.New.m.Name, MapElements: adds})
	}
	return ops
}

func chainOps(d diff.Op[string, object]) []Op {
	switch d.Kind {
	case diff.Add:
		return []Op{{Verb: AddChain, Name: d.New.chain.Name, Chain: d.New.chain}}
	case diff.Delete:
		return []Op{{Verb: DeleteChain, Name: d.Old.chain.Name}}
	}
	if !sameBase(d.New.chain.Base, d.Old.chain.Base) {
		// A hook cannot be changed in place; only base chains have one and nothing
		// references a base chain, so delete and re-add it.
		return []Op{{Verb: DeleteChain, Name: d.Old.chain.Name}, {Verb: AddChain, Name: d.New.chain.Name, Chain: d.New.chain}}
	}
	return []Op{{Verb: ReplaceChain, Name: d.New.chain.Name, Chain: d.New.chain}}
}
