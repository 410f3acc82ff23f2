package snapshot

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestCompare(t *testing.T) {
	pfx := netip.MustParsePrefix
	before := &Snapshot{
		IPSets:   []IPSet{{ID: "s:a", Source: "app == 'web'", Members: []Member{{Prefix: pfx("10.0.0.1/32")}, {Prefix: pfx("10.0.0.2/32")}}}},
		Policies: []Policy{{ID: "ns/p1", Tier: "default", Inbound: []Rule{{Action: Allow}}}},
		Endpoints: []Endpoint{
			{ID: "ns/a", Interface: "cali1", Addrs: []netip.Prefix{pfx("10.0.0.1/32")},
				Ingress: Direction{Tiers: []TierPolicies{{Tier: "default", DefaultAction: Deny, Policies: []string{"ns/p1"}}}}},
		},
		Routes: []Route{{Dst: pfx("10.65.3.0/26"), Type: RouteVXLAN, Interface: "vxlan.calico", Gateway: netip.MustParseAddr("10.65.3.0"), Node: "n3"}},
	}
	after := &Snapshot{
		IPSets: []IPSet{{ID: "s:a", Source: "app == 'web'", Members: []Member{{Prefix: pfx("10.0.0.2/32")}, {Prefix: pfx("10.0.0.3/32")}, {Prefix: pfx("10.0.0.4/32")}}}},
		Policies: []Policy{
			{ID: "ns/p1", Tier: "default", Inbound: []Rule{{Action: Allow}}},
			{ID: "ns/p2", Tier: "default", Outbound: []Rule{{Action: Deny}}},
		},
		Endpoints: []Endpoint{
			{ID: "ns/a", Interface: "cali1", Addrs: []netip.Prefix{pfx("10.0.0.1/32")},
				Ingress: Direction{Tiers: []TierPolicies{{Tier: "default", DefaultAction: Deny, Policies: []string{"ns/p1"}}}},
				Egress:  Direction{Tiers: []TierPolicies{{Tier: "default", DefaultAction: Deny, Policies: []string{"ns/p2"}}}}},
			{ID: "ns/b", Interface: "cali2", Addrs: []netip.Prefix{pfx("10.0.0.9/32")},
				Ingress: Direction{Tiers: []TierPolicies{{Tier: "default", DefaultAction: Deny, Policies: []string{"ns/p1"}}}}},
		},
	}
	before.Finalize()
	after.Finalize()
	var got []string
	for _, c := range Compare(before, after) {
		got = append(got, c.Op+" "+c.Summary)
	}
	want := []string{
		"changed endpoint ns/a changed: egress policy program +ns/p2",
		"added endpoint ns/b added (cali2, 10.0.0.9/32)",
		"changed policy ns/p1 now applies to 2 endpoints (was 1)",
		"added policy ns/p2 (tier default) now applies to 1 endpoint",
		"changed IP set s:a (app == 'web') +2 −1 members",
		"removed route 10.65.3.0/26 via vxlan 10.65.3.0 dev vxlan.calico (node n3) removed",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("changes (-want +got):\n%s", diff)
	}
	if c := Compare(after, after); len(c) != 0 {
		t.Errorf("Compare(x, x) = %v, want nothing", c)
	}
}

func TestMemberDelta(t *testing.T) {
	m := func(s ...string) []Member {
		var out []Member
		for _, p := range s {
			out = append(out, Member{Prefix: netip.MustParsePrefix(p)})
		}
		return out
	}
	add, del := MemberDelta(m("10.0.0.1/32", "10.0.0.3/32"), m("10.0.0.2/32", "10.0.0.3/32", "10.0.0.4/32"))
	if add != 2 || del != 1 {
		t.Errorf("MemberDelta = +%d -%d, want +2 -1", add, del)
	}
}
