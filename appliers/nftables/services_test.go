package nftables

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/felis-dev/felis/appliers/internal/fixture"
	"github.com/felis-dev/felis/appliers/nftables/render"
	"github.com/felis-dev/felis/snapshot"
	"github.com/google/go-cmp/cmp"
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
// one backend going away rewrites that service port's chain (first: it jumps to the endpoint
// chain), deletes the backend's endpoint chain and then its affinity set, and touches no map
// element and no other chain.
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
	tbl := "inet " + render.ServiceTable("ns0/svc0").Name()
	want := []string{
		"replace chain " + tbl + " svc-ns0/svc0/http/tcp/4 ",
		"delete chain " + tbl + " sep-ns0/svc0/http/tcp/4/" + gone.Addr.String() + "_8080",
		"delete set " + tbl + " aff-10800-sep-ns0/svc0/http/tcp/4/" + gone.Addr.String() + "_8080",
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

	// A new service (with affinity) adds its service port's chain, its two endpoint chains
	// and their affinity sets, and one map element per frontend, nothing else.
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

// TestPlanKeepsTablesApart checks that policy and services land in their own tables: a
// policy change plans ops on the policy table only, a service change on the services table
// only, and every service object is rendered into the services table.
func TestPlanKeepsTablesApart(t *testing.T) {
	snap := fixture.Snapshot()
	snap.Services = manyServices(10, 2).Services
	snap.Finalize()
	before := mustRender(t, snap)
	for _, c := range before.Chains {
		svc := strings.HasPrefix(c.Name, "svc-") || strings.HasPrefix(c.Name, "sep-") || c.Name == "nat-prerouting" || c.Name == "nat-output"
		if svc != c.Table.IsServices() {
			t.Errorf("chain %s is in table %s", c.Name, c.Table.Name())
		}
	}
	for _, m := range before.Maps {
		if svc := strings.HasPrefix(m.Name, "svc-"); svc != m.Table.IsServices() {
			t.Errorf("map %s is in table %s", m.Name, m.Table.Name())
		}
	}

	policy := snap
	policy.Policies = slices.Clone(snap.Policies)
	policy.Policies[0].Inbound = slices.Clone(policy.Policies[0].Inbound)
	policy.Policies[0].Inbound[0].DstPorts = []snapshot.PortRange{{Min: 4242, Max: 4242}}
	service := snap
	service.Services = manyServices(11, 2).Services
	for _, c := range []struct {
		name  string
		snap  snapshot.Snapshot
		table render.TableID
	}{{"policy change", policy, render.PolicyTable}, {"service added", service, render.ServiceTable("ns10/svc10")}} {
		c.snap.Finalize()
		ops := Plan(mustRender(t, c.snap), &before)
		if len(ops) == 0 {
			t.Errorf("%s: no ops", c.name)
		}
		for _, o := range ops {
			if o.Table != c.table {
				t.Errorf("%s: op %q is not on table %s", c.name, o, c.table.Name())
			}
		}
	}
}

// oldLayout is snap as a felis that kept services in the policy table rendered it: the
// per-endpoint layout, all in inet felis.
func oldLayout(t testing.TB, snap snapshot.Snapshot) render.Table {
	t.Helper()
	tbl, err := render.RenderEndpointChains(snap)
	if err != nil {
		t.Fatal(err)
	}
	return inPolicyTable(tbl)
}

// inPolicyTable is t with every object moved into the policy table, the others missing.
func inPolicyTable(t render.Table) render.Table {
	old := render.Table{Sets: slices.Clone(t.Sets), Maps: slices.Clone(t.Maps), Chains: slices.Clone(t.Chains), Missing: render.Tables[1:]}
	for i := range old.Sets {
		old.Sets[i].Table = render.PolicyTable
	}
	for i := range old.Maps {
		old.Maps[i].Table = render.PolicyTable
	}
	for i := range old.Chains {
		old.Chains[i].Table = render.PolicyTable
	}
	old.Sort()
	return old
}

// TestPlanMovesServicesOutOfPolicyTable upgrades (on the fake) a node whose services sit in
// the policy table: one plan creates the services table, deletes the service objects from
// the policy table and creates them in the new one.
func TestPlanMovesServicesOutOfPolicyTable(t *testing.T) {
	snap := fixture.Snapshot()
	snap.Services = manyServices(10, 2).Services
	snap.Finalize()
	desired := mustRender(t, snap)
	old := oldLayout(t, snap)
	f := NewFake()
	if err := f.Apply(t.Context(), Plan(old, nil)); err != nil {
		t.Fatal(err)
	}
	obs, err := f.Observe(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if obs.Has(render.ServicesTable) {
		t.Fatalf("old layout: services table exists")
	}
	if !strings.Contains(f.Dump(), "chain sep-") {
		t.Fatalf("old layout without endpoint chains:\n%s", f.Dump())
	}
	ops := Plan(desired, obs)
	if len(ops) == 0 || ops[0].Verb == AddTable && ops[0].Table == render.PolicyTable {
		t.Fatalf("upgrade plan does not start right:\n%s", Script(ops))
	}
	for _, id := range render.Tables[1:] {
		if !slices.ContainsFunc(ops, func(o Op) bool { return o.Verb == AddTable && o.Table == id }) {
			t.Errorf("upgrade plan does not create table %s:\n%s", id.Name(), Script(ops))
		}
	}
	if err := f.Apply(t.Context(), ops); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(desired.String(), f.Dump()); diff != "" {
		t.Errorf("after the upgrade (-want +got):\n%s", diff)
	}
}
