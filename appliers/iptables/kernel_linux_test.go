//go:build linux

package iptables

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"github.com/felis-dev/felis/appliers/internal/fixture"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/felis-dev/felis/snapshot"
)

// newNetNS creates a throwaway network namespace for a kernel test and removes it after.
func newNetNS(t testing.TB) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("kernel test: needs root (it creates a network namespace)")
	}
	for _, bin := range []string{"ip", "ipset", "iptables-legacy-restore", "iptables-nft-restore", "ip6tables-legacy-restore", "ip6tables-nft-restore"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("kernel test: %s missing (tools/install-deps.sh installs iptables and ipset)", bin)
		}
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := "felis-ipt-" + hex.EncodeToString(b)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	return name
}

func newTestKernel(t testing.TB, backend string) *Kernel {
	t.Helper()
	k, err := NewKernel(context.Background(), backend, WithNetNS(newNetNS(t)))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func sh(t testing.TB, k *Kernel, stdin string, args ...string) {
	t.Helper()
	if _, err := k.run(context.Background(), []byte(stdin), args[0], args[1:]...); err != nil {
		t.Fatal(err)
	}
}

// TestKernelMatchesFake runs the same script against the kernel (both flavours) and the fake:
// what each observes afterwards must be the committed state, and the follow-ups minimal.
func TestKernelMatchesFake(t *testing.T) {
	for _, backend := range []string{BackendLegacy, BackendNFT} {
		t.Run(backend, func(t *testing.T) {
			ctx := context.Background()
			k := newTestKernel(t, backend)
			fake := NewFake()
			snap := fixture.Snapshot()
			desired := mustRender(t, snap)
			for name, r := range map[string]Runner{"kernel": k, "fake": fake} {
				ops := syncAndCheck(t, r, desired)
				if len(ops) == 0 {
					t.Fatalf("%s: nothing applied", name)
				}
				st, err := Observe(ctx, r)
				if err != nil {
					t.Fatal(err)
				}
				if diff := stateDiff(StateOf(desired), st); diff != "" {
					t.Fatalf("%s: observed (-committed +observed):\n%s", name, diff)
				}
			}

			a := NewApplier(k)
			if err := a.Resync(ctx); err != nil {
				t.Fatal(err)
			}
			if ops, err := a.Plan(desired); err != nil || len(ops) != 0 {
				t.Fatalf("second plan: %v %s", err, opsText(ops))
			}
			step := func(what string, s snapshot.Snapshot, want map[Verb]int) {
				t.Helper()
				d := mustRender(t, s)
				ops, err := a.Sync(ctx, d)
				if err != nil {
					t.Fatalf("%s: %v", what, err)
				}
				if diff := cmp.Diff(want, verbs(ops)); want != nil && diff != "" {
					t.Errorf("%s: ops (-want +got):\n%s\n%s", what, diff, opsText(ops))
				}
				st, err := Observe(ctx, k)
				if err != nil {
					t.Fatal(err)
				}
				if pending := Plan(d, st); len(pending) != 0 {
					t.Errorf("%s: kernel differs afterwards:\n%s", what, opsText(pending))
				}
			}
			member := fixture.Snapshot()
			member.IPSets[2].Members = append(member.IPSets[2].Members, snapshot.Member{Prefix: netip.MustParsePrefix("10.0.0.3/32")})
			step("one set member", member, map[Verb]int{SetAdd: 1})
			rule := fixture.Snapshot()
			rule.IPSets = member.IPSets
			rule.Policies[0].Inbound[0].DstPorts[0].Max = 81
			step("one chain", rule, map[Verb]int{ChainWrite: 1})
			kind := fixture.Snapshot()
			kind.IPSets = member.IPSets
			kind.Policies = rule.Policies
			kind.IPSets[2].Members = append(kind.IPSets[2].Members, snapshot.Member{Prefix: netip.MustParsePrefix("10.9.0.0/16")})
			step("set type ip to net (a new set)", kind, map[Verb]int{SetCreate: 1, ChainWrite: 1, SetDestroy: 1})
			step("back", snap, nil)
			size := fixture.Snapshot()
			size.Config.IPSetsMaxSize = 5000
			step("set size (swap)", size, map[Verb]int{SetReplace: len(desired.Sets)})
			step("back again", snap, map[Verb]int{SetReplace: len(desired.Sets)})

			// Drift: someone deletes a hook rule and a set member; a resync restores exactly those.
			st, err := Observe(ctx, k)
			if err != nil {
				t.Fatal(err)
			}
			hook := st.Hooks[ChainKey{Family: 6, Table: "filter", Chain: "FORWARD"}][1]
			sh(t, k, "", "ip6tables-"+backend, "-w", "-D", "FORWARD", "2")
			set := desired.Sets[0]
			sh(t, k, "", "ipset", "del", set.Name, set.Members[0])
			if err := a.Resync(ctx); err != nil {
				t.Fatal(err)
			}
			ops, err := a.Sync(ctx, desired)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(map[Verb]int{SetAdd: 1, HookWrite: 1}, verbs(ops)); diff != "" {
				t.Errorf("drift repair (deleted %q): (-want +got):\n%s\n%s", hook.Line, diff, opsText(ops))
			}
			st, _ = Observe(ctx, k)
			if diff := stateDiff(StateOf(desired), st); diff != "" {
				t.Errorf("after repair (-committed +observed):\n%s", diff)
			}

			// Detection sees felis's own rules in this flavour.
			if got := k.detect(ctx); got != backend {
				t.Errorf("detect = %s, want %s", got, backend)
			}

			if err := Remove(ctx, k); err != nil {
				t.Fatal(err)
			}
			st, _ = Observe(ctx, k)
			if diff := stateDiff(NewState(), st); diff != "" {
				t.Errorf("after Remove (-empty +observed):\n%s", diff)
			}
		})
	}
}

// TestKernelCleanup removes felis's state of both flavours (as the nftables mode does at
// start) and keeps foreign rules; RemoveNFTablesTable removes the nftables mode's tables.
func TestKernelCleanup(t *testing.T) {
	ctx := context.Background()
	ns := newNetNS(t)
	if err := Cleanup(ctx, WithNetNS(ns)); err != nil {
		t.Fatalf("Cleanup with nothing to remove: %v", err)
	}
	desired := mustRender(t, fixture.Snapshot())
	for _, backend := range []string{BackendLegacy, BackendNFT} {
		k, err := NewKernel(ctx, backend, WithNetNS(ns))
		if err != nil {
			t.Fatal(err)
		}
		foreign := "*filter\n:KUBE-X - [0:0]\n-A INPUT -j KUBE-X\nCOMMIT\n"
		if err := k.Restore(ctx, 4, foreign); err != nil {
			t.Fatal(err)
		}
		st, err := Observe(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		if err := Apply(ctx, k, Plan(desired, st)); err != nil {
			t.Fatal(err)
		}
	}
	legacy, _ := NewKernel(ctx, BackendLegacy, WithNetNS(ns))
	if err := legacy.RemoveOtherBackend(ctx); err != nil {
		t.Fatal(err)
	}
	nftk, _ := NewKernel(ctx, BackendNFT, WithNetNS(ns))
	if st, _ := Observe(ctx, nftk); len(st.Chains)+len(st.Hooks) != 0 || len(st.Sets) == 0 {
		t.Errorf("after RemoveOtherBackend the nft flavour holds %d chains, %d hooked chains and %d sets; want rules gone, sets kept", len(st.Chains), len(st.Hooks), len(st.Sets))
	}
	if st, _ := Observe(ctx, legacy); len(st.Chains) == 0 {
		t.Error("RemoveOtherBackend removed the legacy flavour's chains too")
	}
	if err := Cleanup(ctx, WithNetNS(ns)); err != nil {
		t.Fatal(err)
	}
	for _, backend := range []string{BackendLegacy, BackendNFT} {
		k, _ := NewKernel(ctx, backend, WithNetNS(ns))
		st, err := Observe(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		if diff := stateDiff(NewState(), st); diff != "" {
			t.Errorf("%s after Cleanup (-empty +observed):\n%s", backend, diff)
		}
		save, _ := k.Save(ctx, 4)
		if !strings.Contains(save, "-A INPUT -j KUBE-X") {
			t.Errorf("%s: Cleanup removed a foreign rule:\n%s", backend, save)
		}
	}

	sh(t, &Kernel{netns: ns}, "", "nft", "add", "table", "inet", "felis")
	sh(t, &Kernel{netns: ns}, "", "nft", "add", "table", "inet", "felis-svc")
	sh(t, &Kernel{netns: ns}, "", "nft", "add", "table", "inet", "felis-other") // not felis's
	f, err := os.Open("/run/netns/" + ns)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := RemoveNFTablesTable(int(f.Fd())); err != nil {
		t.Fatal(err)
	}
	out, _ := (&Kernel{netns: ns}).run(ctx, nil, "nft", "list", "tables")
	if strings.Contains(out, "inet felis\n") || strings.Contains(out, "inet felis-svc\n") || !strings.Contains(out, "inet felis-other\n") {
		t.Errorf("after RemoveNFTablesTable: want inet felis and felis-svc gone, inet felis-other kept:\n%s", out)
	}
	if err := RemoveNFTablesTable(int(f.Fd())); err != nil {
		t.Errorf("second removal (no table): %v", err)
	}
}

// TestKernelServices loads the services translation (DNAT, statistic, recent, the reject
// mark and REJECT) into both flavours: the kernel accepts every rule, and observes it back.
func TestKernelServices(t *testing.T) {
	for _, backend := range []string{BackendLegacy, BackendNFT} {
		t.Run(backend, func(t *testing.T) {
			syncAndCheck(t, newTestKernel(t, backend), mustRender(t, fixture.Services()))
		})
	}
}
