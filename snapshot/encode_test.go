package snapshot

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func encodeSample() *Snapshot {
	p := func(s string) netip.Prefix { return netip.MustParsePrefix(s) }
	one := uint8(1)
	return &Snapshot{
		Node: "n1",
		IPSets: []IPSet{
			{ID: "s:b", Type: IPSetNet, Source: "b", Members: []Member{{Prefix: p("fd00::1/128")}, {Prefix: p("10.0.0.2/32")}, {Prefix: p("10.0.0.2/32")}, {Prefix: p("10.0.0.0/8")}}},
			{ID: "n:a", Type: IPSetIPPort, Source: "a", Members: []Member{{Prefix: p("10.0.0.1/32"), Protocol: 17, Port: 53}, {Prefix: p("10.0.0.1/32"), Protocol: 6, Port: 53}}},
		},
		Policies: []Policy{
			{ID: "z", Name: "z", Tier: "default", Selector: "all()", Inbound: []Rule{
				{Action: Allow, SrcNets: []netip.Prefix{p("192.168.0.0/16"), p("10.0.0.0/8")}, DstPorts: []PortRange{{Min: 443, Max: 443}, {Min: 80, Max: 80}},
					SrcIPSets: []string{"s:b", "n:a"}, ICMP: &ICMPMatch{Type: 8, Code: &one}},
				{Action: Deny},
			}},
			{ID: "a", Name: "a", Tier: "default", Selector: "all()"},
		},
		Endpoints: []Endpoint{
			{ID: "ns/w2", Addrs: []netip.Prefix{p("fd00::2/128"), p("10.0.0.2/32")},
				Ingress: Direction{Tiers: []TierPolicies{{Tier: "t2", DefaultAction: Deny, Policies: []string{"z", "a"}}, {Tier: "t1", DefaultAction: Pass, Policies: []string{"b"}}}, Profiles: []string{"p2", "p1"}}},
			{ID: "ns/w1", Ports: []NamedPort{{Name: "z", Protocol: 6, Port: 1}, {Name: "a", Protocol: 17, Port: 2}}},
		},
		Routes: []Route{{Dst: p("10.0.1.0/26"), Type: RouteVXLAN}, {Dst: p("10.0.0.0/26"), Type: RouteBlackhole}},
	}
}

// TestFinalize checks canonical ordering: keyed lists sorted, members sorted and deduplicated,
// OR-lists inside rules sorted, while rule, tier, policy and profile order are kept.
func TestFinalize(t *testing.T) {
	s := encodeSample()
	s.Finalize()
	ids := func(sets []IPSet) (out []string) {
		for _, x := range sets {
			out = append(out, x.ID)
		}
		return out
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"ip sets by ID", ids(s.IPSets), []string{"n:a", "s:b"}},
		{"members sorted, v4 first, deduplicated", s.IPSets[1].Members, []Member{
			{Prefix: netip.MustParsePrefix("10.0.0.0/8")}, {Prefix: netip.MustParsePrefix("10.0.0.2/32")}, {Prefix: netip.MustParsePrefix("fd00::1/128")}}},
		{"ip+port members by protocol", s.IPSets[0].Members[0].Protocol, uint8(6)},
		{"policies by ID", []string{s.Policies[0].ID, s.Policies[1].ID}, []string{"a", "z"}},
		{"rule order kept", s.Policies[1].Inbound[1].Action, Deny},
		{"nets sorted", s.Policies[1].Inbound[0].SrcNets, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.168.0.0/16")}},
		{"ports sorted", s.Policies[1].Inbound[0].DstPorts, []PortRange{{80, 80}, {443, 443}}},
		{"set refs sorted", s.Policies[1].Inbound[0].SrcIPSets, []string{"n:a", "s:b"}},
		{"endpoints by ID", []string{s.Endpoints[0].ID, s.Endpoints[1].ID}, []string{"ns/w1", "ns/w2"}},
		{"tier order kept", s.Endpoints[1].Ingress.Tiers[0].Tier, "t2"},
		{"policy order kept", s.Endpoints[1].Ingress.Tiers[0].Policies, []string{"z", "a"}},
		{"profile order kept", s.Endpoints[1].Ingress.Profiles, []string{"p2", "p1"}},
		{"named ports sorted", s.Endpoints[0].Ports[0].Name, "a"},
		{"routes by Dst", s.Routes[0].Type, RouteBlackhole},
	}
	for _, c := range checks {
		if diff := cmp.Diff(c.want, c.got, cmpNetip); diff != "" {
			t.Errorf("%s (-want +got):\n%s", c.name, diff)
		}
	}
}

var cmpNetip = cmp.Options{
	cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
	cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
}

// TestHashes: every hashed object gets a hash; Finalize is idempotent; a content change
// changes the hash of that object only.
func TestHashes(t *testing.T) {
	a := encodeSample()
	a.Finalize()
	for _, p := range a.Policies {
		if len(p.Hash) != hashLen {
			t.Errorf("policy %s hash %q, want %d hex digits", p.ID, p.Hash, hashLen)
		}
	}
	first, err := a.YAML()
	if err != nil {
		t.Fatal(err)
	}
	a.Finalize()
	again, _ := a.YAML()
	if !bytes.Equal(first, again) {
		t.Errorf("Finalize is not idempotent:\n%s", cmp.Diff(string(first), string(again)))
	}

	b := encodeSample()
	b.Policies[0].Inbound[1].Action = Allow // policy "z"
	b.Finalize()
	if a.Policies[1].Hash == b.Policies[1].Hash {
		t.Errorf("changing policy z's rule kept its hash %s", a.Policies[1].Hash)
	}
	if a.Policies[0].Hash != b.Policies[0].Hash {
		t.Errorf("policy a's hash changed (%s -> %s) though only z changed", a.Policies[0].Hash, b.Policies[0].Hash)
	}
	if a.Endpoints[0].Hash != b.Endpoints[0].Hash {
		t.Errorf("endpoint hash changed though the endpoint did not")
	}
}

// TestEncodeRoundTrip: YAML and JSON decode back to the same snapshot; unknown fields are
// rejected; lookups find what is there.
func TestEncodeRoundTrip(t *testing.T) {
	s := encodeSample()
	s.Finalize()
	for _, format := range []string{"yaml", "json"} {
		var data []byte
		var err error
		if format == "yaml" {
			data, err = s.YAML()
		} else {
			data, err = s.JSON()
		}
		if err != nil {
			t.Fatal(err)
		}
		got, err := Decode(data)
		if err != nil {
			t.Fatalf("%s: decode: %v", format, err)
		}
		if diff := cmp.Diff(s, got, cmpNetip); diff != "" {
			t.Errorf("%s round trip (-want +got):\n%s", format, diff)
		}
	}
	if _, err := Decode([]byte("node: x\nbogus: 1\n")); err == nil || !strings.Contains(err.Error(), "bogus") {
		t.Errorf("unknown field: err = %v, want it named", err)
	}
	if _, ok := s.Policy("z"); !ok {
		t.Errorf("Policy(z) not found")
	}
	if _, ok := s.IPSet("s:b"); !ok {
		t.Errorf("IPSet(s:b) not found")
	}
	if _, ok := s.Endpoint("ns/nope"); ok {
		t.Errorf("Endpoint(ns/nope) found")
	}
}
