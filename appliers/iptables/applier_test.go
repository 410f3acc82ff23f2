package iptables

import (
	"context"
	"errors"
	"github.com/felis-dev/felis/appliers/internal/fixture"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/felis-dev/felis/snapshot"
)

func mustRender(t testing.TB, s snapshot.Snapshot) Ruleset {
	t.Helper()
	rs, err := Render(s)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

func verbs(ops []Op) map[Verb]int {
	out := map[Verb]int{}
	for _, o := range ops {
		out[o.Verb]++
	}
	return out
}

// syncAndCheck applies desired through a fresh applier on r and checks that a re-observed
// plan is empty.
func syncAndCheck(t *testing.T, r Runner, desired Ruleset) []Op {
	t.Helper()
	ctx := context.Background()
	a := NewApplier(r)
	ops, err := a.Sync(ctx, desired)
	if err != nil {
		t.Fatal(err)
	}
	st, err := Observe(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	if again := Plan(desired, st); len(again) != 0 {
		t.Fatalf("observed state differs from desired after sync; pending:\n%s", opsText(again))
	}
	return ops
}

// stateDiff compares states without the kernel chains' lengths (which count others' rules).
func stateDiff(want, got *State) string {
	return cmp.Diff(want, got, cmpopts.IgnoreFields(State{}, "ChainLen"))
}

func opsText(ops []Op) string {
	var b strings.Builder
	for _, o := range ops {
		b.WriteString(o.String() + "\n")
	}
	return b.String()
}

func TestFakeSyncObserveEqualsDesired(t *testing.T) {
	f := NewFake()
	desired := mustRender(t, fixture.Snapshot())
	ops := syncAndCheck(t, f, desired)
	v := verbs(ops)
	if v[SetCreate] != len(desired.Sets) || v[ChainWrite] != len(desired.Chains) || v[HookWrite] != len(desired.Hooks) {
		t.Errorf("first sync: got %v, want %d set-create, %d chain-write, %d hook-write", v, len(desired.Sets), len(desired.Chains), len(desired.Hooks))
	}
	if got := f.Restores(); got != 1+8 { // one ipset restore, one restore per family and table
		t.Errorf("restores = %d, want 9", got)
	}
	st, _ := Observe(context.Background(), f)
	if diff := stateDiff(StateOf(desired), st); diff != "" {
		t.Errorf("observed state (-committed +observed):\n%s", diff)
	}
}

func TestMinimalUpdates(t *testing.T) {
	ctx := context.Background()
	base := fixture.Snapshot()
	f := NewFake()
	a := NewApplier(f)
	if _, err := a.Sync(ctx, mustRender(t, base)); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		change func(s *snapshot.Snapshot)
		want   map[Verb]int
	}{
		{"no change", func(*snapshot.Snapshot) {}, map[Verb]int{}},
		{"one set member added", func(s *snapshot.Snapshot) {
			s.IPSets[2].Members = append(s.IPSets[2].Members, snapshot.Member{Prefix: netip.MustParsePrefix("10.0.0.3/32")})
		}, map[Verb]int{SetAdd: 1}},
		{"one set member removed", func(s *snapshot.Snapshot) {
			s.IPSets[2].Members = s.IPSets[2].Members[:1]
		}, map[Verb]int{SetDel: 1}},
		{"one policy rule changed", func(s *snapshot.Snapshot) {
			s.Policies[0].Inbound[0].DstPorts[0].Max = 81
		}, map[Verb]int{ChainWrite: 1}},
		{"set type changes (ip to net)", func(s *snapshot.Snapshot) {
			s.IPSets[2].Members = append(s.IPSets[2].Members, snapshot.Member{Prefix: netip.MustParsePrefix("10.9.0.0/16")})
		}, map[Verb]int{SetCreate: 1, ChainWrite: 1, SetDestroy: 1}},
		{"set size changes", func(s *snapshot.Snapshot) {
			s.Config.IPSetsMaxSize = 5000
		}, map[Verb]int{SetReplace: len(mustRender(t, base).Sets)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := fixture.Snapshot()
			tc.change(&s)
			ops, err := a.Sync(ctx, mustRender(t, s))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, verbs(ops)); diff != "" {
				t.Errorf("ops (-want +got):\n%s\n%s", diff, opsText(ops))
			}
			st, _ := Observe(ctx, f)
			if pending := Plan(mustRender(t, s), st); len(pending) != 0 {
				t.Errorf("pending after sync:\n%s", opsText(pending))
			}
			// back to base for the next case
			if _, err := a.Sync(ctx, mustRender(t, base)); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestDriftRepairedByResync(t *testing.T) {
	ctx := context.Background()
	f := NewFake()
	desired := mustRender(t, fixture.Snapshot())
	a := NewApplier(f)
	if _, err := a.Sync(ctx, desired); err != nil {
		t.Fatal(err)
	}
	// Someone deletes a hook rule and an ipset member.
	st, _ := Observe(ctx, f)
	hook := st.Hooks[ChainKey{Family: 4, Table: "filter", Chain: "INPUT"}][0]
	set := desired.Sets[0]
	drift := "*filter\n-D INPUT " + hook.Line + "\nCOMMIT\n"
	if err := f.Restore(ctx, 4, drift); err != nil {
		t.Fatal(err)
	}
	if err := f.IPSetRestore(ctx, "del "+set.Name+" "+set.Members[0]+"\n"); err != nil {
		t.Fatal(err)
	}
	// The hot path does not see it; a resync repairs exactly that.
	if ops, _ := a.Sync(ctx, desired); len(ops) != 0 {
		t.Fatalf("hot path planned %v", opsText(ops))
	}
	if err := a.Resync(ctx); err != nil {
		t.Fatal(err)
	}
	ops, err := a.Sync(ctx, desired)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[Verb]int{SetAdd: 1, HookWrite: 1}, verbs(ops)); diff != "" {
		t.Errorf("repair ops (-want +got):\n%s\n%s", diff, opsText(ops))
	}
	st, _ = Observe(ctx, f)
	if pending := Plan(desired, st); len(pending) != 0 {
		t.Errorf("pending after repair:\n%s", opsText(pending))
	}
}

func TestFailedApplyResyncs(t *testing.T) {
	ctx := context.Background()
	f := NewFake()
	a := NewApplier(f)
	desired := mustRender(t, fixture.Snapshot())
	f.FailNext(errors.New("boom"))
	if _, err := a.Sync(ctx, desired); err == nil {
		t.Fatal("sync succeeded despite a failing restore")
	}
	if _, err := a.Plan(desired); !errors.Is(err, ErrNotSynced) {
		t.Fatalf("plan after failure: err = %v, want ErrNotSynced", err)
	}
	syncAndCheck(t, f, desired)
}

func TestRemoveAndForeignRulesKept(t *testing.T) {
	ctx := context.Background()
	f := NewFake()
	foreign := "*filter\n:KUBE-X - [0:0]\n-A INPUT -j KUBE-X\n-A KUBE-X -s 10.0.0.0/8 -j ACCEPT\nCOMMIT\n"
	if err := f.Restore(ctx, 4, foreign); err != nil {
		t.Fatal(err)
	}
	before := f.Dump()
	syncAndCheck(t, f, mustRender(t, fixture.Snapshot()))
	// felis's hooks go on top of the foreign rule.
	st, _ := Observe(ctx, f)
	if got := st.Hooks[ChainKey{Family: 4, Table: "filter", Chain: "INPUT"}]; len(got) != 2 || got[1].Index != 1 {
		t.Errorf("INPUT hook rules = %+v, want two at the top", got)
	}
	if err := Remove(ctx, f); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(before, f.Dump()); diff != "" {
		t.Errorf("after Remove (-before +after):\n%s", diff)
	}
}

func TestFakeRejectsWhatTheKernelRejects(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name, ipset, script string
	}{
		{"jump to a missing chain", "", "*filter\n-A INPUT -j felis-nope\nCOMMIT\n"},
		{"missing set", "", "*filter\n-A INPUT -m set --match-set felis-x src -j DROP\nCOMMIT\n"},
		{"set of the other family", "create felis-x hash:ip family inet6 hashsize 1024 maxelem 10\n", "*filter\n-A INPUT -m set --match-set felis-x src -j DROP\nCOMMIT\n"},
		{"delete a referenced chain", "", "*filter\n:felis-a - [0:0]\n-A INPUT -j felis-a\n-X felis-a\nCOMMIT\n"},
		{"delete a missing rule", "", "*filter\n-D INPUT -j DROP\nCOMMIT\n"},
		{"no commit", "", "*filter\n:felis-a - [0:0]\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := NewFake()
			if tc.ipset != "" {
				if err := f.IPSetRestore(ctx, tc.ipset); err != nil {
					t.Fatal(err)
				}
			}
			before := f.Dump()
			if err := f.Restore(ctx, 4, tc.script); err == nil {
				t.Fatalf("restore accepted:\n%s", tc.script)
			}
			if diff := cmp.Diff(before, f.Dump()); diff != "" {
				t.Errorf("a failed restore changed state:\n%s", diff)
			}
		})
	}
	f := NewFake()
	if err := f.IPSetRestore(ctx, "create felis-s hash:net family inet hashsize 1024 maxelem 10\nadd felis-s 0.0.0.0/0\n"); err == nil {
		t.Error("hash:net accepted a /0")
	}
	if err := f.Restore(ctx, 4, "*filter\n-A INPUT -m set --match-set felis-s src -j DROP\nCOMMIT\n"); err != nil {
		t.Fatal(err)
	}
	if err := f.IPSetRestore(ctx, "destroy felis-s\n"); err == nil {
		t.Error("destroyed a set in use")
	}
}

func TestPlanDeletesStaleChainsAndSets(t *testing.T) {
	ctx := context.Background()
	f := NewFake()
	a := NewApplier(f)
	if _, err := a.Sync(ctx, mustRender(t, fixture.Snapshot())); err != nil {
		t.Fatal(err)
	}
	s := fixture.Snapshot()
	s.Endpoints = s.Endpoints[:1]
	s.IPSets = slices.DeleteFunc(s.IPSets, func(x snapshot.IPSet) bool { return x.ID == "s:aaa" })
	for i := range s.Policies {
		if s.Policies[i].ID == "security-deny" {
			s.Policies[i].Inbound = s.Policies[i].Inbound[3:]
		}
	}
	desired := mustRender(t, s)
	ops, err := a.Sync(ctx, desired)
	if err != nil {
		t.Fatal(err)
	}
	v := verbs(ops)
	if v[ChainDelete] == 0 || v[SetDestroy] == 0 {
		t.Errorf("ops %v: want chain deletes and set destroys", v)
	}
	st, _ := Observe(ctx, f)
	if diff := stateDiff(StateOf(desired), st); diff != "" {
		t.Errorf("state (-want +got):\n%s", diff)
	}
}

func TestChainInsertModeAppend(t *testing.T) {
	ctx := context.Background()
	f := NewFake()
	if err := f.Restore(ctx, 4, "*filter\n:KUBE-X - [0:0]\n-A INPUT -j KUBE-X\nCOMMIT\n"); err != nil {
		t.Fatal(err)
	}
	input := ChainKey{Family: 4, Table: "filter", Chain: "INPUT"}
	positions := func() []int {
		st, err := Observe(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		var out []int
		for _, h := range st.Hooks[input] {
			out = append(out, h.Index)
		}
		return out
	}
	appendMode := fixture.Snapshot()
	appendMode.Config.ChainInsertMode = "Append"
	a := NewApplier(f)
	syncAndCheck(t, f, mustRender(t, appendMode))
	if diff := cmp.Diff([]int{1, 2}, positions()); diff != "" {
		t.Errorf("append mode: INPUT hook positions (-want +got):\n%s", diff)
	}
	// A foreign rule appended after felis's moves them back to the end on resync.
	if err := f.Restore(ctx, 4, "*filter\n-A INPUT -j KUBE-X\nCOMMIT\n"); err != nil {
		t.Fatal(err)
	}
	if err := a.Resync(ctx); err != nil {
		t.Fatal(err)
	}
	ops, err := a.Sync(ctx, mustRender(t, appendMode))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[Verb]int{HookWrite: 1}, verbs(ops)); diff != "" {
		t.Errorf("append repair (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]int{2, 3}, positions()); diff != "" {
		t.Errorf("after repair: INPUT hook positions (-want +got):\n%s", diff)
	}
	// Back to insert mode: every hook moves to the top.
	ops, err = a.Sync(ctx, mustRender(t, fixture.Snapshot()))
	if err != nil {
		t.Fatal(err)
	}
	if v := verbs(ops); v[HookWrite] != len(mustRender(t, fixture.Snapshot()).Hooks) || len(v) != 1 {
		t.Errorf("switch to insert: ops %v, want only hook writes", v)
	}
	if diff := cmp.Diff([]int{0, 1}, positions()); diff != "" {
		t.Errorf("insert mode: INPUT hook positions (-want +got):\n%s", diff)
	}
}
