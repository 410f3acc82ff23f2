package render

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/felis-dev/felis/snapshot"
)

// program renders a snapshot with one endpoint whose ingress is dir and returns that program.
func program(t *testing.T, s *snapshot.Snapshot, dir snapshot.Direction) ([]Insn, *State) {
	t.Helper()
	s.Endpoints = []snapshot.Endpoint{{ID: "ns/a", Interface: "cali-a", Addrs: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/32")}, Ingress: dir}}
	st, err := Render(s)
	if err != nil {
		t.Fatal(err)
	}
	ep := st.Endpoints["cali-a"]
	code := st.Programs[ep.Prog[DirToWorkload]]
	if uint32(len(code)) != ep.Len[DirToWorkload] {
		t.Fatalf("endpoint says %d instructions, program has %d", ep.Len[DirToWorkload], len(code))
	}
	return code, st
}

func TestProgramLayout(t *testing.T) {
	allow := Insn{Kind: KindAction, A: ActionAllow}
	deny := Insn{Kind: KindAction, A: ActionDeny}
	tcp := uint8(6)
	pols := []snapshot.Policy{
		{ID: "pass", Inbound: []snapshot.Rule{{Action: snapshot.Pass}}},
		{ID: "tcp", Inbound: []snapshot.Rule{{Action: snapshot.Allow, Protocol: &tcp}}},
		{ID: "ports", Inbound: []snapshot.Rule{{Action: snapshot.Deny,
			DstPorts: []snapshot.PortRange{{Min: 80, Max: 80}, {Min: 443, Max: 444}}, NotSrcPorts: []snapshot.PortRange{{Min: 1, Max: 2}}}}},
	}
	for _, tc := range []struct {
		name string
		dir  snapshot.Direction
		want []Insn
	}{
		{"nothing: deny", snapshot.Direction{}, []Insn{deny}},
		{"pass skips the tier default", snapshot.Direction{Tiers: []snapshot.TierPolicies{
			{Tier: "t", DefaultAction: snapshot.Deny, Policies: []string{"pass"}}}, Profiles: []string{"missing"}},
			[]Insn{{Kind: KindAction, A: ActionPass, Next: 2}, deny, deny}},
		{"tier default pass adds no deny; missing policy skipped", snapshot.Direction{Tiers: []snapshot.TierPolicies{
			{Tier: "t", DefaultAction: snapshot.Pass, Policies: []string{"gone", "tcp"}}}},
			[]Insn{{Kind: KindProtocol, A: 6, Flags: FlagEnd, Next: 2}, allow, deny}},
		{"ports are one OR clause, notPorts one clause each", snapshot.Direction{Tiers: []snapshot.TierPolicies{
			{Tier: "t", DefaultAction: snapshot.Deny, Policies: []string{"ports"}}}},
			[]Insn{
				{Kind: KindPort, Flags: FlagSrc | FlagNeg | FlagEnd, Min: 1, Max: 2, Next: 4},
				{Kind: KindPort, Min: 80, Max: 80},
				{Kind: KindPort, Flags: FlagEnd, Min: 443, Max: 444, Next: 4},
				deny, deny, deny}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, _ := program(t, &snapshot.Snapshot{Policies: pols}, tc.dir)
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("program (-want +got):\n%s", d)
			}
		})
	}
}

func TestSetsAndIDs(t *testing.T) {
	s := &snapshot.Snapshot{
		IPSets: []snapshot.IPSet{
			{ID: "s:plain", Type: snapshot.IPSetNet, Members: []snapshot.Member{{Prefix: netip.MustParsePrefix("10.1.0.0/16")}}},
			{ID: "n:named", Type: snapshot.IPSetIPPort, Members: []snapshot.Member{{Prefix: netip.MustParsePrefix("fd00::5/128"), Protocol: 6, Port: 8080}}},
		},
		Policies: []snapshot.Policy{{ID: "p", Inbound: []snapshot.Rule{{Action: snapshot.Allow,
			SrcIPSets: []string{"s:plain"}, DstNamedPortIPSets: []string{"n:named"}, NotDstNets: []netip.Prefix{netip.MustParsePrefix("192.168.0.0/24")}}}}},
	}
	code, st := program(t, s, snapshot.Direction{Tiers: []snapshot.TierPolicies{{Tier: "t", DefaultAction: snapshot.Deny, Policies: []string{"p"}}}})
	plain, named, nets := st.SetIDs["set:s:plain"], st.SetIDs["set:n:named"], st.SetIDs["nets:192.168.0.0/24"]
	spoof := st.SetIDs["nets:10.0.0.1/32"]
	for _, id := range []uint32{plain, named, nets, spoof} {
		if id == 0 {
			t.Fatalf("a set has no ID: %v", st.SetIDs)
		}
	}
	want := []Insn{
		{Kind: KindSet, Flags: FlagSrc | FlagEnd, Set: plain, Next: 4},
		{Kind: KindSet, Flags: FlagNeg | FlagEnd, Set: nets, Next: 4},
		{Kind: KindSet, Flags: FlagWithPort | FlagEnd, Set: named, Next: 4},
		{Kind: KindAction, A: ActionAllow},
		{Kind: KindAction, A: ActionDeny},
		{Kind: KindAction, A: ActionDeny},
	}
	if d := cmp.Diff(want, code); d != "" {
		t.Errorf("program (-want +got):\n%s", d)
	}
	var keys []string
	for k := range st.AllSets() {
		keys = append(keys, k.String())
	}
	wantSets := map[SetKey]struct{}{
		setKey(plain, netip.MustParsePrefix("10.1.0.0/16"), 0, 0):    {},
		setKey(named, netip.MustParsePrefix("fd00::5/128"), 6, 8080): {},
		setKey(nets, netip.MustParsePrefix("192.168.0.0/24"), 0, 0):  {},
		setKey(spoof, netip.MustParsePrefix("10.0.0.1/32"), 0, 0):    {},
	}
	if d := cmp.Diff(wantSets, st.AllSets()); d != "" {
		t.Errorf("set members (-want +got):\n%s\n%v", d, keys)
	}
	if ep := st.Endpoints["cali-a"]; ep.SpoofSet != spoof {
		t.Errorf("spoof set = %08x, want %08x", ep.SpoofSet, spoof)
	}
	// IDs depend on content only: rendering again (or with an unrelated set added) keeps them.
	s.IPSets = append(s.IPSets, snapshot.IPSet{ID: "s:zzz", Type: snapshot.IPSetIP})
	_, st2 := program(t, s, snapshot.Direction{Tiers: []snapshot.TierPolicies{{Tier: "t", DefaultAction: snapshot.Deny, Policies: []string{"p"}}}})
	for k, id := range st.SetIDs {
		if st2.SetIDs[k] != id {
			t.Errorf("set %s: ID %08x became %08x", k, id, st2.SetIDs[k])
		}
	}
}

func TestEndpointsShareIdenticalPrograms(t *testing.T) {
	dir := snapshot.Direction{Profiles: []string{"p"}}
	s := &snapshot.Snapshot{
		Profiles: []snapshot.Profile{{ID: "p", Inbound: []snapshot.Rule{{Action: snapshot.Allow}}}},
		Endpoints: []snapshot.Endpoint{
			{ID: "a", Interface: "cali-a", Ingress: dir},
			{ID: "b", Interface: "cali-b", Ingress: dir},
			{ID: "c", Interface: "", Ingress: dir},
		},
	}
	st, err := Render(s)
	if err != nil {
		t.Fatal(err)
	}
	a, b := st.Endpoints["cali-a"], st.Endpoints["cali-b"]
	if a != b {
		t.Errorf("identical endpoints got different programs: %+v %+v", a, b)
	}
	if len(st.Programs) != 2 { // allow-profile ingress, empty egress
		t.Errorf("programs = %v, want 2", st.Programs)
	}
	if len(st.Warnings) != 1 {
		t.Errorf("warnings = %q, want one for the endpoint without an interface", st.Warnings)
	}
}

func TestSetKeyString(t *testing.T) {
	for _, tc := range []struct {
		k    SetKey
		want string
	}{
		{setKey(0xab, netip.MustParsePrefix("10.1.0.0/16"), 0, 0), "000000ab 10.1.0.0/16 0/0"},
		{setKey(0xdeadbeef, netip.MustParsePrefix("fd00::5/128"), 6, 8080), "deadbeef fd00::5/128 6/8080"},
	} {
		if got := tc.k.String(); got != tc.want {
			t.Errorf("%#v.String() = %q, want %q", tc.k, got, tc.want)
		}
	}
}

// TestPortClausesBeforeSetClauses: clauses are a conjunction, so a rule's port tests come
// first (a compare) and its set tests (LPM lookups) after them, whatever the side; a port
// clause that also holds named-port sets is a set clause.
func TestPortClausesBeforeSetClauses(t *testing.T) {
	s := &snapshot.Snapshot{
		IPSets: []snapshot.IPSet{{ID: "n:web", Type: snapshot.IPSetIPPort}},
		Policies: []snapshot.Policy{{ID: "p", Inbound: []snapshot.Rule{{Action: snapshot.Allow,
			SrcNets: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, SrcPorts: []snapshot.PortRange{{Min: 1000, Max: 2000}},
			DstPorts: []snapshot.PortRange{{Min: 80, Max: 80}}, DstNamedPortIPSets: []string{"n:web"},
			NotDstPorts: []snapshot.PortRange{{Min: 81, Max: 81}}}}}},
	}
	code, st := program(t, s, snapshot.Direction{Tiers: []snapshot.TierPolicies{{Tier: "t", DefaultAction: snapshot.Deny, Policies: []string{"p"}}}})
	nets, web := st.SetIDs["nets:10.0.0.0/8"], st.SetIDs["set:n:web"]
	want := []Insn{
		{Kind: KindPort, Flags: FlagSrc | FlagEnd, Min: 1000, Max: 2000, Next: 6},
		{Kind: KindPort, Flags: FlagNeg | FlagEnd, Min: 81, Max: 81, Next: 6},
		{Kind: KindSet, Flags: FlagSrc | FlagEnd, Set: nets, Next: 6},
		{Kind: KindPort, Min: 80, Max: 80},
		{Kind: KindSet, Flags: FlagWithPort | FlagEnd, Set: web, Next: 6},
		{Kind: KindAction, A: ActionAllow},
		{Kind: KindAction, A: ActionDeny},
		{Kind: KindAction, A: ActionDeny},
	}
	if d := cmp.Diff(want, code); d != "" {
		t.Errorf("program (-want +got):\n%s", d)
	}
}
