package derive

import (
	"net/netip"

	"github.com/felis-dev/felis/model"
	"github.com/felis-dev/felis/model/selector"
	"github.com/felis-dev/felis/model/store"
)

// holder is anything a rule selector can match when an IP set's members are computed: a
// workload endpoint (anywhere in the cluster), a host endpoint or a network set. It carries
// what the holder contributes to the sets it matches.
type holder struct {
	labels *selector.Labels
	nets   []netip.Prefix    // addresses (/32, /128) or, for network sets, networks
	ports  []model.NamedPort // named ports (endpoints only)
}

// profileLabels returns each profile's LabelsToApply by profile name.
func profileLabels(v *store.View) map[string]map[string]string {
	m := map[string]map[string]string{}
	for p := range store.List[*model.Profile](v, model.KindProfile) {
		m[p.Key.Name] = p.LabelsToApply
	}
	return m
}

// effectiveLabels flattens an item's own labels with those of its profiles. Felix's label
// inheritance: the item's own label wins, then the first listed profile that has the label.
func effectiveLabels(own map[string]string, profiles []string, byProfile map[string]map[string]string) *selector.Labels {
	if len(profiles) == 0 {
		return selector.NewLabels(own)
	}
	parents := make([]map[string]string, 0, len(profiles))
	for _, p := range profiles {
		if l, ok := byProfile[p]; ok {
			parents = append(parents, l)
		}
	}
	return selector.NewLabels(own, parents...)
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

// holderSet is every holder in the cluster with a label index over them.
type holderSet struct {
	items []holder
	index *labelIndex
}

// holders lists every workload endpoint, host endpoint and network set in the cluster with
// its effective labels. Order follows the store (kind, then ID), so results are deterministic.
func holders(v *store.View, byProfile map[string]map[string]string) *holderSet {
	n := v.Count(model.KindWorkloadEndpoint) + v.Count(model.KindHostEndpoint) + v.Count(model.KindNetworkSet) + v.Count(model.KindGlobalNetworkSet)
	out := make([]holder, 0, n)
	for w := range store.List[*model.WorkloadEndpoint](v, model.KindWorkloadEndpoint) {
		out = append(out, holder{labels: effectiveLabels(w.Labels, w.Profiles, byProfile), nets: w.IPNetworks, ports: w.Ports})
	}
	for h := range store.List[*model.HostEndpoint](v, model.KindHostEndpoint) {
		out = append(out, holder{labels: effectiveLabels(h.Labels, h.Profiles, byProfile), nets: hostAddrs(h.ExpectedIPs), ports: h.Ports})
	}
	for _, k := range []model.Kind{model.KindNetworkSet, model.KindGlobalNetworkSet} {
		for ns := range store.List[*model.NetworkSet](v, k) {
			out = append(out, holder{labels: effectiveLabels(ns.Labels, netSetProfiles(ns), byProfile), nets: ns.Nets})
		}
	}
	labels := make([]*selector.Labels, len(out))
	for i := range out {
		labels[i] = out[i].labels
	}
	return &holderSet{items: out, index: newLabelIndex(labels)}
}
