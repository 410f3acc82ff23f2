package snapshot

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func reachFixture() []*Snapshot {
	pfx := netip.MustParsePrefix
	allowWebFromFrontend := Policy{ID: "backend/allow-web", Tier: "default", Inbound: []Rule{
		{Action: Allow, Protocol: u8(6), SrcIPSets: []string{"s:fe"}, DstNamedPortIPSets: []string{"n:http"}},
	}}
	open := Profile{ID: "kns.any", Inbound: []Rule{{Action: Allow}}, Outbound: []Rule{{Action: Allow}}}
	n1 := &Snapshot{Node: "n1",
		IPSets: []IPSet{
			{ID: "s:fe", Type: IPSetNet, Members: []Member{{Prefix: pfx("10.0.1.1/32")}}},
			{ID: "n:http", Type: IPSetIPPort, Members: []Member{{Prefix: pfx("10.0.2.1/32"), Protocol: 6, Port: 8080}}},
		},
		Policies: []Policy{allowWebFromFrontend},
		Profiles: []Profile{open},
		Endpoints: []Endpoint{{ID: "backend/api-eth0", Namespace: "backend", Workload: "api",
			Addrs: []netip.Prefix{pfx("10.0.2.1/32")}, Ports: []NamedPort{{Name: "http", Protocol: 6, Port: 8080}},
			Labels:  map[string]string{"app": "api"},
			Ingress: Direction{Tiers: []TierPolicies{{Tier: "default", DefaultAction: Deny, Policies: []string{"backend/allow-web"}}}},
			Egress:  Direction{Profiles: []string{"kns.any"}}}},
	}
	n2 := &Snapshot{Node: "n2", Profiles: []Profile{open},
		Endpoints: []Endpoint{
			{ID: "frontend/web-eth0", Namespace: "frontend", Workload: "web", Addrs: []netip.Prefix{pfx("10.0.1.1/32")},
				Labels: map[string]string{"app": "web"}, Ingress: Direction{Profiles: []string{"kns.any"}}, Egress: Direction{Profiles: []string{"kns.any"}}},
			{ID: "frontend/other-eth0", Namespace: "frontend", Workload: "other", Addrs: []netip.Prefix{pfx("10.0.1.2/32")},
				Labels: map[string]string{"app": "other"}, Ingress: Direction{Profiles: []string{"kns.any"}}, Egress: Direction{Profiles: []string{"kns.any"}}},
		}}
	return []*Snapshot{n1, n2}
}

func TestReach(t *testing.T) {
	c := NewCluster(reachFixture())
	from, err := c.Resolve("sel:app in {'web', 'other'}")
	if err != nil {
		t.Fatal(err)
	}
	to, err := c.Resolve("backend/api")
	if err != nil {
		t.Fatal(err)
	}
	http, _ := ParsePort("http")
	rows := c.Reach(from, to, []PortSpec{http})
	profileAllow := Verdict{Action: Allow, Decider: "rule", Profile: "kns.any"}
	want := []Row{
		{From: "frontend/other", To: "backend/api", Port: 8080, Protocol: "TCP", Verdict: Deny, PortName: "http",
			Egress: profileAllow, Ingress: Verdict{Action: Deny, Decider: "tier-default", Tier: "default"}},
		{From: "frontend/web", To: "backend/api", Port: 8080, Protocol: "TCP", Verdict: Allow, PortName: "http",
			Egress: profileAllow, Ingress: Verdict{Action: Allow, Decider: "rule", Tier: "default", Policy: "backend/allow-web"}},
	}
	if diff := cmp.Diff(want, rows); diff != "" {
		t.Errorf("rows (-want +got):\n%s", diff)
	}

	// An outside address is not policed on its own side; the endpoint side still decides.
	ext, _ := c.Resolve("ip:192.0.2.9")
	p80, _ := ParsePort("80/TCP")
	rows = c.Reach(ext, to, []PortSpec{p80})
	if len(rows) != 1 || rows[0].From != "ip:192.0.2.9" || rows[0].Verdict != Deny || rows[0].Egress.Decider != "outside" {
		t.Errorf("outside source rows: %+v", rows)
	}
	// The whole matrix skips self pairs: 3 endpoints -> 6 ordered pairs.
	all, _ := c.Resolve("")
	if n := len(c.Reach(all, all, []PortSpec{p80})); n != 6 {
		t.Errorf("matrix rows %d, want 6", n)
	}
}

func TestParsePort(t *testing.T) {
	for in, want := range map[string]PortSpec{
		"80/TCP": {Number: 80, Protocol: 6}, "53/udp": {Number: 53, Protocol: 17}, "9/SCTP": {Number: 9, Protocol: 132},
		"443": {Number: 443, Protocol: 6}, "http": {Name: "http"},
	} {
		got, err := ParsePort(in)
		if err != nil || got != want {
			t.Errorf("ParsePort(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "0/TCP", "80/ICMP", "x/TCP", "70000"} {
		if _, err := ParsePort(bad); err == nil {
			t.Errorf("ParsePort(%q) accepted", bad)
		}
	}
}
