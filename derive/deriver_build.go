package derive

import (
	"cmp"
	"slices"

	"github.com/felis-dev/felis/model"
	"github.com/felis-dev/felis/model/selector"
	"github.com/felis-dev/felis/model/store"
)

// build computes the whole state from v: the first cycle, or a restart. It ends where
// applying every object as a change would, but reads each kind once in bulk: holders in one
// allocation with IDs in store order, policies matched against the local endpoints through a
// label index, and the holder index (every label name, and by value the names whose values
// the active IP sets' selectors test) built in one pass.
func (d *Deriver) build(v *store.View) {
	d.reset()
	for p := range store.List[*model.Profile](v, model.KindProfile) {
		d.profileLabels[p.Key.Name] = p.LabelsToApply
	}
	d.tiers = tiers(v)
	for _, k := range []model.Kind{model.KindService, model.KindEndpointSlice} {
		for o := range v.All(k) {
			key := o.GetMeta().Key
			d.services.changed(v, d.node, key)
			if es, ok := o.(*model.EndpointSlice); ok {
				d.endpointSlices[key] = es
			}
		}
	}
	d.buildHolders(v)
	d.buildPolicies(v)

	// Activation: the policies that apply and the profiles in use, then their sets, all at
	// once so that the index is built in one pass.
	var defs []ipSetDef
	for _, ps := range d.policies {
		if ps.matches > 0 || d.opts.AllPoliciesActive || assumedNeeded(ps.rp.Policy) {
			d.buildPolicy(ps)
			ps.active = true
			defs = append(defs, ps.defs...)
		}
	}
	for name, prof := range d.profiles {
		p, _ := store.Get[*model.Profile](v, model.Key{Kind: model.KindProfile, Name: name})
		prof.build(name, p)
		defs = append(defs, prof.defs...)
	}
	var sels []*selector.Selector
	for _, def := range defs {
		if def.Kind != setService {
			sels = append(sels, def.Selector)
		}
	}
	d.planIndex(sels)
	for _, def := range defs {
		s, ok := d.sets[def.ID]
		if !ok {
			s = d.newSet(def)
			d.setIDs = append(d.setIDs, def.ID)
		}
		s.refs++
	}
	slices.Sort(d.setIDs)
	d.inBase = d.in.Len()
}

// buildHolders reads every holder, in store order, and starts tracking the local endpoints.
func (d *Deriver) buildHolders(v *store.View) {
	d.firstWEPs = listAll[*model.WorkloadEndpoint](v, model.KindWorkloadEndpoint)
	heps := listAll[*model.HostEndpoint](v, model.KindHostEndpoint)
	nsets := listAll[*model.NetworkSet](v, model.KindNetworkSet)
	nsets = append(nsets, listAll[*model.NetworkSet](v, model.KindGlobalNetworkSet)...)
	n := len(d.firstWEPs) + len(heps) + len(nsets)
	all := make([]hstate, n)
	d.byID = make([]*hstate, n)
	d.bulk, d.bulkSorted = all, true
	pc := newParentCache(d.profileLabels)
	i := 0
	add := func(o model.Object) {
		h := &all[i]
		d.fillHolder(h, o, pc)
		h.id = holderID(i)
		d.byID[i] = h
		if i > 0 && holderKeyOrder(all[i-1].key, h.key) >= 0 {
			d.bulkSorted = false // not the order lookups assume: keep a map instead
		}
		for _, p := range h.profList {
			users := d.profileUsers[p]
			if users == nil {
				users = &posting{}
				d.profileUsers[p] = users
			}
			users.ids = append(users.ids, h.id)
		}
		if d.isLocal(h) {
			d.addLocal(h, o)
		}
		i++
	}
	for _, w := range d.firstWEPs {
		add(w)
	}
	for _, h := range heps {
		add(h)
	}
	for _, ns := range nsets {
		add(ns)
	}
	if !d.bulkSorted {
		d.holdersToMap()
	}
}

// holdersToMap keeps every holder in the map instead of finding first-build holders in
// the sorted array.
func (d *Deriver) holdersToMap() {
	for i := range d.bulk {
		k := d.bulk[i].key
		if _, changed := d.holders[k]; !changed {
			d.holders[k] = &d.bulk[i]
		}
	}
	for k, h := range d.holders {
		if h == nil {
			delete(d.holders, k) // a deleted first-build holder
		}
	}
	d.bulk, d.bulkSorted = nil, false
}

// holder returns the current holder with key k, or nil.
func (d *Deriver) holder(k model.Key) *hstate {
	if h, ok := d.holders[k]; ok {
		return h
	}
	if i, ok := d.bulkIndex(k); ok {
		return &d.bulk[i]
	}
	return nil
}

// inBulk reports whether the first build had a holder with key k.
func (d *Deriver) inBulk(k model.Key) bool {
	_, ok := d.bulkIndex(k)
	return ok
}

func (d *Deriver) bulkIndex(k model.Key) (int, bool) {
	if !d.bulkSorted {
		return 0, false
	}
	return slices.BinarySearchFunc(d.bulk, k, func(h hstate, k model.Key) int { return holderKeyOrder(h.key, k) })
}

// holderKindRank is the order the first build reads holder kinds in.
func holderKindRank(k model.Kind) int {
	switch k {
	case model.KindWorkloadEndpoint:
		return 0
	case model.KindHostEndpoint:
		return 1
	case model.KindNetworkSet:
		return 2
	}
	return 3
}

// holderKeyOrder orders holder keys as the first build reads them: by kind (the build's
// order), then by ID (the store's order within a kind), without building the IDs.
func holderKeyOrder(a, b model.Key) int {
	if ra, rb := holderKindRank(a.Kind), holderKindRank(b.Kind); ra != rb {
		return cmp.Compare(ra, rb)
	}
	return compareIDs(a, b)
}

// compareIDs is strings.Compare(a.ID(), b.ID()) without the concatenation.
func compareIDs(a, b model.Key) int {
	ap, bp := idParts(a), idParts(b)
	ai, bi := 0, 0 // part index
	ao, bo := 0, 0 // offset in the part
	for {
		for ai < 3 && ao == len(ap[ai]) {
			ai, ao = ai+1, 0
		}
		for bi < 3 && bo == len(bp[bi]) {
			bi, bo = bi+1, 0
		}
		switch {
		case ai == 3 && bi == 3:
			return 0
		case ai == 3:
			return -1
		case bi == 3:
			return 1
		}
		if c, d := ap[ai][ao], bp[bi][bo]; c != d {
			return cmp.Compare(c, d)
		}
		ao, bo = ao+1, bo+1
	}
}

// idParts is a key's ID as three pieces to be read in sequence.
func idParts(k model.Key) [3]string {
	if k.Namespace == "" {
		return [3]string{k.Name, "", ""}
	}
	return [3]string{k.Namespace, "/", k.Name}
}

// buildPolicies reads every policy and matches it against the local endpoints through a
// label index over them.
func (d *Deriver) buildPolicies(v *store.View) {
	locals := make([]*lstate, 0, len(d.locals))
	for _, l := range d.locals {
		locals = append(locals, l)
	}
	labels := make([]*selector.Labels, len(locals))
	for i, l := range locals {
		labels[i] = l.labels
	}
	idx := newLabelIndex(labels)
	for _, kind := range []model.Kind{model.KindGlobalNetworkPolicy, model.KindNetworkPolicy} {
		for p := range store.List[*model.Policy](v, kind) {
			k := p.Key
			sel := policySelector(p)
			ps := &pstate{rp: rankedPolicy{Policy: p, ID: p.Key.ID()}, label: requiredLabel(sel)}
			d.setTier(ps)
			d.policies[k] = ps
			if ps.label == "" {
				d.policiesAny[k] = struct{}{}
			} else {
				addTo(d.policiesByLabel, ps.label, k)
			}
			c := idx.candidates(sel)
			c.each(func(j int) {
				if c.exact || sel.EvaluateLabels(locals[j].labels) {
					locals[j].matched[k] = true
					ps.matches++
				}
			})
		}
	}
}
