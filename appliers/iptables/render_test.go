package iptables

import (
	"github.com/felis-dev/felis/appliers/internal/fixture"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	nft "github.com/felis-dev/felis/appliers/nftables/render"
	"github.com/felis-dev/felis/snapshot"
)

func TestChainName(t *testing.T) {
	tests := []struct{ in, want string }{
		{"filter-input", "felis-filter-input"},
		{"wl-in-cali1111aaaa", "felis-wl-in-cali1111aaaa"},
		{"pol-in-default/allow-web", "felis-pol-in-"},                  // '/' is hashed away
		{"wl-in-cali12345678901-t0", "felis-wl-in-"},                   // 30 characters: hashed
		{"prof-out-kns.a-very-long-namespace-name", "felis-prof-out-"}, // too long
		{"aaaaaaaaaaaaaaa-bbbbbbbbbbbbbbbb-c", "felis-"},               // stem words too long to keep
	}
	seen := map[string]string{}
	for _, tc := range tests {
		got := ChainName(tc.in)
		if len(got) > MaxChainName || !strings.HasPrefix(got, tc.want) || (tc.want != "felis-filter-input" && tc.want != "felis-wl-in-cali1111aaaa" && len(got) != MaxChainName) {
			t.Errorf("ChainName(%q) = %q (%d chars), want prefix %q and at most %d chars", tc.in, got, len(got), tc.want, MaxChainName)
		}
		if prev, dup := seen[got]; dup {
			t.Errorf("ChainName(%q) = ChainName(%q) = %q", tc.in, prev, got)
		}
		seen[got] = tc.in
	}
}

func TestSetNames(t *testing.T) {
	for _, typ := range []string{"hash:ip", "hash:net", "hash:ip,port"} {
		n := SetName("s_0123456789abcdef0123456789abcdef-6", 6, typ)
		if len(n) > MaxSetName || len(tmpSetName(n)) > MaxSetName || tmpSetName(n) == n {
			t.Errorf("SetName(%s) = %q, tmp %q: want distinct names of at most %d characters", typ, n, tmpSetName(n), MaxSetName)
		}
	}
	if a, b := SetName("x-4", 4, "hash:ip"), SetName("x-4", 4, "hash:net"); a == b {
		t.Errorf("one name %q for two types: the kernel cannot swap them", a)
	}
	if got := SetName(nft.SetPoolsNAT+"-4", 4, "hash:net"); got != "felis-pool-nat-4" {
		t.Errorf("pool set name = %q", got)
	}
}

func pr(lo, hi uint16) snapshot.PortRange { return snapshot.PortRange{Min: lo, Max: hi} }

func TestPortChunks(t *testing.T) {
	var many []snapshot.PortRange
	for p := uint16(1); p <= 20; p++ {
		many = append(many, snapshot.PortRange{Min: p * 10, Max: p * 10})
	}
	tests := []struct {
		name string
		in   []snapshot.PortRange
		want []string
	}{
		{"one port", []snapshot.PortRange{{Min: 80, Max: 80}}, []string{"80"}},
		{"port and range", []snapshot.PortRange{{Min: 80, Max: 80}, {Min: 8000, Max: 8080}}, []string{"80,8000:8080"}},
		{"sixteen entries split", many[:16], []string{"10,20,30,40,50,60,70,80,90,100,110,120,130,140,150", "160"}},
		{"ranges count twice", []snapshot.PortRange{pr(1, 2), pr(4, 5), pr(7, 8), pr(10, 11), pr(13, 14), pr(16, 17), pr(19, 20), pr(22, 22), pr(24, 25)},
			[]string{"1:2,4:5,7:8,10:11,13:14,16:17,19:20,22", "24:25"}},
	}
	for _, tc := range tests {
		if diff := cmp.Diff(tc.want, portChunks(tc.in)); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tc.name, diff)
		}
	}
}

func TestMembers(t *testing.T) {
	el := func(p string, proto uint8, port uint16) nft.Element {
		return nft.Element{Prefix: netip.MustParsePrefix(p), Proto: proto, Port: port}
	}
	tests := []struct {
		typ  string
		in   nft.Element
		want []string
	}{
		{"hash:ip", el("10.0.0.1/32", 0, 0), []string{"10.0.0.1"}},
		{"hash:net", el("10.0.0.0/8", 0, 0), []string{"10.0.0.0/8"}},
		{"hash:net", el("0.0.0.0/0", 0, 0), []string{"0.0.0.0/1", "128.0.0.0/1"}},
		{"hash:net", el("::/0", 0, 0), []string{"::/1", "8000::/1"}},
		{"hash:ip,port", el("fd00::1/128", 6, 8080), []string{"fd00::1,tcp:8080"}},
		{"hash:ip,port", el("10.0.0.1/32", 132, 9), []string{"10.0.0.1,sctp:9"}},
	}
	for _, tc := range tests {
		if diff := cmp.Diff(tc.want, members(tc.typ, tc.in)); diff != "" {
			t.Errorf("members(%s, %v) (-want +got):\n%s", tc.typ, tc.in, diff)
		}
		for _, m := range tc.want { // what ipset save prints reads back the same
			if got, err := canonicalMember(tc.typ, m); err != nil || got != m {
				t.Errorf("canonicalMember(%s, %q) = %q, %v", tc.typ, m, got, err)
			}
		}
	}
	if got, _ := canonicalMember("hash:net", "10.0.0.1"); got != "10.0.0.1/32" {
		t.Errorf("a host in hash:net as ipset prints it: %q, want 10.0.0.1/32", got)
	}
}

func TestLogPrefix(t *testing.T) {
	for in, want := range map[string]string{
		"felis-packet: ":                     "felis-packet: ",
		`a"b\c`:                              "a_b_c",
		"0123456789012345678901234567890123": "01234567890123456789012345678",
	} {
		if got := logPrefix(in); got != want {
			t.Errorf("logPrefix(%q) = %q, want %q", in, got, want)
		}
	}
}

// chainRules returns the rule bodies of chain (by nftables name) in family and table.
func chainRules(t *testing.T, rs Ruleset, fam int, table, nftName string) []string {
	t.Helper()
	i := slices.IndexFunc(rs.Chains, func(c Chain) bool {
		return c.ChainKey == ChainKey{Family: fam, Table: table, Chain: ChainName(nftName)}
	})
	if i < 0 {
		t.Fatalf("no chain %s (%s) in %s %s", nftName, ChainName(nftName), binary(fam), table)
	}
	return rs.Chains[i].Rules
}

func TestTranslation(t *testing.T) {
	rs := mustRender(t, fixture.Snapshot())
	acceptNested := []string{"-p tcp -m multiport --dports 80 " + acceptMarkSet, acceptMarkCheck}
	pass := []string{"-j MARK --set-xmark 0x1000000/0x1000000", "-m mark --mark 0x1000000/0x1000000 -j RETURN"}
	tests := []struct {
		name        string
		fam         int
		table, nft  string
		first, want []string // want: a run of rules in the chain (first: its first rules)
	}{
		{"a base chain clears the accept mark, rejects and drops what nat marked, accepts by returning", 4, "filter", "filter-input", []string{
			"-j MARK --set-xmark 0x0/0x4000000",
			"-m mark --mark 0x8000000/0x8000000 -j REJECT",
			"-m mark --mark 0x10000000/0x10000000 -j DROP",
			"-m conntrack --ctstate ESTABLISHED,RELATED -j RETURN",
			"-m conntrack --ctstate INVALID -j DROP",
			"-m conntrack --ctstate UNTRACKED -j RETURN",
		}, nil},
		{"IPv6 neighbour discovery accepted explicitly, one rule per type", 6, "filter", "filter-input", nil, []string{
			"-p ipv6-icmp -m icmp6 --icmpv6-type 130 -j RETURN",
			"-p ipv6-icmp -m icmp6 --icmpv6-type 131 -j RETURN",
		}},
		{"a nested accept sets the mark and returns", 4, "filter", "pol-in-hep-web", acceptNested, nil},
		{"Pass sets the pass bit and returns", 4, "filter", "pol-in-security-deny", nil, pass},
		{"negated ICMP type and code", 4, "filter", "pol-in-hep-web", nil, []string{
			"-p icmp -m icmp ! --icmp-type 8 -j DROP",
			"-p icmp -m icmp --icmp-type 8 -m icmp ! --icmp-type 8/0 -j DROP",
		}},
		{"a jump is followed by the accept check", 4, "filter", "wl-in-cali1111aaaa-t0", nil, []string{
			"-j " + ChainName("pol-in-security-deny"), acceptMarkCheck, "-m mark --mark 0x1000000/0x1000000 -j RETURN",
		}},
		{"untracked allow: notrack, then accept", 4, "raw", "pol-in-hep-untracked", []string{
			"-p udp -m multiport --sports 53 -j CT --notrack",
			"-p udp -m multiport --sports 53 " + acceptMarkSet,
			acceptMarkCheck,
		}, nil},
		{"a map dispatch marks accept after the endpoint chain", 4, "filter", "map-wl-out", []string{
			"-i cali1111aaaa -j " + ChainName("wl-out-cali1111aaaa"),
			"-i cali1111aaaa " + acceptMarkSet,
		}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := chainRules(t, rs, tc.fam, tc.table, tc.nft)
			if tc.first != nil {
				if diff := cmp.Diff(tc.first, got[:min(len(got), len(tc.first))]); diff != "" {
					t.Errorf("first rules (-want +got):\n%s\nchain:\n%s", diff, strings.Join(got, "\n"))
				}
			}
			if tc.want != nil {
				found := false
				for i := range got {
					if i+len(tc.want) <= len(got) && slices.Equal(got[i:i+len(tc.want)], tc.want) {
						found = true
					}
				}
				if !found {
					t.Errorf("want the run\n%s\nin\n%s", strings.Join(tc.want, "\n"), strings.Join(got, "\n"))
				}
			}
		})
	}
	// Every IPv4 chain references only IPv4 sets, and the reverse.
	for _, c := range rs.Chains {
		for _, r := range c.Rules {
			for _, name := range targets(r) {
				if strings.HasPrefix(name, "felis-4") && c.Family == 6 || strings.HasPrefix(name, "felis-6") && c.Family == 4 {
					t.Errorf("%s: rule %q references %s", c.ChainKey, r, name)
				}
			}
		}
	}
	if os.Getenv("PRINT") != "" {
		t.Log("\n" + rs.String())
	}
}

func TestParseSave(t *testing.T) {
	save := `# Generated by iptables-save
*filter
:INPUT ACCEPT [0:0]
:felis-a - [0:0]
:felis-empty - [0:0]
:KUBE-X - [0:0]
-A INPUT -j KUBE-X
-A INPUT -m comment --comment "felis:0123456789abcdef" -j felis-a
-A felis-a -p tcp -m comment --comment "felis:1111111111111111" -j ACCEPT
-A felis-a -j DROP
COMMIT
`
	st := NewState()
	if err := ParseSave(st, 4, save); err != nil {
		t.Fatal(err)
	}
	want := &State{
		Sets: map[string]Set{},
		Chains: map[ChainKey][]string{
			{4, "filter", "felis-a"}:     {"1111111111111111", ""},
			{4, "filter", "felis-empty"}: {},
		},
		Hooks: map[ChainKey][]HookRule{
			{4, "filter", "INPUT"}: {{Index: 1, Line: `-m comment --comment "felis:0123456789abcdef" -j felis-a`, Hash: "0123456789abcdef"}},
		},
		ChainLen: map[ChainKey]int{{4, "filter", "INPUT"}: 2},
	}
	if diff := cmp.Diff(want, st); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	// A hook not at the top, or a felis chain with an unhashed rule, is rewritten.
	rs := Ruleset{Chains: []Chain{{ChainKey: ChainKey{4, "filter", "felis-a"}, Rules: []string{"-j ACCEPT"}}},
		Hooks: []Hook{{ChainKey: ChainKey{4, "filter", "INPUT"}, Rules: []string{"-j felis-a"}, Hashes: []string{"0123456789abcdef"}}}}
	rs.Chains[0].Hashes = []string{"1111111111111111"}
	if got := verbs(Plan(rs, st)); !cmp.Equal(got, map[Verb]int{HookWrite: 1, ChainWrite: 1, ChainDelete: 1}) {
		t.Errorf("plan verbs %v, want one hook write, one chain write, one delete", got)
	}
}

func TestMemberOps(t *testing.T) {
	tests := []struct {
		want, have []string
		lines      []string
	}{
		{nil, nil, nil},
		{[]string{"a", "c"}, []string{"a", "c"}, nil},
		{[]string{"a", "b", "c"}, []string{"b"}, []string{"add s a", "add s c"}},
		{[]string{"b"}, []string{"a", "b", "c"}, []string{"del s a", "del s c"}},
		{[]string{"a", "d"}, []string{"b", "c", "d"}, []string{"add s a", "del s b", "del s c"}},
	}
	for _, tc := range tests {
		var got []string
		for _, o := range memberOps(nil, Set{Name: "s", Members: tc.want}, tc.have) {
			got = append(got, o.Lines...)
		}
		if diff := cmp.Diff(tc.lines, got); diff != "" {
			t.Errorf("want %v, have %v (-want +got):\n%s", tc.want, tc.have, diff)
		}
	}
}

func TestServicesTranslation(t *testing.T) {
	rs := mustRender(t, fixture.Services())
	var nat, natDrops, rejects, drops []string
	for _, c := range rs.Chains {
		for _, r := range c.Rules {
			if c.Table == "nat" && strings.Contains(r, "0x8000000/0x8000000") {
				nat = append(nat, r)
			}
			if c.Table == "nat" && strings.Contains(r, "--set-xmark 0x10000000/0x10000000") {
				natDrops = append(natDrops, c.Chain)
			}
			if strings.Contains(r, "-j REJECT") {
				if c.Table != "filter" {
					t.Errorf("%s: REJECT outside the filter table: %s", c.ChainKey, r)
				}
				rejects = append(rejects, c.Chain)
			}
			if strings.Contains(r, "-j DROP") && c.Table == "nat" {
				t.Errorf("%s: DROP in the nat table (iptables refuses it): %s", c.ChainKey, r)
			}
			if strings.Contains(r, "-m mark --mark 0x10000000/0x10000000 -j DROP") {
				drops = append(drops, c.Chain)
			}
		}
	}
	if len(nat) != 1 {
		t.Errorf("want the empty service's chain to set the reject mark once, got %q", nat)
	}
	// A Local NodePort whose service has only remote backends drops, through the drop mark.
	if diff := cmp.Diff([]string{ChainName("svc-app/remote//tcp/4-local")}, natDrops); diff != "" {
		t.Errorf("nat chains setting the drop mark (-want +got):\n%s", diff)
	}
	for what, got := range map[string][]string{"rejecting": rejects, "dropping": drops} {
		if diff := cmp.Diff([]string{"felis-filter-forward", "felis-filter-input", "felis-filter-output"}, slices.Sorted(slices.Values(uniq(got)))); diff != "" {
			t.Errorf("chains %s marked packets (-want +got):\n%s", what, diff)
		}
	}
	// externalTrafficPolicy Local: kube-proxy's short-circuit. Local pods (by interface) and
	// the node itself (by source address type, masqueraded) go to the cluster-wide chain,
	// everyone else to the local endpoints' chain.
	for svc, local := range map[string]string{"shop": "svc-app/shop//tcp/4-local", "remote": "svc-app/remote//tcp/4-local"} {
		cluster := ChainName("svc-app/" + svc + "//tcp/4")
		want := []string{
			"-i cali+ -g " + cluster,
			"-m addrtype --src-type LOCAL -j MARK --set-xmark 0x2000000/0x2000000",
			"-m addrtype --src-type LOCAL -g " + cluster,
			"-g " + ChainName(local),
		}
		var got []string
		for _, c := range rs.Chains {
			if c.Table == "nat" && c.Chain == ChainName(local+"-ext") {
				got = append(got, c.Rules...)
			}
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s's Local NodePort chain (-want +got):\n%s", svc, diff)
		}
	}
	joined := rs.String()
	for _, want := range []string{"-j DNAT --to-destination 10.0.1.1:8080", "-m statistic --mode random --probability 0.50000000000",
		"-m recent --name felis-aff-", "--rcheck --seconds 300 --reap --rsource", "-j DNAT --to-destination [fd00:10::6]:6379",
		"-d 10.96.0.10/32 -p tcp -m multiport --dports 80 -j felis-"} {
		if !strings.Contains(joined, want) {
			t.Errorf("translation lacks %q", want)
		}
	}
}

func uniq(s []string) []string {
	slices.Sort(s)
	return slices.Compact(s)
}
