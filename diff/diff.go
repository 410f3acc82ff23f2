package diff

import (
	"cmp"
	"fmt"
	"slices"
)

// Kind is what an Op does to its object.
type Kind int

// Op kinds.
const (
	Add     Kind = iota // create an object that is desired but not observed
	Replace             // update an object whose observed content differs from the desired one
	Delete              // remove an object that is observed but not desired
)

// String returns "add", "replace" or "delete".
func (k Kind) String() string {
	switch k {
	case Add:
		return "add"
	case Replace:
		return "replace"
	case Delete:
		return "delete"
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// Op is one operation on one object. Old is the observed object (Replace, Delete), New the
// desired one (Add, Replace); the other is the zero value.
type Op[K cmp.Ordered, V any] struct {
	Kind Kind
	Key  K
	Rank int
	Old  V
	New  V
}

// String renders the op as "KIND KEY (rank N)", the form plans print.
func (o Op[K, V]) String() string {
	return fmt.Sprintf("%s %v (rank %d)", o.Kind, o.Key, o.Rank)
}

// Plan returns the ops that turn observed into desired. equal reports whether an observed
// object already matches the desired one; rank gives an object's dependency rank: an object
// may only depend on objects of a strictly lower rank. Adds and replaces come first, by
// ascending rank, so dependencies exist before their dependants; deletes follow, by descending
// rank, so dependants (already rewritten or removed) release their dependencies first. Within
// one rank, ops are sorted by key. Plan(x, x) is empty.
func Plan[K cmp.Ordered, V any](desired, observed map[K]V, equal func(desired, observed V) bool, rank func(K, V) int) []Op[K, V] {
	var ups, dels []Op[K, V]
	for k, d := range desired {
		o, ok := observed[k]
		switch {
		case !ok:
			ups = append(ups, Op[K, V]{Kind: Add, Key: k, Rank: rank(k, d), New: d})
		case !equal(d, o):
			ups = append(ups, Op[K, V]{Kind: Replace, Key: k, Rank: rank(k, d), Old: o, New: d})
		}
	}
	for k, o := range observed {
		if _, ok := desired[k]; !ok {
			dels = append(dels, Op[K, V]{Kind: Delete, Key: k, Rank: rank(k, o), Old: o})
		}
	}
	slices.SortFunc(ups, func(a, b Op[K, V]) int {
		return cmp.Or(cmp.Compare(a.Rank, b.Rank), cmp.Compare(a.Key, b.Key))
	})
	slices.SortFunc(dels, func(a, b Op[K, V]) int {
		return cmp.Or(cmp.Compare(b.Rank, a.Rank), cmp.Compare(a.Key, b.Key))
	})
	return append(ups, dels...)
}

// Apply returns a copy of objects with ops applied in order: what a dataplane holds after it
// executed the ops. It reports the first op that does not fit (adding an existing key,
// replacing or deleting a missing one).
func Apply[K cmp.Ordered, V any](objects map[K]V, ops []Op[K, V]) (map[K]V, error) {
	out := make(map[K]V, len(objects))
	for k, v := range objects {
		out[k] = v
	}
	for _, op := range ops {
		_, ok := out[op.Key]
		switch op.Kind {
		case Add:
			if ok {
				return nil, fmt.Errorf("%s: %v already exists", op, op.Key)
			}
			out[op.Key] = op.New
		case Replace:
			if !ok {
				return nil, fmt.Errorf("%s: %v does not exist", op, op.Key)
			}
			out[op.Key] = op.New
		case Delete:
			if !ok {
				return nil, fmt.Errorf("%s: %v does not exist", op, op.Key)
			}
			delete(out, op.Key)
		default:
			return nil, fmt.Errorf("%s: unknown op kind", op)
		}
	}
	return out, nil
}

// Members diffs two sorted, duplicate-free member lists: adds are in desired only, dels in
// observed only, both sorted by compare. Unchanged members cost nothing.
func Members[T any](desired, observed []T, compare func(a, b T) int) (adds, dels []T) {
	i, j := 0, 0
	for i < len(desired) && j < len(observed) {
		switch c := compare(desired[i], observed[j]); {
		case c < 0:
			adds = append(adds, desired[i])
			i++
		case c > 0:
			dels = append(dels, observed[j])
			j++
		default:
			i++
			j++
		}
	}
	adds = append(adds, desired[i:]...)
	dels = append(dels, observed[j:]...)
	return adds, dels
}

// PlanSorted is Plan for object lists already sorted by key without duplicates (as canonical
// tables are): a merge join, no maps, for hot paths over large lists. Its result equals
// Plan's on the same objects.
func PlanSorted[K cmp.Ordered, V any](desired, observed []V, key func(V) K, equal func(desired, observed V) bool, rank func(K, V) int) []Op[K, V] {
	var ups, dels []Op[K, V]
	i, j := 0, 0
	for i < len(desired) || j < len(observed) {
		var c int
		switch {
		case i == len(desired):
			c = 1
		case j == len(observed):
			c = -1
		default:
			c = cmp.Compare(key(desired[i]), key(observed[j]))
		}
		switch {
		case c < 0:
			k := key(desired[i])
			ups = append(ups, Op[K, V]{Kind: Add, Key: k, Rank: rank(k, desired[i]), New: desired[i]})
			i++
		case c > 0:
			k := key(observed[j])
			dels = append(dels, Op[K, V]{Kind: Delete, Key: k, Rank: rank(k, observed[j]), Old: observed[j]})
			j++
		default:
			if !equal(desired[i], observed[j]) {
				k := key(desired[i])
				ups = append(ups, Op[K, V]{Kind: Replace, Key: k, Rank: rank(k, desired[i]), Old: observed[j], New: desired[i]})
			}
			i++
			j++
		}
	}
	slices.SortStableFunc(ups, func(a, b Op[K, V]) int { return cmp.Compare(a.Rank, b.Rank) })
	slices.SortStableFunc(dels, func(a, b Op[K, V]) int { return cmp.Compare(b.Rank, a.Rank) })
	return append(ups, dels...)
}
