package render

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/felis-dev/felis/snapshot"
)

// insns returns the first n instructions of a program (zero instructions past its end).
func insns(st *State, prog, n uint32) []Insn {
	if n == 0 {
		return nil
	}
	code := make([]Insn, n)
	copy(code, st.Programs[prog])
	return code
}

// TestHostStages: stage programs are the failsafes as Return rules (untracked and preDNAT
// only), the tiers, and Return; a stage without tiers is absent.
func TestHostStages(t *testing.T) {
	tcp := uint8(6)
	s := &snapshot.Snapshot{
		Config: snapshot.Config{FailsafeInbound: []snapshot.FailsafePort{{Protocol: 6, Port: 22}},
			FailsafeOutbound: []snapshot.FailsafePort{{Protocol: 17, Port: 53, Net: netip.MustParsePrefix("10.9.0.0/16")}}},
		Policies: []snapshot.Policy{{ID: "p", Inbound: []snapshot.Rule{{Action: snapshot.Allow, Protocol: &tcp}},
			Outbound: []snapshot.Rule{{Action: snapshot.Deny}}}},
		HostEndpoints: []snapshot.HostEndpoint{{ID: "h", Interface: "eth0",
			Untracked: snapshot.HostDirections{
				Ingress: snapshot.Direction{Tiers: []snapshot.TierPolicies{{Tier: "t", DefaultAction: snapshot.Pass, Policies: []string{"p"}}}},
				Egress:  snapshot.Direction{Tiers: []snapshot.TierPolicies{{Tier: "t", DefaultAction: snapshot.Pass, Policies: []string{"p"}}}}},
			Forward: snapshot.HostDirections{
				Ingress: snapshot.Direction{Tiers: []snapshot.TierPolicies{{Tier: "t", DefaultAction: snapshot.Deny, Policies: []string{"p"}}}}},
		}},
	}
	st, err := Render(s)
	if err != nil {
		t.Fatal(err)
	}
	hp, ok := st.Hosts["eth0"]
	if !ok || st.Endpoints["eth0"].Flags != EndpointFlagHost {
		t.Fatalf("eth0: host programs %v (present %v), endpoint %+v", hp, ok, st.Endpoints["eth0"])
	}
	ret := Insn{Kind: KindAction, A: ActionReturn}
	outNet := st.SetIDs["nets:10.9.0.0/16"]
	want := map[int][]Insn{
		StageUntrackedIn: {
			{Kind: KindProtocol, A: 6, Flags: FlagEnd, Next: 3}, {Kind: KindPort, Min: 22, Max: 22, Flags: FlagEnd, Next: 3}, ret,
			{Kind: KindProtocol, A: 6, Flags: FlagEnd, Next: 5}, {Kind: KindAction, A: ActionAllow},
			ret},
		StageUntrackedOut: {
			{Kind: KindProtocol, A: 17, Flags: FlagEnd, Next: 4}, {Kind: KindPort, Min: 53, Max: 53, Flags: FlagEnd, Next: 4},
			{Kind: KindSet, Set: outNet, Flags: FlagEnd, Next: 4}, ret, // ports before sets
			{Kind: KindAction, A: ActionDeny},
			ret},
		StagePreDNATIn: nil,
		StageForwardIn: {
			{Kind: KindProtocol, A: 6, Flags: FlagEnd, Next: 2}, {Kind: KindAction, A: ActionAllow},
			{Kind: KindAction, A: ActionDeny},
			ret},
		StageForwardOut: nil,
	}
	for stage := range Stages {
		got := insns(st, hp.Prog[stage], hp.Len[stage])
		if d := cmp.Diff(want[stage], got); d != "" {
			t.Errorf("stage %d (-want +got):\n%s", stage, d)
		}
		if (hp.Len[stage] == 0) != (hp.Prog[stage] == 0) {
			t.Errorf("stage %d: program %x of length %d", stage, hp.Prog[stage], hp.Len[stage])
		}
	}
}

// TestExpandWildcard: the `*` host endpoint goes on every listed interface without a named
// host endpoint or a workload prefix; lo gets no normal programs; a second `*` and a host
// endpoint on a workload-prefixed name are warned about and not programmed.
func TestExpandWildcard(t *testing.T) {
	s := &snapshot.Snapshot{
		Config:    snapshot.Config{InterfacePrefixes: []string{"cali", "tap"}},
		Endpoints: []snapshot.Endpoint{{ID: "ns/a", Interface: "cali1", Addrs: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/32")}}},
		HostEndpoints: []snapshot.HostEndpoint{
			{ID: "all", Interface: "*"},
			{ID: "all2", Interface: "*"},
			{ID: "eth1", Interface: "eth1", Normal: snapshot.HostDirections{Ingress: snapshot.Direction{Tiers: []snapshot.TierPolicies{{Tier: "t", DefaultAction: snapshot.Deny}}}}},
			{ID: "tapx", Interface: "tapx"},
		},
	}
	st, err := Render(s)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Warnings) != 2 {
		t.Errorf("warnings %q: want two (the second \"*\", tapx)", st.Warnings)
	}
	named := st.Endpoints["eth1"]
	st.ExpandWildcard([]string{"lo", "eth0", "eth1", "cali1", "cali2", "tap0", "vxlan.calico"})
	got := map[string]uint32{}
	for name, ep := range st.Endpoints {
		got[name] = ep.Flags
		if _, ok := st.Hosts[name]; !ok && ep.Flags&EndpointFlagHost != 0 {
			t.Errorf("%s: host endpoint without stage programs", name)
		}
	}
	want := map[string]uint32{
		"lo": EndpointFlagHost | EndpointFlagHostNoNormal, "eth0": EndpointFlagHost, "eth1": EndpointFlagHost,
		"vxlan.calico": EndpointFlagHost, "cali1": EndpointFlagToHostDeny,
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("endpoints and flags after expansion (-want +got):\n%s", d)
	}
	if st.Endpoints["eth1"] != named {
		t.Errorf("the named host endpoint on eth1 was replaced by the wildcard: %+v, want %+v", st.Endpoints["eth1"], named)
	}
	if w := st.Wildcard.Endpoint; st.Endpoints["eth0"] != w || named == w {
		t.Errorf("eth0 %+v, wildcard %+v, eth1 %+v: want eth0 = wildcard ≠ eth1", st.Endpoints["eth0"], w, named)
	}
}
