package netlink

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/felis-dev/felis/appliers/netlink/render"
	"github.com/felis-dev/felis/snapshot"
)

// testKernel is a Kernel the scenario can also change behind the applier's back.
type testKernel interface {
	Kernel
	AddInterface(name string, addrs ...netip.Prefix) error
	DeleteInterface(name string) error
	SetMTU(name string, mtu int) error
	SetUp(name string, up bool) error
	AddRoute(r render.Route) error
	DeleteRoute(r render.Route) error
	HasRoute(r render.Route) bool
}

var (
	pfx  = netip.MustParsePrefix
	addr = netip.MustParseAddr
)

// scenarioSnapshot is a dual-stack node: local pods calia and calib, local blocks (blackholes),
// remote blocks over VXLAN and over the underlay, a remote tunnel address.
func scenarioSnapshot() snapshot.Snapshot {
	return snapshot.Snapshot{
		Node: "node1",
		Config: snapshot.Config{
			NodeIPv4: pfx("192.168.56.1/24"), NodeIPv6: pfx("fd00:56::1/64"),
			VXLANEnabled: true, VXLANVNI: 4096, VXLANPort: 4789, VXLANMTU: 1400,
			VXLANTunnelAddr: addr("10.65.0.1"), VXLANTunnelMAC: "66:aa:00:00:00:01",
			VXLANEnabledV6: true, VXLANMTUV6: 1380,
			VXLANTunnelAddrV6: addr("fd10::1"), VXLANTunnelMACV6: "66:bb:00:00:00:01",
			RouteProtocol: 80,
		},
		Endpoints: []snapshot.Endpoint{
			{ID: "ns/a", Interface: "calia", Addrs: []netip.Prefix{pfx("10.65.0.2/32")}},
			{ID: "ns/b", Interface: "calib", Addrs: []netip.Prefix{pfx("10.65.0.3/32"), pfx("fd10::3/128")}},
		},
		Routes: []snapshot.Route{
			{Dst: pfx("10.65.0.0/26"), Type: snapshot.RouteBlackhole},
			{Dst: pfx("10.65.0.2/32"), Type: snapshot.RouteWorkload, Interface: "calia"},
			{Dst: pfx("10.65.0.3/32"), Type: snapshot.RouteWorkload, Interface: "calib"},
			{Dst: pfx("10.65.1.0/26"), Type: snapshot.RouteVXLAN, Interface: "vxlan.calico", Gateway: addr("10.65.1.1"), Node: "node2"},
			{Dst: pfx("10.65.2.0/26"), Type: snapshot.RouteDirect, Gateway: addr("192.168.56.3"), Node: "node3"},
			{Dst: pfx("10.65.9.9/32"), Type: snapshot.RouteHost, Interface: "vxlan.calico", Node: "node2"},
			{Dst: pfx("fd10::/122"), Type: snapshot.RouteBlackhole},
			{Dst: pfx("fd10::3/128"), Type: snapshot.RouteWorkload, Interface: "calib"},
			{Dst: pfx("fd10:0:0:1::/122"), Type: snapshot.RouteVXLAN, Interface: "vxlan-v6.calico", Gateway: addr("fd10:0:0:1::1"), Node: "node2"},
			{Dst: pfx("fd10:0:0:2::/122"), Type: snapshot.RouteDirect, Gateway: addr("fd00:56::3"), Node: "node3"},
		},
		VTEPs: []snapshot.VTEP{
			{Node: "node2", TunnelIP: addr("10.65.1.1"), MAC: "66:aa:00:00:00:02", ParentIP: addr("192.168.56.2")},
			{Node: "node2", TunnelIP: addr("fd10:0:0:1::1"), MAC: "66:bb:00:00:00:02", ParentIP: addr("fd00:56::2"), IPv6: true},
		},
	}
}

// foreignRoute belongs to someone else (protocol static) and must survive everything.
var foreignRoute = render.Route{Table: render.TableMain, Dst: pfx("10.99.0.0/24"), Type: render.Unicast, Gateway: addr("192.168.56.254"), Protocol: 4}

// scenario drives an Applier over k through a node's life and returns a transcript (ops and
// observed state after each step) that must be the same for the Fake and the real kernel.
func scenario(t *testing.T, k testKernel) string {
	t.Helper()
	ctx := context.Background()
	var tr strings.Builder
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	must("uplink", k.AddInterface("eth0", pfx("192.168.56.1/24"), pfx("fd00:56::1/64")))
	must("calia", k.AddInterface("calia"))
	must("calib", k.AddInterface("calib"))
	must("foreign route", k.AddRoute(foreignRoute))

	a := New(k, Options{Protocol: 80})
	rendered := func(s snapshot.Snapshot) render.State {
		t.Helper()
		st, err := render.Render(s, render.Options{})
		must("render", err)
		return st
	}
	// check records a step in the transcript: its ops (sysctl writes only when asked: their
	// number depends on the kernel's defaults), pending ops, failures, the observed state.
	check := func(step string, res Result, sysctlOps bool) {
		t.Helper()
		fmt.Fprintf(&tr, "== %s\n", step)
		for _, op := range res.Ops {
			if _, ok := op.Object.(render.Sysctl); ok && !sysctlOps {
				continue
			}
			fmt.Fprintf(&tr, "op %s\n", op)
		}
		for _, op := range res.Pending {
			fmt.Fprintf(&tr, "pending %s\n", op)
		}
		for _, e := range res.Failed {
			fmt.Fprintf(&tr, "failed %s\n", e)
		}
		obs, err := a.Observe(ctx)
		must(step+": observe", err)
		fmt.Fprintf(&tr, "-- observed\n%s", obs)
		if !k.HasRoute(foreignRoute) {
			t.Errorf("%s: the foreign route %s is gone", step, foreignRoute)
		}
	}
	// same asserts that the kernel now holds exactly desired.
	same := func(step string, want render.State) {
		t.Helper()
		obs, err := a.Observe(ctx)
		must(step+": observe", err)
		if d := cmp.Diff(want.String(), obs.String()); d != "" {
			t.Errorf("%s: observed != desired (-want +got):\n%s", step, d)
		}
		if ops := render.Plan(want, obs); len(ops) != 0 {
			t.Errorf("%s: plan(desired, observed) not empty:\n%s", step, opList(ops))
		}
	}

	// 1. First sync from a clean node: everything is created; the kernel then holds exactly
	// the desired state, and a second plan is empty.
	snap := scenarioSnapshot()
	want := rendered(snap)
	res, err := a.Sync(ctx, want)
	must("first sync", err)
	if len(res.Pending) > 0 {
		t.Errorf("first sync: pending %v", res.Pending)
	}
	check("first sync", res, false)
	same("first sync", want)
	res, err = a.Sync(ctx, want)
	must("second sync", err)
	if len(res.Ops) != 0 {
		t.Errorf("second sync executed ops, want none:\n%s", opList(res.Ops))
	}

	// 2. Drift: a felis route deleted and the device MTU changed by hand; the hot path does
	// not see it, Resync repairs exactly those two.
	must("drift: delete route", k.DeleteRoute(want.Routes[slices.IndexFunc(want.Routes, func(r render.Route) bool { return r.Dst == pfx("10.65.1.0/26") })]))
	must("drift: mtu", k.SetMTU(render.VXLANDevice, 1300))
	res, err = a.Resync(ctx)
	must("resync", err)
	wantOps(t, "resync after drift", res, []string{
		"ip link set vxlan.calico mtu 1400",
		"ip route add 10.65.1.0/26 via 10.65.1.1 dev vxlan.calico proto 80 onlink",
	})
	check("resync after drift", res, true)
	same("resync after drift", want)

	// 3. One more remote block: one route op.
	snap.Routes = append(snap.Routes, snapshot.Route{Dst: pfx("10.65.3.0/26"), Type: snapshot.RouteVXLAN, Gateway: addr("10.65.1.1"), Node: "node2"})
	want = rendered(snap)
	res, err = a.Sync(ctx, want)
	must("block sync", err)
	wantOps(t, "one block added", res, []string{"ip route add 10.65.3.0/26 via 10.65.1.1 dev vxlan.calico proto 80 onlink"})
	check("one block added", res, true)

	// 4. A pod whose interface is not there yet: its route and sysctls wait, the rest applies.
	snap.Endpoints = append(snap.Endpoints, snapshot.Endpoint{ID: "ns/c", Interface: "calic", Addrs: []netip.Prefix{pfx("10.65.0.4/32")}})
	snap.Routes = append(snap.Routes,
		snapshot.Route{Dst: pfx("10.65.0.4/32"), Type: snapshot.RouteWorkload, Interface: "calic"},
		snapshot.Route{Dst: pfx("10.65.4.0/26"), Type: snapshot.RouteDirect, Gateway: addr("192.168.56.4"), Node: "node4"})
	want = rendered(snap)
	res, err = a.Sync(ctx, want)
	must("pending sync", err)
	if len(res.Pending) != 6 || len(res.Failed) != 0 {
		t.Errorf("pod not wired: %d pending (want 6: 5 sysctls, 1 route), failed %v", len(res.Pending), res.Failed)
	}
	check("pod not wired yet", res, true)
	if !k.HasRoute(render.Route{Table: render.TableMain, Dst: pfx("10.65.4.0/26"), Type: render.Unicast, Gateway: addr("192.168.56.4"), Protocol: 80}) {
		t.Errorf("pod not wired: the unrelated route 10.65.4.0/26 was held up")
	}
	must("calic", k.AddInterface("calic"))
	res, err = a.Sync(ctx, want)
	must("wired sync", err)
	if len(res.Ops) != 6 || len(res.Pending) != 0 {
		t.Errorf("pod wired: %d ops, %d pending; want 6 and 0", len(res.Ops), len(res.Pending))
	}
	check("pod wired", res, true)
	same("pod wired", want)

	// 5. A desired route whose destination someone else's route holds: refused (EEXIST), the
	// foreign route stays, the error names op and errno.
	snap2 := snap
	snap2.Routes = append(slices.Clone(snap.Routes), snapshot.Route{Dst: foreignRoute.Dst, Type: snapshot.RouteBlackhole})
	res, err = a.Sync(ctx, rendered(snap2))
	if err == nil || !strings.Contains(err.Error(), "ip route add blackhole 10.99.0.0/24 proto 80: EEXIST") {
		t.Errorf("conflicting route: error %v, want one naming the op and EEXIST", err)
	}
	check("conflict with a foreign route", res, true)
	res, err = a.Sync(ctx, want) // observes again after the failure
	must("sync after conflict", err)
	check("back to desired", res, true)
	same("back to desired", want)

	// 5b. Pod b deleted and the IPv6 local block released: IPv4 and IPv6 route deletes (the
	// sysctls stay until the interface goes).
	snap.Endpoints = slices.DeleteFunc(snap.Endpoints, func(e snapshot.Endpoint) bool { return e.Interface == "calib" })
	snap.Routes = slices.DeleteFunc(snap.Routes, func(r snapshot.Route) bool {
		return r.Interface == "calib" || r.Dst == pfx("fd10::/122")
	})
	want = rendered(snap)
	res, err = a.Sync(ctx, want)
	must("pod deleted sync", err)
	wantOps(t, "pod deleted", res, []string{
		"ip route del 10.65.0.3/32 dev calib proto 80 scope link",
		"ip route del blackhole fd10::/122 proto 80",
		"ip route del fd10::3/128 dev calib proto 80",
	})
	check("pod deleted", res, true)
	same("pod deleted", want)

	// 6. VNI changed: the device is re-created, with its neighbours, FDB entries and routes.
	snap.Config.VXLANVNI = 4097
	want = rendered(snap)
	res, err = a.Sync(ctx, want)
	must("vni sync", err)
	check("VNI changed", res, true)
	same("VNI changed", want)

	// 7. VXLAN off for IPv4: the device goes, and with it everything on it.
	snap.Config.VXLANEnabled = false
	snap.Routes = slices.DeleteFunc(snap.Routes, func(r snapshot.Route) bool {
		return (r.Type == snapshot.RouteVXLAN || r.Type == snapshot.RouteHost) && r.Dst.Addr().Is4()
	})
	snap.VTEPs = snap.VTEPs[1:]
	want = rendered(snap)
	res, err = a.Sync(ctx, want)
	must("vxlan off sync", err)
	wantOps(t, "VXLAN off", res, []string{"ip link del vxlan.calico"})
	check("VXLAN off", res, true)
	same("VXLAN off", want)
	return tr.String()
}

// wantOps checks the ops a step executed.
func wantOps(t *testing.T, step string, res Result, want []string) {
	t.Helper()
	var got []string
	for _, op := range res.Ops {
		got = append(got, op.String())
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("%s: ops (-want +got):\n%s", step, d)
	}
}

func opList(ops []render.Op) string {
	var b strings.Builder
	for _, op := range ops {
		b.WriteString(op.String() + "\n")
	}
	return b.String()
}
