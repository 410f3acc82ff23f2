//go:build linux

package nftables

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/felis-dev/felis/appliers/internal/fixture"
	"github.com/felis-dev/felis/appliers/nftables/render"
	"github.com/felis-dev/felis/snapshot"
	"github.com/google/go-cmp/cmp"
	gnft "github.com/google/nftables"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// newNetNS creates a throwaway named network namespace, removed when the test ends (even on
// failure), without moving the test's goroutine into it. Tests skip unless run as root.
func newNetNS(t testing.TB) netns.NsHandle {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a network namespace and programs nftables in it (run the tests as root)")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatalf("current netns: %v", err)
	}
	defer orig.Close()
	name := fmt.Sprintf("felis-nft-%d-%x", os.Getpid(), rand.Uint32())
	ns, err := netns.NewNamed(name)
	// NewNamed switches this thread into the new namespace; always switch back.
	if serr := netns.Set(orig); serr != nil {
		panic(fmt.Sprintf("cannot return to the original netns: %v", serr))
	}
	if err != nil {
		t.Fatalf("create netns %s: %v", name, err)
	}
	t.Cleanup(func() {
		ns.Close()
		if err := netns.DeleteNamed(name); err != nil {
			t.Errorf("delete netns %s: %v", name, err)
		}
	})
	return ns
}

func newKernel(t testing.TB) *Kernel {
	t.Helper()
	ns := newNetNS(t)
	k, err := NewKernel(WithNetNSFd(int(ns)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k.Close() })
	return k
}

// step applies the same ops to the kernel and the fake and checks that both now hold
// desired, that they read back identically, and that a fresh plan is empty.
func step(t *testing.T, name string, k *Kernel, f *Fake, desired render.Table, ops []Op) {
	t.Helper()
	ctx := context.Background()
	if err := k.Apply(ctx, ops); err != nil {
		t.Fatalf("%s: kernel apply: %v\nops:\n%s", name, err, Script(ops))
	}
	if err := f.Apply(ctx, ops); err != nil {
		t.Fatalf("%s: fake apply: %v", name, err)
	}
	kernel, fake := observeString(t, k), observeString(t, f)
	if diff := cmp.Diff(withoutRules(desired), kernel); diff != "" {
		t.Fatalf("%s: kernel observe != desired (-want +got):\n%s", name, diff)
	}
	if diff := cmp.Diff(kernel, fake); diff != "" {
		t.Fatalf("%s: fake dump differs from the kernel's (-kernel +fake):\n%s", name, diff)
	}
	if diff := cmp.Diff(desired.String(), f.Dump()); diff != "" {
		t.Fatalf("%s: fake full dump != desired (-want +got):\n%s", name, diff)
	}
	obs, err := k.Observe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if again := Plan(desired, obs); len(again) != 0 {
		t.Fatalf("%s: plan after apply is not empty:\n%s", name, Script(again))
	}
}

func TestKernelRoundTrip(t *testing.T) {
	k := newKernel(t)
	f := NewFake()
	ctx := context.Background()

	snap := fixture.Snapshot()
	desired := mustRender(t, snap)
	obs, err := k.Observe(ctx)
	if err != nil || obs != nil {
		t.Fatalf("fresh netns: observe = %v, %v; want no table", obs, err)
	}
	step(t, "full sync", k, f, desired, Plan(desired, nil))

	// One set member added: exactly one element op.
	snap.IPSets[2].Members = append(snap.IPSets[2].Members, snapshot.Member{Prefix: netip.MustParsePrefix("10.0.0.3/32")})
	next := mustRender(t, snap)
	ops := Plan(next, &desired)
	want := []string{"add element inet felis s_bbb-4 { 10.0.0.3 }"}
	if diff := cmp.Diff(want, opStrings(ops)); diff != "" {
		t.Fatalf("one member added (-want +got):\n%s", diff)
	}
	step(t, "set member added", k, f, next, ops)
	desired = next

	// One member of an interval set removed, one v6 prefix added.
	snap.IPSets[1].Members = []snapshot.Member{{Prefix: netip.MustParsePrefix("10.0.1.0/24")}, {Prefix: netip.MustParsePrefix("fd00:1::/64")}, {Prefix: netip.MustParsePrefix("fd00:2::/64")}}
	next = mustRender(t, snap)
	ops = Plan(next, &desired)
	want = []string{"delete element inet felis s_aaa-4 { 10.0.2.5 }", "add element inet felis s_aaa-6 { fd00:2::/64 }"}
	if diff := cmp.Diff(want, opStrings(ops)); diff != "" {
		t.Fatalf("interval set change (-want +got):\n%s", diff)
	}
	step(t, "interval members changed", k, f, next, ops)
	desired = next

	// A set's first IPv6 member: the set appears and the one rule that can now match with it.
	snap.IPSets[2].Members = append(snap.IPSets[2].Members, snapshot.Member{Prefix: netip.MustParsePrefix("fd00::2/128")})
	next = mustRender(t, snap)
	ops = Plan(next, &desired)
	if got := opStrings(ops); len(got) != 2 || !strings.HasPrefix(got[0], "add set inet felis s_bbb-6 { type ipv6_addr; flags interval; }; add element inet felis s_bbb-6 { fd00::2 }") ||
		!strings.HasPrefix(got[1], "replace chain inet felis pol-in-default/allow-web ") {
		t.Fatalf("first member of a family: want add set s_bbb-6 then replace pol-in-default/allow-web, got:\n%s", Script(ops))
	}
	step(t, "set gains a family", k, f, next, ops)
	desired = next

	// One policy rule changed: exactly one chain rewrite.
	snap.Policies[0].Inbound[0].DstPorts = []snapshot.PortRange{{Min: 8443, Max: 8443}}
	next = mustRender(t, snap)
	ops = Plan(next, &desired)
	if len(ops) != 1 || ops[0].Verb != ReplaceChain || ops[0].Name != "pol-in-default/allow-web" {
		t.Fatalf("one rule changed: want one replace of pol-in-default/allow-web, got:\n%s", Script(ops))
	}
	step(t, "chain rewritten", k, f, next, ops)
	desired = next

	// An endpoint removed: map elements, its chains, and now-unused profile chains go.
	snap.Endpoints = snap.Endpoints[:1]
	snap.Endpoints[0].Ingress.Tiers = snap.Endpoints[0].Ingress.Tiers[1:]
	next = mustRender(t, snap)
	ops = Plan(next, &desired)
	step(t, "endpoint removed", k, f, next, ops)
	desired = next

	// Everything removed but the base structure, then the full fixture again.
	empty := mustRender(t, snapshot.Snapshot{})
	step(t, "emptied", k, f, empty, Plan(empty, &desired))
	full := mustRender(t, fixture.Snapshot())
	step(t, "refilled", k, f, full, Plan(full, &empty))
}

// TestKernelDriftRepair edits the table behind the applier's back, as an operator with the
// nft CLI would, and checks that a resync restores exactly what was changed.
func TestKernelDriftRepair(t *testing.T) {
	k := newKernel(t)
	ctx := context.Background()
	a := NewApplier(k)
	desired := mustRender(t, fixture.Snapshot())
	if _, err := a.Sync(ctx, desired); err != nil {
		t.Fatal(err)
	}

	// A second client deletes a set element, one rule of a chain, and a map element.
	conn, err := gnft.New(gnft.WithNetNSFd(k.opts.netnsFd))
	if err != nil {
		t.Fatal(err)
	}
	tbl := &gnft.Table{Family: gnft.TableFamilyINet, Name: render.TableName}
	set := &gnft.Set{Table: tbl, Name: "s_bbb-4", Interval: true, KeyType: gnft.TypeIPAddr}
	if err := conn.SetDeleteElements(set, intervalElements(netip.MustParsePrefix("10.0.0.2/32"))); err != nil {
		t.Fatal(err)
	}
	chain := &gnft.Chain{Table: tbl, Name: "pol-in-hep-web"}
	rules, err := conn.GetRules(tbl, chain)
	if err != nil || len(rules) < 2 {
		t.Fatalf("rules of %s: %v, %v", chain.Name, rules, err)
	}
	if err := conn.DelRule(rules[1]); err != nil {
		t.Fatal(err)
	}
	if err := conn.SetDeleteElements(nftMap(tbl, render.MapWorkloadIngress, 0), nftMapElements([]render.MapElement{{Interface: "cali2222bbbb", Chain: "wl-in-cali2222bbbb"}})); err != nil {
		t.Fatal(err)
	}
	if err := conn.Flush(); err != nil {
		t.Fatalf("drift batch: %v", err)
	}

	// The hot path does not see it (it trusts what it committed)...
	if ops, err := a.Plan(desired); err != nil || len(ops) != 0 {
		t.Fatalf("hot-path plan = %v, %v; want empty", ops, err)
	}
	// ...a resync does, and repairs exactly the three edits.
	if err := a.Resync(ctx); err != nil {
		t.Fatal(err)
	}
	ops, err := a.Plan(desired)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"add element inet felis s_bbb-4 { 10.0.0.2 }",
		fmt.Sprintf("replace chain inet felis pol-in-hep-web # 3 rules, hash %s", chainHash(desired, "pol-in-hep-web")),
		`add element inet felis wl-in { "cali2222bbbb" : goto wl-in-cali2222bbbb }`,
	}
	if diff := cmp.Diff(want, opStrings(ops)); diff != "" {
		t.Fatalf("repair ops (-want +got):\n%s", diff)
	}
	if err := a.Apply(ctx, ops); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(withoutRules(desired), observeString(t, k)); diff != "" {
		t.Fatalf("after repair (-want +got):\n%s", diff)
	}
}

// TestKernelFailedBatchChangesNothing sends a batch whose last op is invalid (a rule
// referencing a missing set) and checks the kernel and the fake both keep their state.
func TestKernelFailedBatchChangesNothing(t *testing.T) {
	k := newKernel(t)
	f := NewFake()
	ctx := context.Background()
	desired := mustRender(t, fixture.Snapshot())
	step(t, "full sync", k, f, desired, Plan(desired, nil))
	before := observeString(t, k)

	bad := render.Chain{Name: "bad", Level: render.LevelPolicy, Rules: []render.Rule{{Stmts: []render.Stmt{render.AddrSet{Family: 4, Set: "missing-4"}, render.Accept}}}}
	bad.Hash = render.ChainHash(bad)
	ops := []Op{
		{Verb: AddSetElements, Name: "s_bbb-4", Set: &desired.Sets[8], Elements: []render.Element{{Prefix: netip.MustParsePrefix("10.9.9.9/32")}}},
		{Verb: AddChain, Name: "bad", Chain: &bad},
	}
	if desired.Sets[8].Name != "s_bbb-4" {
		t.Fatalf("fixture changed: set 8 is %s", desired.Sets[8].Name)
	}
	err := k.Apply(ctx, ops)
	if err == nil {
		t.Fatal("kernel accepted a rule referencing a missing set")
	}
	if want := "kernel rejected op 1 (add chain inet felis bad"; !strings.Contains(err.Error(), want) || !errors.Is(err, unix.ENOENT) {
		t.Fatalf("kernel error = %v; want it to contain %q and wrap ENOENT", err, want)
	}
	if err := f.Apply(ctx, ops); err == nil {
		t.Fatal("fake accepted a rule referencing a missing set")
	}
	if diff := cmp.Diff(before, observeString(t, k)); diff != "" {
		t.Fatalf("kernel changed after a failed batch (-before +after):\n%s", diff)
	}
	if diff := cmp.Diff(before, observeString(t, f)); diff != "" {
		t.Fatalf("fake changed after a failed batch (-before +after):\n%s", diff)
	}
	// A rejected message that is large (thousands of elements): the error still names it.
	var many []render.Element
	for i := range 3000 {
		many = append(many, render.Element{Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 200, byte(i >> 8), byte(i)}), 32)})
	}
	err = k.Apply(ctx, []Op{{Verb: DeleteSetElements, Name: "s_bbb-4", Set: &desired.Sets[8], Elements: many}})
	if err == nil || !strings.Contains(err.Error(), "kernel rejected op 0 (delete element inet felis s_bbb-4") || !errors.Is(err, unix.ENOENT) {
		t.Fatalf("deleting 3000 missing elements: err = %v, want op 0 rejected with ENOENT", err)
	}

	// The connection is still usable.
	if err := k.Apply(ctx, []Op{{Verb: AddSetElements, Name: "s_bbb-4", Set: &desired.Sets[8], Elements: []render.Element{{Prefix: netip.MustParsePrefix("10.9.9.9/32")}}}}); err != nil {
		t.Fatalf("apply after a failed batch: %v", err)
	}
}

// TestKernelIntervalEdges round-trips interval sets at the edges of the address space and
// with adjacent prefixes, which the kernel stores as shared or missing end markers.
func TestKernelIntervalEdges(t *testing.T) {
	k := newKernel(t)
	f := NewFake()
	members := func(ps ...string) []snapshot.Member {
		var out []snapshot.Member
		for _, p := range ps {
			out = append(out, snapshot.Member{Prefix: netip.MustParsePrefix(p)})
		}
		return out
	}
	s := snapshot.Snapshot{IPSets: []snapshot.IPSet{
		{ID: "s:all", Type: snapshot.IPSetNet, Members: members("0.0.0.0/0", "::/0")},
		{ID: "s:edges", Type: snapshot.IPSetNet, Members: members("0.0.0.0/32", "10.0.0.0/25", "10.0.0.128/25", "10.0.1.0/24",
			"128.0.0.0/2", "255.255.255.255/32", "::/128", "fd00::/64", "fd00:0:0:1::/64", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128")},
	}}
	desired := mustRender(t, s)
	step(t, "edges", k, f, desired, Plan(desired, nil))

	// Remove one of two adjacent prefixes: the shared boundary must survive for the other.
	s.IPSets[1].Members = members("0.0.0.0/32", "10.0.0.128/25", "10.0.1.0/24", "128.0.0.0/2", "255.255.255.255/32", "::/128", "fd00:0:0:1::/64")
	next := mustRender(t, s)
	step(t, "adjacent removed", k, f, next, Plan(next, &desired))
}

// TestKernelFakeAgreeOnEdgeOps applies the same odd batches to the kernel and the fake: both
// must accept or reject each one, and hold the same state afterwards.
func TestKernelFakeAgreeOnEdgeOps(t *testing.T) {
	k := newKernel(t)
	f := NewFake()
	ctx := context.Background()
	desired := mustRender(t, fixture.Snapshot())
	step(t, "full sync", k, f, desired, Plan(desired, nil))
	set := &desired.Sets[8] // s_bbb-4
	host := func(s string) []render.Element { return []render.Element{{Prefix: netip.MustParsePrefix(s)}} }
	ret := render.Chain{Name: "extra", Level: render.LevelPolicy, Rules: []render.Rule{{Stmts: []render.Stmt{render.Return}}}}
	ret.Hash = render.ChainHash(ret)
	tests := []struct {
		name   string
		ops    []Op
		reject bool
	}{
		{"re-adding an existing element is a no-op", []Op{{Verb: AddSetElements, Name: set.Name, Set: set, Elements: host("10.0.0.1/32")}}, false},
		{"deleting a missing element fails", []Op{{Verb: DeleteSetElements, Name: set.Name, Set: set, Elements: host("10.0.0.77/32")}}, true},
		{"an interval overlapping another fails", []Op{{Verb: AddSetElements, Name: "s_aaa-4", Set: &desired.Sets[6], Elements: host("10.0.1.0/25")}}, true},
		{"a map key bound to another chain fails", []Op{{Verb: AddMapElements, Name: render.MapWorkloadIngress, MapElements: []render.MapElement{{Interface: "cali2222bbbb", Chain: "wl-in-cali1111aaaa"}}}}, true},
		{"deleting a set a rule uses fails", []Op{{Verb: DeleteSet, Name: set.Name}}, true},
		{"deleting a chain a map uses fails", []Op{{Verb: DeleteChain, Name: "wl-in-cali2222bbbb"}}, true},
		{"add and delete a chain in one batch", []Op{{Verb: AddChain, Name: "extra", Chain: &ret}, {Verb: DeleteChain, Name: "extra"}}, false},
		{"flush then refill a set", []Op{{Verb: FlushSet, Name: set.Name, Set: set}, {Verb: AddSetElements, Name: set.Name, Set: set, Elements: set.Elements}}, false},
	}
	for _, tt := range tests {
		kerr, ferr := k.Apply(ctx, tt.ops), f.Apply(ctx, tt.ops)
		if (kerr != nil) != tt.reject || (ferr != nil) != tt.reject {
			t.Errorf("%s: kernel err = %v, fake err = %v; want rejected = %v", tt.name, kerr, ferr, tt.reject)
		}
		if diff := cmp.Diff(observeString(t, k), observeString(t, f)); diff != "" {
			t.Fatalf("%s: kernel and fake differ afterwards (-kernel +fake):\n%s", tt.name, diff)
		}
	}
}
