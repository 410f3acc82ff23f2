//go:build linux

package nftables

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/felis-dev/felis/appliers/nftables/render"
	"github.com/felis-dev/felis/snapshot"
)

// richServices covers every service shape the renderer knows: affinity, IPv6, Local
// policies, Cluster-policy external frontends, a service without backends.
func richServices() snapshot.Snapshot {
	a := netip.MustParseAddr
	s := manyServices(20, 3)
	s.Services = append(s.Services,
		snapshot.Service{ID: "v6/cache", AffinitySeconds: 60,
			Frontends: []snapshot.Frontend{
				{Addr: a("fd00:96::30"), Protocol: 6, Port: 6379, Kind: "ClusterIP"},
				{Addr: a("fd00:1::10"), Protocol: 6, Port: 30379, Kind: "NodePort", LocalOnly: true},
				{Addr: a("2001:db8::5"), Protocol: 17, Port: 53, Kind: "ExternalIP"},
			},
			Backends: []snapshot.Backend{
				{Addr: a("fd00:10::6"), Protocol: 6, Port: 6379, Node: "node-1", Ready: true, Serving: true},
				{Addr: a("fd00:10::7"), Protocol: 17, Port: 5353, Node: "node-2", Ready: true, Serving: true},
			}},
		snapshot.Service{ID: "x/empty", Frontends: []snapshot.Frontend{{Addr: a("10.96.200.1"), Protocol: 132, Port: 9, Kind: "ClusterIP"}}},
	)
	s.Finalize()
	return s
}

// TestKernelServicesRoundTrip programs services into a real kernel: the frontend maps, the
// dynamic affinity sets and the numgen, DNAT and set-update statements must load, read back
// as desired (fake agreeing) and plan to nothing; then a backend change and a removed service
// touch only what changed.
func TestKernelServicesRoundTrip(t *testing.T) {
	k := newKernel(t)
	f := NewFake()
	snap := richServices()
	desired := mustRender(t, snap)
	step(t, "services full sync", k, f, desired, Plan(desired, nil))

	// A backend leaves service 0 (which has affinity): its chain is rewritten, the endpoint
	// chain and affinity set go.
	snap.Services[0].Backends = snap.Services[0].Backends[:2]
	snap.Finalize()
	next := mustRender(t, snap)
	obs, err := k.Observe(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	ops := Plan(next, obs)
	if len(ops) != 3 {
		t.Errorf("one backend removed: %d ops, want 3:\n%s", len(ops), Script(ops))
	}
	step(t, "backend removed", k, f, next, ops)
	desired = next

	// The IPv6 service goes: its map elements, chains and sets are deleted.
	snap.Services = snap.Services[:len(snap.Services)-2]
	next = mustRender(t, snap)
	step(t, "services removed", k, f, next, Plan(next, &desired))
}

// TestKernelServicesMoveToOwnTable upgrades a kernel programmed by a felis that kept services
// in the policy table, with a chain per endpoint: the kernel reports the services tables
// missing, and one batch moves every service into its table (kernel and fake agreeing).
func TestKernelServicesMoveToOwnTable(t *testing.T) {
	k := newKernel(t)
	f := NewFake()
	snap := richServices()
	desired := mustRender(t, snap)
	old := oldLayout(t, snap)
	step(t, "old layout", k, f, old, Plan(old, nil))
	obs, err := k.Observe(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if want := render.Tables[1:]; !slices.Equal(obs.Missing, want) {
		t.Fatalf("old layout: missing tables %v, want %v", obs.Missing, want)
	}
	step(t, "moved", k, f, desired, Plan(desired, obs))
}

// TestKernelServicesDropPairSetHairpin upgrades a kernel programmed by a felis that matched
// hairpin traffic with a set of backend address pairs at postrouting (and had no endpoint
// chains): one batch deletes every services table's hairpin sets and chain and adds the
// endpoint chains, which mark hairpin traffic instead (kernel and fake agreeing).
func TestKernelServicesDropPairSetHairpin(t *testing.T) {
	k := newKernel(t)
	f := NewFake()
	snap := richServices()
	desired := mustRender(t, snap)
	old := render.Table{Sets: slices.Clone(desired.Sets), Maps: desired.Maps, Chains: slices.Clone(desired.Chains)}
	for _, id := range render.Tables[1:] {
		for _, fam := range []int{4, 6} {
			a := netip.MustParseAddr(map[int]string{4: "10.1.0.1", 6: "fd00:10::6"}[fam])
			old.Sets = append(old.Sets, render.Set{Table: id, Name: fmt.Sprintf("hairpin-%d", fam), Family: fam, Pair: true,
				Elements: []render.Element{{Prefix: netip.PrefixFrom(a, a.BitLen()), Peer: a}}})
		}
		c := render.Chain{Table: id, Name: "nat-postrouting-hairpin", Level: render.LevelBase,
			Base: &render.BaseChain{Type: "nat", Hook: "postrouting", Priority: render.PrioritySrcNAT}}
		for _, fam := range []int{4, 6} {
			c.Rules = append(c.Rules, render.Rule{Stmts: []render.Stmt{render.NfProto{Family: fam}, render.CTStatus{Status: "dnat"},
				render.AddrPairSet{Family: fam, Set: fmt.Sprintf("hairpin-%d", fam)}, render.Masquerade{}}})
		}
		c.Hash = render.ChainHash(c)
		old.Chains = append(old.Chains, c)
	}
	old.Sort()
	step(t, "pair-set hairpin layout", k, f, old, Plan(old, nil))
	obs, err := k.Observe(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	ops := Plan(desired, obs)
	if want := 3 * (len(render.Tables) - 1); len(ops) != want {
		t.Errorf("dropping the hairpin sets: %d ops, want %d (two sets and a chain per services table):\n%s", len(ops), want, Script(ops))
	}
	step(t, "endpoint chains only", k, f, desired, ops)
}

// TestKernelLargeElementLists programs element lists far larger than one netlink attribute
// holds (its length field is 16 bits): a frontend map of 3,000 elements in the per-endpoint
// layout (one map) and an IPv6 set of 5,000 addresses (10,000 interval elements). Every
// element must arrive: chunks of 2,048 elements once wrapped the attribute length and the
// kernel silently kept a prefix of each list.
func TestKernelLargeElementLists(t *testing.T) {
	snap := plainServices(3000, 1)
	set := snapshot.IPSet{ID: "big-v6"}
	for i := range 5000 {
		a := netip.AddrFrom16([16]byte{0xfd, 0, 15: byte(i), 14: byte(i >> 8)})
		set.Members = append(set.Members, snapshot.Member{Prefix: netip.PrefixFrom(a, 128)})
	}
	snap.IPSets = append(snap.IPSets, set)
	snap.Finalize()
	desired, err := render.RenderEndpointChains(snap)
	if err != nil {
		t.Fatal(err)
	}
	step(t, "large lists", newKernel(t), NewFake(), desired, Plan(desired, nil))
}
