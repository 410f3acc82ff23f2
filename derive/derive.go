package derive

import (
	"maps"
	"slices"
	"strings"

	"github.com/felis-dev/felis/model"
	"github.com/felis-dev/felis/model/selector"
	"github.com/felis-dev/felis/model/store"
	"github.com/felis-dev/felis/snapshot"
)

// Options tune a derivation.
type Options struct {
	// AllPoliciesActive makes every policy active on every node (as if each carried Calico's
	// AssumeNeededOnEveryNode performance hint; a policy carrying the hint is always active
	// regardless).
	AllPoliciesActive bool
	// ConfigOverrides are configuration layers laid over the FelixConfigurations, in order
	// (the last wins): the agent's config file and environment. See ResolveConfigOptions.
	ConfigOverrides []ConfigOverride
}

// localEndpoint is a workload or host endpoint on the node being derived.
type localEndpoint struct {
	WEP      *model.WorkloadEndpoint // exactly one of WEP and HEP is set
	HEP      *model.HostEndpoint
	Labels   *selector.Labels
	Profiles []string
	Matched  []*rankedPolicy // policies whose selector matches, in evaluation order
}

// Derive computes the complete desired snapshot of node from an immutable store view. Pure.
// It returns an error only for input the model should have rejected (naming the resource and
// field); the view is never modified.
func Derive(v *store.View, node string, opts Options) (*snapshot.Snapshot, error) {
	byProfile := profileLabels(v)
	locals := localEndpoints(v, node, byProfile)

	// Active policies: those whose selector matches a local endpoint (workload or host), or
	// that are force-programmed (the hint, or AllPoliciesActive), as Felix's active rules
	// calculator decides. Only active policies are ranked (comparePolicies: by tier, order,
	// then Felix's name): most of a large cluster's policies select nothing here.
	tierMap := tiers(v)
	localLabels := make([]*selector.Labels, len(locals))
	for i, le := range locals {
		localLabels[i] = le.Labels
	}
	localIndex := newLabelIndex(localLabels)
	var active []*rankedPolicy
	var hits []int
	for _, kind := range []model.Kind{model.KindGlobalNetworkPolicy, model.KindNetworkPolicy} {
		for p := range store.List[*model.Policy](v, kind) {
			sel := policySelector(p)
			hits = hits[:0]
			c := localIndex.candidates(sel)
			c.each(func(j int) {
				if c.exact || sel.EvaluateLabels(locals[j].Labels) {
					hits = append(hits, j)
				}
			})
			if len(hits) == 0 && !opts.AllPoliciesActive && !assumedNeeded(p) {
				continue
			}
			name := tierName(p)
			t, ok := tierMap[name]
			if !ok {
				t = tierInfo{Name: name, DefaultAction: snapshot.Deny}
			}
			rp := &rankedPolicy{Policy: p, ID: p.Key.ID(), Tier: t, Sort: backendName(p)}
			active = append(active, rp)
			for _, j := range hits {
				locals[j].Matched = append(locals[j].Matched, rp)
			}
		}
	}
	slices.SortFunc(active, comparePolicies)
	for _, le := range locals {
		slices.SortFunc(le.Matched, comparePolicies)
	}

	s := &snapshot.Snapshot{Node: node}
	defs := map[string]ipSetDef{}
	addDefs := func(ds []ipSetDef) {
		for _, d := range ds {
			defs[d.ID] = d
		}
	}
	for _, rp := range active {
		p, ds, err := policyIR(rp.Policy)
		if err != nil {
			return nil, err
		}
		s.Policies = append(s.Policies, p)
		addDefs(ds)
	}

	// Active profiles: every profile a local endpoint lists, existing or not.
	profileNames := map[string]bool{}
	for _, le := range locals {
		for _, p := range le.Profiles {
			profileNames[p] = true
		}
	}
	for _, name := range slices.Sorted(maps.Keys(profileNames)) {
		prof, _ := store.Get[*model.Profile](v, model.Key{Kind: model.KindProfile, Name: name})
		p, ds, err := profileIR(name, prof)
		if err != nil {
			return nil, err
		}
		s.Profiles = append(s.Profiles, p)
		addDefs(ds)
	}

	for _, le := range locals {
		if le.WEP != nil {
			s.Endpoints = append(s.Endpoints, workloadEndpoint(le))
		} else {
			s.HostEndpoints = append(s.HostEndpoints, hostEndpoint(le))
		}
	}

	// IP sets: only those referenced by active policies and profiles.
	var weps []*model.WorkloadEndpoint // every workload endpoint, read once for sets and routes
	if len(defs) > 0 {
		ids := slices.Sorted(maps.Keys(defs))
		sels := make([]*selector.Selector, 0, len(ids))
		for _, id := range ids {
			if d := defs[id]; d.Kind != setService {
				sels = append(sels, d.Selector)
			}
		}
		weps = listAll[*model.WorkloadEndpoint](v, model.KindWorkloadEndpoint)
		hs := holders(v, weps, byProfile, sels)
		es := endpointSlices(v, defs)
		for _, id := range ids {
			d := defs[id]
			s.IPSets = append(s.IPSets, snapshot.IPSet{ID: id, Type: d.setType(), Source: d.source(), Members: indexedMembers(d, hs, es)})
		}
	}

	s.Config, _ = ResolveConfigOptions(v, node, opts)
	s.Routes, s.VTEPs, s.Pools = routing(v, node, s.Config, weps)
	s.Services = Services(v, node)
	s.Finalize()
	return s, nil
}

// localEndpoints returns node's workload endpoints then host endpoints, each in ID order,
// with their effective labels.
func localEndpoints(v *store.View, node string, byProfile map[string]map[string]string) []*localEndpoint {
	var weps []*model.WorkloadEndpoint
	for w := range store.ListOnNode[*model.WorkloadEndpoint](v, model.KindWorkloadEndpoint, node) {
		weps = append(weps, w)
	}
	slices.SortFunc(weps, func(a, b *model.WorkloadEndpoint) int { return strings.Compare(a.Key.ID(), b.Key.ID()) })
	var heps []*model.HostEndpoint
	for h := range store.ListOnNode[*model.HostEndpoint](v, model.KindHostEndpoint, node) {
		heps = append(heps, h)
	}
	slices.SortFunc(heps, func(a, b *model.HostEndpoint) int { return strings.Compare(a.Key.ID(), b.Key.ID()) })

	out := make([]*localEndpoint, 0, len(weps)+len(heps))
	for _, w := range weps {
		out = append(out, &localEndpoint{WEP: w, Labels: effectiveLabels(w.Labels, w.Profiles, byProfile), Profiles: w.Profiles})
	}
	for _, h := range heps {
		out = append(out, &localEndpoint{HEP: h, Labels: effectiveLabels(h.Labels, h.Profiles, byProfile), Profiles: h.Profiles})
	}
	return out
}

// workloadEndpoint is a local workload endpoint with its normal program (Felix gives
// workload endpoints neither untracked nor pre-DNAT policy).
func workloadEndpoint(le *localEndpoint) snapshot.Endpoint {
	w := le.WEP
	e := snapshot.Endpoint{
		ID:                  w.Key.ID(),
		Namespace:           w.Key.Namespace,
		Workload:            w.Workload,
		Name:                w.Key.Name,
		Interface:           w.InterfaceName,
		MAC:                 w.MAC,
		Addrs:               slices.Clone(w.IPNetworks),
		AllowSpoofedSources: slices.Clone(w.AllowSpoofedSourcePrefixes),
		Ingress:             direction(le.Matched, programNormal, model.PolicyTypeIngress, le.Profiles),
		Egress:              direction(le.Matched, programNormal, model.PolicyTypeEgress, le.Profiles),
		Labels:              labelMap(le.Labels),
	}
	for _, p := range w.Ports {
		e.Ports = append(e.Ports, snapshot.NamedPort{Name: p.Name, Protocol: p.Protocol, Port: p.Port})
	}
	return e
}

// hostEndpoint is a local host endpoint with its four programs split as Felix splits them.
func hostEndpoint(le *localEndpoint) snapshot.HostEndpoint {
	h := le.HEP
	dirs := func(prog program) snapshot.HostDirections {
		return snapshot.HostDirections{
			Ingress: direction(le.Matched, prog, model.PolicyTypeIngress, le.Profiles),
			Egress:  direction(le.Matched, prog, model.PolicyTypeEgress, le.Profiles),
		}
	}
	he := snapshot.HostEndpoint{
		ID:          h.Key.ID(),
		Interface:   h.InterfaceName,
		ExpectedIPs: slices.Clone(h.ExpectedIPs),
		Normal:      dirs(programNormal),
		PreDNAT:     dirs(programPreDNAT),
		Untracked:   dirs(programUntracked),
		Forward:     dirs(programForward),
		Labels:      labelMap(le.Labels),
	}
	if h.InterfaceName == "*" {
		// Felix ignores doNotTrack policy on an all-interfaces host endpoint (it warns and
		// renders no raw chains for it), and Calico documents it as unsupported.
		he.Untracked = snapshot.HostDirections{}
	}
	return he
}

func labelMap(l *selector.Labels) map[string]string {
	if l.Len() == 0 {
		return nil
	}
	return l.Map()
}
