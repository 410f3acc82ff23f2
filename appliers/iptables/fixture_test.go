// Copied from appliers/nftables/internal/fixture (internal to that package): the same snapshots.

package iptables

import (
	"fmt"
	"net/netip"

	"github.com/felis-dev/felis/snapshot"
)

func fu8(v uint8) *uint8 { return &v }

func fpfx(s ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(s))
	for i, v := range s {
		out[i] = netip.MustParsePrefix(v)
	}
	return out
}

// Snapshot returns a node snapshot with two workloads, tiers with Pass and Log, a profile,
// named ports, net sets of both families, a host endpoint with normal, preDNAT, untracked
// and forward policies, failsafe ports and a NAT-outgoing pool.
func fixtureSnapshot() snapshot.Snapshot {
	tcp := fu8(6)
	return snapshot.Snapshot{
		Node: "node-a",
		Config: snapshot.Config{
			InterfacePrefixes:           []string{"cali"},
			FailsafeInbound:             []snapshot.FailsafePort{{Protocol: 6, Port: 22}, {Protocol: 17, Port: 68}},
			FailsafeOutbound:            []snapshot.FailsafePort{{Protocol: 6, Port: 443, Net: netip.MustParsePrefix("192.0.2.0/24")}},
			DefaultEndpointToHostAction: snapshot.Deny,
		},
		IPSets: []snapshot.IPSet{
			{ID: "n:ccc", Type: snapshot.IPSetIPPort, Source: "port http/TCP of all()", Members: []snapshot.Member{
				{Prefix: netip.MustParsePrefix("10.0.0.1/32"), Protocol: 6, Port: 8080},
				{Prefix: netip.MustParsePrefix("fd00::1/128"), Protocol: 6, Port: 8080},
			}},
			{ID: "s:aaa", Type: snapshot.IPSetNet, Source: "role == 'db'", Members: []snapshot.Member{
				{Prefix: netip.MustParsePrefix("10.0.1.0/24")},
				{Prefix: netip.MustParsePrefix("10.0.2.5/32")},
				{Prefix: netip.MustParsePrefix("fd00:1::/64")},
			}},
			{ID: "s:bbb", Type: snapshot.IPSetIP, Source: "app == 'web'", Members: []snapshot.Member{
				{Prefix: netip.MustParsePrefix("10.0.0.1/32")},
				{Prefix: netip.MustParsePrefix("10.0.0.2/32")},
			}},
		},
		Policies: []snapshot.Policy{
			{ID: "default/allow-web", Kind: "NetworkPolicy", Namespace: "default", Name: "allow-web", Tier: "default",
				Inbound: []snapshot.Rule{
					{Action: snapshot.Allow, Protocol: tcp, SrcIPSets: []string{"s:bbb"}, DstPorts: []snapshot.PortRange{{Min: 80, Max: 80}, {Min: 443, Max: 443}}},
					{Action: snapshot.Allow, Protocol: tcp, DstNamedPortIPSets: []string{"n:ccc"}, DstPorts: []snapshot.PortRange{{Min: 9000, Max: 9100}}},
					{Action: snapshot.Allow, Protocol: fu8(1), ICMP: &snapshot.ICMPMatch{Type: 8}},
				},
				Outbound: []snapshot.Rule{{Action: snapshot.Allow}},
				Hash:     "p1"},
			{ID: "security-deny", Kind: "GlobalNetworkPolicy", Name: "security-deny", Tier: "security",
				Inbound: []snapshot.Rule{
					{Action: snapshot.Log, SrcNets: fpfx("192.168.0.0/16")},
					{Action: snapshot.Deny, SrcNets: fpfx("192.168.0.0/16", "2001:db8::/32")},
					{Action: snapshot.Deny, NotSrcIPSets: []string{"s:aaa"}, IPVersion: 4, Protocol: fu8(17)},
					{Action: snapshot.Pass},
				},
				Outbound: []snapshot.Rule{{Action: snapshot.Pass}},
				Hash:     "p2"},
			{ID: "hep-prednat", Kind: "GlobalNetworkPolicy", Name: "hep-prednat", Tier: "default", PreDNAT: true,
				Inbound: []snapshot.Rule{{Action: snapshot.Deny, Protocol: tcp, DstPorts: []snapshot.PortRange{{Min: 30000, Max: 32767}}, NotSrcNets: fpfx("10.0.0.0/8")}},
				Hash:    "p3"},
			{ID: "hep-untracked", Kind: "GlobalNetworkPolicy", Name: "hep-untracked", Tier: "default", DoNotTrack: true,
				Inbound:  []snapshot.Rule{{Action: snapshot.Allow, Protocol: fu8(17), SrcPorts: []snapshot.PortRange{{Min: 53, Max: 53}}}},
				Outbound: []snapshot.Rule{{Action: snapshot.Allow, Protocol: fu8(17), DstPorts: []snapshot.PortRange{{Min: 53, Max: 53}}}},
				Hash:     "p4"},
			{ID: "hep-web", Kind: "GlobalNetworkPolicy", Name: "hep-web", Tier: "default", ApplyOnForward: true,
				Inbound: []snapshot.Rule{{Action: snapshot.Allow, Protocol: tcp, DstPorts: []snapshot.PortRange{{Min: 80, Max: 80}}},
					{Action: snapshot.Deny, Protocol: fu8(1), NotICMP: &snapshot.ICMPMatch{Type: 8, Code: fu8(0)}}},
				Hash: "p5"},
		},
		Profiles: []snapshot.Profile{
			{ID: "kns.default", Inbound: []snapshot.Rule{{Action: snapshot.Allow}}, Outbound: []snapshot.Rule{{Action: snapshot.Allow}}, Hash: "pr1"},
		},
		Endpoints: []snapshot.Endpoint{
			{ID: "default/web-1", Namespace: "default", Workload: "web-1", Name: "eth0", Interface: "cali1111aaaa",
				Addrs: fpfx("10.0.0.1/32", "fd00::1/128"),
				Ingress: snapshot.Direction{
					Tiers: []snapshot.TierPolicies{
						{Tier: "security", DefaultAction: snapshot.Deny, Policies: []string{"security-deny"}},
						{Tier: "default", DefaultAction: snapshot.Deny, Policies: []string{"default/allow-web"}},
					},
					Profiles: []string{"kns.default"},
				},
				Egress: snapshot.Direction{
					Tiers:    []snapshot.TierPolicies{{Tier: "security", DefaultAction: snapshot.Pass, Policies: []string{"security-deny"}}},
					Profiles: []string{"kns.default"},
				},
				Hash: "e1"},
			{ID: "default/web-2", Namespace: "default", Workload: "web-2", Name: "eth0", Interface: "cali2222bbbb",
				Addrs: fpfx("10.0.0.2/32"), AllowSpoofedSources: fpfx("172.16.0.0/12"),
				Ingress: snapshot.Direction{Profiles: []string{"kns.default"}},
				Egress:  snapshot.Direction{Profiles: []string{"kns.default"}},
				Hash:    "e2"},
		},
		HostEndpoints: []snapshot.HostEndpoint{
			{ID: "node-a-eth0", Interface: "eth0",
				Normal:    snapshot.HostDirections{Ingress: snapshot.Direction{Tiers: []snapshot.TierPolicies{{Tier: "default", DefaultAction: snapshot.Deny, Policies: []string{"hep-web"}}}}},
				PreDNAT:   snapshot.HostDirections{Ingress: snapshot.Direction{Tiers: []snapshot.TierPolicies{{Tier: "default", DefaultAction: snapshot.Deny, Policies: []string{"hep-prednat"}}}}},
				Untracked: snapshot.HostDirections{Ingress: snapshot.Direction{Tiers: []snapshot.TierPolicies{{Tier: "default", DefaultAction: snapshot.Pass, Policies: []string{"hep-untracked"}}}}, Egress: snapshot.Direction{Tiers: []snapshot.TierPolicies{{Tier: "default", DefaultAction: snapshot.Pass, Policies: []string{"hep-untracked"}}}}},
				Forward:   snapshot.HostDirections{Ingress: snapshot.Direction{Tiers: []snapshot.TierPolicies{{Tier: "default", DefaultAction: snapshot.Deny, Policies: []string{"hep-web"}}}}},
				Hash:      "h1"},
			{ID: "node-a-all", Interface: "*", Hash: "h2"},
		},
		Pools: []snapshot.Pool{
			{CIDR: netip.MustParsePrefix("10.0.0.0/16"), VXLANMode: "Never", NATOutgoing: true},
			{CIDR: netip.MustParsePrefix("10.1.0.0/16"), VXLANMode: "Never"},
			{CIDR: netip.MustParsePrefix("fd00::/48"), VXLANMode: "Never", NATOutgoing: true},
		},
	}
}

// Scaled returns a snapshot with n IP sets of members hosts each and n policies (one rule
// per policy referencing one set), spread over endpoints of 10 policies each: about n sets
// per family and n policy chains plus the endpoint chains.
func fixtureScaled(n, members int) snapshot.Snapshot {
	s := snapshot.Snapshot{Node: "bench", Config: snapshot.Config{InterfacePrefixes: []string{"cali"}}}
	for i := range n {
		set := snapshot.IPSet{ID: fmt.Sprintf("s:%06d", i), Type: snapshot.IPSetIP}
		for m := range members {
			set.Members = append(set.Members, snapshot.Member{Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), byte(m + 1)}), 32)})
		}
		s.IPSets = append(s.IPSets, set)
		s.Policies = append(s.Policies, snapshot.Policy{
			ID: fmt.Sprintf("pol-%06d", i), Kind: "GlobalNetworkPolicy", Name: fmt.Sprintf("pol-%06d", i), Tier: "default",
			Inbound: []snapshot.Rule{{Action: snapshot.Allow, Protocol: fu8(6), SrcIPSets: []string{set.ID},
				DstPorts: []snapshot.PortRange{{Min: uint16(1000 + i%1000), Max: uint16(1000 + i%1000)}}}},
		})
	}
	for e := 0; e*10 < n; e++ {
		var ids []string
		for i := e * 10; i < min(n, e*10+10); i++ {
			ids = append(ids, fmt.Sprintf("pol-%06d", i))
		}
		s.Endpoints = append(s.Endpoints, snapshot.Endpoint{
			ID: fmt.Sprintf("ns/wep-%d", e), Interface: fmt.Sprintf("cali%011d", e),
			Addrs:   []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 200, byte(e >> 8), byte(e)}), 32)},
			Ingress: snapshot.Direction{Tiers: []snapshot.TierPolicies{{Tier: "default", DefaultAction: snapshot.Deny, Policies: ids}}},
		})
	}
	return s
}
