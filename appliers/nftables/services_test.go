package nftables

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/felis-dev/felis/snapshot"
)

// manyServices is a snapshot of n ClusterIP services (every fourth with ClientIP affinity,
// every third also a NodePort on 192.168.1.10) with `backends` ready endpoints each, half of
// them on this node.
func manyServices(n, backends int) snapshot.Snapshot {
	s := snapshot.Snapshot{Node: "node-1"}
	for i := range n {
		svc := snapshot.Service{ID: fmt.Sprintf("ns%d/svc%d", i%50, i)}
		cip := netip.AddrFrom4([4]byte{10, 96, byte(i >> 8), byte(i)})
		svc.Frontends = append(svc.Frontends, snapshot.Frontend{Addr: cip, Protocol: 6, Port: 80, Kind: "ClusterIP", PortName: "http"})
		if i%3 == 0 {
			svc.Frontends = append(svc.Frontends, snapshot.Frontend{Addr: netip.MustParseAddr("192.168.1.10"), Protocol: 6,
				Port: uint16(30000 + i%2768), Kind: "NodePort", PortName: "http"})
		}
		if i%4 == 0 {
			svc.AffinitySeconds = 10800
		}
		for j := range backends {
			node := "node-1"
			if j%2 == 1 {
				node = "node-2"
			}
			k := i*backends + j
			svc.Backends = append(svc.Backends, snapshot.Backend{Addr: netip.AddrFrom4([4]byte{10, byte(1 + k>>16), byte(k >> 8), byte(k)}),
				Protocol: 6, Port: 8080, PortName: "http", Node: node, Ready: true, Serving: true})
		}
		s.Services = append(s.Services, svc)
	}
	s.Finalize()
	return s
}

// TestServicesPlanTouchesOnlyChangedService checks the partial-sync property on the fake:
// one backend going away rewrites that service's chain, deletes its endpoint chain (and its
// affinity set), and touches no map element and no other chain.
func TestServicesPlanTouchesOnlyChangedService(t *testing.T) {
	f := NewFake()
	before := manyServices(40, 2)
	if err := f.Apply(t.Context(), Plan(mustRender(t, before), nil)); err != nil {
		t.Fatal(err)
	}
	after := manyServices(40, 2)
	svc := &after.Services[slicesIndex(after.Services, "ns0/svc0")]
	gone := svc.Backends[1]
	svc.Backends = svc.Backends[:1]
	after.Finalize()
	obs, _ := f.Observe(t.Context())
	ops := Plan(mustRender(t, after), obs)
	want := []string{
		"replace chain inet felis svc-ns0/svc0/http/tcp/4",
		"delete chain inet felis sep-ns0/svc0/http/tcp/4/" + gone.Addr.String() + "_8080",
		"delete set inet felis aff-10800-sep-ns0/svc0/http/tcp/4/" + gone.Addr.String() + "_8080",
	}
	if len(ops) != len(want) {
		t.Fatalf("ops:\n%s\nwant %d ops: %q", Script(ops), len(want), want)
	}
	for i, w := range want {
		if got := ops[i].String(); len(got) < len(w) || got[:len(w)] != w {
			t.Errorf("op %d = %q, want prefix %q", i, got, w)
		}
	}
	if err := f.Apply(t.Context(), ops); err != nil {
		t.Fatal(err)
	}

	// A new service (with affinity) adds its chains, its affinity sets and one map element
	// per frontend, nothing else.
	added := manyServices(41, 2)
	added.Services[slicesIndex(added.Services, "ns0/svc0")].Backends = svc.Backends
	added.Finalize()
	obs, _ = f.Observe(t.Context())
	ops = Plan(mustRender(t, added), obs)
	counts := map[Verb]int{}
	for _, o := range ops {
		counts[o.Verb]++
	}
	if want := map[Verb]int{AddSet: 2, AddChain: 3, AddMapElements: 1}; fmt.Sprint(counts) != fmt.Sprint(want) {
		t.Errorf("adding a service: ops %v, want %v:\n%s", counts, want, Script(ops))
	}
}

func slicesIndex(s []snapshot.Service, id string) int {
	for i := range s {
		if s[i].ID == id {
			return i
		}
	}
	panic("no service " + id)
}
