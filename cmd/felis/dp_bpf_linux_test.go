//go:build linux

package main

import (
	"context"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	gnft "github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/felis-dev/felis/appliers/iptables"
	nftrender "github.com/felis-dev/felis/appliers/nftables/render"
	"github.com/felis-dev/felis/snapshot"
)

// TestSwitchingDataplanesRemovesBPFState: in a throwaway network namespace (entered by the
// test's locked thread) the bpf dataplane attaches to a veth and pins its maps and links;
// building the nftables dataplane removes every felis link and pin; the iptables and
// nftables dataplanes' state is removed again when the bpf dataplane is built.
func TestSwitchingDataplanesRemovesBPFState(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a network namespace, attaches bpf programs")
	}
	ctx := context.Background()
	runtime.LockOSThread() // unlocked by the deferred return to the original namespace
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("felis-bpfsw-%d-%x", os.Getpid(), rand.Uint32())
	ns, err := netns.NewNamed(name)
	if err != nil {
		netns.Set(orig)
		t.Fatal(err)
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			panic(err)
		}
		orig.Close()
		ns.Close()
		netns.DeleteNamed(name)
		runtime.UnlockOSThread()
	}()
	pinRoot := t.TempDir()
	if err := unix.Mount("bpf", pinRoot, "bpf", 0, "mode=0700"); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(pinRoot, unix.MNT_DETACH)
	t.Setenv("FELIS_BPF_PIN_ROOT", pinRoot)
	t.Setenv("FELIS_BPF_ATTACH", "")

	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "cali0"}, PeerName: "peer0"}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"cali0", "peer0"} {
		l, err := netlink.LinkByName(n)
		if err != nil {
			t.Fatal(err)
		}
		if err := netlink.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	snap := &snapshot.Snapshot{
		Node: "n1",
		Endpoints: []snapshot.Endpoint{{ID: "ns/ep", Interface: "cali0", Addrs: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/32")},
			Ingress: snapshot.Direction{Tiers: []snapshot.TierPolicies{{Tier: "default", DefaultAction: snapshot.Deny}}}}},
	}
	build := func(mode string) {
		t.Helper()
		dp, err := policyDataplanes[mode]()
		if err != nil {
			t.Fatalf("building %s: %v", mode, err)
		}
		if _, err := dp.Sync(ctx, snap, true); err != nil {
			t.Fatalf("%s sync: %v", mode, err)
		}
	}
	tcx := func() int {
		t.Helper()
		l, err := netlink.LinkByName("cali0")
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, at := range []ebpf.AttachType{ebpf.AttachTCXIngress, ebpf.AttachTCXEgress} {
			res, err := link.QueryPrograms(link.QueryOptions{Target: l.Attrs().Index, Attach: at})
			if err != nil {
				t.Fatalf("query TCX programs: %v", err)
			}
			n += len(res.Programs)
		}
		return n
	}
	pins := func() []string {
		t.Helper()
		var out []string
		filepath.WalkDir(pinRoot, func(p string, d fs.DirEntry, err error) error {
			// maps.debug and progs.debug come with every bpffs mount.
			if err == nil && p != pinRoot && d.Name() != "maps.debug" && d.Name() != "progs.debug" {
				out = append(out, p)
			}
			return nil
		})
		return out
	}
	// nftTables lists felis's nftables tables (policy and services) that exist.
	nftTables := func() []string {
		t.Helper()
		c, err := gnft.New()
		if err != nil {
			t.Fatal(err)
		}
		tables, err := c.ListTablesOfFamily(gnft.TableFamilyINet)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, tb := range tables {
			if tb.Name == "felis" || strings.HasPrefix(tb.Name, "felis-svc") {
				out = append(out, tb.Name)
			}
		}
		slices.Sort(out)
		return out
	}

	build("bpf")
	if n, p := tcx(), pins(); n != 2 || len(p) == 0 {
		t.Fatalf("after the bpf sync: %d TCX programs on cali0 (want 2), pins %q", n, p)
	}
	build("nftables")
	if n, p := tcx(), pins(); n != 0 || len(p) != 0 {
		t.Fatalf("after switching to nftables: %d TCX programs on cali0, pins left %q", n, p)
	}
	var want []string
	for _, id := range nftrender.Tables {
		want = append(want, id.Name())
	}
	slices.Sort(want)
	if got := nftTables(); !slices.Equal(got, want) {
		t.Fatalf("the nftables dataplane made tables %q, want %q", got, want)
	}
	build("bpf")
	if got := nftTables(); len(got) != 0 {
		t.Fatalf("after switching to bpf: tables %q remain", got)
	}
	build("iptables")
	if n, p := tcx(), pins(); n != 0 || len(p) != 0 {
		t.Fatalf("after switching to iptables: %d TCX programs on cali0, pins left %q", n, p)
	}
	if iptablesChains(ctx, t, name) == 0 {
		t.Fatal("the iptables dataplane made no felis chains")
	}
	t.Setenv("FELIS_BPF_ATTACH", "clsact")
	build("bpf")
	if n := iptablesChains(ctx, t, name); n != 0 {
		t.Fatalf("after switching to bpf: %d felis iptables chains remain", n)
	}
	if n := clsactFilters(t); n != 2 {
		t.Fatalf("bpf with clsact: %d felis filters on cali0, want 2", n)
	}
	build("nftables")
	if n, p := clsactFilters(t), pins(); n != 0 || len(p) != 0 {
		t.Fatalf("after switching from clsact bpf to nftables: %d filters, pins left %q", n, p)
	}
}

// iptablesChains counts felis's chains and hook rules in both iptables flavours of the named
// network namespace.
func iptablesChains(ctx context.Context, t *testing.T, ns string) int {
	t.Helper()
	n := 0
	for _, b := range []string{iptables.BackendLegacy, iptables.BackendNFT} {
		k, err := iptables.NewKernel(ctx, b, iptables.WithNetNS(ns))
		if err != nil {
			continue
		}
		st, err := iptables.Observe(ctx, k)
		if err != nil {
			t.Fatalf("observing iptables-%s: %v", b, err)
		}
		n += len(st.Chains) + len(st.Hooks)
	}
	return n
}

// clsactFilters counts the cls_bpf filters on cali0's clsact hooks.
func clsactFilters(t *testing.T) int {
	t.Helper()
	l, err := netlink.LinkByName("cali0")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
		fs, _ := netlink.FilterList(l, parent)
		for _, f := range fs {
			if _, ok := f.(*netlink.BpfFilter); ok {
				n++
			}
		}
	}
	return n
}
