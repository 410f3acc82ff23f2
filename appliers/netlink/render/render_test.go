package render

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/felis-dev/felis/snapshot"
)

var (
	pfx  = netip.MustParsePrefix
	addr = netip.MustParseAddr
)

// testSnapshot is a node with two local pods (one dual-stack), a local block, remote blocks over
// VXLAN (v4 and v6) and over the underlay, and a remote tunnel address.
func testSnapshot() snapshot.Snapshot {
	return snapshot.Snapshot{
		Node: "node1",
		Config: snapshot.Config{
			NodeIPv4: pfx("192.168.56.1/24"), NodeIPv6: pfx("fd00:56::1/64"),
			VXLANEnabled: true, VXLANVNI: 4096, VXLANPort: 4789, VXLANMTU: 1450,
			VXLANTunnelAddr: addr("10.65.0.1"), VXLANTunnelMAC: "66:AA:00:00:00:01",
			VXLANEnabledV6: true, VXLANMTUV6: 1430,
			VXLANTunnelAddrV6: addr("fd10::1"), VXLANTunnelMACV6: "66:bb:00:00:00:01",
			RouteProtocol: 80,
		},
		Endpoints: []snapshot.Endpoint{
			{ID: "ns/a", Interface: "calia", Addrs: []netip.Prefix{pfx("10.65.0.2/32")}},
			{ID: "ns/b", Interface: "calib", Addrs: []netip.Prefix{pfx("10.65.0.3/32"), pfx("fd10::3/128")}, AllowSpoofedSources: []netip.Prefix{pfx("1.2.3.4/32")}},
		},
		Routes: []snapshot.Route{
			{Dst: pfx("10.65.0.0/26"), Type: snapshot.RouteBlackhole},
			{Dst: pfx("10.65.0.2/32"), Type: snapshot.RouteWorkload, Interface: "calia"},
			{Dst: pfx("10.65.0.3/32"), Type: snapshot.RouteWorkload, Interface: "calib"},
			{Dst: pfx("10.65.1.0/26"), Type: snapshot.RouteVXLAN, Interface: "vxlan.calico", Gateway: addr("10.65.1.1"), Node: "node2"},
			{Dst: pfx("10.65.2.0/26"), Type: snapshot.RouteDirect, Gateway: addr("192.168.56.3"), Node: "node3"},
			{Dst: pfx("10.65.9.9/32"), Type: snapshot.RouteHost, Interface: "vxlan.calico", Node: "node2"},
			{Dst: pfx("fd10::3/128"), Type: snapshot.RouteWorkload, Interface: "calib"},
			{Dst: pfx("fd10:0:0:1::/122"), Type: snapshot.RouteVXLAN, Interface: "vxlan-v6.calico", Gateway: addr("fd10:0:0:1::1"), Node: "node2"},
		},
		VTEPs: []snapshot.VTEP{
			{Node: "node2", TunnelIP: addr("10.65.1.1"), MAC: "66:aa:00:00:00:02", ParentIP: addr("192.168.56.2")},
			{Node: "node2", TunnelIP: addr("fd10:0:0:1::1"), MAC: "66:bb:00:00:00:02", ParentIP: addr("fd00:56::2"), IPv6: true},
		},
	}
}

const testRendered = `link vxlan-v6.calico type vxlan id 4096 local fd00:56::1 dstport 4789 nolearning mtu 1430 address 66:bb:00:00:00:01 up addr fd10::1/128
link vxlan.calico type vxlan id 4096 local 192.168.56.1 dstport 4789 nolearning mtu 1450 address 66:aa:00:00:00:01 up addr 10.65.0.1/32
sysctl net.ipv4.conf.calia.forwarding = 1
sysctl net.ipv4.conf.calia.proxy_arp = 1
sysctl net.ipv4.conf.calia.route_localnet = 1
sysctl net.ipv4.conf.calia.rp_filter = 2
sysctl net.ipv4.conf.calib.forwarding = 1
sysctl net.ipv4.conf.calib.proxy_arp = 1
sysctl net.ipv4.conf.calib.route_localnet = 1
sysctl net.ipv4.conf.calib.rp_filter = 0
sysctl net.ipv4.neigh.calia.proxy_delay = 0
sysctl net.ipv4.neigh.calib.proxy_delay = 0
sysctl net.ipv6.conf.calia.accept_ra = 0
sysctl net.ipv6.conf.calib.accept_ra = 0
sysctl net.ipv6.conf.calib.forwarding = 1
sysctl net.ipv6.conf.calib.proxy_ndp = 1
neigh fe80::1 dev calib proxy
neigh fd10:0:0:1::1 dev vxlan-v6.calico lladdr 66:bb:00:00:00:02 PERMANENT
neigh 10.65.1.1 dev vxlan.calico lladdr 66:aa:00:00:00:02 PERMANENT
fdb 66:bb:00:00:00:02 dev vxlan-v6.calico dst fd00:56::2 self permanent
fdb 66:aa:00:00:00:02 dev vxlan.calico dst 192.168.56.2 self permanent
route blackhole 10.65.0.0/26 proto 80
route 10.65.0.2/32 dev calia proto 80 scope link
route 10.65.0.3/32 dev calib proto 80 scope link
route 10.65.1.0/26 via 10.65.1.1 dev vxlan.calico proto 80 onlink
route 10.65.2.0/26 via 192.168.56.3 proto 80
route 10.65.9.9/32 dev vxlan.calico proto 80 scope link
route fd10::3/128 dev calib proto 80
route fd10:0:0:1::/122 via fd10:0:0:1::1 dev vxlan-v6.calico proto 80 onlink
`

func TestRenderGolden(t *testing.T) {
	st, err := Render(testSnapshot(), Options{DefaultRPFilter: "2"})
	if err != nil {
		t.Fatalf("Render: %v", err)
	}
	if d := cmp.Diff(testRendered, st.String()); d != "" {
		t.Errorf("rendered state (-want +got):\n%s", d)
	}
}

func TestRenderCases(t *testing.T) {
	tests := []struct {
		name    string
		edit    func(*snapshot.Snapshot)
		want    func(st State) string // what to extract from the state
		wantOut string
		wantErr string
	}{
		{
			name:    "vxlan off: no device, no neighbours, no FDB",
			edit:    func(s *snapshot.Snapshot) { s.Config.VXLANEnabled = false },
			want:    func(st State) string { return linkNames(st) + neighDevs(st) },
			wantOut: "vxlan-v6.calico;neigh vxlan-v6.calico;",
			wantErr: "snapshot routes[3] (vxlan 10.65.1.0/26): interface: vxlan.calico is not wanted on this node",
		},
		{
			name:    "no node IPv6: no v6 device",
			edit:    func(s *snapshot.Snapshot) { s.Config.NodeIPv6 = netip.Prefix{} },
			want:    func(st State) string { return linkNames(st) + neighDevs(st) },
			wantOut: "vxlan.calico;neigh vxlan.calico;",
			wantErr: "snapshot routes[7] (vxlan fd10:0:0:1::/122): interface: vxlan-v6.calico is not wanted on this node",
		},
		{
			name: "defaults: VNI 4096, port 4789, protocol 80, MTU unmanaged",
			edit: func(s *snapshot.Snapshot) {
				s.Config.VXLANVNI, s.Config.VXLANPort, s.Config.RouteProtocol, s.Config.VXLANMTU = 0, 0, 0, 0
			},
			want:    func(st State) string { return st.Links[1].String() + "|" + st.Routes[0].String() },
			wantOut: "vxlan.calico type vxlan id 4096 local 192.168.56.1 dstport 4789 nolearning address 66:aa:00:00:00:01 up addr 10.65.0.1/32|blackhole 10.65.0.0/26 proto 80",
		},
		{
			name:    "custom protocol",
			edit:    func(s *snapshot.Snapshot) { s.Config.RouteProtocol = 201 },
			want:    func(st State) string { return st.Routes[1].String() },
			wantOut: "10.65.0.2/32 dev calia proto 201 scope link",
		},
		{
			name: "bad VTEP MAC is reported and skipped, rest kept",
			edit: func(s *snapshot.Snapshot) { s.VTEPs[0].MAC = "zz" },
			want: func(st State) string { return neighDevs(st) },
			// The IPv6 VTEP survives.
			wantOut: "neigh vxlan-v6.calico;",
			wantErr: `snapshot vteps[0] (node node2): mac "zz": want a MAC address`,
		},
		{
			name:    "workload route without interface is reported",
			edit:    func(s *snapshot.Snapshot) { s.Routes[1].Interface = "" },
			want:    func(st State) string { return st.Routes[1].String() },
			wantOut: "10.65.0.3/32 dev calib proto 80 scope link",
			wantErr: "snapshot routes[1] (workload 10.65.0.2/32): interface: a workload route needs the host-side interface",
		},
		{
			name:    "vxlan route without gateway is reported",
			edit:    func(s *snapshot.Snapshot) { s.Routes[3].Gateway = netip.Addr{} },
			want:    func(st State) string { return "" },
			wantErr: "snapshot routes[3] (vxlan 10.65.1.0/26): gateway: a VXLAN route needs the remote tunnel address",
		},
		{
			name:    "bad local MAC drops the device",
			edit:    func(s *snapshot.Snapshot) { s.Config.VXLANTunnelMAC = "nope" },
			want:    func(st State) string { return linkNames(st) },
			wantOut: "vxlan-v6.calico;",
			wantErr: `snapshot config.vxlanTunnelMAC: "nope": want a 6-byte MAC address`,
		},
		{
			name: "duplicate destination keeps the first",
			edit: func(s *snapshot.Snapshot) {
				s.Routes = append(s.Routes, snapshot.Route{Dst: pfx("10.65.0.2/32"), Type: snapshot.RouteBlackhole})
			},
			want:    func(st State) string { return st.Routes[1].String() },
			wantOut: "10.65.0.2/32 dev calia proto 80 scope link",
			wantErr: "more than one route for this destination",
		},
		{
			name:    "no default rp_filter: rp_filter only for spoofing endpoints",
			edit:    func(s *snapshot.Snapshot) {},
			want:    func(st State) string { return sysctlsNamed(st, "rp_filter") },
			wantOut: "net.ipv4.conf.calib.rp_filter = 0;",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := testSnapshot()
			tc.edit(&s)
			opts := Options{DefaultRPFilter: "2"}
			if strings.HasPrefix(tc.name, "no default rp_filter") {
				opts = Options{}
			}
			st, err := Render(s, opts)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("Render: unexpected error %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("Render error = %v, want it to contain %q", err, tc.wantErr)
			}
			if d := cmp.Diff(tc.wantOut, tc.want(st)); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
}

func linkNames(st State) string {
	var b strings.Builder
	for _, l := range st.Links {
		b.WriteString(l.Name + ";")
	}
	return b.String()
}

func neighDevs(st State) string {
	var b strings.Builder
	for _, n := range st.Neighs {
		b.WriteString("neigh " + n.Dev + ";")
	}
	return b.String()
}

func sysctlsNamed(st State, name string) string {
	var b strings.Builder
	for _, s := range st.Sysctls {
		if s.Name == name {
			b.WriteString(s.String() + ";")
		}
	}
	return b.String()
}
