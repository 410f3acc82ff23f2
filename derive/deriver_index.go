package derive

import (
	"slices"

	"github.com/felis-dev/felis/model/selector"
)

// posting is the set of holders that have one label, or one label value. A first build
// fills ids in ascending order by appending; later changes land in two small maps and are
// folded back into ids now and then, so that neither building nor updating the index needs a
// map per label.
type posting struct {
	ids   []holderID            // ascending; may list holders in gone
	gone  map[holderID]struct{} // listed in ids, no longer holding the label
	extra map[holderID]struct{} // holding the label, not listed in ids
}

func (p *posting) listed(id holderID) bool {
	_, ok := slices.BinarySearch(p.ids, id)
	return ok
}

// add records a holder that does not hold the label yet.
func (p *posting) add(id holderID) {
	switch n := len(p.ids); {
	case n == 0 || p.ids[n-1] < id:
		p.ids = append(p.ids, id)
	case p.listed(id):
		delete(p.gone, id)
	default:
		if p.extra == nil {
			p.extra = map[holderID]struct{}{}
		}
		p.extra[id] = struct{}{}
	}
	p.compact()
}

// remove forgets a holder that holds the label.
func (p *posting) remove(id holderID) {
	if p.listed(id) {
		if p.gone == nil {
			p.gone = map[holderID]struct{}{}
		}
		p.gone[id] = struct{}{}
	} else {
		delete(p.extra, id)
	}
	p.compact()
}

// compact folds the maps back into ids once they hold a good part of the posting.
func (p *posting) compact() {
	if d := len(p.gone) + len(p.extra); d < 64 || d < len(p.ids)/4 {
		return
	}
	ids := make([]holderID, 0, p.size())
	p.each(func(id holderID) { ids = append(ids, id) })
	slices.Sort(ids)
	p.ids, p.gone, p.extra = ids, nil, nil
}

func (p *posting) size() int { return len(p.ids) - len(p.gone) + len(p.extra) }

// each calls fn with every holder in the posting, once.
func (p *posting) each(fn func(id holderID)) {
	for _, id := range p.ids {
		if len(p.gone) > 0 {
			if _, ok := p.gone[id]; ok {
				continue
			}
		}
		fn(id)
	}
	for id := range p.extra {
		fn(id)
	}
}

// labelPostings is what the Deriver indexes for one label name: the holders that have it
// (every name is indexed so: a first build reads every label anyway) and, once a selector
// needs its values, the holders per value.
type labelPostings struct {
	all    *posting
	values map[string]*posting // nil until needed; then every value
}

// indexed returns the postings of a label name, indexing its values from the holders that
// have it the first time a selector needs them.
func (d *Deriver) indexed(name string, byValue bool) *labelPostings {
	lp := d.labelIndex[name]
	if lp == nil {
		lp = &labelPostings{all: &posting{}} // no holder has the label
		d.labelIndex[name] = lp
	}
	if byValue && lp.values == nil {
		lp.values = map[string]*posting{}
		lp.all.each(func(id holderID) {
			if v, ok := d.byID[id].src.get(name); ok {
				lp.value(v).ids = append(lp.value(v).ids, id)
			}
		})
		for _, p := range lp.values {
			slices.Sort(p.ids)
		}
	}
	return lp
}

// value returns the posting of one value, creating it.
func (lp *labelPostings) value(v string) *posting {
	p := lp.values[v]
	if p == nil {
		p = &posting{}
		lp.values[v] = p
	}
	return p
}

// planIndex indexes, in one pass over every holder, every label name, and by value the
// names whose values the selectors' restrictions can use: the first build's way of doing
// what indexHolder and indexed do holder by holder. The index must be empty.
func (d *Deriver) planIndex(sels []*selector.Selector) {
	for _, sel := range sels {
		for name, r := range sel.LabelRestrictions() {
			if r.MustHaveOneOfValues != nil {
				lp := d.postings(name.Value())
				if lp.values == nil {
					lp.values = map[string]*posting{}
				}
			}
		}
	}
	add := func(id holderID, k, v string) {
		lp := d.postings(k)
		lp.all.ids = append(lp.all.ids, id)
		if lp.values != nil {
			p := lp.value(v)
			p.ids = append(p.ids, id)
		}
	}
	// Holders in ascending ID order, so every posting is appended in order.
	memo := parentMemo{}
	want := func(string) bool { return true }
	for _, h := range d.byID {
		if h == nil {
			continue
		}
		for k, v := range h.src.own {
			add(h.id, k, v)
		}
		for _, l := range memo.wanted(h.src.parents, want) {
			if _, mine := h.src.own[l.name]; !mine {
				add(h.id, l.name, l.value)
			}
		}
	}
}

// postings returns a name's postings, creating them.
func (d *Deriver) postings(name string) *labelPostings {
	lp := d.labelIndex[name]
	if lp == nil {
		lp = &labelPostings{all: &posting{}}
		d.labelIndex[name] = lp
	}
	return lp
}

// indexHolder adds (or, with remove, removes) a holder to the postings of its labels.
func (d *Deriver) indexHolder(h *hstate, remove bool) {
	h.src.each(func(k, v string) {
		lp := d.postings(k)
		if remove {
			lp.all.remove(h.id)
			if lp.all.size() == 0 {
				delete(d.labelIndex, k) // no holder has it: nothing to keep
				return
			}
		} else {
			lp.all.add(h.id)
		}
		if lp.values != nil {
			if remove {
				if p := lp.values[v]; p != nil {
					p.remove(h.id)
					if p.size() == 0 {
						delete(lp.values, v)
					}
				}
			} else {
				lp.value(v).add(h.id)
			}
		}
	})
	for _, p := range h.profList {
		users := d.profileUsers[p]
		if users == nil {
			users = &posting{}
			d.profileUsers[p] = users
		}
		if remove {
			users.remove(h.id)
			if users.size() == 0 {
				delete(d.profileUsers, p)
			}
		} else {
			users.add(h.id)
		}
	}
}

// holderCandidates is what a selector may match among the Deriver's holders: the union of
// postings (disjoint), or every holder when all.
type holderCandidates struct {
	lists []*posting
	all   bool
	exact bool // every candidate matches (see candidateSet.exact)
}

// candidates returns the holders a selector can possibly match, using the label index for
// the restriction with the fewest holders, else every holder.
func (d *Deriver) candidates(sel *selector.Selector) holderCandidates {
	var best []*posting
	bestN := -1
	exact := false
	for name, r := range sel.LabelRestrictions() {
		if !r.PossibleToSatisfy() {
			return holderCandidates{exact: true}
		}
		switch {
		case r.MustHaveOneOfValues != nil:
			lp := d.indexed(name.Value(), true)
			var lists []*posting
			n := 0
			for i, v := range r.MustHaveOneOfValues {
				if slices.Contains(r.MustHaveOneOfValues[:i], v) {
					continue
				}
				if p := lp.values[v.Value()]; p != nil {
					lists = append(lists, p)
					n += p.size()
				}
			}
			if bestN < 0 || n < bestN {
				best, bestN, exact = lists, n, isSingleTest(sel, name.Value(), true)
			}
		case r.MustBePresent:
			lp := d.indexed(name.Value(), false)
			if n := lp.all.size(); bestN < 0 || n < bestN {
				best, bestN, exact = []*posting{lp.all}, n, isSingleTest(sel, name.Value(), false)
			}
		}
	}
	if bestN < 0 {
		return holderCandidates{all: true}
	}
	return holderCandidates{lists: best, exact: exact}
}

// size is the number of candidates (0 when all: unknown without counting).
func (c holderCandidates) size() int {
	n := 0
	for _, p := range c.lists {
		n += p.size()
	}
	return n
}

// each calls fn with every candidate holder once.
func (c holderCandidates) each(d *Deriver, fn func(h *hstate)) {
	if c.all {
		for _, h := range d.byID {
			if h != nil {
				fn(h)
			}
		}
		return
	}
	for _, p := range c.lists {
		p.each(func(id holderID) { fn(d.byID[id]) })
	}
}
