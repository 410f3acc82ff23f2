package derive

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/felis-dev/felis/model"
	"github.com/felis-dev/felis/model/selector"
	"github.com/felis-dev/felis/model/store"
	"github.com/felis-dev/felis/snapshot"
)

// Test fixtures: small constructors for model objects, so table tests read like the YAML
// they stand for.

func sel(expr string) *selector.Selector { return selector.MustParse(expr) }

func f64(v float64) *float64 { return &v }

func u8(v uint8) *uint8 { return &v }

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

func prefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, pfx(s))
	}
	return out
}

func wep(ns, name, node string, labels model.Labels, ips ...string) *model.WorkloadEndpoint {
	if labels == nil {
		labels = model.Labels{}
	}
	l := model.Labels{"projectcalico.org/namespace": ns}
	for k, v := range labels {
		l[k] = v
	}
	return &model.WorkloadEndpoint{
		Meta:          model.Meta{Key: model.Key{Kind: model.KindWorkloadEndpoint, Namespace: ns, Name: node + "-k8s-" + name + "-eth0"}},
		Node:          node,
		Orchestrator:  "k8s",
		Workload:      name,
		Endpoint:      "eth0",
		InterfaceName: "cali" + name,
		IPNetworks:    prefixes(ips...),
		Profiles:      []string{"kns." + ns},
		Labels:        l,
	}
}

func hep(name, node, iface string, labels model.Labels, ips ...string) *model.HostEndpoint {
	h := &model.HostEndpoint{
		Meta:          model.Meta{Key: model.Key{Kind: model.KindHostEndpoint, Name: name}},
		Node:          node,
		InterfaceName: iface,
		Labels:        labels,
	}
	for _, ip := range ips {
		h.ExpectedIPs = append(h.ExpectedIPs, addr(ip))
	}
	return h
}

func profile(name string, labels model.Labels, in, out []model.Rule) *model.Profile {
	return &model.Profile{Meta: model.Meta{Key: model.Key{Kind: model.KindProfile, Name: name}}, LabelsToApply: labels, Ingress: in, Egress: out}
}

func nsProfile(ns string, labels model.Labels) *model.Profile {
	l := model.Labels{"pcns.projectcalico.org/name": ns}
	for k, v := range labels {
		l["pcns."+k] = v
	}
	allow := []model.Rule{{Action: model.ActionAllow}}
	return profile("kns."+ns, l, allow, allow)
}

func tier(name string, order *float64, def model.Action) *model.Tier {
	return &model.Tier{Meta: model.Meta{Key: model.Key{Kind: model.KindTier, Name: name}}, Order: order, DefaultAction: def}
}

func gnp(name, tierName string, order *float64, selector string, in, out []model.Rule, types ...model.PolicyType) *model.Policy {
	return &model.Policy{
		Meta:     model.Meta{Key: model.Key{Kind: model.KindGlobalNetworkPolicy, Name: name}},
		Tier:     tierName,
		Order:    order,
		Selector: sel(selector),
		Types:    types,
		Ingress:  in,
		Egress:   out,
	}
}

func np(ns, name, tierName string, order *float64, selector string, in, out []model.Rule, types ...model.PolicyType) *model.Policy {
	p := gnp(name, tierName, order, "projectcalico.org/namespace == '"+ns+"' && ("+selector+")", in, out, types...)
	p.Key = model.Key{Kind: model.KindNetworkPolicy, Namespace: ns, Name: name}
	return p
}

func netset(ns, name string, labels model.Labels, nets ...string) *model.NetworkSet {
	k := model.Key{Kind: model.KindGlobalNetworkSet, Name: name}
	l := model.Labels{}
	for key, v := range labels {
		l[key] = v
	}
	if ns != "" {
		k = model.Key{Kind: model.KindNetworkSet, Namespace: ns, Name: name}
		l["projectcalico.org/namespace"] = ns
	}
	return &model.NetworkSet{Meta: model.Meta{Key: k}, Labels: l, Nets: prefixes(nets...)}
}

// newStore writes objs in one batch.
func newStore(t testing.TB, objs ...model.Object) *store.Store {
	t.Helper()
	st := store.New()
	if _, err := st.Write(store.Batch{Upserts: objs}); err != nil {
		t.Fatalf("write: %v", err)
	}
	return st
}

// deriveObjs derives node from a fresh store holding objs.
func deriveObjs(t testing.TB, node string, opts Options, objs ...model.Object) *snapshot.Snapshot {
	t.Helper()
	s, err := Derive(newStore(t, objs...).View(), node, opts)
	if err != nil {
		t.Fatalf("Derive: %v", err)
	}
	return s
}

func allowIn() []model.Rule { return []model.Rule{{Action: model.ActionAllow}} }

// cmpOpts lets go-cmp compare netip values (which have unexported fields).
var cmpOpts = cmp.Options{
	cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
	cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
}
