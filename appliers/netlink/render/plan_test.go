package render

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/felis-dev/felis/diff"
	"github.com/felis-dev/felis/snapshot"
)

func mustRender(t *testing.T, s snapshot.Snapshot) State {
	t.Helper()
	st, err := Render(s, Options{DefaultRPFilter: "2"})
	if err != nil {
		t.Fatalf("Render: %v", err)
	}
	return st
}

func opStrings(ops []Op) string {
	var b strings.Builder
	for _, op := range ops {
		b.WriteString(op.String() + "\n")
	}
	return b.String()
}

func TestPlanSelfIsEmpty(t *testing.T) {
	st := mustRender(t, testSnapshot())
	if ops := Plan(st, st); len(ops) != 0 {
		t.Errorf("Plan(x, x) = %d ops, want none:\n%s", len(ops), opStrings(ops))
	}
	if ops := Plan(State{}, State{}); len(ops) != 0 {
		t.Errorf("Plan(empty, empty) = %v", ops)
	}
}

func TestPlanFromEmptyOrder(t *testing.T) {
	st := mustRender(t, testSnapshot())
	ops := Plan(st, State{})
	want := `ip link add vxlan-v6.calico type vxlan id 4096 local fd00:56::1 dstport 4789 nolearning mtu 1430 address 66:bb:00:00:00:01 up addr fd10::1/128
ip link add vxlan.calico type vxlan id 4096 local 192.168.56.1 dstport 4789 nolearning mtu 1450 address 66:aa:00:00:00:01 up addr 10.65.0.1/32
sysctl -w net.ipv4.conf.calia.forwarding=1
sysctl -w net.ipv4.conf.calia.proxy_arp=1
sysctl -w net.ipv4.conf.calia.route_localnet=1
sysctl -w net.ipv4.conf.calia.rp_filter=2
sysctl -w net.ipv4.conf.calib.forwarding=1
sysctl -w net.ipv4.conf.calib.proxy_arp=1
sysctl -w net.ipv4.conf.calib.route_localnet=1
sysctl -w net.ipv4.conf.calib.rp_filter=0
sysctl -w net.ipv4.neigh.calia.proxy_delay=0
sysctl -w net.ipv4.neigh.calib.proxy_delay=0
sysctl -w net.ipv6.conf.calia.accept_ra=0
sysctl -w net.ipv6.conf.calib.accept_ra=0
sysctl -w net.ipv6.conf.calib.forwarding=1
sysctl -w net.ipv6.conf.calib.proxy_ndp=1
ip -6 neigh add proxy fe80::1 dev calib
ip neigh add fd10:0:0:1::1 dev vxlan-v6.calico lladdr 66:bb:00:00:00:02 PERMANENT
ip neigh add 10.65.1.1 dev vxlan.calico lladdr 66:aa:00:00:00:02 PERMANENT
bridge fdb add 66:bb:00:00:00:02 dev vxlan-v6.calico dst fd00:56::2 self permanent
bridge fdb add 66:aa:00:00:00:02 dev vxlan.calico dst 192.168.56.2 self permanent
ip route add blackhole 10.65.0.0/26 proto 80
ip route add 10.65.0.2/32 dev calia proto 80 scope link
ip route add 10.65.0.3/32 dev calib proto 80 scope link
ip route add 10.65.1.0/26 via 10.65.1.1 dev vxlan.calico proto 80 onlink
ip route add 10.65.2.0/26 via 192.168.56.3 proto 80
ip route add 10.65.9.9/32 dev vxlan.calico proto 80 scope link
ip route add fd10::3/128 dev calib proto 80
ip route add fd10:0:0:1::/122 via fd10:0:0:1::1 dev vxlan-v6.calico proto 80 onlink
`
	if d := cmp.Diff(want, opStrings(ops)); d != "" {
		t.Errorf("ops (-want +got):\n%s", d)
	}
	// Tearing everything down runs in reverse: routes, FDB, neighbours, devices; no sysctls.
	down := opStrings(Plan(State{}, st))
	wantDown := `ip link del vxlan-v6.calico
ip link del vxlan.calico
ip route del blackhole 10.65.0.0/26 proto 80
ip route del 10.65.0.2/32 dev calia proto 80 scope link
ip route del 10.65.0.3/32 dev calib proto 80 scope link
ip route del 10.65.2.0/26 via 192.168.56.3 proto 80
ip route del fd10::3/128 dev calib proto 80
`
	if d := cmp.Diff(wantDown, down); d != "" {
		t.Errorf("teardown ops (-want +got):\n%s", d)
	}
}

func TestPlanCases(t *testing.T) {
	tests := []struct {
		name string
		edit func(*snapshot.Snapshot)
		// drift edits the observed state instead.
		drift func(*State)
		want  string
	}{
		{
			name: "one remote block added is one route add",
			edit: func(s *snapshot.Snapshot) {
				s.Routes = append(s.Routes, snapshot.Route{Dst: pfx("10.65.3.0/26"), Type: snapshot.RouteVXLAN, Gateway: addr("10.65.1.1")})
			},
			want: "ip route add 10.65.3.0/26 via 10.65.1.1 dev vxlan.calico proto 80 onlink\n",
		},
		{
			name: "pool switched to no-encap: one replace",
			edit: func(s *snapshot.Snapshot) {
				s.Routes[3] = snapshot.Route{Dst: pfx("10.65.1.0/26"), Type: snapshot.RouteDirect, Gateway: addr("192.168.56.2")}
			},
			want: "ip route replace 10.65.1.0/26 via 192.168.56.2 proto 80\n",
		},
		{
			name: "pod deleted: route gone, sysctls and proxy entry left to vanish with the interface",
			edit: func(s *snapshot.Snapshot) {
				s.Routes = append(s.Routes[:1], s.Routes[2:]...)
				s.Endpoints = s.Endpoints[1:]
			},
			want: "ip route del 10.65.0.2/32 dev calia proto 80 scope link\n",
		},
		{
			name: "MTU changed: modified in place",
			edit: func(s *snapshot.Snapshot) { s.Config.VXLANMTU = 1400 },
			want: "ip link set vxlan.calico mtu 1400\n",
		},
		{
			name: "tunnel address changed: addr add and del in place",
			edit: func(s *snapshot.Snapshot) { s.Config.VXLANTunnelAddr = addr("10.65.0.9") },
			want: "ip link set vxlan.calico addr add 10.65.0.9/32 addr del 10.65.0.1/32\n",
		},
		{
			name:  "device down by hand: set up",
			drift: func(st *State) { st.Links[1].Up = false },
			want:  "ip link set vxlan.calico up\n",
		},
		{
			name: "VNI changed: the device is re-created with everything on it",
			edit: func(s *snapshot.Snapshot) { s.Config.VXLANVNI = 7 },
			want: `ip link del vxlan-v6.calico
ip link del vxlan.calico
ip link add vxlan-v6.calico type vxlan id 7 local fd00:56::1 dstport 4789 nolearning mtu 1430 address 66:bb:00:00:00:01 up addr fd10::1/128
ip link add vxlan.calico type vxlan id 7 local 192.168.56.1 dstport 4789 nolearning mtu 1450 address 66:aa:00:00:00:01 up addr 10.65.0.1/32
ip neigh add fd10:0:0:1::1 dev vxlan-v6.calico lladdr 66:bb:00:00:00:02 PERMANENT
ip neigh add 10.65.1.1 dev vxlan.calico lladdr 66:aa:00:00:00:02 PERMANENT
bridge fdb add 66:bb:00:00:00:02 dev vxlan-v6.calico dst fd00:56::2 self permanent
bridge fdb add 66:aa:00:00:00:02 dev vxlan.calico dst 192.168.56.2 self permanent
ip route add 10.65.1.0/26 via 10.65.1.1 dev vxlan.calico proto 80 onlink
ip route add 10.65.9.9/32 dev vxlan.calico proto 80 scope link
ip route add fd10:0:0:1::/122 via fd10:0:0:1::1 dev vxlan-v6.calico proto 80 onlink
`,
		},
		{
			name: "remote node's MAC changed: neighbour and FDB replaced",
			edit: func(s *snapshot.Snapshot) { s.VTEPs[0].MAC = "66:aa:00:00:00:99" },
			want: `ip neigh replace 10.65.1.1 dev vxlan.calico lladdr 66:aa:00:00:00:99 PERMANENT
bridge fdb add 66:aa:00:00:00:99 dev vxlan.calico dst 192.168.56.2 self permanent
bridge fdb del 66:aa:00:00:00:02 dev vxlan.calico dst 192.168.56.2 self permanent
`,
		},
		{
			name: "VXLAN turned off: only the device delete, the kernel drops the rest with it",
			edit: func(s *snapshot.Snapshot) {
				s.Config.VXLANEnabled = false
				s.Routes = append(s.Routes[:3], s.Routes[4], s.Routes[6], s.Routes[7])
			},
			want: "ip link del vxlan.calico\n",
		},
		{
			name:  "sysctl changed by hand: written back",
			drift: func(st *State) { st.Sysctls[1].Value = "0" },
			want:  "sysctl -w net.ipv4.conf.calia.proxy_arp=1\n",
		},
		{
			name:  "metric drift: delete then add",
			drift: func(st *State) { st.Routes[0].Metric = 7 },
			want:  "ip route del blackhole 10.65.0.0/26 proto 80 metric 7\nip route add blackhole 10.65.0.0/26 proto 80\n",
		},
		{
			name: "stray duplicate deleted",
			drift: func(st *State) {
				st.StrayRoutes = []Route{{Table: TableMain, Dst: pfx("10.65.0.0/26"), Type: Unicast, Dev: "calia", Scope: ScopeLink, Protocol: 80, Metric: 5}}
			},
			want: "ip route del 10.65.0.0/26 dev calia proto 80 scope link metric 5\n",
		},
		{
			name: "route in another table is felis's drift too",
			drift: func(st *State) {
				st.Routes = append(st.Routes, Route{Table: 100, Dst: pfx("1.0.0.0/8"), Type: Blackhole, Protocol: 80})
			},
			want: "ip route del blackhole 1.0.0.0/8 table 100 proto 80\n",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			observed := mustRender(t, testSnapshot())
			s := testSnapshot()
			if tc.edit != nil {
				tc.edit(&s)
			}
			desired := mustRender(t, s)
			if tc.drift != nil {
				tc.drift(&observed)
				observed.Sort()
			}
			ops := Plan(desired, observed)
			if d := cmp.Diff(tc.want, opStrings(ops)); d != "" {
				t.Errorf("ops (-want +got):\n%s", d)
			}
			got, err := Simulate(observed, ops)
			if err != nil {
				t.Fatalf("Simulate: %v", err)
			}
			if d := cmp.Diff(desired.String(), desiredSysctlsOnly(got, desired).String()); d != "" {
				t.Errorf("observed after ops != desired (-want +got):\n%s", d)
			}
		})
	}
}

// randomState draws a state from small pools of names and addresses so two draws overlap.
func randomState(r *rand.Rand) State {
	var s snapshot.Snapshot
	s.Config = snapshot.Config{
		NodeIPv4: pfx("192.168.56.1/24"), NodeIPv6: pfx("fd00:56::1/64"),
		VXLANEnabled: r.IntN(4) > 0, VXLANVNI: 1 + r.IntN(2), VXLANMTU: 1400 + r.IntN(3),
		VXLANTunnelAddr: netip.AddrFrom4([4]byte{10, 65, 0, byte(1 + r.IntN(2))}), VXLANTunnelMAC: "66:aa:00:00:00:01",
		VXLANEnabledV6: r.IntN(2) > 0, VXLANTunnelAddrV6: addr("fd10::1"), RouteProtocol: 80,
	}
	for i := range 8 {
		if r.IntN(2) == 0 {
			continue
		}
		iface := fmt.Sprintf("cali%d", i)
		s.Endpoints = append(s.Endpoints, snapshot.Endpoint{Interface: iface, Addrs: []netip.Prefix{pfx(fmt.Sprintf("10.65.0.%d/32", 10+i))}})
		s.Routes = append(s.Routes, snapshot.Route{Dst: pfx(fmt.Sprintf("10.65.0.%d/32", 10+i)), Type: snapshot.RouteWorkload, Interface: iface})
	}
	for i := range 12 {
		dst := pfx(fmt.Sprintf("10.66.%d.0/26", i))
		gw := netip.AddrFrom4([4]byte{10, 65, byte(1 + r.IntN(3)), 1})
		switch r.IntN(4) {
		case 0:
		case 1:
			s.Routes = append(s.Routes, snapshot.Route{Dst: dst, Type: snapshot.RouteVXLAN, Gateway: gw})
		case 2:
			s.Routes = append(s.Routes, snapshot.Route{Dst: dst, Type: snapshot.RouteDirect, Gateway: netip.AddrFrom4([4]byte{192, 168, 56, byte(2 + r.IntN(3))})})
		case 3:
			s.Routes = append(s.Routes, snapshot.Route{Dst: dst, Type: snapshot.RouteBlackhole})
		}
	}
	for i := range 3 {
		if r.IntN(3) == 0 {
			continue
		}
		s.VTEPs = append(s.VTEPs, snapshot.VTEP{
			Node: fmt.Sprint(i), TunnelIP: netip.AddrFrom4([4]byte{10, 65, byte(1 + i), 1}),
			MAC: fmt.Sprintf("66:aa:00:00:00:%02x", 2+i+r.IntN(2)), ParentIP: netip.AddrFrom4([4]byte{192, 168, 56, byte(2 + i)}),
		})
	}
	st, _ := Render(s, Options{}) // duplicate VTEP MACs are reported and dropped
	// Only what the kernel can hold: routes on a device that is not there cannot exist.
	return st
}

// TestPlanProperties checks, for random pairs, that Plan(d, o) applied to o gives d, that
// Plan(d, d) is empty, and that ops come in dependency order.
func TestPlanProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 500 {
		d, o := randomState(r), randomState(r)
		o = dropOrphans(o)
		ops := Plan(d, o)
		got, err := Simulate(o, ops)
		if err != nil {
			t.Fatalf("case %d: Simulate: %v\nops:\n%s", i, err, opStrings(ops))
		}
		if diff := cmp.Diff(dropOrphans(d).String(), dropOrphans(desiredSysctlsOnly(got, d)).String()); diff != "" {
			t.Fatalf("case %d: after ops (-want +got):\n%s\nops:\n%s", i, diff, opStrings(ops))
		}
		if ops := Plan(d, d); len(ops) != 0 {
			t.Fatalf("case %d: Plan(d, d) not empty:\n%s", i, opStrings(ops))
		}
		checkOrder(t, i, ops)
	}
}

// dropOrphans removes what the kernel could not hold: objects on a VXLAN device that is absent.
func dropOrphans(st State) State {
	have := map[string]bool{}
	for _, l := range st.Links {
		have[l.Name] = true
	}
	onMissing := func(dev string) bool { return strings.HasPrefix(dev, "vxlan") && !have[dev] }
	var out State
	out.Links, out.Sysctls = st.Links, st.Sysctls
	for _, n := range st.Neighs {
		if !onMissing(n.Dev) {
			out.Neighs = append(out.Neighs, n)
		}
	}
	for _, f := range st.FDB {
		if !onMissing(f.Dev) {
			out.FDB = append(out.FDB, f)
		}
	}
	for _, r := range st.Routes {
		if !onMissing(r.Dev) {
			out.Routes = append(out.Routes, r)
		}
	}
	return out
}

// checkOrder asserts that every op touching a device's dependants comes after that device's
// add and before its (final) delete.
func checkOrder(t *testing.T, i int, ops []Op) {
	t.Helper()
	added, deleted := map[string]int{}, map[string]int{}
	for k, op := range ops {
		if l, ok := op.Object.(Link); ok {
			if op.Kind == diff.Add {
				added[l.Name] = k
			} else if op.Kind == diff.Delete {
				deleted[l.Name] = k
			}
		}
	}
	for k, op := range ops {
		var dev string
		switch x := op.Object.(type) {
		case Route:
			dev = x.Dev
		case Neigh:
			dev = x.Dev
		case FDB:
			dev = x.Dev
		default:
			continue
		}
		if a, ok := added[dev]; ok && op.Kind != diff.Delete && k < a {
			t.Fatalf("case %d: op %d %q before its device's add (%d)", i, k, op, a)
		}
		if d, ok := deleted[dev]; ok && op.Kind == diff.Delete && k > d {
			t.Fatalf("case %d: op %d %q after its device's delete (%d)", i, k, op, d)
		}
	}
}

// desiredSysctlsOnly drops the sysctls desired does not mention: felis never deletes (nor
// observes) those.
func desiredSysctlsOnly(st, desired State) State {
	want := map[string]bool{}
	for _, s := range desired.Sysctls {
		want[s.Key()] = true
	}
	var keep []Sysctl
	for _, s := range st.Sysctls {
		if want[s.Key()] {
			keep = append(keep, s)
		}
	}
	st.Sysctls = keep
	return st
}
