package snapshot

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func u8(v uint8) *uint8 { return &v }

func evalFixture() *Snapshot {
	return &Snapshot{
		IPSets: []IPSet{
			{ID: "s:web", Type: IPSetNet, Members: []Member{{Prefix: netip.MustParsePrefix("10.0.0.1/32")}, {Prefix: netip.MustParsePrefix("10.1.0.0/16")}}},
			{ID: "n:http", Type: IPSetIPPort, Members: []Member{{Prefix: netip.MustParsePrefix("10.0.0.2/32"), Protocol: 6, Port: 8080}}},
		},
		Policies: []Policy{
			{ID: "sec-pass", Tier: "security", Inbound: []Rule{
				{Action: Deny, SrcNets: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}, NotSrcNets: []netip.Prefix{netip.MustParsePrefix("192.0.2.7/32")}},
				{Action: Log},
				{Action: Pass, SrcIPSets: []string{"s:web"}},
			}},
			{ID: "ns/allow-http", Tier: "default", Inbound: []Rule{
				// Rule 0 of the resource matched no IP family and was dropped: origins keep the resource's numbering.
				{Action: Allow, Protocol: u8(6), DstPorts: []PortRange{{Min: 80, Max: 80}}, DstNamedPortIPSets: []string{"n:http"}, Origin: RuleOrigin{Index: 1}},
				{Action: Allow, Protocol: u8(1), ICMP: &ICMPMatch{Type: 8}, Origin: RuleOrigin{Index: 2}},
			}},
		},
		Profiles: []Profile{
			{ID: "kns.ns", Inbound: []Rule{{Action: Pass}, {Action: Allow, IPVersion: 6}}},
			{ID: "open", Inbound: []Rule{{Action: Allow, NotProtocol: u8(17)}}},
		},
		Endpoints: []Endpoint{
			{ID: "ns/a", Ingress: Direction{
				Tiers: []TierPolicies{
					{Tier: "security", DefaultAction: Pass, Policies: []string{"sec-pass"}},
					{Tier: "default", DefaultAction: Deny, Policies: []string{"ns/allow-http"}},
				}}},
			{ID: "ns/b", Ingress: Direction{Profiles: []string{"kns.ns", "open"}}},
			{ID: "ns/c"},
		},
	}
}

func TestEvaluate(t *testing.T) {
	e := NewEvaluator(evalFixture())
	a := netip.MustParseAddr
	tcp := func(src, dst string, port uint16) Packet {
		return Packet{Src: a(src), Dst: a(dst), Protocol: 6, SrcPort: 40000, DstPort: port}
	}
	for _, tc := range []struct {
		name string
		ep   string
		p    Packet
		want Verdict
	}{
		{"deny rule in first tier", "ns/a", tcp("192.0.2.1", "10.0.0.2", 80),
			Verdict{Action: Deny, Decider: "rule", Tier: "security", Policy: "sec-pass", Index: 0}},
		{"notNets exempts; tier passes by default, next tier allows port 80", "ns/a", tcp("192.0.2.7", "10.0.0.2", 80),
			Verdict{Action: Allow, Decider: "rule", Tier: "default", Policy: "ns/allow-http", Index: 1}},
		{"pass rule on set member skips rest of tier", "ns/a", tcp("10.1.2.3", "10.0.0.2", 80),
			Verdict{Action: Allow, Decider: "rule", Tier: "default", Policy: "ns/allow-http", Index: 1}},
		{"named port set ORs with numeric ports", "ns/a", tcp("10.9.0.1", "10.0.0.2", 8080),
			Verdict{Action: Allow, Decider: "rule", Tier: "default", Policy: "ns/allow-http", Index: 1}},
		{"named port needs the right address", "ns/a", tcp("10.9.0.1", "10.0.0.3", 8080),
			Verdict{Action: Deny, Decider: "tier-default", Tier: "default"}},
		{"icmp type", "ns/a", Packet{Src: a("10.9.0.1"), Dst: a("10.0.0.2"), Protocol: 1, ICMPType: u8(8), ICMPCode: u8(0)},
			Verdict{Action: Allow, Decider: "rule", Tier: "default", Policy: "ns/allow-http", Index: 2}},
		{"icmp other type hits end of tier", "ns/a", Packet{Src: a("10.9.0.1"), Dst: a("10.0.0.2"), Protocol: 1, ICMPType: u8(0)},
			Verdict{Action: Deny, Decider: "tier-default", Tier: "default"}},
		{"pass in profile moves to next profile", "ns/b", tcp("10.9.0.1", "10.0.0.2", 22),
			Verdict{Action: Allow, Decider: "rule", Profile: "open", Index: 0}},
		{"no profile rule matches", "ns/b", Packet{Src: a("10.9.0.1"), Dst: a("10.0.0.2"), Protocol: 17, DstPort: 53},
			Verdict{Action: Deny, Decider: "profile-default"}},
		{"no policy no profile", "ns/c", tcp("10.9.0.1", "10.0.0.2", 22),
			Verdict{Action: Deny, Decider: "profile-default"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ep, ok := e.Endpoint(tc.ep)
			if !ok {
				t.Fatalf("endpoint %s not found", tc.ep)
			}
			if diff := cmp.Diff(tc.want, e.Ingress(ep, tc.p)); diff != "" {
				t.Errorf("verdict (-want +got):\n%s", diff)
			}
		})
	}
}
