package derive_test

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/felis-dev/felis/derive"
	"github.com/felis-dev/felis/model"
	"github.com/felis-dev/felis/model/store"
)

// BenchmarkRouting derives routes for one node of a cluster the size of issue 3's scale (a):
// 250,000 workload endpoints on 1,250 nodes (200 each), each node with four /26 blocks of
// one VXLAN CrossSubnet pool, 1% of workloads on borrowed addresses.
func BenchmarkRouting(b *testing.B) {
	const nodes, perNode = 1250, 200
	var objs []model.Object
	objs = append(objs, rtPool("pool", "10.0.0.0/8", model.EncapCrossSubnet))
	for n := range nodes {
		name := fmt.Sprintf("node-%04d", n)
		base := netip.AddrFrom4([4]byte{10, byte(n >> 6), byte(n&63) << 2, 0})
		objs = append(objs, &model.Node{
			Meta:            rtMeta(model.KindNode, "", name),
			IPv4Address:     netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 168, byte(n / 250), byte(n%250 + 1)}), 24),
			VXLANTunnelAddr: base,
		})
		for blk := range 4 {
			a := base.As4()
			a[2] += byte(blk >> 2)
			a[3] = byte(blk&3) << 6
			objs = append(objs, rtBlock(netip.PrefixFrom(netip.AddrFrom4(a), 26).String(), name))
		}
		for w := range perNode {
			a := base.As4()
			a[3] = byte(w + 1)
			if w%100 == 99 { // borrowed from the next node's first block
				a = netip.AddrFrom4([4]byte{10, byte((n + 1) % nodes >> 6), byte((n+1)%nodes&63) << 2, byte(w)}).As4()
			}
			objs = append(objs, rtWEP("ns", fmt.Sprintf("%s-k8s-p%d-eth0", name, w), name, fmt.Sprintf("cali%011d", n*perNode+w),
				netip.PrefixFrom(netip.AddrFrom4(a), 32).String()))
		}
	}
	s := store.New()
	if _, err := s.Write(store.Batch{Upserts: objs}); err != nil {
		b.Fatal(err)
	}
	v := s.View()
	cfg := derive.EffectiveConfig(v, "node-0000")
	b.ReportAllocs()
	b.ResetTimer()
	var routes int
	for b.Loop() {
		r, _, _ := derive.Routing(v, "node-0000", cfg)
		routes = len(r)
	}
	b.ReportMetric(float64(routes), "routes")
}
