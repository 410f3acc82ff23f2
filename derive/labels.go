package derive

import (
	"net/netip"
	"slices"
	"strings"

	"github.com/projectcalico/calico/lib/std/uniquestr"

	"github.com/felis-dev/felis/model"
	"github.com/felis-dev/felis/model/selector"
	"github.com/felis-dev/felis/model/store"
)

// holder is anything a rule selector can match when an IP set's members are computed: a
// workload endpoint (anywhere in the cluster), a host endpoint or a network set. It carries
// where its labels come from and what it contributes to the sets it matches.
type holder struct {
	src   labelSource
	nets  []netip.Prefix    // addresses (/32, /128) or, for network sets, networks
	ports []model.NamedPort // named ports (endpoints only)
}

// labelSource is where an item's effective labels come from: its own labels, then its
// parents' (profiles' LabelsToApply) in precedence order. Reading labels through it costs
// no flattening and no interning, which is what keeps a derivation over a quarter of a
// million endpoints from interning two million labels it never looks at. The maps are the
// store's (immutable) and are never written.
type labelSource struct {
	own     map[string]string
	parents []map[string]string
}

// get returns the effective value of a label: the item's own, else the first parent's.
func (s *labelSource) get(name string) (string, bool) {
	if v, ok := s.own[name]; ok {
		return v, true
	}
	for _, p := range s.parents {
		if v, ok := p[name]; ok {
			return v, true
		}
	}
	return "", false
}

// each calls fn with every effective label once, in no particular order.
func (s *labelSource) each(fn func(name, value string)) {
	for k, v := range s.own {
		fn(k, v)
	}
	for i, p := range s.parents {
		for k, v := range p {
			if _, dup := s.own[k]; dup || definedIn(s.parents[:i], k) {
				continue
			}
			fn(k, v)
		}
	}
}

// inheritedLabel is one label an item inherits from its parents unless it has its own.
type inheritedLabel struct{ name, value string }

// parentMemo remembers, per shared parent list, the inherited labels some index wants, so
// that indexing the many items sharing a list reads the parents' maps once.
type parentMemo map[*map[string]string][]inheritedLabel

// wanted returns parents' labels (each name once, the first parent winning) that want
// accepts.
func (m parentMemo) wanted(parents []map[string]string, want func(name string) bool) []inheritedLabel {
	if len(parents) == 0 {
		return nil
	}
	if hits, ok := m[&parents[0]]; ok {
		return hits
	}
	hits := []inheritedLabel{}
	for j, p := range parents {
		for k, v := range p {
			if !definedIn(parents[:j], k) && want(k) {
				hits = append(hits, inheritedLabel{k, v})
			}
		}
	}
	m[&parents[0]] = hits
	return hits
}

func definedIn(maps []map[string]string, k string) bool {
	for _, m := range maps {
		if _, ok := m[k]; ok {
			return true
		}
	}
	return false
}

// labels flattens and interns the effective labels (for items evaluated many times).
func (s *labelSource) labels(in *selector.Interner) *selector.Labels {
	return selector.NewLabelsWith(in, s.own, s.parents...)
}

// sourceLabels evaluates selectors directly on a labelSource: a label lookup is a map
// lookup, and only the values looked at are interned. One value serves many evaluations
// (set src before each); it implements Calico's parser.Labels.
type sourceLabels struct {
	src *labelSource
	in  *selector.Interner
}

// GetHandle implements parser.Labels.
func (l *sourceLabels) GetHandle(name uniquestr.Handle) (uniquestr.Handle, bool) {
	v, ok := l.src.get(name.Value())
	if !ok {
		return uniquestr.Handle{}, false
	}
	return l.in.Make(v), true
}

// profileLabels returns each profile's LabelsToApply by profile name.
func profileLabels(v *store.View) map[string]map[string]string {
	m := map[string]map[string]string{}
	for p := range store.List[*model.Profile](v, model.KindProfile) {
		m[p.Key.Name] = p.LabelsToApply
	}
	return m
}

// parentCache resolves profile lists to parent label maps, sharing one slice among the
// items that list the same profiles (every pod of a namespace, typically).
type parentCache struct {
	byProfile map[string]map[string]string
	lists     map[string][]map[string]string
	last      []string // the previous call's profiles and result: neighbours in store
	lastList  []map[string]string
}

func newParentCache(byProfile map[string]map[string]string) *parentCache {
	return &parentCache{byProfile: byProfile, lists: map[string][]map[string]string{}}
}

// source returns an item's labelSource. Felix's label inheritance: the item's own label
// wins, then the first listed profile that has the label; a missing profile adds nothing.
func (c *parentCache) source(own map[string]string, profiles []string) labelSource {
	if len(profiles) == 0 {
		return labelSource{own: own}
	}
	if slices.Equal(profiles, c.last) {
		return labelSource{own: own, parents: c.lastList}
	}
	var key string
	if len(profiles) == 1 {
		key = profiles[0]
	} else {
		key = strings.Join(profiles, "\x00")
	}
	parents, ok := c.lists[key]
	if !ok {
		for _, p := range profiles {
			if l, ok := c.byProfile[p]; ok {
				parents = append(parents, l)
			}
		}
		c.lists[key] = parents
	}
	c.last, c.lastList = profiles, parents
	return labelSource{own: own, parents: parents}
}

// effectiveLabels flattens an item's own labels with those of its profiles. Felix's label
// inheritance: the item's own label wins, then the first listed profile that has the label.
func effectiveLabels(own map[string]string, profiles []string, byProfile map[string]map[string]string) *selector.Labels {
	src := labelSource{own: own}
	for _, p := range profiles {
		if l, ok := byProfile[p]; ok {
			src.parents = append(src.parents, l)
		}
	}
	return src.labels(nil)
}

// netSetProfiles is the parent list Calico gives a network set: a namespaced NetworkSet
// inherits its namespace's profile labels (kns.NAMESPACE), so namespaceSelector matches it;
// a GlobalNetworkSet inherits nothing.
func netSetProfiles(ns *model.NetworkSet) []string {
	if ns.Key.Namespace == "" {
		return nil
	}
	return []string{"kns." + ns.Key.Namespace}
}

// hostAddrs turns a host endpoint's expected IPs into single-address prefixes, as Felix
// contributes them to selector IP sets.
func hostAddrs(ips []netip.Addr) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(ips))
	for _, a := range ips {
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out
}

// holderSet is every holder in the cluster with a label index over them, built for the
// selectors whose members are wanted (indexing only the labels those can require).
type holderSet struct {
	items []holder
	index *labelIndex
	eval  sourceLabels
}

// holders lists every workload endpoint (weps: all of them in ID order, as listAll reads
// them), host endpoint and network set in the cluster with where its labels come from, and
// indexes them for sels. Order follows the store (kind, then ID), so results are
// deterministic.
func holders(v *store.View, weps []*model.WorkloadEndpoint, byProfile map[string]map[string]string, sels []*selector.Selector) *holderSet {
	pc := newParentCache(byProfile)
	heps := listAll[*model.HostEndpoint](v, model.KindHostEndpoint)
	nsets := listAll[*model.NetworkSet](v, model.KindNetworkSet)
	nsets = append(nsets, listAll[*model.NetworkSet](v, model.KindGlobalNetworkSet)...)
	out := make([]holder, 0, len(weps)+len(heps)+len(nsets))
	for _, w := range weps {
		out = append(out, holder{src: pc.source(w.Labels, w.Profiles), nets: w.IPNetworks, ports: w.Ports})
	}
	for _, h := range heps {
		out = append(out, holder{src: pc.source(h.Labels, h.Profiles), nets: hostAddrs(h.ExpectedIPs), ports: h.Ports})
	}
	for _, ns := range nsets {
		out = append(out, holder{src: pc.source(ns.Labels, netSetProfiles(ns)), nets: ns.Nets})
	}
	idx := newIndexPlan(sels).build(len(out), func(i int) *labelSource { return &out[i].src })
	return &holderSet{items: out, index: idx, eval: sourceLabels{in: selector.NewInterner()}}
}

// listAll collects every object of a kind, in ID order: one pass over the store for callers
// that read the kind more than once.
func listAll[T model.Object](v *store.View, k model.Kind) []T {
	var out []T
	for o := range store.List[T](v, k) {
		out = append(out, o)
	}
	return out
}

// matches evaluates sel on holder i.
func (hs *holderSet) matches(sel *selector.Selector, i int) bool {
	hs.eval.src = &hs.items[i].src
	return sel.EvaluateLabels(&hs.eval)
}
