package hns

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/felis-dev/felis/snapshot"
)

// benchSnapshot is a Kubernetes-like node: eps local endpoints, each selected by perEP of
// pols policies (allow TCP from a set of members pods on one port; egress to a set), a
// security tier whose policy passes cluster traffic and denies one blocked net, and a
// namespace profile allowing everything.
func benchSnapshot(eps, pols, perEP, members int) *snapshot.Snapshot {
	r := rand.New(rand.NewPCG(1, 1))
	s := &snapshot.Snapshot{Node: "n"}
	for i := range pols {
		set := snapshot.IPSet{ID: fmt.Sprintf("s:%d", i), Type: snapshot.IPSetIP}
		for range members {
			a := netip.AddrFrom4([4]byte{10, byte(r.IntN(64)), byte(r.IntN(256)), byte(r.IntN(256))})
			set.Members = append(set.Members, snapshot.Member{Prefix: netip.PrefixFrom(a, 32)})
		}
		set.Members = snapshot.SortMembers(set.Members)
		s.IPSets = append(s.IPSets, set)
		port := uint16(1000 + i)
		s.Policies = append(s.Policies, snapshot.Policy{ID: fmt.Sprintf("ns/p%d", i), Tier: "default",
			Inbound:  []snapshot.Rule{{Action: snapshot.Allow, Protocol: p8(6), SrcIPSets: []string{set.ID}, DstPorts: []snapshot.PortRange{{Min: port, Max: port}}}},
			Outbound: []snapshot.Rule{{Action: snapshot.Allow, Protocol: p8(6), DstIPSets: []string{set.ID}}}})
	}
	s.Policies = append(s.Policies, snapshot.Policy{ID: "sec", Tier: "security",
		Inbound: []snapshot.Rule{
			{Action: snapshot.Deny, SrcNets: pfx("10.63.0.0/16")},
			{Action: snapshot.Pass, SrcNets: pfx("10.0.0.0/8"), NotSrcNets: pfx("10.62.0.0/16")},
		},
		Outbound: []snapshot.Rule{{Action: snapshot.Pass, NotProtocol: p8(17)}, {Action: snapshot.Allow, Protocol: p8(17), DstPorts: []snapshot.PortRange{{Min: 53, Max: 53}}}},
	})
	s.Profiles = []snapshot.Profile{{ID: "kns.ns", Inbound: []snapshot.Rule{{Action: snapshot.Allow}}, Outbound: []snapshot.Rule{{Action: snapshot.Allow}}}}
	for e := range eps {
		var ids []string
		for k := range perEP {
			ids = append(ids, fmt.Sprintf("ns/p%d", (e*7+k*13)%pols))
		}
		d := snapshot.Direction{Tiers: []snapshot.TierPolicies{
			{Tier: "security", DefaultAction: snapshot.Pass, Policies: []string{"sec"}},
			{Tier: "default", DefaultAction: snapshot.Deny, Policies: ids},
		}, Profiles: []string{"kns.ns"}}
		s.Endpoints = append(s.Endpoints, snapshot.Endpoint{ID: fmt.Sprintf("ns/e%d", e), Addrs: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 200, byte(e / 256), byte(e % 256)}), 32)}, Ingress: d, Egress: d})
	}
	return s
}

func BenchmarkRender(b *testing.B) {
	for _, sc := range []struct{ eps, pols, perEP, members int }{
		{50, 200, 10, 100},
		{100, 500, 20, 500},
		{20, 50, 50, 2000},
	} {
		b.Run(fmt.Sprintf("eps=%d/pols=%d/perEP=%d/members=%d", sc.eps, sc.pols, sc.perEP, sc.members), func(b *testing.B) {
			s := benchSnapshot(sc.eps, sc.pols, sc.perEP, sc.members)
			var rules int
			for b.Loop() {
				d := Render(s, Options{})
				rules = 0
				for _, e := range d.Endpoints {
					if e.Err != nil {
						b.Fatal(e.Err)
					}
					rules += len(e.Rules)
				}
			}
			b.ReportMetric(float64(rules), "rules")
			b.ReportMetric(float64(sc.eps)*float64(b.N)/b.Elapsed().Seconds(), "endpoints/s")
		})
	}
}

// BenchmarkPlanUnchanged is the hot path when nothing changed: plan against the committed model.
func BenchmarkPlanUnchanged(b *testing.B) {
	s := benchSnapshot(100, 500, 20, 500)
	d := Render(s, Options{})
	var o Observed
	for i, e := range d.Endpoints {
		o.Endpoints = append(o.Endpoints, ObservedEndpoint{ID: fmt.Sprint(i), Addrs: e.Addrs, Rules: e.Rules})
	}
	for b.Loop() {
		if p := PlanOps(d, o); len(p.Ops) != 0 {
			b.Fatal(p.Ops[0])
		}
	}
}
