package derive

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/felis-dev/felis/model"
	"github.com/felis-dev/felis/snapshot"
)

// TestEndpointPrograms checks the per-endpoint, per-direction tier programs against Felix's
// policy sorter and rule renderer: tier order, policy order, types, omitted tiers, default
// actions, profiles.
func TestEndpointPrograms(t *testing.T) {
	ns := nsProfile("ns1", nil)
	pod := wep("ns1", "a", "n1", model.Labels{"app": "a"}, "10.0.0.1/32")
	both := []model.PolicyType{model.PolicyTypeIngress, model.PolicyTypeEgress}
	tests := []struct {
		name    string
		objs    []model.Object
		ingress snapshot.Direction
		egress  snapshot.Direction
	}{
		{
			name:    "no policy: profiles only",
			objs:    nil,
			ingress: snapshot.Direction{Profiles: []string{"kns.ns1"}},
			egress:  snapshot.Direction{Profiles: []string{"kns.ns1"}},
		},
		{
			name: "tiers by order then name, nil order last, missing default tier supplied at 1e6",
			objs: []model.Object{
				tier("zeta", f64(10), ""), tier("alpha", f64(10), ""), tier("late", nil, model.ActionPass), tier("first", f64(1), model.ActionPass),
				gnp("p-default", "default", nil, "all()", allowIn(), nil, model.PolicyTypeIngress),
				gnp("p-zeta", "zeta", nil, "all()", allowIn(), nil, model.PolicyTypeIngress),
				gnp("p-alpha", "alpha", nil, "all()", allowIn(), nil, model.PolicyTypeIngress),
				gnp("p-late", "late", nil, "all()", allowIn(), nil, model.PolicyTypeIngress),
				gnp("p-first", "first", nil, "all()", allowIn(), nil, model.PolicyTypeIngress),
			},
			ingress: snapshot.Direction{Tiers: []snapshot.TierPolicies{
				{Tier: "first", DefaultAction: snapshot.Pass, Policies: []string{"p-first"}},
				{Tier: "alpha", DefaultAction: snapshot.Deny, Policies: []string{"p-alpha"}},
				{Tier: "zeta", DefaultAction: snapshot.Deny, Policies: []string{"p-zeta"}},
				{Tier: "default", DefaultAction: snapshot.Deny, Policies: []string{"p-default"}},
				{Tier: "late", DefaultAction: snapshot.Pass, Policies: []string{"p-late"}},
			}, Profiles: []string{"kns.ns1"}},
			egress: snapshot.Direction{Profiles: []string{"kns.ns1"}},
		},
		{
			name: "a tier that does not exist sorts after every existing tier and denies",
			objs: []model.Object{
				tier("last", nil, model.ActionPass),
				gnp("p-ghost", "ghost", f64(1), "all()", allowIn(), nil, model.PolicyTypeIngress),
				gnp("p-last", "last", nil, "all()", allowIn(), nil, model.PolicyTypeIngress),
			},
			ingress: snapshot.Direction{Tiers: []snapshot.TierPolicies{
				{Tier: "last", DefaultAction: snapshot.Pass, Policies: []string{"p-last"}},
				{Tier: "ghost", DefaultAction: snapshot.Deny, Policies: []string{"p-ghost"}},
			}, Profiles: []string{"kns.ns1"}},
			egress: snapshot.Direction{Profiles: []string{"kns.ns1"}},
		},
		{
			name: "policies by order, nil last, ties by ID; namespaced IDs are NS/NAME",
			objs: []model.Object{
				gnp("c", "default", nil, "all()", allowIn(), nil, model.PolicyTypeIngress),
				gnp("b", "default", f64(5), "all()", allowIn(), nil, model.PolicyTypeIngress),
				gnp("a", "default", nil, "all()", allowIn(), nil, model.PolicyTypeIngress),
				np("ns1", "z", "default", f64(5), "all()", allowIn(), nil, model.PolicyTypeIngress),
				gnp("early", "default", f64(0.5), "all()", allowIn(), nil, model.PolicyTypeIngress),
			},
			ingress: snapshot.Direction{Tiers: []snapshot.TierPolicies{
				{Tier: "default", DefaultAction: snapshot.Deny, Policies: []string{"early", "b", "ns1/z", "a", "c"}},
			}, Profiles: []string{"kns.ns1"}},
			egress: snapshot.Direction{Profiles: []string{"kns.ns1"}},
		},
		{
			name: "order ties break on Felix's backend name: default.NAME, NS/default.NAME, NS/knp.default.NAME",
			objs: []model.Object{
				gnp("p", "default", f64(5), "all()", allowIn(), nil, model.PolicyTypeIngress),
				np("ns1", "a", "default", f64(5), "all()", allowIn(), nil, model.PolicyTypeIngress),
				np("ns1", "knp.default.x", "default", f64(5), "all()", allowIn(), nil, model.PolicyTypeIngress),
				gnp("ns2", "default", f64(5), "all()", allowIn(), nil, model.PolicyTypeIngress),
			},
			ingress: snapshot.Direction{Tiers: []snapshot.TierPolicies{
				{Tier: "default", DefaultAction: snapshot.Deny, Policies: []string{"ns2", "p", "ns1/a", "ns1/knp.default.x"}},
			}, Profiles: []string{"kns.ns1"}},
			egress: snapshot.Direction{Profiles: []string{"kns.ns1"}},
		},
		{
			name: "types: none means both; a tier with no policy for a direction is omitted there",
			objs: []model.Object{
				tier("sec", f64(1), ""),
				gnp("eg", "sec", nil, "all()", nil, allowIn(), model.PolicyTypeEgress),
				gnp("any", "default", nil, "all()", allowIn(), allowIn()),
				gnp("in", "default", f64(1), "all()", allowIn(), nil, both...),
			},
			ingress: snapshot.Direction{Tiers: []snapshot.TierPolicies{
				{Tier: "default", DefaultAction: snapshot.Deny, Policies: []string{"in", "any"}},
			}, Profiles: []string{"kns.ns1"}},
			egress: snapshot.Direction{Tiers: []snapshot.TierPolicies{
				{Tier: "sec", DefaultAction: snapshot.Deny, Policies: []string{"eg"}},
				{Tier: "default", DefaultAction: snapshot.Deny, Policies: []string{"in", "any"}},
			}, Profiles: []string{"kns.ns1"}},
		},
		{
			name: "only matching policies; doNotTrack and preDNAT policies never reach workloads",
			objs: []model.Object{
				gnp("other", "default", nil, "app == 'b'", allowIn(), nil),
				gnp("mine", "default", nil, "app == 'a'", allowIn(), nil, model.PolicyTypeIngress),
				func() *model.Policy {
					p := gnp("untracked", "default", nil, "all()", allowIn(), nil, model.PolicyTypeIngress)
					p.DoNotTrack, p.ApplyOnForward = true, true
					return p
				}(),
				func() *model.Policy {
					p := gnp("prednat", "default", nil, "all()", allowIn(), nil, model.PolicyTypeIngress)
					p.PreDNAT, p.ApplyOnForward = true, true
					return p
				}(),
			},
			ingress: snapshot.Direction{Tiers: []snapshot.TierPolicies{
				{Tier: "default", DefaultAction: snapshot.Deny, Policies: []string{"mine"}},
			}, Profiles: []string{"kns.ns1"}},
			egress: snapshot.Direction{Profiles: []string{"kns.ns1"}},
		},
		{
			name: "selectors see inherited profile labels",
			objs: []model.Object{
				nsProfile("ns1", model.Labels{"team": "red"}),
				gnp("red", "default", nil, "pcns.team == 'red'", allowIn(), nil, model.PolicyTypeIngress),
			},
			ingress: snapshot.Direction{Tiers: []snapshot.TierPolicies{
				{Tier: "default", DefaultAction: snapshot.Deny, Policies: []string{"red"}},
			}, Profiles: []string{"kns.ns1"}},
			egress: snapshot.Direction{Profiles: []string{"kns.ns1"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs := append([]model.Object{ns, pod}, tt.objs...)
			s := deriveObjs(t, "n1", Options{}, objs...)
			if len(s.Endpoints) != 1 {
				t.Fatalf("got %d endpoints, want 1", len(s.Endpoints))
			}
			e := s.Endpoints[0]
			if diff := cmp.Diff(tt.ingress, e.Ingress, cmpOpts); diff != "" {
				t.Errorf("ingress program (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.egress, e.Egress, cmpOpts); diff != "" {
				t.Errorf("egress program (-want +got):\n%s", diff)
			}
		})
	}
}

// TestHostEndpointPrograms checks Felix's split of a host endpoint's policies into the
// normal, untracked, pre-DNAT and forward programs.
func TestHostEndpointPrograms(t *testing.T) {
	mk := func(name string, order float64, dnt, prednat, fwd bool, types ...model.PolicyType) *model.Policy {
		p := gnp(name, "default", f64(order), "role == 'edge'", allowIn(), allowIn(), types...)
		p.DoNotTrack, p.PreDNAT, p.ApplyOnForward = dnt, prednat, fwd
		return p
	}
	h := hep("eth0-n1", "n1", "eth0", model.Labels{"role": "edge"}, "192.168.1.10")
	s := deriveObjs(t, "n1", Options{}, h,
		mk("normal", 1, false, false, false),
		mk("fwd", 2, false, false, true),
		mk("dnt", 3, true, false, true),
		mk("dnat", 4, false, true, true, model.PolicyTypeIngress),
	)
	if len(s.HostEndpoints) != 1 {
		t.Fatalf("got %d host endpoints, want 1", len(s.HostEndpoints))
	}
	tp := func(act snapshot.Action, ids ...string) []snapshot.TierPolicies {
		return []snapshot.TierPolicies{{Tier: "default", DefaultAction: act, Policies: ids}}
	}
	want := snapshot.HostEndpoint{
		ID:          "eth0-n1",
		Interface:   "eth0",
		ExpectedIPs: []netip.Addr{addr("192.168.1.10")},
		Normal: snapshot.HostDirections{
			Ingress: snapshot.Direction{Tiers: tp(snapshot.Deny, "normal", "fwd")},
			Egress:  snapshot.Direction{Tiers: tp(snapshot.Deny, "normal", "fwd")},
		},
		PreDNAT: snapshot.HostDirections{Ingress: snapshot.Direction{Tiers: tp(snapshot.Pass, "dnat")}},
		Untracked: snapshot.HostDirections{
			Ingress: snapshot.Direction{Tiers: tp(snapshot.Pass, "dnt")},
			Egress:  snapshot.Direction{Tiers: tp(snapshot.Pass, "dnt")},
		},
		Forward: snapshot.HostDirections{
			Ingress: snapshot.Direction{Tiers: tp(snapshot.Deny, "fwd")},
			Egress:  snapshot.Direction{Tiers: tp(snapshot.Deny, "fwd")},
		},
		Labels: map[string]string{"role": "edge"},
	}
	got := s.HostEndpoints[0]
	got.Hash = ""
	if diff := cmp.Diff(want, got, cmpOpts); diff != "" {
		t.Errorf("host endpoint (-want +got):\n%s", diff)
	}
}

// TestWildcardHostEndpointHasNoUntrackedProgram: as in Felix, doNotTrack policy does not
// apply to an all-interfaces (`*`) host endpoint; its other programs are kept.
func TestWildcardHostEndpointHasNoUntrackedProgram(t *testing.T) {
	dnt := gnp("dnt", "default", f64(1), "role == 'edge'", allowIn(), allowIn())
	dnt.DoNotTrack, dnt.ApplyOnForward = true, true
	fwd := gnp("fwd", "default", f64(2), "role == 'edge'", allowIn(), allowIn())
	fwd.ApplyOnForward = true
	for _, iface := range []string{"*", "eth0"} {
		s := deriveObjs(t, "n1", Options{}, hep("h-n1", "n1", iface, model.Labels{"role": "edge"}, "192.168.1.10"), dnt, fwd)
		if len(s.HostEndpoints) != 1 {
			t.Fatalf("%s: got %d host endpoints, want 1", iface, len(s.HostEndpoints))
		}
		h := s.HostEndpoints[0]
		untracked := len(h.Untracked.Ingress.Tiers) + len(h.Untracked.Egress.Tiers)
		if want := map[string]int{"*": 0, "eth0": 2}[iface]; untracked != want {
			t.Errorf("interface %q: %d untracked tiers, want %d: %+v", iface, untracked, want, h.Untracked)
		}
		if len(h.Forward.Ingress.Tiers) != 1 || len(h.Normal.Ingress.Tiers) != 1 {
			t.Errorf("interface %q: forward %+v, normal %+v; want one tier each", iface, h.Forward, h.Normal)
		}
	}
}

// TestActivePolicies checks which policies and profiles a node's snapshot carries.
func TestActivePolicies(t *testing.T) {
	hinted := gnp("hinted", "default", nil, "app == 'nowhere'", allowIn(), nil)
	hinted.PerformanceHints = []string{"AssumeNeededOnEveryNode"}
	objs := []model.Object{
		nsProfile("ns1", nil),
		wep("ns1", "local", "n1", model.Labels{"app": "local"}, "10.0.0.1/32"),
		wep("ns1", "remote", "n2", model.Labels{"app": "remote"}, "10.0.1.1/32"),
		hep("h1", "n1", "eth0", model.Labels{"host": "yes"}),
		gnp("for-local", "default", nil, "app == 'local'", allowIn(), nil),
		gnp("for-remote", "default", nil, "app == 'remote'", allowIn(), nil),
		gnp("for-host", "default", nil, "host == 'yes'", allowIn(), nil),
		hinted,
	}
	ids := func(s *snapshot.Snapshot) []string {
		var out []string
		for _, p := range s.Policies {
			out = append(out, p.ID)
		}
		return out
	}
	tests := []struct {
		opts Options
		want []string
	}{
		{Options{}, []string{"for-host", "for-local", "hinted"}},
		{Options{AllPoliciesActive: true}, []string{"for-host", "for-local", "for-remote", "hinted"}},
	}
	for _, tt := range tests {
		s := deriveObjs(t, "n1", tt.opts, objs...)
		if diff := cmp.Diff(tt.want, ids(s), cmpOpts); diff != "" {
			t.Errorf("%+v: active policies (-want +got):\n%s", tt.opts, diff)
		}
	}
	s := deriveObjs(t, "n1", Options{}, objs...)
	var profs []string
	for _, p := range s.Profiles {
		profs = append(profs, p.ID)
	}
	if diff := cmp.Diff([]string{"kns.ns1"}, profs, cmpOpts); diff != "" {
		t.Errorf("active profiles (-want +got):\n%s", diff)
	}
}

// TestMissingProfile: an endpoint listing a profile that does not exist gets Felix's
// default-drop profile in its place.
func TestMissingProfile(t *testing.T) {
	w := wep("ns1", "a", "n1", nil, "10.0.0.1/32")
	w.Profiles = []string{"kns.ns1", "ghost"}
	s := deriveObjs(t, "n1", Options{}, nsProfile("ns1", nil), w)
	got, ok := s.Profile("ghost")
	if !ok {
		t.Fatalf("profile ghost missing from snapshot; have %v", s.Profiles)
	}
	got.Hash = ""
	want := snapshot.Profile{
		ID:       "ghost",
		Inbound:  []snapshot.Rule{{Action: snapshot.Deny, Origin: snapshot.RuleOrigin{Kind: "Profile", Name: "ghost", Direction: "ingress"}}},
		Outbound: []snapshot.Rule{{Action: snapshot.Deny, Origin: snapshot.RuleOrigin{Kind: "Profile", Name: "ghost", Direction: "egress"}}},
		Missing:  true,
	}
	if diff := cmp.Diff(want, got, cmpOpts); diff != "" {
		t.Errorf("missing profile (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"kns.ns1", "ghost"}, s.Endpoints[0].Ingress.Profiles, cmpOpts); diff != "" {
		t.Errorf("endpoint profiles keep their order (-want +got):\n%s", diff)
	}
}

// TestLabelInheritance: own labels win over profile labels; an earlier profile wins over a
// later one.
func TestLabelInheritance(t *testing.T) {
	w := wep("ns1", "a", "n1", model.Labels{"x": "own"}, "10.0.0.1/32")
	w.Profiles = []string{"p1", "p2"}
	s := deriveObjs(t, "n1", Options{}, w,
		profile("p1", model.Labels{"x": "p1", "y": "p1"}, nil, nil),
		profile("p2", model.Labels{"y": "p2", "z": "p2"}, nil, nil),
	)
	want := map[string]string{"projectcalico.org/namespace": "ns1", "x": "own", "y": "p1", "z": "p2"}
	if diff := cmp.Diff(want, s.Endpoints[0].Labels, cmpOpts); diff != "" {
		t.Errorf("effective labels (-want +got):\n%s", diff)
	}
}
