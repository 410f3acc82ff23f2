package render_test

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/felis-dev/felis/appliers/internal/fixture"
	"github.com/felis-dev/felis/appliers/nftables/render"
	"github.com/felis-dev/felis/snapshot"
	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite golden files")

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("%s mismatch (-want +got):\n%s", path, diff)
	}
}

func TestRenderFixtureGolden(t *testing.T) {
	tbl, err := render.Render(fixture.Snapshot())
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "fixture.nft", tbl.String())
}

func TestRenderDeterministicAndHashed(t *testing.T) {
	a, err := render.Render(fixture.Snapshot())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := render.Render(fixture.Snapshot())
	if diff := cmp.Diff(a.String(), b.String()); diff != "" {
		t.Fatalf("two renders differ:\n%s", diff)
	}
	for _, c := range a.Chains {
		if c.Hash == "" || c.Hash != render.ChainHash(c) {
			t.Errorf("chain %s: hash %q, want %q", c.Name, c.Hash, render.ChainHash(c))
		}
		if len(c.Rules) == 0 {
			t.Errorf("chain %s has no rules: its hash would not be observable", c.Name)
		}
	}
}

func u8(v uint8) *uint8 { return &v }

// rulesOf renders a one-policy snapshot and returns the policy's inbound chain rules.
func rulesOf(t *testing.T, r snapshot.Rule, sets ...snapshot.IPSet) []string {
	t.Helper()
	s := snapshot.Snapshot{
		IPSets:   sets,
		Policies: []snapshot.Policy{{ID: "p", Tier: "default", Inbound: []snapshot.Rule{r}}},
		Endpoints: []snapshot.Endpoint{{ID: "ns/w", Interface: "cali1", Ingress: snapshot.Direction{
			Tiers: []snapshot.TierPolicies{{Tier: "default", DefaultAction: snapshot.Deny, Policies: []string{"p"}}}}}},
	}
	tbl, err := render.Render(s)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range tbl.Chains {
		if c.Name == render.PolicyChain("p", "in") {
			var out []string
			for _, r := range c.Rules {
				out = append(out, r.String())
			}
			return out
		}
	}
	t.Fatal("policy chain not rendered")
	return nil
}

func TestRuleTranslation(t *testing.T) {
	ipSet := snapshot.IPSet{ID: "s:x", Type: snapshot.IPSetNet, Members: []snapshot.Member{{Prefix: netip.MustParsePrefix("10.0.0.0/8")}, {Prefix: netip.MustParsePrefix("fd00::/8")}}}
	npSet := snapshot.IPSet{ID: "n:y", Type: snapshot.IPSetIPPort, Members: []snapshot.Member{{Prefix: netip.MustParsePrefix("10.0.0.1/32"), Protocol: 6, Port: 80}}}
	emptySet := snapshot.IPSet{ID: "s:e", Type: snapshot.IPSetIP}
	tests := []struct {
		name string
		rule snapshot.Rule
		sets []snapshot.IPSet
		want []string
	}{
		{"allow all", snapshot.Rule{Action: snapshot.Allow}, nil, []string{"accept"}},
		{"deny tcp port range", snapshot.Rule{Action: snapshot.Deny, Protocol: u8(6), DstPorts: []snapshot.PortRange{{Min: 90, Max: 99}, {Min: 80, Max: 80}, {Min: 81, Max: 85}}},
			nil, []string{"meta l4proto tcp th dport { 80-85, 90-99 } drop"}},
		{"pass sets the mark", snapshot.Rule{Action: snapshot.Pass}, nil, []string{"meta mark set meta mark | 0x01000000 return"}},
		{"log continues", snapshot.Rule{Action: snapshot.Log}, nil, []string{`log prefix "felis-packet: "`}},
		{"nets split by family", snapshot.Rule{Action: snapshot.Allow, SrcNets: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8"), netip.MustParsePrefix("10.1.0.0/16")}},
			nil, []string{"meta nfproto ipv4 ip saddr 10.0.0.0/8 accept", "meta nfproto ipv6 ip6 saddr fd00::/8 accept"}},
		{"v4 net and v6 net never match together", snapshot.Rule{Action: snapshot.Allow, SrcNets: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, DstNets: []netip.Prefix{netip.MustParsePrefix("fd00::/8")}},
			nil, nil},
		{"ip set per family, negated", snapshot.Rule{Action: snapshot.Allow, NotSrcIPSets: []string{"s:x"}}, []snapshot.IPSet{ipSet},
			[]string{"meta nfproto ipv4 ip saddr != @s_x-4 accept", "meta nfproto ipv6 ip6 saddr != @s_x-6 accept"}},
		{"ports OR named ports", snapshot.Rule{Action: snapshot.Allow, Protocol: u8(6), IPVersion: 4, DstPorts: []snapshot.PortRange{{Min: 80, Max: 80}}, DstNamedPortIPSets: []string{"n:y"}},
			[]snapshot.IPSet{npSet}, []string{"meta nfproto ipv4 meta l4proto tcp th dport 80 accept", "meta nfproto ipv4 meta l4proto tcp ip daddr . meta l4proto . th dport @n_y-4 accept"}},
		{"icmp type and code", snapshot.Rule{Action: snapshot.Allow, Protocol: u8(1), ICMP: &snapshot.ICMPMatch{Type: 3, Code: u8(4)}}, nil,
			[]string{"meta nfproto ipv4 meta l4proto icmp icmp type 3 icmp code 4 accept"}},
		{"not icmp type+code is two rules", snapshot.Rule{Action: snapshot.Deny, Protocol: u8(58), NotICMP: &snapshot.ICMPMatch{Type: 128, Code: u8(0)}}, nil,
			[]string{"meta nfproto ipv6 meta l4proto ipv6-icmp icmpv6 type != 128 drop", "meta nfproto ipv6 meta l4proto ipv6-icmp icmpv6 type 128 icmpv6 code != 0 drop"}},
		{"empty set: a match never matches, the rule goes", snapshot.Rule{Action: snapshot.Allow, SrcIPSets: []string{"s:e"}}, []snapshot.IPSet{emptySet}, nil},
		{"empty set: a negated match always matches, the statement goes", snapshot.Rule{Action: snapshot.Deny, Protocol: u8(17), NotDstIPSets: []string{"s:e"}, IPVersion: 6},
			[]snapshot.IPSet{emptySet}, []string{"meta nfproto ipv6 meta l4proto udp drop"}},
		{"empty named-port set: only the numeric ports remain", snapshot.Rule{Action: snapshot.Allow, Protocol: u8(6), IPVersion: 6, DstPorts: []snapshot.PortRange{{Min: 80, Max: 80}}, DstNamedPortIPSets: []string{"n:y"}},
			[]snapshot.IPSet{npSet}, []string{"meta nfproto ipv6 meta l4proto tcp th dport 80 accept"}},
		{"not protocol", snapshot.Rule{Action: snapshot.Deny, NotProtocol: u8(17)}, nil, []string{"meta l4proto != udp drop"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := rulesOf(t, tt.rule, tt.sets...)
			if len(tt.want) == 0 {
				tt.want = []string{"return"} // an empty chain gets its placeholder rule
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestRenderErrors(t *testing.T) {
	base := func() snapshot.Snapshot {
		return snapshot.Snapshot{
			Policies: []snapshot.Policy{{ID: "p", Kind: "GlobalNetworkPolicy", Tier: "default", Inbound: []snapshot.Rule{{Action: snapshot.Allow, SrcIPSets: []string{"s:missing"}}}}},
			Endpoints: []snapshot.Endpoint{{ID: "ns/w", Interface: "cali1", Ingress: snapshot.Direction{
				Tiers: []snapshot.TierPolicies{{Tier: "default", Policies: []string{"p"}}}}}},
		}
	}
	tests := []struct {
		name   string
		mutate func(*snapshot.Snapshot)
		want   string
	}{
		{"missing ip set", func(*snapshot.Snapshot) {}, "GlobalNetworkPolicy p: rule 0: IP set s:missing: not in the snapshot"},
		{"missing policy", func(s *snapshot.Snapshot) { s.Policies = nil }, "WorkloadEndpoint ns/w ingress: tier default: policy p: not in the snapshot"},
		{"duplicate interface", func(s *snapshot.Snapshot) {
			s.Policies[0].Inbound = nil
			s.Endpoints = append(s.Endpoints, snapshot.Endpoint{ID: "ns/w2", Interface: "cali1"})
		}, "chain wl-in-cali1 rendered twice"},
		{"bad action", func(s *snapshot.Snapshot) { s.Policies[0].Inbound[0] = snapshot.Rule{Action: "Jump"} }, `GlobalNetworkPolicy p: rule 0: action "Jump"`},
		{"named-port member not a host", func(s *snapshot.Snapshot) {
			s.IPSets = []snapshot.IPSet{{ID: "n:z", Type: snapshot.IPSetIPPort, Members: []snapshot.Member{{Prefix: netip.MustParsePrefix("10.0.0.0/24"), Protocol: 6, Port: 80}}}}
		}, "IP set n:z: member 10.0.0.0/24: named-port members must be host addresses"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := base()
			tt.mutate(&s)
			_, err := render.Render(s)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestNormalizePrefixes(t *testing.T) {
	in := []netip.Prefix{netip.MustParsePrefix("10.1.2.3/16"), netip.MustParsePrefix("10.1.5.0/24"), netip.MustParsePrefix("10.0.0.1/32"), netip.MustParsePrefix("10.1.0.0/16")}
	want := []netip.Prefix{netip.MustParsePrefix("10.0.0.1/32"), netip.MustParsePrefix("10.1.0.0/16")}
	if diff := cmp.Diff(want, render.NormalizePrefixes(in), cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// TestRenderUnplacedHostEndpoint: a host endpoint with only expectedIPs, not yet placed on an
// interface by the applier, renders nothing of its own and never fails the snapshot (the
// rest is programmed); placed, it renders as a named one.
func TestRenderUnplacedHostEndpoint(t *testing.T) {
	s := fixture.Snapshot()
	want, err := render.Render(s)
	if err != nil {
		t.Fatal(err)
	}
	unplaced := s.HostEndpoints[0]
	unplaced.ID, unplaced.Interface, unplaced.ExpectedIPs = "by-ip", "", []netip.Addr{netip.MustParseAddr("10.0.0.1")}
	s.HostEndpoints = append(s.HostEndpoints, unplaced)
	got, err := render.Render(s)
	if err != nil {
		t.Fatalf("an unplaced host endpoint failed the whole snapshot: %v", err)
	}
	if diff := cmp.Diff(want.String(), got.String()); diff != "" {
		t.Errorf("an unplaced host endpoint changed the table:\n%s", diff)
	}
	s.HostEndpoints[len(s.HostEndpoints)-1].Interface = "eth7"
	placed, err := render.Render(s)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(placed.String(), "he-in-eth7") {
		t.Errorf("placed on eth7, no he-in-eth7 chain:\n%s", placed)
	}
}
