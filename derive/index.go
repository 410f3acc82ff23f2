package derive

import (
	"github.com/projectcalico/calico/lib/std/uniquestr"

	"github.com/felis-dev/felis/model/selector"
)

// labelIndex finds the items a selector can match without evaluating it against every item:
// an inverted index from label name, and from (name, value), to item positions. A selector's
// label restrictions (labels it requires, values it allows) pick the smallest candidate list;
// the selector is then evaluated on those candidates only. This is what keeps IP set
// computation from being O(selectors x cluster endpoints).
type labelIndex struct {
	n       int
	byName  map[uniquestr.Handle][]int32
	byValue map[nameValue][]int32
}

type nameValue struct{ name, value uniquestr.Handle }

// newLabelIndex indexes items' effective labels; positions refer to the labels slice.
func newLabelIndex(labels []*selector.Labels) *labelIndex {
	idx := &labelIndex{n: len(labels), byName: map[uniquestr.Handle][]int32{}, byValue: map[nameValue][]int32{}}
	for i, l := range labels {
		for k, v := range l.All() {
			nh, vh := uniquestr.Make(k), uniquestr.Make(v)
			idx.byName[nh] = append(idx.byName[nh], int32(i))
			nv := nameValue{nh, vh}
			idx.byValue[nv] = append(idx.byValue[nv], int32(i))
		}
	}
	return idx
}

// candidates calls fn with every item position that sel may match (a superset of the
// matches, each position at most once); all is true when no restriction narrows the search
// and every item is a candidate.
func (idx *labelIndex) candidates(sel *selector.Selector, fn func(i int)) {
	var best [][]int32
	bestLen := idx.n + 1
	for name, r := range sel.LabelRestrictions() {
		if !r.PossibleToSatisfy() {
			return
		}
		var lists [][]int32
		size := 0
		switch {
		case r.MustHaveOneOfValues != nil:
			for _, v := range r.MustHaveOneOfValues {
				l := idx.byValue[nameValue{name, v}]
				lists = append(lists, l)
				size += len(l)
			}
		case r.MustBePresent:
			l := idx.byName[name]
			lists, size = [][]int32{l}, len(l)
		default:
			continue
		}
		if size < bestLen {
			best, bestLen = lists, size
		}
	}
	if bestLen > idx.n {
		for i := range idx.n {
			fn(i)
		}
		return
	}
	// An item has one value per label, so the per-value lists are disjoint.
	for _, l := range best {
		for _, i := range l {
			fn(int(i))
		}
	}
}
