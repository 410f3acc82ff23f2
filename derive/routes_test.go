package derive_test

import (
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/felis-dev/felis/derive"
	"github.com/felis-dev/felis/model"
	"github.com/felis-dev/felis/model/store"
	"github.com/felis-dev/felis/snapshot"
)

// Builders for route tests. Names start with rt so they never clash with other test files.

func rtMeta(kind model.Kind, ns, name string) model.Meta {
	return model.Meta{Key: model.Key{Kind: kind, Namespace: ns, Name: name}, Source: model.Source{Name: "test"}}
}

func rtNode(name, ipv4, tunnel, mac string) *model.Node {
	n := &model.Node{Meta: rtMeta(model.KindNode, "", name)}
	if ipv4 != "" {
		n.IPv4Address = netip.MustParsePrefix(ipv4)
	}
	if tunnel != "" {
		n.VXLANTunnelAddr = netip.MustParseAddr(tunnel)
	}
	n.VXLANTunnelMAC = mac
	return n
}

func rtNode6(name, ipv6, tunnel, mac string) *model.Node {
	n := &model.Node{Meta: rtMeta(model.KindNode, "", name)}
	n.IPv6Address = netip.MustParsePrefix(ipv6)
	if tunnel != "" {
		n.VXLANTunnelAddrV6 = netip.MustParseAddr(tunnel)
	}
	n.VXLANTunnelMACV6 = mac
	return n
}

func rtPool(name, cidr string, vxlan model.EncapMode) *model.IPPool {
	return &model.IPPool{Meta: rtMeta(model.KindIPPool, "", name), CIDR: netip.MustParsePrefix(cidr), VXLANMode: vxlan, BlockSize: 26}
}

func rtBlock(cidr, node string) *model.IPAMBlock {
	p := netip.MustParsePrefix(cidr)
	name := p.Addr().String() + "-" + itoa(p.Bits())
	return &model.IPAMBlock{Meta: rtMeta(model.KindIPAMBlock, "", name), CIDR: p, AffinityNode: node}
}

func rtWEP(ns, name, node, iface string, addrs ...string) *model.WorkloadEndpoint {
	w := &model.WorkloadEndpoint{Meta: rtMeta(model.KindWorkloadEndpoint, ns, name), Node: node, InterfaceName: iface}
	for _, a := range addrs {
		w.IPNetworks = append(w.IPNetworks, netip.MustParsePrefix(a))
	}
	return w
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var b []byte
	for ; i > 0; i /= 10 {
		b = append([]byte{byte('0' + i%10)}, b...)
	}
	return string(b)
}

func rtView(t *testing.T, objs ...model.Object) *store.View {
	t.Helper()
	s := store.New()
	if _, err := s.Write(store.Batch{Upserts: objs}); err != nil {
		t.Fatalf("write: %v", err)
	}
	return s.View()
}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func addr(s string) netip.Addr  { return netip.MustParseAddr(s) }

// rtCluster is the base three-node cluster: n1 (this node) and n2 share 10.0.0.0/24, n3 sits
// in 10.1.0.0/24. Each node has a /26 of 172.16.0.0/16 and a VXLAN tunnel address in it; n3
// has no configured MAC, so Felix's derived one applies.
func rtCluster(mode model.EncapMode) []model.Object {
	return []model.Object{
		rtNode("n1", "10.0.0.1/24", "172.16.0.1", "66:00:00:00:00:01"),
		rtNode("n2", "10.0.0.2/24", "172.16.1.1", "66:00:00:00:00:02"),
		rtNode("n3", "10.1.0.3/24", "172.16.2.1", ""),
		rtPool("pool", "172.16.0.0/16", mode),
		rtBlock("172.16.0.0/26", "n1"),
		rtBlock("172.16.1.0/26", "n2"),
		rtBlock("172.16.2.0/26", "n3"),
		rtWEP("ns", "n1-k8s-a-eth0", "n1", "cali1111", "172.16.0.5/32"),
		rtWEP("ns", "n2-k8s-b-eth0", "n2", "cali2222", "172.16.1.5/32"),
		rtWEP("ns", "n3-k8s-c-eth0", "n3", "cali3333", "172.16.2.5/32"),
	}
}

// n3MAC is the MAC Felix derives for a node named n3: 0x66 ('f') then SHA-1("n3")[0:5].
// SHA-1("n3") = 26c2ce28d0df...; written out here so a change to the derivation fails.
const n3MAC = "66:26:c2:ce:28:d0"

var (
	rtLocalRoutes = []snapshot.Route{
		{Dst: pfx("172.16.0.0/26"), Type: snapshot.RouteBlackhole},
		{Dst: pfx("172.16.0.5/32"), Type: snapshot.RouteWorkload, Interface: "cali1111"},
	}
	rtVTEPs = []snapshot.VTEP{
		{Node: "n2", TunnelIP: addr("172.16.1.1"), MAC: "66:00:00:00:00:02", ParentIP: addr("10.0.0.2")},
		{Node: "n3", TunnelIP: addr("172.16.2.1"), MAC: n3MAC, ParentIP: addr("10.1.0.3")},
	}
	vxlanToN2 = snapshot.Route{Dst: pfx("172.16.1.0/26"), Type: snapshot.RouteVXLAN, Interface: "vxlan.calico", Gateway: addr("172.16.1.1"), Node: "n2"}
	vxlanToN3 = snapshot.Route{Dst: pfx("172.16.2.0/26"), Type: snapshot.RouteVXLAN, Interface: "vxlan.calico", Gateway: addr("172.16.2.1"), Node: "n3"}
	directN2  = snapshot.Route{Dst: pfx("172.16.1.0/26"), Type: snapshot.RouteDirect, Gateway: addr("10.0.0.2"), Node: "n2"}
)

func routes(rs ...[]snapshot.Route) []snapshot.Route {
	var out []snapshot.Route
	for _, r := range rs {
		out = append(out, r...)
	}
	return out
}

func one(r ...snapshot.Route) []snapshot.Route { return r }

// without drops objects by key from a cluster.
func without(objs []model.Object, keys ...model.Key) []model.Object {
	var out []model.Object
next:
	for _, o := range objs {
		for _, k := range keys {
			if o.GetMeta().Key == k {
				continue next
			}
		}
		out = append(out, o)
	}
	return out
}

// replace swaps objects with the same key.
func replace(objs []model.Object, repl ...model.Object) []model.Object {
	out := append([]model.Object(nil), objs...)
	for _, r := range repl {
		for i, o := range out {
			if o.GetMeta().Key == r.GetMeta().Key {
				out[i] = r
			}
		}
	}
	return out
}

func TestRouting(t *testing.T) {
	disabled := rtPool("pool", "172.16.0.0/16", model.EncapAlways)
	disabled.Disabled = true
	disabled.NATOutgoing = true
	ipip := rtPool("pool", "172.16.0.0/16", model.EncapNever)
	ipip.IPIPMode = model.EncapAlways
	n3Gone := model.Key{Kind: model.KindNode, Name: "n3"}

	tests := []struct {
		name       string
		objs       []model.Object
		wantRoutes []snapshot.Route
		wantVTEPs  []snapshot.VTEP
		wantPools  []snapshot.Pool
	}{{
		name:       "vxlan always: every remote block via its node's VTEP",
		objs:       rtCluster(model.EncapAlways),
		wantRoutes: routes(rtLocalRoutes, one(vxlanToN2, vxlanToN3)),
		wantVTEPs:  rtVTEPs,
		wantPools:  []snapshot.Pool{{CIDR: pfx("172.16.0.0/16"), VXLANMode: "Always"}},
	}, {
		name:       "cross-subnet: direct to the same-subnet node, VXLAN to the other",
		objs:       rtCluster(model.EncapCrossSubnet),
		wantRoutes: routes(rtLocalRoutes, one(directN2, vxlanToN3)),
		wantVTEPs:  rtVTEPs,
		wantPools:  []snapshot.Pool{{CIDR: pfx("172.16.0.0/16"), VXLANMode: "CrossSubnet"}},
	}, {
		name:       "no-encap: direct on the same subnet, nothing across subnets, no VTEPs",
		objs:       rtCluster(model.EncapNever),
		wantRoutes: routes(rtLocalRoutes, one(directN2)),
		wantPools:  []snapshot.Pool{{CIDR: pfx("172.16.0.0/16"), VXLANMode: "Never"}},
	}, {
		name:       "disabled pool routes as an enabled one",
		objs:       replace(rtCluster(model.EncapAlways), disabled),
		wantRoutes: routes(rtLocalRoutes, one(vxlanToN2, vxlanToN3)),
		wantVTEPs:  rtVTEPs,
		wantPools:  []snapshot.Pool{{CIDR: pfx("172.16.0.0/16"), VXLANMode: "Always", NATOutgoing: true, Disabled: true}},
	}, {
		name:       "IPIP pool: felis programs nothing for it but local workloads",
		objs:       replace(rtCluster(model.EncapNever), ipip),
		wantRoutes: one(rtLocalRoutes[1]),
		wantPools:  []snapshot.Pool{{CIDR: pfx("172.16.0.0/16"), VXLANMode: "Never"}},
	}, {
		name: "borrowed IPs: /32 to the workload's node, by the same encapsulation rule",
		objs: append(rtCluster(model.EncapCrossSubnet),
			// n3's workload in n2's block; n2's workload in this node's block.
			rtWEP("ns", "n3-k8s-d-eth0", "n3", "cali4444", "172.16.1.9/32"),
			rtWEP("ns", "n2-k8s-e-eth0", "n2", "cali5555", "172.16.0.9/32"),
		),
		wantRoutes: routes(rtLocalRoutes, []snapshot.Route{
			{Dst: pfx("172.16.0.9/32"), Type: snapshot.RouteDirect, Gateway: addr("10.0.0.2"), Node: "n2"},
			directN2,
			{Dst: pfx("172.16.1.9/32"), Type: snapshot.RouteVXLAN, Interface: "vxlan.calico", Gateway: addr("172.16.2.1"), Node: "n3"},
			vxlanToN3,
		}),
		wantVTEPs: rtVTEPs,
		wantPools: []snapshot.Pool{{CIDR: pfx("172.16.0.0/16"), VXLANMode: "CrossSubnet"}},
	}, {
		name: "remote node without tunnel address: no VXLAN route or VTEP, direct still works",
		objs: replace(rtCluster(model.EncapCrossSubnet),
			rtNode("n2", "10.0.0.2/24", "", ""), rtNode("n3", "10.1.0.3/24", "", "")),
		wantRoutes: routes(rtLocalRoutes, one(directN2)),
		wantPools:  []snapshot.Pool{{CIDR: pfx("172.16.0.0/16"), VXLANMode: "CrossSubnet"}},
	}, {
		name:       "this node without tunnel address: no VXLAN device, so no VXLAN routes",
		objs:       replace(rtCluster(model.EncapCrossSubnet), rtNode("n1", "10.0.0.1/24", "", "")),
		wantRoutes: routes(rtLocalRoutes, one(directN2)),
		wantVTEPs:  rtVTEPs,
		wantPools:  []snapshot.Pool{{CIDR: pfx("172.16.0.0/16"), VXLANMode: "CrossSubnet"}},
	}, {
		name:       "this node unknown: no subnet, so cross-subnet falls back to nothing without a local VTEP",
		objs:       without(rtCluster(model.EncapCrossSubnet), model.Key{Kind: model.KindNode, Name: "n1"}),
		wantRoutes: routes(rtLocalRoutes),
		wantVTEPs:  rtVTEPs,
		wantPools:  []snapshot.Pool{{CIDR: pfx("172.16.0.0/16"), VXLANMode: "CrossSubnet"}},
	}, {
		name:       "deleted node: its block and workloads lead nowhere, its VTEP is gone",
		objs:       without(rtCluster(model.EncapAlways), n3Gone),
		wantRoutes: routes(rtLocalRoutes, one(vxlanToN2)),
		wantVTEPs:  rtVTEPs[:1],
		wantPools:  []snapshot.Pool{{CIDR: pfx("172.16.0.0/16"), VXLANMode: "Always"}},
	}, {
		name: "blocks outside every pool get no route, not even a blackhole",
		objs: append(rtCluster(model.EncapAlways),
			rtBlock("192.168.9.0/26", "n1"), rtBlock("192.168.10.0/26", "n2")),
		wantRoutes: routes(rtLocalRoutes, one(vxlanToN2, vxlanToN3)),
		wantVTEPs:  rtVTEPs,
		wantPools:  []snapshot.Pool{{CIDR: pfx("172.16.0.0/16"), VXLANMode: "Always"}},
	}, {
		name: "vxlanEnabled false overrides the pools: no VXLAN routes, blackholes or VTEPs",
		objs: append(rtCluster(model.EncapAlways), &model.FelixConfiguration{
			Meta: rtMeta(model.KindFelixConfiguration, "", "default"), Spec: map[string]any{"vxlanEnabled": false}}),
		wantRoutes: one(rtLocalRoutes[1]),
		wantPools:  []snapshot.Pool{{CIDR: pfx("172.16.0.0/16"), VXLANMode: "Always"}},
	}, {
		name: "tunnel addresses: routed on-link only when borrowed or a /32 block",
		objs: append(replace(rtCluster(model.EncapAlways),
			rtNode("n2", "10.0.0.2/24", "172.16.3.1", "66:00:00:00:00:02"), // in n3's block
			rtNode("n3", "10.1.0.3/24", "172.16.4.7", ""),                  // its own /32 block
		), rtBlock("172.16.3.0/26", "n3"), rtBlock("172.16.4.7/32", "n3")),
		wantRoutes: routes(rtLocalRoutes, []snapshot.Route{
			{Dst: pfx("172.16.1.0/26"), Type: snapshot.RouteVXLAN, Interface: "vxlan.calico", Gateway: addr("172.16.3.1"), Node: "n2"},
			{Dst: pfx("172.16.2.0/26"), Type: snapshot.RouteVXLAN, Interface: "vxlan.calico", Gateway: addr("172.16.4.7"), Node: "n3"},
			{Dst: pfx("172.16.3.0/26"), Type: snapshot.RouteVXLAN, Interface: "vxlan.calico", Gateway: addr("172.16.4.7"), Node: "n3"},
			{Dst: pfx("172.16.3.1/32"), Type: snapshot.RouteHost, Interface: "vxlan.calico", Node: "n2"},
			{Dst: pfx("172.16.4.7/32"), Type: snapshot.RouteHost, Interface: "vxlan.calico", Node: "n3"},
		}),
		wantVTEPs: []snapshot.VTEP{
			{Node: "n2", TunnelIP: addr("172.16.3.1"), MAC: "66:00:00:00:00:02", ParentIP: addr("10.0.0.2")},
			{Node: "n3", TunnelIP: addr("172.16.4.7"), MAC: n3MAC, ParentIP: addr("10.1.0.3")},
		},
		wantPools: []snapshot.Pool{{CIDR: pfx("172.16.0.0/16"), VXLANMode: "Always"}},
	}, {
		name: "block affinity stands in for a missing block; a local workload beats a remote block",
		objs: append(without(rtCluster(model.EncapAlways), model.Key{Kind: model.KindIPAMBlock, Name: "172.16.2.0-26"}),
			&model.BlockAffinity{Meta: rtMeta(model.KindBlockAffinity, "", "n3-172-16-2-0-26"), Node: "n3", CIDR: pfx("172.16.2.0/26"), State: "confirmed"},
			&model.BlockAffinity{Meta: rtMeta(model.KindBlockAffinity, "", "n2-172-16-9-0-26"), Node: "n2", CIDR: pfx("172.16.9.0/26"), State: "pending"},
			rtWEP("ns", "n1-k8s-f-eth0", "n1", "cali6666", "172.16.2.9/32"),
		),
		wantRoutes: routes(rtLocalRoutes, one(vxlanToN2, vxlanToN3,
			snapshot.Route{Dst: pfx("172.16.2.9/32"), Type: snapshot.RouteWorkload, Interface: "cali6666"})),
		wantVTEPs: rtVTEPs,
		wantPools: []snapshot.Pool{{CIDR: pfx("172.16.0.0/16"), VXLANMode: "Always"}},
	}, {
		name: "mixed pools sorted by CIDR, each routed by its own mode",
		objs: append(rtCluster(model.EncapAlways),
			rtPool("flat", "10.200.0.0/16", model.EncapNever),
			rtBlock("10.200.1.0/26", "n2"), rtBlock("10.200.2.0/26", "n3"), rtBlock("10.200.0.0/26", "n1")),
		wantRoutes: routes([]snapshot.Route{
			{Dst: pfx("10.200.0.0/26"), Type: snapshot.RouteBlackhole},
			{Dst: pfx("10.200.1.0/26"), Type: snapshot.RouteDirect, Gateway: addr("10.0.0.2"), Node: "n2"},
		}, rtLocalRoutes, one(vxlanToN2, vxlanToN3)),
		wantVTEPs: rtVTEPs,
		wantPools: []snapshot.Pool{
			{CIDR: pfx("10.200.0.0/16"), VXLANMode: "Never"},
			{CIDR: pfx("172.16.0.0/16"), VXLANMode: "Always"},
		},
	}, {
		name: "IPv6: /128 workloads, /122 blocks, the v6 VXLAN device and VTEPs",
		objs: []model.Object{
			rtNode6("n1", "fd00::1/64", "fd10::1", ""),
			rtNode6("n2", "fd00::2/64", "fd10::41", "66:00:00:00:06:02"),
			rtNode6("n3", "fd01::3/64", "fd10::81", ""),
			rtPool("pool6", "fd10::/112", model.EncapCrossSubnet),
			rtBlock("fd10::/122", "n1"), rtBlock("fd10::40/122", "n2"), rtBlock("fd10::80/122", "n3"),
			rtWEP("ns", "n1-k8s-a-eth0", "n1", "cali1111", "fd10::5/128"),
		},
		wantRoutes: []snapshot.Route{
			{Dst: pfx("fd10::/122"), Type: snapshot.RouteBlackhole},
			{Dst: pfx("fd10::5/128"), Type: snapshot.RouteWorkload, Interface: "cali1111"},
			{Dst: pfx("fd10::40/122"), Type: snapshot.RouteDirect, Gateway: addr("fd00::2"), Node: "n2"},
			{Dst: pfx("fd10::80/122"), Type: snapshot.RouteVXLAN, Interface: "vxlan-v6.calico", Gateway: addr("fd10::81"), Node: "n3"},
		},
		wantVTEPs: []snapshot.VTEP{
			{Node: "n2", TunnelIP: addr("fd10::41"), MAC: "66:00:00:00:06:02", ParentIP: addr("fd00::2"), IPv6: true},
			// 0x66 then SHA-1("n3-v6")[0:5].
			{Node: "n3", TunnelIP: addr("fd10::81"), MAC: "66:90:c0:29:2a:8a", ParentIP: addr("fd01::3"), IPv6: true},
		},
		wantPools: []snapshot.Pool{{CIDR: pfx("fd10::/112"), VXLANMode: "CrossSubnet"}},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := rtView(t, tc.objs...)
			gotRoutes, gotVTEPs, gotPools := derive.Routing(v, "n1", derive.EffectiveConfig(v, "n1"))
			if d := cmp.Diff(tc.wantRoutes, gotRoutes, cmp.Comparer(func(a, b netip.Addr) bool { return a == b }), cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); d != "" {
				t.Errorf("routes (-want +got):\n%s", d)
			}
			if d := cmp.Diff(tc.wantVTEPs, gotVTEPs, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); d != "" {
				t.Errorf("VTEPs (-want +got):\n%s", d)
			}
			if d := cmp.Diff(tc.wantPools, gotPools, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); d != "" {
				t.Errorf("pools (-want +got):\n%s", d)
			}
		})
	}
}

// TestRoutingDeterministic derives the same cluster loaded in many insertion orders, one
// object per write, and expects identical output each time.
func TestRoutingDeterministic(t *testing.T) {
	objs := append(rtCluster(model.EncapCrossSubnet),
		rtWEP("ns", "n3-k8s-d-eth0", "n3", "cali4444", "172.16.1.9/32"),
		rtPool("flat", "10.200.0.0/16", model.EncapNever),
		rtBlock("10.200.1.0/26", "n2"), rtBlock("10.200.0.0/26", "n1"))
	first := rtView(t, objs...)
	wantR, wantV, wantP := derive.Routing(first, "n1", derive.EffectiveConfig(first, "n1"))
	if len(wantR) == 0 || len(wantV) == 0 || len(wantP) == 0 {
		t.Fatalf("degenerate baseline: %d routes, %d VTEPs, %d pools", len(wantR), len(wantV), len(wantP))
	}
	rng := rand.New(rand.NewPCG(1, 2))
	eq := cmp.Comparer(func(a, b netip.Addr) bool { return a == b })
	eqp := cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })
	for i := range 50 {
		perm := rng.Perm(len(objs))
		s := store.New()
		for _, j := range perm {
			// Fresh copies: the store stamps revisions into what it is given.
			o := objs[j]
			if _, err := s.Write(store.Batch{Upserts: []model.Object{clone(o)}}); err != nil {
				t.Fatal(err)
			}
		}
		v := s.View()
		gotR, gotV, gotP := derive.Routing(v, "n1", derive.EffectiveConfig(v, "n1"))
		if d := cmp.Diff(wantR, gotR, eq, eqp); d != "" {
			t.Fatalf("order %d %v: routes differ (-first +this):\n%s", i, perm, d)
		}
		if d := cmp.Diff(wantV, gotV, eq, eqp); d != "" {
			t.Fatalf("order %d %v: VTEPs differ:\n%s", i, perm, d)
		}
		if d := cmp.Diff(wantP, gotP, eq, eqp); d != "" {
			t.Fatalf("order %d %v: pools differ:\n%s", i, perm, d)
		}
	}
}

func clone(o model.Object) model.Object {
	switch v := o.(type) {
	case *model.Node:
		c := *v
		return &c
	case *model.IPPool:
		c := *v
		return &c
	case *model.IPAMBlock:
		c := *v
		return &c
	case *model.WorkloadEndpoint:
		c := *v
		return &c
	}
	panic("clone: unexpected type")
}
