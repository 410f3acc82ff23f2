package derive

import (
	"cmp"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"github.com/felis-dev/felis/model"
	"github.com/felis-dev/felis/model/selector"
	"github.com/felis-dev/felis/model/store"
	"github.com/felis-dev/felis/snapshot"
)

// Deriver derives one node's snapshot cycle after cycle. It keeps what it computed —
// effective labels with a label index, each policy's rule IR, each local endpoint's programs,
// each IP set's members, the routing — and on every cycle recomputes only what the store's
// change feed says changed, so a cycle costs what the change costs. Its result always equals
// the pure Derive of the same view (a property test holds it to that).
//
// A Deriver is not safe for concurrent use; the agent owns one per node.
type Deriver struct {
	node string
	opts Options
	cons *store.Consumer // keeps the tombstones this deriver has not read yet

	rev    uint64
	primed bool

	profileLabels map[string]map[string]string
	profileUsers  map[string]*posting       // profile -> holders that list it
	holders       map[model.Key]*hstate     // holders changed since the first build (nil: deleted), or every holder when !bulkSorted
	bulk          []hstate                  // the first build's holders, in store order
	bulkSorted    bool                      // bulk ascends by holderKeyOrder: found by binary search
	byID          []*hstate                 // holder ID -> holder (nil when free)
	freeIDs       []holderID                // IDs to reuse
	labelIndex    map[string]*labelPostings // label name -> holders (by value once needed)
	in            *selector.Interner        // interned label strings (a cache; reset when it grows)
	inBase        int                       // in's size after the first build
	eval          sourceLabels              // evaluates selectors on holders' label sources

	tiers    map[string]tierInfo
	policies map[model.Key]*pstate
	// Policies indexed by one label their selector requires, so that a changed local
	// endpoint is matched only against policies that could select it.
	policiesByLabel map[string]map[model.Key]struct{}
	policiesAny     map[model.Key]struct{} // selectors that require no label
	profiles        map[string]*profState  // profiles listed by a local endpoint

	locals map[model.Key]*lstate
	sets   map[string]*sstate
	setIDs []string // sorted IDs of sets in use

	endpointSlices map[model.Key]*model.EndpointSlice
	services       *serviceDeriver

	routingValid     bool // config, base routes, VTEPs, pools are current
	localRoutesDirty bool // the overlay of local workload routes must be rebuilt
	config           snapshot.Config
	baseRoutes       []snapshot.Route // RemoteRouting's routes
	routes           []snapshot.Route // baseRoutes with the local workload routes laid over
	vteps            []snapshot.VTEP
	pools            []snapshot.Pool
	affine           map[string][]netip.Prefix // node -> blocks affine to it, for the borrowed-IP test
	firstWEPs        []*model.WorkloadEndpoint // every workload endpoint, read once by the first build
}

// holderID is a small integer naming a holder inside the index (cheaper to hash than a Key).
type holderID int32

// hstate is a holder (anything a rule selector can match) with what indexing needs.
type hstate struct {
	holder
	id       holderID
	key      model.Key
	profList []string
	node     string // for workload and host endpoints
	iface    string // for workload endpoints
}

// pstate is one policy with its memoized IR.
type pstate struct {
	rp      rankedPolicy
	label   string // the index label ("" = policiesAny)
	built   bool
	ir      snapshot.Policy
	defs    []ipSetDef
	err     error
	matches int  // local endpoints whose labels the selector matches
	active  bool // its sets are referenced
}

// profState is one profile in use with its memoized IR.
type profState struct {
	users int
	built bool
	ir    snapshot.Profile
	defs  []ipSetDef
	err   error
}

// lstate is a local workload or host endpoint.
type lstate struct {
	h       *hstate
	labels  *selector.Labels // flattened: local endpoints are matched against every policy
	wep     *model.WorkloadEndpoint
	hep     *model.HostEndpoint
	matched map[model.Key]bool
	dirty   bool
	ep      snapshot.Endpoint
	hostEP  snapshot.HostEndpoint
}

// sstate is an IP set in use: its members counted per contribution so that holders can come
// and go without recomputing the set.
type sstate struct {
	def     ipSetDef
	source  string // def.source(), computed once
	refs    int
	counts  map[snapshot.Member]int // nil: each of members counted once (made on first change)
	members []snapshot.Member
	dirty   bool // members must be recomputed (from counts, or for service sets from slices)
}

// NewDeriver returns a Deriver for node that reads st's change feed.
func NewDeriver(st *store.Store, node string, opts Options) *Deriver {
	return &Deriver{node: node, opts: opts, cons: st.RegisterConsumer("derive/" + node)}
}

// Close releases the Deriver's hold on the store's change feed.
func (d *Deriver) Close() { d.cons.Close() }

// Derive returns the node's snapshot for view v: the same value Derive(v, node, opts) returns.
// The first call, a call with an older view, and the call after an error build everything.
func (d *Deriver) Derive(v *store.View) (*snapshot.Snapshot, error) {
	if !d.primed || v.Revision() < d.rev {
		d.build(v)
	} else if v.Revision() > d.rev {
		var changes []model.Key
		for c := range v.ChangesSince(d.rev) {
			changes = append(changes, c.Key)
		}
		d.apply(v, changes)
	}
	d.rev = v.Revision()
	d.cons.Ack(d.rev)
	s, err := d.assemble(v)
	if err != nil {
		d.primed = false
		return nil, err
	}
	d.primed = true
	return s, nil
}

func (d *Deriver) reset() {
	d.profileLabels = map[string]map[string]string{}
	d.profileUsers = map[string]*posting{}
	d.holders = map[model.Key]*hstate{}
	d.bulk, d.bulkSorted = nil, false
	d.byID, d.freeIDs = nil, nil
	d.labelIndex = map[string]*labelPostings{}
	d.in, d.inBase = selector.NewInterner(), 0
	d.eval = sourceLabels{in: d.in}
	d.tiers = nil
	d.policies = map[model.Key]*pstate{}
	d.policiesByLabel = map[string]map[model.Key]struct{}{}
	d.policiesAny = map[model.Key]struct{}{}
	d.profiles = map[string]*profState{}
	d.locals = map[model.Key]*lstate{}
	d.sets = map[string]*sstate{}
	d.setIDs = nil
	d.endpointSlices = map[model.Key]*model.EndpointSlice{}
	d.services = newServiceDeriver()
	d.routingValid = false
	d.firstWEPs = nil
}

func isHolderKind(k model.Kind) bool {
	switch k {
	case model.KindWorkloadEndpoint, model.KindHostEndpoint, model.KindNetworkSet, model.KindGlobalNetworkSet:
		return true
	}
	return false
}

// apply folds a list of changed keys (current values read from v) into the state.
func (d *Deriver) apply(v *store.View, changed []model.Key) {
	refresh := map[model.Key]bool{}
	var policyKeys []model.Key
	tiersChanged := d.tiers == nil
	slicesChanged := false
	for _, k := range changed {
		d.services.changed(v, d.node, k)
		switch {
		case k.Kind == model.KindProfile:
			if p, ok := store.Get[*model.Profile](v, k); ok {
				d.profileLabels[k.Name] = p.LabelsToApply
			} else {
				delete(d.profileLabels, k.Name)
			}
			if users := d.profileUsers[k.Name]; users != nil {
				users.each(func(id holderID) { refresh[d.byID[id].key] = true })
			}
			if ps, ok := d.profiles[k.Name]; ok {
				d.dropProfileRefs(ps)
				ps.built = false
			}
		case k.Kind == model.KindTier:
			tiersChanged = true
		case k.Kind == model.KindGlobalNetworkPolicy || k.Kind == model.KindNetworkPolicy:
			policyKeys = append(policyKeys, k)
		case isHolderKind(k.Kind):
			refresh[k] = true
		case k.Kind == model.KindEndpointSlice:
			slicesChanged = true
			if es, ok := store.Get[*model.EndpointSlice](v, k); ok {
				d.endpointSlices[k] = es
			} else {
				delete(d.endpointSlices, k)
			}
		case k.Kind == model.KindNode || k.Kind == model.KindIPPool || k.Kind == model.KindIPAMBlock ||
			k.Kind == model.KindBlockAffinity || k.Kind == model.KindFelixConfiguration:
			d.routingValid = false
		}
	}
	if tiersChanged {
		d.tiers = tiers(v)
		for _, ps := range d.policies {
			d.setTier(ps)
		}
		for _, l := range d.locals {
			l.dirty = true
		}
	}
	for _, k := range sortedKeys(refresh) {
		d.refreshHolder(v, k)
	}
	for _, k := range policyKeys {
		d.updatePolicy(v, k)
	}
	d.updateActivation()
	if slicesChanged {
		for _, s := range d.sets {
			if s.def.Kind == setService && d.services.dirty[s.def.Service] {
				s.dirty = true
			}
		}
	}
}

func sortedKeys(m map[model.Key]bool) []model.Key {
	keys := slices.Collect(maps.Keys(m))
	slices.SortFunc(keys, func(a, b model.Key) int {
		return cmp.Or(strings.Compare(string(a.Kind), string(b.Kind)), strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
	})
	return keys
}

func (d *Deriver) setTier(ps *pstate) {
	name := tierName(ps.rp.Policy)
	t, ok := d.tiers[name]
	if !ok {
		t = tierInfo{Name: name, DefaultAction: snapshot.Deny}
	}
	ps.rp.Tier = t
}

// newHolder reads a holder from the view, or returns nil when it no longer exists; obj is
// the object read.
func (d *Deriver) newHolder(v *store.View, k model.Key) (h *hstate, obj model.Object) {
	o, ok := v.Get(k)
	if !ok {
		return nil, nil
	}
	return d.holderOf(o), o
}

// holderOf makes a holder of a workload endpoint, host endpoint or network set (nil for
// any other object), with its labels read through the current profiles.
func (d *Deriver) holderOf(o model.Object) *hstate {
	h := &hstate{}
	d.fillHolder(h, o, nil)
	if h.key.Kind == "" {
		return nil
	}
	return h
}

// fillHolder fills h from o; pc, when not nil, shares parent lists between holders.
func (d *Deriver) fillHolder(h *hstate, o model.Object, pc *parentCache) {
	var own map[string]string
	switch x := o.(type) {
	case *model.WorkloadEndpoint:
		own, h.profList, h.node, h.iface = x.Labels, x.Profiles, x.Node, x.InterfaceName
		h.nets, h.ports = x.IPNetworks, x.Ports
	case *model.HostEndpoint:
		own, h.profList, h.node = x.Labels, x.Profiles, x.Node
		h.nets, h.ports = hostAddrs(x.ExpectedIPs), x.Ports
	case *model.NetworkSet:
		own, h.profList = x.Labels, netSetProfiles(x)
		h.nets = x.Nets
	default:
		return
	}
	h.key = o.GetMeta().Key
	if pc == nil {
		pc = newParentCache(d.profileLabels)
	}
	h.src = pc.source(own, h.profList)
}

// matches evaluates sel on a holder's labels.
func (d *Deriver) matches(sel *selector.Selector, h *hstate) bool {
	d.eval.src = &h.src
	return sel.EvaluateLabels(&d.eval)
}

// refreshHolder re-reads one holder and moves it through the index, the sets and, when it
// is local, the policy matches.
func (d *Deriver) refreshHolder(v *store.View, k model.Key) {
	old := d.holder(k)
	h, obj := d.newHolder(v, k)
	if old != nil {
		d.indexHolder(old, true)
		d.byID[old.id] = nil
		d.freeIDs = append(d.freeIDs, old.id)
	}
	if h != nil {
		if n := len(d.freeIDs); n > 0 {
			h.id, d.freeIDs = d.freeIDs[n-1], d.freeIDs[:n-1]
			d.byID[h.id] = h
		} else {
			h.id = holderID(len(d.byID))
			d.byID = append(d.byID, h)
		}
		d.holders[k] = h
		d.indexHolder(h, false)
	} else if d.inBulk(k) {
		d.holders[k] = nil // hides the first build's entry
	} else {
		delete(d.holders, k)
	}
	// One holder against every set: flatten its labels once.
	var oldLabels, newLabels *selector.Labels
	for _, s := range d.sets {
		if s.def.Kind == setService {
			continue
		}
		if old != nil {
			if oldLabels == nil {
				oldLabels = old.src.labels(d.in)
			}
			if s.def.Selector.EvaluateLabels(oldLabels) {
				s.add(holderMembers(s.def, &old.holder, nil), -1)
			}
		}
		if h != nil {
			if newLabels == nil {
				newLabels = h.src.labels(d.in)
			}
			if s.def.Selector.EvaluateLabels(newLabels) {
				s.add(holderMembers(s.def, &h.holder, nil), +1)
			}
		}
	}
	if k.Kind == model.KindWorkloadEndpoint && routingFieldsDiffer(old, h) {
		if old != nil && old.node == d.node || h != nil && h.node == d.node {
			d.localRoutesDirty = true
		}
		if d.isBorrowed(old) || d.isBorrowed(h) {
			d.routingValid = false
		}
	}
	if old != nil && d.isLocal(old) {
		l := d.locals[k]
		for pk := range l.matched {
			d.policies[pk].matches--
		}
		for _, p := range l.h.profList {
			d.profileUse(p, -1)
		}
		delete(d.locals, k)
	}
	if h != nil && d.isLocal(h) {
		l := d.addLocal(h, obj)
		match := func(pk model.Key) {
			ps := d.policies[pk]
			if policySelector(ps.rp.Policy).EvaluateLabels(l.labels) {
				l.matched[pk] = true
				ps.matches++
			}
		}
		for pk := range d.policiesAny {
			match(pk)
		}
		for name := range l.labels.All() {
			for pk := range d.policiesByLabel[name] {
				match(pk)
			}
		}
	}
	d.trimInterner()
}

// isLocal reports whether a holder is a workload or host endpoint of this node.
func (d *Deriver) isLocal(h *hstate) bool {
	return h.node == d.node && (h.key.Kind == model.KindWorkloadEndpoint || h.key.Kind == model.KindHostEndpoint)
}

// addLocal starts tracking a local endpoint (its policy matches are the caller's).
func (d *Deriver) addLocal(h *hstate, obj model.Object) *lstate {
	l := &lstate{h: h, labels: h.src.labels(d.in), matched: map[model.Key]bool{}, dirty: true}
	l.wep, _ = obj.(*model.WorkloadEndpoint)
	l.hep, _ = obj.(*model.HostEndpoint)
	for _, p := range h.profList {
		d.profileUse(p, +1)
	}
	d.locals[h.key] = l
	return l
}

// trimInterner drops the interned-string cache once it has grown well past what the first
// build needed (label values churn; the cache must not keep every one ever seen).
func (d *Deriver) trimInterner() {
	if d.in.Len() > max(1<<16, 2*d.inBase) {
		d.in = selector.NewInterner()
		d.eval.in = d.in
	}
}

// routingFieldsDiffer reports whether a workload endpoint's change can move a route: it
// appeared, went, moved node, or changed addresses or interface (labels never matter).
func routingFieldsDiffer(old, h *hstate) bool {
	if old == nil || h == nil {
		return old != h
	}
	return old.node != h.node || old.iface != h.iface || !slices.Equal(old.nets, h.nets)
}

// isBorrowed reports whether a workload endpoint on another node has an address outside the
// blocks affine to its node, so that RemoteRouting gives it a route of its own. Before the
// first routing computation every endpoint counts (the routing is rebuilt anyway).
func (d *Deriver) isBorrowed(h *hstate) bool {
	if h == nil || h.node == d.node || h.node == "" {
		return false
	}
	if !d.routingValid {
		return true
	}
	for _, n := range h.nets {
		inside := false
		for _, b := range d.affine[h.node] {
			if b.Contains(n.Addr()) {
				inside = true
				break
			}
		}
		if !inside {
			return true
		}
	}
	return false
}

func addTo[K, V comparable, S ~map[V]E, E any](m map[K]S, k K, v V) {
	s, ok := m[k]
	if !ok {
		s = S{}
		m[k] = s
	}
	var zero E
	s[v] = zero
}

func removeFrom[K, V comparable, S ~map[V]E, E any](m map[K]S, k K, v V) {
	if s, ok := m[k]; ok {
		delete(s, v)
		if len(s) == 0 {
			delete(m, k)
		}
	}
}

// updatePolicy re-reads one policy and re-matches it against the local endpoints.
func (d *Deriver) updatePolicy(v *store.View, k model.Key) {
	ps := d.policies[k]
	if ps != nil {
		if ps.active {
			d.dropPolicyRefs(ps)
		}
		for _, l := range d.locals {
			if l.matched[k] {
				delete(l.matched, k)
				l.dirty = true
			}
		}
	}
	if ps != nil {
		if ps.label == "" {
			delete(d.policiesAny, k)
		} else {
			removeFrom(d.policiesByLabel, ps.label, k)
		}
	}
	p, ok := store.Get[*model.Policy](v, k)
	if !ok {
		delete(d.policies, k)
		return
	}
	sel := policySelector(p)
	ps = &pstate{rp: rankedPolicy{Policy: p, ID: p.Key.ID()}, label: requiredLabel(sel)}
	d.setTier(ps)
	d.policies[k] = ps
	if ps.label == "" {
		d.policiesAny[k] = struct{}{}
	} else {
		addTo(d.policiesByLabel, ps.label, k)
	}
	for _, l := range d.locals {
		if sel.EvaluateLabels(l.labels) {
			l.matched[k] = true
			l.dirty = true
			ps.matches++
		}
	}
}

// updateActivation makes exactly the policies that apply active, building their IR and
// referencing their sets; then creates new sets and drops unreferenced ones.
func (d *Deriver) updateActivation() {
	for _, ps := range d.policies {
		want := ps.matches > 0 || d.opts.AllPoliciesActive || assumedNeeded(ps.rp.Policy)
		switch {
		case want && !ps.active:
			d.buildPolicy(ps)
			for _, def := range ps.defs {
				d.ref(def, +1)
			}
			ps.active = true
		case !want && ps.active:
			d.dropPolicyRefs(ps)
		}
	}
	for id, s := range d.sets {
		if s.refs == 0 {
			delete(d.sets, id)
			if i, ok := slices.BinarySearch(d.setIDs, id); ok {
				d.setIDs = slices.Delete(d.setIDs, i, i+1)
			}
		}
	}
}

func (d *Deriver) dropPolicyRefs(ps *pstate) {
	for _, def := range ps.defs {
		d.ref(def, -1)
	}
	ps.active = false
}

func (d *Deriver) dropProfileRefs(prof *profState) {
	if prof.built {
		for _, def := range prof.defs {
			d.ref(def, -1)
		}
	}
}

func (d *Deriver) profileUse(name string, delta int) {
	prof, ok := d.profiles[name]
	if !ok {
		prof = &profState{}
		d.profiles[name] = prof
	}
	prof.users += delta
	if prof.users == 0 {
		d.dropProfileRefs(prof)
		delete(d.profiles, name)
	}
}

func (d *Deriver) buildPolicy(ps *pstate) {
	if ps.built {
		return
	}
	ir, defs, err := policyIR(ps.rp.Policy)
	ps.ir, ps.defs, ps.err, ps.built = finalPolicy(ir), uniqueDefs(defs), err, true
}

func finalPolicy(p snapshot.Policy) snapshot.Policy {
	tmp := snapshot.Snapshot{Policies: []snapshot.Policy{p}}
	tmp.Finalize()
	return tmp.Policies[0]
}

func uniqueDefs(defs []ipSetDef) []ipSetDef {
	seen := map[string]bool{}
	var out []ipSetDef
	for _, def := range defs {
		if !seen[def.ID] {
			seen[def.ID] = true
			out = append(out, def)
		}
	}
	return out
}

// ref counts a reference to a set; a new set's members are computed from the label index.
func (d *Deriver) ref(def ipSetDef, delta int) {
	s, ok := d.sets[def.ID]
	if !ok {
		if delta < 0 {
			return
		}
		s = d.newSet(def)
		i, _ := slices.BinarySearch(d.setIDs, def.ID)
		d.setIDs = slices.Insert(d.setIDs, i, def.ID)
	}
	s.refs += delta
}

// newSet creates a set and computes its members (service sets: in assemble, from slices).
func (d *Deriver) newSet(def ipSetDef) *sstate {
	s := &sstate{def: def, source: def.source(), dirty: def.Kind == setService}
	d.sets[def.ID] = s
	if def.Kind == setService {
		return s
	}
	collect := func() []snapshot.Member {
		c := d.candidates(def.Selector)
		var out []snapshot.Member
		if n := c.size(); c.exact && def.Kind == setSelector && n > 0 {
			out = make([]snapshot.Member, 0, n) // one address each, typically
		}
		c.each(d, func(h *hstate) {
			if def.Kind == setNamedPort && len(h.ports) == 0 {
				return // contributes nothing: skip the evaluation
			}
			if c.exact || d.matches(def.Selector, h) {
				out = holderMembers(def, &h.holder, out)
			}
		})
		return out
	}
	all := collect()
	n := len(all)
	s.members = sortMembers(all)
	if len(s.members) != n {
		// Some member comes from two holders: count them now (rare; else counts wait
		// for the first change).
		s.counts = map[snapshot.Member]int{}
		for _, m := range collect() {
			s.counts[m]++
		}
	}
	return s
}

func (s *sstate) add(ms []snapshot.Member, delta int) {
	if len(ms) == 0 {
		return
	}
	if s.counts == nil {
		s.counts = make(map[snapshot.Member]int, len(s.members))
		for _, m := range s.members {
			s.counts[m] = 1
		}
	}
	for _, m := range ms {
		n := s.counts[m] + delta
		if n <= 0 {
			delete(s.counts, m)
		} else {
			s.counts[m] = n
		}
		if (n == 0 && delta < 0) || (n == 1 && delta > 0) {
			s.dirty = true
		}
	}
}

// assemble builds the snapshot from the memoized pieces.
func (d *Deriver) assemble(v *store.View) (*snapshot.Snapshot, error) {
	s := &snapshot.Snapshot{Node: d.node}
	// Profiles may need building (first use, or changed) with the current view.
	for name, prof := range d.profiles {
		if !prof.built {
			p, _ := store.Get[*model.Profile](v, model.Key{Kind: model.KindProfile, Name: name})
			prof.build(name, p)
			for _, def := range prof.defs {
				d.ref(def, +1)
			}
		}
	}
	var active []*pstate
	for _, ps := range d.policies {
		if ps.active {
			if ps.err != nil {
				return nil, ps.err
			}
			active = append(active, ps)
		}
	}
	slices.SortFunc(active, func(a, b *pstate) int { return strings.Compare(a.rp.ID, b.rp.ID) })
	s.Policies = make([]snapshot.Policy, 0, len(active))
	s.IPSets = make([]snapshot.IPSet, 0, len(d.setIDs))
	for _, ps := range active {
		s.Policies = append(s.Policies, ps.ir)
	}
	for _, name := range slices.Sorted(maps.Keys(d.profiles)) {
		prof := d.profiles[name]
		if prof.err != nil {
			return nil, prof.err
		}
		s.Profiles = append(s.Profiles, prof.ir)
	}
	for _, k := range sortedKeys(boolKeys(d.locals)) {
		l := d.locals[k]
		if l.dirty {
			d.buildLocal(l)
		}
		if l.wep != nil {
			s.Endpoints = append(s.Endpoints, l.ep)
		} else {
			s.HostEndpoints = append(s.HostEndpoints, l.hostEP)
		}
	}
	slices.SortFunc(s.Endpoints, func(a, b snapshot.Endpoint) int { return strings.Compare(a.ID, b.ID) })
	slices.SortFunc(s.HostEndpoints, func(a, b snapshot.HostEndpoint) int { return strings.Compare(a.ID, b.ID) })
	for _, id := range d.setIDs {
		set := d.sets[id]
		if set.dirty {
			if set.def.Kind == setService {
				set.members = ipSetMembers(set.def, nil, d.services.slicesOf(set.def.Service))
			} else {
				set.members = sortMembers(slices.Collect(maps.Keys(set.counts)))
			}
			set.dirty = false
		}
		s.IPSets = append(s.IPSets, snapshot.IPSet{ID: id, Type: set.def.setType(), Source: set.source, Members: set.members})
	}
	if !d.routingValid {
		d.config, _ = ResolveConfigOptions(v, d.node, d.opts)
		base, vteps, pools := remoteRouting(v, d.node, d.config, d.firstWEPs)
		d.firstWEPs = nil
		tmp := snapshot.Snapshot{Routes: base, VTEPs: vteps, Pools: pools}
		tmp.Finalize()
		d.baseRoutes, d.vteps, d.pools = tmp.Routes, tmp.VTEPs, tmp.Pools
		d.affine = map[string][]netip.Prefix{}
		for b := range store.List[*model.IPAMBlock](v, model.KindIPAMBlock) {
			if b.AffinityNode != "" {
				d.affine[b.AffinityNode] = append(d.affine[b.AffinityNode], b.CIDR)
			}
		}
		for b := range store.List[*model.BlockAffinity](v, model.KindBlockAffinity) {
			d.affine[b.Node] = append(d.affine[b.Node], b.CIDR)
		}
		d.routingValid = true
		d.localRoutesDirty = true
	}
	if d.localRoutesDirty {
		var weps []*model.WorkloadEndpoint
		for _, l := range d.locals {
			if l.wep != nil {
				weps = append(weps, l.wep)
			}
		}
		// The same order Routing reads them in: by ID.
		slices.SortFunc(weps, func(a, b *model.WorkloadEndpoint) int { return strings.Compare(a.Key.ID(), b.Key.ID()) })
		tmp := snapshot.Snapshot{Routes: OverlayRoutes(d.baseRoutes, LocalWorkloadRoutes(weps))}
		tmp.Finalize()
		d.routes = tmp.Routes
		d.localRoutesDirty = false
	}
	s.Config, s.Routes, s.VTEPs, s.Pools = d.config, d.routes, d.vteps, d.pools
	s.Services = d.services.assemble(v, d.node)
	return s, nil
}

// build computes the profile's IR (its set references are the caller's).
func (prof *profState) build(name string, p *model.Profile) {
	ir, defs, err := profileIR(name, p)
	tmp := snapshot.Snapshot{Profiles: []snapshot.Profile{ir}}
	tmp.Finalize()
	prof.ir, prof.defs, prof.err, prof.built = tmp.Profiles[0], uniqueDefs(defs), err, true
}

func boolKeys[V any](m map[model.Key]V) map[model.Key]bool {
	out := make(map[model.Key]bool, len(m))
	for k := range m {
		out[k] = true
	}
	return out
}

// buildLocal recomputes one local endpoint's snapshot entry from its matched policies.
func (d *Deriver) buildLocal(l *lstate) {
	matched := make([]*rankedPolicy, 0, len(l.matched))
	for pk := range l.matched {
		matched = append(matched, &d.policies[pk].rp)
	}
	slices.SortFunc(matched, comparePolicies)
	le := &localEndpoint{WEP: l.wep, HEP: l.hep, Labels: l.labels, Profiles: l.h.profList, Matched: matched}
	tmp := snapshot.Snapshot{}
	if l.wep != nil {
		tmp.Endpoints = []snapshot.Endpoint{workloadEndpoint(le)}
		tmp.Finalize()
		l.ep = tmp.Endpoints[0]
	} else {
		tmp.HostEndpoints = []snapshot.HostEndpoint{hostEndpoint(le)}
		tmp.Finalize()
		l.hostEP = tmp.HostEndpoints[0]
	}
	l.dirty = false
}

// requiredLabel names one label a selector cannot match without (the smallest name, for
// determinism), or "" when it requires none.
func requiredLabel(sel *selector.Selector) string {
	best := ""
	for name, r := range sel.LabelRestrictions() {
		if r.MustBePresent && (best == "" || name.Value() < best) {
			best = name.Value()
		}
	}
	return best
}
