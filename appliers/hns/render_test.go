package hns

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/felis-dev/felis/snapshot"
)

var update = flag.Bool("update", false, "rewrite appliers/hns/testdata golden files")

// goldenCompare checks got against testdata/NAME, or rewrites it with -update.
func goldenCompare(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run `go test ./appliers/hns -update` to create it)", err)
	}
	if !bytes.Equal(want, got) {
		t.Errorf("%s differs (-want +got); if intended, run `go test ./appliers/hns -update` and review:\n%s",
			path, cmp.Diff(strings.Split(string(want), "\n"), strings.Split(string(got), "\n")))
	}
}

// TestRenderGolden renders every golden scenario's snapshot and a few seeded synthetic ones.
func TestRenderGolden(t *testing.T) {
	files, err := filepath.Glob("../../golden/*/snapshot.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden snapshots (%v)", err)
	}
	for _, f := range files {
		name := filepath.Base(filepath.Dir(f))
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			s, err := snapshot.Decode(data)
			if err != nil {
				t.Fatal(err)
			}
			goldenCompare(t, filepath.Join("golden", name+".txt"), []byte(Render(s, Options{}).String()))
		})
	}
	for _, seed := range []uint64{3, 11, 42} {
		t.Run(fmt.Sprintf("synthetic-%d", seed), func(t *testing.T) {
			s := randomSnapshot(rand.New(rand.NewPCG(seed, 7)))
			y, err := s.YAML()
			if err != nil {
				t.Fatal(err)
			}
			goldenCompare(t, fmt.Sprintf("synthetic/%d.snapshot.yaml", seed), y)
			goldenCompare(t, fmt.Sprintf("synthetic/%d.txt", seed), []byte(Render(s, Options{}).String()))
		})
	}
}

func p8(v uint8) *uint8 { return &v }

// oneEndpoint is a snapshot with one endpoint whose ingress runs the given tiers.
func oneEndpoint(tiers []snapshot.TierPolicies, policies []snapshot.Policy, sets ...snapshot.IPSet) *snapshot.Snapshot {
	return &snapshot.Snapshot{
		Node: "n", IPSets: sets, Policies: policies,
		Endpoints: []snapshot.Endpoint{{ID: "ns/a", Namespace: "ns", Workload: "a", Addrs: pfx("10.0.0.1/32"),
			Ingress: snapshot.Direction{Tiers: tiers}}},
	}
}

func TestRenderRules(t *testing.T) {
	for _, tc := range []struct {
		name string
		s    *snapshot.Snapshot
		want string // the endpoint's In rules, one per line
	}{
		{
			name: "no policy denies",
			s:    oneEndpoint(nil, nil),
			want: "In 1000 Block",
		},
		{
			name: "allow from a set, flattened and merged",
			s: oneEndpoint([]snapshot.TierPolicies{{Tier: "default", DefaultAction: snapshot.Deny, Policies: []string{"p"}}},
				[]snapshot.Policy{{ID: "p", Inbound: []snapshot.Rule{{Action: snapshot.Allow, Protocol: p8(6), SrcIPSets: []string{"s:a"}, DstPorts: []snapshot.PortRange{{Min: 80, Max: 80}, {Min: 81, Max: 90}}}}}},
				snapshot.IPSet{ID: "s:a", Type: snapshot.IPSetIP, Members: []snapshot.Member{{Prefix: netip.MustParsePrefix("10.0.0.4/32")}, {Prefix: netip.MustParsePrefix("10.0.0.5/32")}}}),
			want: "In 1000 Allow proto=6 lports=80-90 remote=10.0.0.4/31\nIn 1001 Block",
		},
		{
			name: "notProtocol by continuation",
			s: oneEndpoint([]snapshot.TierPolicies{{Tier: "default", DefaultAction: snapshot.Deny, Policies: []string{"p"}}},
				[]snapshot.Policy{{ID: "p", Inbound: []snapshot.Rule{
					{Action: snapshot.Allow, NotProtocol: p8(17)},
					{Action: snapshot.Allow, Protocol: p8(17), SrcNets: pfx("10.9.0.0/16")},
				}}}),
			want: "In 1000 Allow proto=17 remote=10.9.0.0/16\nIn 1001 Block proto=17\nIn 1002 Allow",
		},
		{
			name: "Pass expands into the next tier; notNets complemented",
			s: oneEndpoint([]snapshot.TierPolicies{
				{Tier: "sec", DefaultAction: snapshot.Deny, Policies: []string{"a"}},
				{Tier: "default", DefaultAction: snapshot.Deny, Policies: []string{"b"}},
			}, []snapshot.Policy{
				{ID: "a", Inbound: []snapshot.Rule{{Action: snapshot.Pass, SrcNets: pfx("10.0.0.0/8"), NotSrcNets: pfx("10.128.0.0/9")}}},
				{ID: "b", Inbound: []snapshot.Rule{{Action: snapshot.Allow, Protocol: p8(6)}}},
			}),
			want: "In 1000 Allow proto=6 remote=10.0.0.0/9\nIn 1001 Block",
		},
		{
			name: "Pass default falls through; Log ignored",
			s: oneEndpoint([]snapshot.TierPolicies{
				{Tier: "sec", DefaultAction: snapshot.Pass, Policies: []string{"a"}},
				{Tier: "default", DefaultAction: snapshot.Deny, Policies: []string{"b"}},
			}, []snapshot.Policy{
				{ID: "a", Inbound: []snapshot.Rule{{Action: snapshot.Log}, {Action: snapshot.Deny, Protocol: p8(17)}}},
				{ID: "b", Inbound: []snapshot.Rule{{Action: snapshot.Allow, SrcNets: pfx("192.168.0.0/16")}}},
			}),
			want: "In 1000 Block proto=17\nIn 1001 Allow remote=192.168.0.0/16\nIn 1002 Block",
		},
		{
			name: "named port set becomes per-(protocol, port) address lists",
			s: oneEndpoint([]snapshot.TierPolicies{{Tier: "default", DefaultAction: snapshot.Deny, Policies: []string{"p"}}},
				[]snapshot.Policy{{ID: "p", Inbound: []snapshot.Rule{{Action: snapshot.Allow, Protocol: p8(6), DstNamedPortIPSets: []string{"n:x"}}}}},
				snapshot.IPSet{ID: "n:x", Type: snapshot.IPSetIPPort, Members: []snapshot.Member{
					{Prefix: netip.MustParsePrefix("10.0.0.1/32"), Protocol: 6, Port: 8080},
					{Prefix: netip.MustParsePrefix("10.0.0.2/32"), Protocol: 6, Port: 8080},
					{Prefix: netip.MustParsePrefix("10.0.0.1/32"), Protocol: 17, Port: 53},
				}}),
			want: "In 1000 Allow proto=6 lports=8080\nIn 1001 Block",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := Render(tc.s, Options{})
			if d.Endpoints[0].Err != nil {
				t.Fatal(d.Endpoints[0].Err)
			}
			var got []string
			for _, r := range d.Endpoints[0].Rules {
				if r.Direction == In {
					got = append(got, r.String())
				}
			}
			if diff := cmp.Diff(strings.Split(tc.want, "\n"), got); diff != "" {
				t.Errorf("In rules (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRenderErrors(t *testing.T) {
	icmp := oneEndpoint([]snapshot.TierPolicies{{Tier: "default", DefaultAction: snapshot.Deny, Policies: []string{"p"}}},
		[]snapshot.Policy{{ID: "p", Inbound: []snapshot.Rule{{Action: snapshot.Allow, Protocol: p8(1), ICMP: &snapshot.ICMPMatch{Type: 8},
			Origin: snapshot.RuleOrigin{Kind: "GlobalNetworkPolicy", Name: "p", Direction: "ingress", Index: 0}}}}})
	sctp := oneEndpoint([]snapshot.TierPolicies{{Tier: "default", DefaultAction: snapshot.Deny, Policies: []string{"p"}}},
		[]snapshot.Policy{{ID: "p", Inbound: []snapshot.Rule{{Action: snapshot.Allow, Protocol: p8(132), DstPorts: []snapshot.PortRange{{Min: 9, Max: 9}}}}}})
	for _, tc := range []struct {
		name string
		s    *snapshot.Snapshot
		opts Options
		is   error
		msg  string
	}{
		{"icmp type", icmp, Options{}, ErrUnsupported, "endpoint ns/a ingress: tier default: GlobalNetworkPolicy p ingress rule 0: icmp type/code match"},
		{"sctp ports", sctp, Options{}, ErrUnsupported, "endpoint ns/a ingress: port match on protocol SCTP"},
		{"flattening bound", manyRules(150), Options{MaxEntries: 200}, ErrPriorityLimit, "endpoint ns/a ingress: tier t: flattening needs more than 200 entries"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := Render(tc.s, tc.opts).Endpoints[0]
			if !errors.Is(e.Err, tc.is) || !strings.Contains(fmt.Sprint(e.Err), tc.msg) || len(e.Rules) != 0 {
				t.Errorf("got err %v with %d rules, want %v containing %q and no rules", e.Err, len(e.Rules), tc.is, tc.msg)
			}
		})
	}
}

// manyRules is one tier of n Deny/Allow pairs that neither merge nor shadow each other.
func manyRules(n int) *snapshot.Snapshot {
	var rules []snapshot.Rule
	for i := range n {
		rules = append(rules,
			snapshot.Rule{Action: snapshot.Deny, SrcNets: pfx(fmt.Sprintf("10.%d.%d.1/32", i/256, i%256))},
			snapshot.Rule{Action: snapshot.Allow, SrcNets: pfx(fmt.Sprintf("10.%d.%d.0/24", i/256, i%256))})
	}
	return oneEndpoint([]snapshot.TierPolicies{{Tier: "t", DefaultAction: snapshot.Deny, Policies: []string{"p"}}},
		[]snapshot.Policy{{ID: "p", Inbound: rules}})
}

func TestAssignPriorities(t *testing.T) {
	mk := func(actions string) []Rule {
		var rs []Rule
		for _, c := range actions {
			a := Allow
			if c == 'B' {
				a = Block
			}
			rs = append(rs, Rule{Action: a})
		}
		return rs
	}
	short := mk("ABBA")
	if err := assignPriorities(short); err != nil {
		t.Fatal(err)
	}
	if got := []uint16{short[0].Priority, short[1].Priority, short[2].Priority, short[3].Priority}; !cmp.Equal(got, []uint16{1000, 1001, 1002, 1003}) {
		t.Errorf("short list priorities %v, want one per rule from 1000", got)
	}
	// Too many rules for one priority each: runs of equal action share one.
	long := mk(strings.Repeat("A", 40000) + strings.Repeat("B", 30000) + "A")
	if err := assignPriorities(long); err != nil {
		t.Fatal(err)
	}
	if long[0].Priority != 1000 || long[39999].Priority != 1000 || long[40000].Priority != 1001 || long[70000].Priority != 1002 {
		t.Errorf("run priorities: %d %d %d %d", long[0].Priority, long[39999].Priority, long[40000].Priority, long[70000].Priority)
	}
	// Alternating actions beyond the range cannot be numbered.
	alt := mk(strings.Repeat("AB", 33000))
	if err := assignPriorities(alt); !errors.Is(err, ErrPriorityLimit) {
		t.Errorf("alternating 66000 rules: err %v, want ErrPriorityLimit", err)
	}
}

func TestRenderRoutes(t *testing.T) {
	s := &snapshot.Snapshot{
		Config: snapshot.Config{VXLANVNI: 4096},
		Routes: []snapshot.Route{
			{Dst: netip.MustParsePrefix("10.244.2.0/26"), Type: snapshot.RouteVXLAN, Node: "c"},
			{Dst: netip.MustParsePrefix("10.244.1.0/26"), Type: snapshot.RouteVXLAN, Node: "b"},
			{Dst: netip.MustParsePrefix("10.244.9.0/26"), Type: snapshot.RouteVXLAN, Node: "no-vtep"},
			{Dst: netip.MustParsePrefix("10.244.0.0/26"), Type: snapshot.RouteBlackhole},
			{Dst: netip.MustParsePrefix("10.244.3.0/26"), Type: snapshot.RouteDirect, Node: "b"},
		},
		VTEPs: []snapshot.VTEP{
			{Node: "b", MAC: "66:3E:ca:7a:1b:02", ParentIP: netip.MustParseAddr("192.168.56.12")},
			{Node: "c", MAC: "66:1a:b9:f1:6e:af", ParentIP: netip.MustParseAddr("192.168.57.13")},
		},
	}
	d := Render(s, Options{})
	want := "remote-subnet 10.244.1.0/26 vni 4096 via 192.168.56.12 mac 66-3e-ca-7a-1b-02\n" +
		"remote-subnet 10.244.2.0/26 vni 4096 via 192.168.57.13 mac 66-1a-b9-f1-6e-af\n"
	if diff := cmp.Diff(want, d.String()); diff != "" || len(d.Errs) != 0 {
		t.Errorf("routes (-want +got):\n%s\nerrs %v", diff, d.Errs)
	}
	s.Config.VXLANVNI = 70000
	if d := Render(s, Options{}); len(d.Routes) != 0 || len(d.Errs) != 2 || !strings.Contains(d.Errs[0].Error(), "vxlanVNI 70000") {
		t.Errorf("VNI 70000: routes %v errs %v, want none and two errors naming vxlanVNI", d.Routes, d.Errs)
	}
}

func TestHostToEndpointRule(t *testing.T) {
	d := Render(oneEndpoint(nil, nil), Options{HostAddrs: pfx("192.168.1.10/32")})
	want := []string{"In 900 Allow remote=192.168.1.10/32", "In 1000 Block", "Out 1000 Block"}
	var got []string
	for _, r := range d.Endpoints[0].Rules {
		got = append(got, r.String())
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("rules (-want +got):\n%s", diff)
	}
}
