package derive

import (
	"slices"

	"github.com/projectcalico/calico/libcalico-go/lib/selector/parser"

	"github.com/felis-dev/felis/model/selector"
)

// labelIndex finds the items a selector can match without evaluating it against every item:
// an inverted index from label name, and from (name, value), to item positions. A selector's
// label restrictions (labels it requires, values it allows) pick the smallest candidate list;
// the selector is then evaluated on those candidates only. This is what keeps IP set
// computation from being O(selectors x cluster endpoints).
//
// A full index holds every label; a planned one (newIndexPlan) holds only the names and
// values the planned selectors' restrictions mention, so that building it over a cluster
// costs what those selectors need rather than a map insert per label of every endpoint.
type labelIndex struct {
	n      int
	all    bool // every label is indexed, by name and by value
	labels map[string]*indexedLabel
}

// indexedLabel is what the index holds for one label name.
type indexedLabel struct {
	present   bool               // byName lists every item that has the label
	byName    []int32            // ascending
	allValues bool               // byValue has every value (else only the planned ones)
	byValue   map[string][]int32 // value -> items with it, ascending
}

// newLabelIndex indexes every label of items' effective labels; positions refer to the
// slice.
func newLabelIndex(items []*selector.Labels) *labelIndex {
	idx := &labelIndex{n: len(items), all: true, labels: map[string]*indexedLabel{}}
	for i, l := range items {
		for k, v := range l.Handles() {
			idx.add(int32(i), k.Value(), v.Value())
		}
	}
	return idx
}

// newIndexPlan returns an empty index that will hold exactly what sels' label restrictions
// can use; fill it with build.
func newIndexPlan(sels []*selector.Selector) *labelIndex {
	idx := &labelIndex{labels: map[string]*indexedLabel{}}
	for _, sel := range sels {
		for name, r := range sel.LabelRestrictions() {
			if !r.PossibleToSatisfy() {
				continue
			}
			switch {
			case r.MustHaveOneOfValues != nil:
				e := idx.entry(name.Value())
				if e.byValue == nil {
					e.byValue = map[string][]int32{}
				}
				for _, v := range r.MustHaveOneOfValues {
					e.byValue[v.Value()] = nil
				}
			case r.MustBePresent:
				idx.entry(name.Value()).present = true
			}
		}
	}
	return idx
}

func (idx *labelIndex) entry(name string) *indexedLabel {
	e := idx.labels[name]
	if e == nil {
		e = &indexedLabel{}
		idx.labels[name] = e
	}
	return e
}

// build indexes items 0..n-1, whose labels src returns, and returns idx.
func (idx *labelIndex) build(n int, src func(i int) *labelSource) *labelIndex {
	idx.n = n
	if len(idx.labels) == 0 && !idx.all {
		return idx
	}
	memo := parentMemo{}
	want := func(name string) bool { return idx.all || idx.labels[name] != nil }
	for i := range n {
		s := src(i)
		for k, v := range s.own {
			idx.add(int32(i), k, v)
		}
		for _, l := range memo.wanted(s.parents, want) {
			if _, mine := s.own[l.name]; !mine {
				idx.add(int32(i), l.name, l.value)
			}
		}
	}
	return idx
}

// add records that item i has label name=value (once per item and name).
func (idx *labelIndex) add(i int32, name, value string) {
	e := idx.labels[name]
	if e == nil {
		if !idx.all {
			return
		}
		e = &indexedLabel{present: true, allValues: true, byValue: map[string][]int32{}}
		idx.labels[name] = e
	}
	if e.present {
		e.byName = append(e.byName, i)
	}
	if e.byValue == nil {
		return
	}
	if l, ok := e.byValue[value]; ok || e.allValues {
		e.byValue[value] = append(l, i)
	}
}

// candidateSet is what a selector may match among an index's items: the union of lists
// (disjoint: an item has one value per label), or every item when all.
type candidateSet struct {
	lists [][]int32
	all   bool
	n     int
	// exact: every candidate matches, so the selector need not be evaluated (it is a single
	// has(), == or in {} test and the index holds exactly the items with that label or value).
	exact bool
}

// size is the number of candidates.
func (c candidateSet) size() int {
	if c.all {
		return c.n
	}
	n := 0
	for _, l := range c.lists {
		n += len(l)
	}
	return n
}

// each calls fn with every candidate position once, in no particular order.
func (c candidateSet) each(fn func(i int)) {
	if c.all {
		for i := range c.n {
			fn(i)
		}
		return
	}
	for _, l := range c.lists {
		for _, i := range l {
			fn(int(i))
		}
	}
}

// candidates returns the items sel may match (a superset of its matches): the smallest
// list its label restrictions allow, or every item when no restriction is usable.
func (idx *labelIndex) candidates(sel *selector.Selector) candidateSet {
	none := candidateSet{exact: true}
	var best [][]int32
	bestLen := idx.n + 1
	exact := false
	for name, r := range sel.LabelRestrictions() {
		if !r.PossibleToSatisfy() {
			return none
		}
		if !r.MustBePresent && r.MustHaveOneOfValues == nil {
			continue
		}
		e := idx.labels[name.Value()]
		if e == nil {
			if idx.all {
				return none // no item has a label the selector requires
			}
			continue // not indexed
		}
		var lists [][]int32
		size := 0
		switch {
		case r.MustHaveOneOfValues != nil:
			if e.byValue == nil {
				continue
			}
			usable := true
			for i, v := range r.MustHaveOneOfValues {
				if slices.Contains(r.MustHaveOneOfValues[:i], v) {
					continue // a list per value, once
				}
				l, ok := e.byValue[v.Value()]
				if !ok && !e.allValues {
					usable = false
					break
				}
				lists = append(lists, l)
				size += len(l)
			}
			if !usable {
				continue
			}
		case e.present:
			lists, size = [][]int32{e.byName}, len(e.byName)
		default:
			continue
		}
		if size < bestLen {
			best, bestLen = lists, size
			exact = isSingleTest(sel, name.Value(), r.MustHaveOneOfValues != nil)
		}
	}
	if bestLen > idx.n {
		return candidateSet{all: true, n: idx.n}
	}
	return candidateSet{lists: best, exact: exact}
}

// isSingleTest reports whether sel is nothing but a presence test of name (byValue false)
// or an equality or set-membership test of it (byValue true): then the items the index
// lists for that restriction are exactly the matches.
func isSingleTest(sel *selector.Selector, name string, byValue bool) bool {
	switch n := sel.Root().(type) {
	case *parser.HasNode:
		return !byValue && n.LabelName.Value() == name
	case *parser.LabelEqValueNode:
		return byValue && n.LabelName.Value() == name
	case *parser.LabelInSetNode:
		return byValue && n.LabelName.Value() == name
	}
	return false
}
