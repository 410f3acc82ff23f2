package netlink

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"testing"

	"github.com/google/go-cmp/cmp"
	vnl "github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/felis-dev/felis/appliers/netlink/render"
	"github.com/felis-dev/felis/diff"
)

// newTestNamespace creates a named network namespace for one test and removes it in
// t.Cleanup, whatever happens; the test's own thread never stays in it.
func newTestNamespace(t testing.TB) netns.NsHandle {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a network namespace (run the tests as root, as CI does)")
	}
	sweepStaleNamespaces(t)
	name := fmt.Sprintf("felis-nl-%d-%s", os.Getpid(), sanitize(t.Name()))
	if len(name) > 60 {
		name = name[:60]
	}
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("read current namespace: %v", err)
	}
	ns, err := netns.NewNamed(name) // switches this thread into the new namespace
	if serr := netns.Set(orig); serr != nil {
		// The thread is stuck in the test namespace: keep it locked so nothing else runs there.
		t.Fatalf("return to the original namespace: %v", serr)
	}
	orig.Close()
	runtime.UnlockOSThread()
	if err != nil {
		t.Fatalf("create namespace %s: %v", name, err)
	}
	t.Cleanup(func() {
		ns.Close()
		if err := netns.DeleteNamed(name); err != nil {
			t.Errorf("delete namespace %s: %v", name, err)
		}
	})
	return ns
}

// sweepStaleNamespaces removes namespaces left by test processes that were killed before their
// cleanup ran (a timeout, a kill -9): felis-nl-PID-... whose PID is gone.
func sweepStaleNamespaces(t testing.TB) {
	entries, err := os.ReadDir("/run/netns")
	if err != nil {
		return
	}
	for _, e := range entries {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "felis-nl-%d-", &pid); err != nil || pid == os.Getpid() {
			continue
		}
		if unix.Kill(pid, 0) == unix.ESRCH {
			if err := netns.DeleteNamed(e.Name()); err != nil {
				t.Logf("remove stale namespace %s: %v", e.Name(), err)
			}
		}
	}
}

func sanitize(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			b[i] = '-'
		}
	}
	return string(b)
}

// realKernel is the Netlink kernel of a test namespace plus the by-hand changes the scenario
// makes behind the applier's back.
type realKernel struct {
	*Netlink
}

func newRealKernel(t testing.TB) *realKernel {
	t.Helper()
	ns := newTestNamespace(t)
	k, err := NewNetlink(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	lo, err := k.h.LinkByName("lo")
	if err == nil {
		err = k.h.LinkSetUp(lo)
	}
	if err != nil {
		t.Fatalf("lo up: %v", err)
	}
	return &realKernel{Netlink: k}
}

// AddInterface creates a veth pair NAME / NAMEp (a pod's host side and its stand-in peer),
// both up, with addrs on NAME.
func (k *realKernel) AddInterface(name string, addrs ...netip.Prefix) error {
	if err := k.h.LinkAdd(&vnl.Veth{LinkAttrs: vnl.LinkAttrs{Name: name}, PeerName: name + "p"}); err != nil {
		return fmt.Errorf("ip link add %s type veth peer %sp: %w", name, name, err)
	}
	for _, n := range []string{name, name + "p"} {
		l, err := k.h.LinkByName(n)
		if err != nil {
			return err
		}
		if err := k.h.LinkSetUp(l); err != nil {
			return fmt.Errorf("ip link set %s up: %w", n, err)
		}
		if n != name {
			continue
		}
		for _, p := range addrs {
			a := &vnl.Addr{IPNet: ipNet(p)}
			if p.Addr().Is6() {
				a.Flags = unix.IFA_F_NODAD
			}
			if err := k.h.AddrAdd(l, a); err != nil {
				return fmt.Errorf("ip addr add %s dev %s: %w", p, n, err)
			}
		}
	}
	return nil
}

func (k *realKernel) DeleteInterface(name string) error {
	l, err := k.h.LinkByName(name)
	if err != nil {
		return err
	}
	return k.h.LinkDel(l)
}

func (k *realKernel) SetMTU(name string, mtu int) error {
	l, err := k.h.LinkByName(name)
	if err != nil {
		return err
	}
	return k.h.LinkSetMTU(l, mtu)
}

func (k *realKernel) SetUp(name string, up bool) error {
	l, err := k.h.LinkByName(name)
	if err != nil {
		return err
	}
	if up {
		return k.h.LinkSetUp(l)
	}
	return k.h.LinkSetDown(l)
}

func (k *realKernel) index(name string) (int, error) {
	l, err := k.h.LinkByName(name)
	if err != nil {
		return 0, err
	}
	return l.Attrs().Index, nil
}

func (k *realKernel) AddRoute(r render.Route) error {
	nr, err := toNetlinkRoute(r, k.index)
	if err != nil {
		return err
	}
	return k.h.RouteAdd(nr)
}

func (k *realKernel) DeleteRoute(r render.Route) error {
	nr, err := toNetlinkRoute(r, k.index)
	if err != nil {
		return err
	}
	return k.h.RouteDel(nr)
}

func (k *realKernel) HasRoute(r render.Route) bool {
	st, err := k.Observe(context.Background(), Query{Protocol: r.Protocol})
	if err != nil {
		return false
	}
	for _, got := range append(st.Routes, st.StrayRoutes...) {
		if got == r {
			return true
		}
	}
	return false
}

// TestScenarioOnKernel runs the scenario against the real kernel in a throwaway namespace and
// proves the Fake honest: both transcripts (ops, pending ops, failures and observed state
// after every step) must be identical.
func TestScenarioOnKernel(t *testing.T) {
	k := newRealKernel(t)
	real := scenario(t, k)
	fake := scenario(t, NewFake())
	if d := cmp.Diff(fake, real); d != "" {
		t.Errorf("real kernel and Fake disagree (-fake +real):\n%s", d)
	}
}

// TestKernelSemantics runs the Fake's errno cases against the real kernel.
func TestKernelSemantics(t *testing.T) {
	semantics(t, func(t *testing.T) testKernel { return newRealKernel(t) })
}

func TestDefaultRPFilter(t *testing.T) {
	k := newRealKernel(t)
	v, err := k.DefaultRPFilter()
	if err != nil {
		t.Fatal(err)
	}
	if v != "0" && v != "1" && v != "2" {
		t.Errorf("DefaultRPFilter() = %q, want 0, 1 or 2", v)
	}
}

// TestKernelLinkDown checks the Fake's link-down behaviour against the kernel's.
func TestKernelLinkDown(t *testing.T) {
	rv4, rv6 := linkDown(t, newRealKernel(t))
	fv4, fv6 := linkDown(t, NewFake())
	if rv4 != fv4 || rv6 != fv6 {
		t.Errorf("after link down, kept (IPv4, IPv6): kernel (%v, %v), Fake (%v, %v)", rv4, rv6, fv4, fv6)
	}
}

// TestRouteBatchErrors: route ops go out in batches acknowledged once; a failure anywhere in a
// batch (first, last, across batch boundaries) is reported for exactly that op.
func TestRouteBatchErrors(t *testing.T) {
	k := newRealKernel(t)
	ctx := context.Background()
	bh := func(i int) render.Route {
		return render.Route{Table: render.TableMain, Dst: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24), Type: render.Blackhole, Protocol: 80}
	}
	// Routes 0, 255, 256 and 599 exist already: adding them again fails with EEXIST.
	clash := map[int]bool{0: true, routeBatch - 1: true, routeBatch: true, 599: true}
	var pre []render.Op
	for i := range clash {
		pre = append(pre, render.Op{Kind: diff.Add, Object: bh(i)})
	}
	for i, err := range k.Do(ctx, pre) {
		if err != nil {
			t.Fatalf("setup %s: %v", pre[i], err)
		}
	}
	var ops []render.Op
	for i := range 600 {
		ops = append(ops, render.Op{Kind: diff.Add, Object: bh(i)})
	}
	errs := k.Do(ctx, ops)
	for i, err := range errs {
		want := error(nil)
		if clash[i] {
			want = unix.EEXIST
		}
		if !errors.Is(err, want) && !(err == nil && want == nil) {
			t.Errorf("op %d (%s): %v, want %v", i, ops[i], err, want)
		}
	}
	st, err := k.Observe(ctx, Query{Protocol: 80})
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Routes) != 600 {
		t.Errorf("%d routes in the kernel, want 600", len(st.Routes))
	}
}
