package nftables

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"github.com/felis-dev/felis/appliers/internal/fixture"
	"github.com/felis-dev/felis/appliers/nftables/render"
	"github.com/felis-dev/felis/snapshot"
	"github.com/google/go-cmp/cmp"
)

func fakeWith(t *testing.T, tbl render.Table) *Fake {
	t.Helper()
	f := NewFake()
	if err := f.Apply(context.Background(), Plan(tbl, nil)); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestFakeHoldsWhatWasPlanned(t *testing.T) {
	desired := mustRender(t, fixture.Snapshot())
	f := fakeWith(t, desired)
	if diff := cmp.Diff(desired.String(), f.Dump()); diff != "" {
		t.Fatalf("dump (-want +got):\n%s", diff)
	}
	obs, err := f.Observe(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(withoutRules(desired), obs.String()); diff != "" {
		t.Fatalf("observe (-want +got):\n%s", diff)
	}
	if ops := Plan(desired, obs); len(ops) != 0 {
		t.Fatalf("plan against observed state not empty:\n%s", Script(ops))
	}
}

func TestFakeErrors(t *testing.T) {
	desired := mustRender(t, fixture.Snapshot())
	set := func(name string) *render.Set {
		for i := range desired.Sets {
			if desired.Sets[i].Name == name {
				return &desired.Sets[i]
			}
		}
		t.Fatalf("no set %s", name)
		return nil
	}
	chain := func(name string, stmts ...render.Stmt) *render.Chain {
		c := render.Chain{Name: name, Level: render.LevelPolicy, Rules: []render.Rule{{Stmts: stmts}}}
		c.Hash = render.ChainHash(c)
		return &c
	}
	host := func(s string) []render.Element { return []render.Element{{Prefix: netip.MustParsePrefix(s)}} }
	tests := []struct {
		name string
		op   Op
		want error
		text string
	}{
		{"rule references a missing set", Op{Verb: AddChain, Name: "x", Chain: chain("x", render.AddrSet{Family: 4, Set: "nope-4"}, render.Accept)}, ErrNotFound, "set nope-4"},
		{"rule jumps to a missing chain", Op{Verb: AddChain, Name: "x", Chain: chain("x", render.Jump("nope"))}, ErrNotFound, "chain nope"},
		{"rule looks up a missing map", Op{Verb: AddChain, Name: "x", Chain: chain("x", render.IfVmap{Map: "nope"})}, ErrNotFound, "map nope"},
		{"chain exists", Op{Verb: AddChain, Name: "he-in", Chain: chain("he-in", render.Accept)}, ErrExists, ""},
		{"replace a missing chain", Op{Verb: ReplaceChain, Name: "x", Chain: chain("x", render.Accept)}, ErrNotFound, ""},
		{"delete a set a rule uses", Op{Verb: DeleteSet, Name: "s_bbb-4"}, ErrInUse, "pol-in-default/allow-web"},
		{"delete a chain a map element uses", Op{Verb: DeleteChain, Name: "wl-in-cali2222bbbb"}, ErrInUse, "map wl-in"},
		{"delete a chain a rule jumps to", Op{Verb: DeleteChain, Name: "prof-in-kns.default"}, ErrInUse, "chain wl-in-"},
		{"delete a map a rule uses", Op{Verb: DeleteMap, Name: "wl-in"}, ErrInUse, "filter-"},
		{"delete a missing element", Op{Verb: DeleteSetElements, Name: "s_bbb-4", Set: set("s_bbb-4"), Elements: host("10.9.9.9/32")}, ErrNotFound, "10.9.9.9"},
		{"overlapping interval", Op{Verb: AddSetElements, Name: "s_aaa-4", Set: set("s_aaa-4"), Elements: host("10.0.1.128/25")}, ErrExists, "overlaps 10.0.1.0/24"},
		{"element of the wrong family", Op{Verb: AddSetElements, Name: "s_aaa-4", Set: set("s_aaa-4"), Elements: host("fd00::9/128")}, ErrInvalid, "ipv4_addr"},
		{"elements for a missing set", Op{Verb: AddSetElements, Name: "nope", Elements: host("10.0.0.9/32")}, ErrNotFound, ""},
		{"map element to a missing chain", Op{Verb: AddMapElements, Name: "wl-in", MapElements: []render.MapElement{{Interface: "cali9", Chain: "nope"}}}, ErrNotFound, "chain nope"},
		{"map key bound to another chain", Op{Verb: AddMapElements, Name: "wl-in", MapElements: []render.MapElement{{Interface: "cali2222bbbb", Chain: "he-in"}}}, ErrExists, ""},
		{"set exists", Op{Verb: AddSet, Name: "s_bbb-4", Set: set("s_bbb-4")}, ErrExists, ""},
		{"unknown verb", Op{Verb: "frobnicate", Name: "x"}, ErrInvalid, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := fakeWith(t, desired)
			before := f.Dump()
			// A valid op first: the failing batch must not leave it behind.
			ops := []Op{{Verb: AddSetElements, Name: "s_bbb-4", Set: set("s_bbb-4"), Elements: host("10.7.7.7/32")}, tt.op}
			err := f.Apply(context.Background(), ops)
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.text) || !strings.Contains(err.Error(), "op 1 (") {
				t.Fatalf("err = %v; want %v mentioning op 1 and %q", err, tt.want, tt.text)
			}
			if diff := cmp.Diff(before, f.Dump()); diff != "" {
				t.Fatalf("a failed batch changed the fake (-before +after):\n%s", diff)
			}
			if f.Applies() != 1 {
				t.Fatalf("applies = %d, want 1", f.Applies())
			}
		})
	}
}

func TestFakeNoTable(t *testing.T) {
	f := NewFake()
	if obs, err := f.Observe(context.Background()); obs != nil || err != nil {
		t.Fatalf("observe = %v, %v; want no table", obs, err)
	}
	err := f.Apply(context.Background(), []Op{{Verb: AddMap, Name: "m", Map: &render.Map{Name: "m"}}})
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "table inet felis") {
		t.Fatalf("err = %v, want ErrNotFound for the table", err)
	}
	if f.Dump() != "" {
		t.Fatalf("dump of no table = %q", f.Dump())
	}
}

// mutate makes one random change to a snapshot and says what it did.
func mutate(r *rand.Rand, s *snapshot.Snapshot) string {
	switch r.IntN(6) {
	case 0: // add a member to a set
		i := r.IntN(len(s.IPSets))
		m := snapshot.Member{Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 50, byte(r.IntN(4)), byte(r.IntN(250) + 1)}), 32)}
		if s.IPSets[i].Type == snapshot.IPSetIPPort {
			m.Protocol, m.Port = 6, uint16(8000+r.IntN(3))
		}
		s.IPSets[i].Members = append(s.IPSets[i].Members, m)
		return "add member to " + s.IPSets[i].ID
	case 1: // drop a member
		i := r.IntN(len(s.IPSets))
		if n := len(s.IPSets[i].Members); n > 0 {
			j := r.IntN(n)
			s.IPSets[i].Members = append(s.IPSets[i].Members[:j:j], s.IPSets[i].Members[j+1:]...)
		}
		return "drop member of " + s.IPSets[i].ID
	case 2: // change a rule's port
		p := &s.Policies[r.IntN(len(s.Policies))]
		if len(p.Inbound) > 0 {
			p.Inbound[0].Protocol = func() *uint8 { v := uint8(6); return &v }()
			p.Inbound[0].DstPorts = []snapshot.PortRange{{Min: uint16(1 + r.IntN(3)), Max: uint16(1 + r.IntN(3))}}
		}
		return "change rule of " + p.ID
	case 3: // drop an endpoint
		if n := len(s.Endpoints); n > 0 {
			j := r.IntN(n)
			s.Endpoints = append(s.Endpoints[:j:j], s.Endpoints[j+1:]...)
		}
		return "drop endpoint"
	case 4: // add an endpoint
		n := len(s.Endpoints)
		s.Endpoints = append(s.Endpoints, snapshot.Endpoint{ID: fmt.Sprintf("ns/new-%d", r.IntN(1000)), Interface: fmt.Sprintf("calinew%05d", r.IntN(100000)),
			Addrs:   []netip.Prefix{netip.MustParsePrefix("10.0.9.9/32")},
			Ingress: snapshot.Direction{Tiers: []snapshot.TierPolicies{{Tier: "default", DefaultAction: snapshot.Deny, Policies: []string{"default/allow-web"}}}, Profiles: []string{"kns.default"}}})
		for i := 0; i < n; i++ {
			if s.Endpoints[i].Interface == s.Endpoints[n].Interface {
				s.Endpoints = s.Endpoints[:n]
			}
		}
		return "add endpoint"
	default: // toggle a pool's NAT
		i := r.IntN(len(s.Pools))
		s.Pools[i].NATOutgoing = !s.Pools[i].NATOutgoing
		return "toggle NAT of pool"
	}
}

// TestPlanFakeProperties drives random sequences of snapshot changes through Plan and the
// fake: every batch applies, the fake then holds exactly the rendered table, a second plan is
// empty, and a change of one set member is one element op.
func TestPlanFakeProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	ctx := context.Background()
	for run := range 30 {
		s := fixture.Snapshot()
		f := NewFake()
		a := NewApplier(f)
		for stepN := range 20 {
			what := mutate(r, &s)
			desired, err := render.Render(s)
			if err != nil {
				t.Fatalf("run %d step %d (%s): render: %v", run, stepN, what, err)
			}
			ops, err := a.Sync(ctx, desired)
			if err != nil {
				t.Fatalf("run %d step %d (%s): %v\nops:\n%s", run, stepN, what, err, Script(ops))
			}
			if diff := cmp.Diff(desired.String(), f.Dump()); diff != "" {
				t.Fatalf("run %d step %d (%s): fake != desired (-want +got):\n%s", run, stepN, what, diff)
			}
			obs, _ := f.Observe(ctx)
			if again := Plan(desired, obs); len(again) != 0 {
				t.Fatalf("run %d step %d (%s): plan after apply:\n%s", run, stepN, what, Script(again))
			}
		}
	}
}

func TestPlanOneMemberOneOp(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*snapshot.Snapshot)
		want   []string
	}{
		{"add", func(s *snapshot.Snapshot) {
			s.IPSets[1].Members = append(s.IPSets[1].Members, snapshot.Member{Prefix: netip.MustParsePrefix("10.0.3.0/24")})
		}, []string{"add element inet felis s_aaa-4 { 10.0.3.0/24 }"}},
		{"delete", func(s *snapshot.Snapshot) { s.IPSets[2].Members = s.IPSets[2].Members[:1] }, []string{"delete element inet felis s_bbb-4 { 10.0.0.2 }"}},
		{"named port", func(s *snapshot.Snapshot) { s.IPSets[0].Members[0].Port = 8081 },
			[]string{"delete element inet felis n_ccc-4 { 10.0.0.1 . tcp . 8080 }", "add element inet felis n_ccc-4 { 10.0.0.1 . tcp . 8081 }"}},
		{"chain", func(s *snapshot.Snapshot) { s.Policies[1].Inbound[3].Action = snapshot.Allow }, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := fixture.Snapshot()
			before := mustRender(t, s)
			tc.change(&s)
			after := mustRender(t, s)
			got := opStrings(Plan(after, &before))
			if tc.want == nil {
				if len(got) != 1 || !strings.HasPrefix(got[0], "replace chain inet felis pol-in-security-deny ") {
					t.Fatalf("one rule changed: got %q, want one replace of pol-in-security-deny", got)
				}
				return
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Fatalf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestApplierFailureForcesResync(t *testing.T) {
	ctx := context.Background()
	f := NewFake()
	a := NewApplier(f)
	if _, err := a.Plan(render.Table{}); !errors.Is(err, ErrNotSynced) {
		t.Fatalf("plan before resync: err = %v, want ErrNotSynced", err)
	}
	s := fixture.Snapshot()
	desired := mustRender(t, s)
	if _, err := a.Sync(ctx, desired); err != nil {
		t.Fatal(err)
	}
	s.IPSets[2].Members = s.IPSets[2].Members[:1]
	next := mustRender(t, s)
	f.FailNextApply(errors.New("injected"))
	if _, err := a.Sync(ctx, next); err == nil || !strings.Contains(err.Error(), "injected") {
		t.Fatalf("sync with a failing dataplane: err = %v", err)
	}
	if _, err := a.Plan(next); !errors.Is(err, ErrNotSynced) {
		t.Fatalf("plan after a failed apply: err = %v, want ErrNotSynced", err)
	}
	ops, err := a.Sync(ctx, next) // re-observes, then retries
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"delete element inet felis s_bbb-4 { 10.0.0.2 }"}, opStrings(ops)); diff != "" {
		t.Fatalf("retry after resync (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(next.String(), f.Dump()); diff != "" {
		t.Fatalf("(-want +got):\n%s", diff)
	}
}

func TestOpStrings(t *testing.T) {
	c := render.Chain{Name: "c", Rules: []render.Rule{{Stmts: []render.Stmt{render.Accept}}}, Hash: "h"}
	b := render.Chain{Name: "b", Base: &render.BaseChain{Type: "filter", Hook: "input", Priority: 0}, Rules: c.Rules, Hash: "g"}
	s := render.Set{Name: "s-4", Family: 4, Elements: []render.Element{{Prefix: netip.MustParsePrefix("10.0.0.0/8")}}}
	tests := []struct {
		op   Op
		want string
	}{
		{Op{Verb: AddTable}, "add table inet felis"},
		{Op{Verb: AddSet, Name: "s-4", Set: &s}, "add set inet felis s-4 { type ipv4_addr; flags interval; }; add element inet felis s-4 { 10.0.0.0/8 }"},
		{Op{Verb: DeleteSetElements, Name: "s-4", Elements: s.Elements}, "delete element inet felis s-4 { 10.0.0.0/8 }"},
		{Op{Verb: FlushSet, Name: "s-4"}, "flush set inet felis s-4"},
		{Op{Verb: AddMapElements, Name: "m", MapElements: []render.MapElement{{Interface: "cali1", Chain: "wl-in-cali1"}}}, `add element inet felis m { "cali1" : goto wl-in-cali1 }`},
		{Op{Verb: DeleteMap, Name: "m"}, "delete map inet felis m"},
		{Op{Verb: ReplaceChain, Name: "c", Chain: &c}, "replace chain inet felis c # 1 rules, hash h"},
		{Op{Verb: AddChain, Name: "b", Chain: &b}, "add chain inet felis b { type filter hook input priority 0; policy accept; } # 1 rules, hash g"},
		{Op{Verb: DeleteChain, Name: "c"}, "delete chain inet felis c"},
	}
	for _, tt := range tests {
		if got := tt.op.String(); got != tt.want {
			t.Errorf("String() = %q, want %q", got, tt.want)
		}
	}
}
