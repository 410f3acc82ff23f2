package hns

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/felis-dev/felis/snapshot"
)

// appSnapshot is a node with two web pods and a database pod; dbPort only appears in the db
// policy, which only the database pod uses.
func appSnapshot(dbPort uint16) *snapshot.Snapshot {
	tier := func(ids ...string) snapshot.Direction {
		return snapshot.Direction{Tiers: []snapshot.TierPolicies{{Tier: "default", DefaultAction: snapshot.Deny, Policies: ids}}}
	}
	web := func(id, addr string) snapshot.Endpoint {
		return snapshot.Endpoint{ID: id, Namespace: "ns", Workload: id[3:], Addrs: pfx(addr), Ingress: tier("web"), Egress: tier("web")}
	}
	return &snapshot.Snapshot{
		Node:   "node-1",
		Config: snapshot.Config{VXLANVNI: 4096},
		IPSets: []snapshot.IPSet{{ID: "s:web", Type: snapshot.IPSetIP, Members: []snapshot.Member{
			{Prefix: netip.MustParsePrefix("10.0.0.1/32")}, {Prefix: netip.MustParsePrefix("10.0.0.2/32")}}}},
		Policies: []snapshot.Policy{
			{ID: "db", Inbound: []snapshot.Rule{{Action: snapshot.Allow, Protocol: p8(6), SrcIPSets: []string{"s:web"}, DstPorts: []snapshot.PortRange{{Min: dbPort, Max: dbPort}}}}},
			{ID: "web",
				Inbound:  []snapshot.Rule{{Action: snapshot.Allow, Protocol: p8(6), DstPorts: []snapshot.PortRange{{Min: 80, Max: 80}}}},
				Outbound: []snapshot.Rule{{Action: snapshot.Allow, Protocol: p8(6), DstNets: pfx("10.0.0.3/32")}}},
		},
		Endpoints: []snapshot.Endpoint{
			web("ns/a", "10.0.0.1/32"), web("ns/b", "10.0.0.2/32"),
			{ID: "ns/c", Namespace: "ns", Workload: "c", Addrs: pfx("10.0.0.3/32"), Ingress: tier("db")},
		},
		Routes: []snapshot.Route{{Dst: netip.MustParsePrefix("10.244.1.0/26"), Type: snapshot.RouteVXLAN, Node: "node-b"}},
		VTEPs:  []snapshot.VTEP{{Node: "node-b", MAC: "66:3e:ca:7a:1b:02", ParentIP: netip.MustParseAddr("192.168.56.12")}},
	}
}

// appFake is an HNS with one endpoint per pod of appSnapshot plus one felis does not own.
func appFake() *Fake {
	f := NewFake()
	f.AddEndpoint("hns-a", "a", netip.MustParseAddr("10.0.0.1"))
	f.AddEndpoint("hns-b", "b", netip.MustParseAddr("10.0.0.2"))
	f.AddEndpoint("hns-c", "c", netip.MustParseAddr("10.0.0.3"))
	f.AddEndpoint("hns-host", "host-vnic", netip.MustParseAddr("10.0.0.254"))
	if err := f.SetACLs(context.Background(), "hns-host", []ACLSetting{{Action: "Allow", Direction: "In", RuleType: "Host", Priority: 100}}); err != nil {
		panic(err)
	}
	return f
}

func updates(f *Fake) map[string]int {
	return map[string]int{"a": f.Updates("hns-a"), "b": f.Updates("hns-b"), "c": f.Updates("hns-c"), "host": f.Updates("hns-host")}
}

func TestApplierSyncAndMinimalUpdates(t *testing.T) {
	ctx := context.Background()
	f := appFake()
	a := NewApplier(f, Options{})
	res, err := a.Sync(ctx, appSnapshot(5432), true)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(map[string]int{"set-acls": 3, "route-add": 1}, res.Counts); d != "" {
		t.Errorf("first sync counts (-want +got):\n%s", d)
	}
	goldenCompare(t, "applier/first-sync.txt", []byte(strings.Join(res.Ops, "\n")+"\n"))
	goldenCompare(t, "applier/fake-after-first-sync.txt", []byte(f.Dump()))
	if d := cmp.Diff(map[string]int{"a": 1, "b": 1, "c": 1, "host": 1}, updates(f)); d != "" {
		t.Errorf("updates after first sync (-want +got):\n%s", d)
	}

	// Nothing changed: nothing is touched.
	if res, err = a.Sync(ctx, appSnapshot(5432), false); err != nil || len(res.Ops) != 0 {
		t.Fatalf("unchanged sync: ops %v err %v, want none", res.Ops, err)
	}
	if res, err = a.Sync(ctx, appSnapshot(5432), true); err != nil || len(res.Ops) != 0 {
		t.Fatalf("unchanged full sync: ops %v err %v, want none", res.Ops, err)
	}

	// One policy changes: only the endpoint that uses it is rewritten.
	if res, err = a.Sync(ctx, appSnapshot(5433), false); err != nil {
		t.Fatal(err)
	}
	if len(res.Ops) != 1 || !strings.HasPrefix(res.Ops[0], "set-acls ns/c (hns hns-c)") {
		t.Errorf("db policy change: ops %v, want one set-acls for ns/c", res.Ops)
	}
	if d := cmp.Diff(map[string]int{"a": 1, "b": 1, "c": 2, "host": 1}, updates(f)); d != "" {
		t.Errorf("updates after db change (-want +got):\n%s", d)
	}
	v, err := f.Evaluate("hns-c", In, Packet{Local: netip.MustParseAddr("10.0.0.3"), Remote: netip.MustParseAddr("10.0.0.2"), Protocol: 6, LocalPort: 5433, RemotePort: 40000})
	if err != nil || v.Action != Allow {
		t.Errorf("web -> db:5433 after the change: %+v %v, want Allow", v, err)
	}
	v, _ = f.Evaluate("hns-c", In, Packet{Local: netip.MustParseAddr("10.0.0.3"), Remote: netip.MustParseAddr("10.0.0.2"), Protocol: 6, LocalPort: 5432, RemotePort: 40000})
	if v.Action != Block {
		t.Errorf("web -> db:5432 after the change: %+v, want Block", v)
	}

	// An IP set the db policy references changes: again only ns/c.
	s := appSnapshot(5433)
	s.IPSets[0].Members = s.IPSets[0].Members[:1]
	if res, err = a.Sync(ctx, s, false); err != nil || len(res.Ops) != 1 || !strings.HasPrefix(res.Ops[0], "set-acls ns/c ") {
		t.Errorf("set change: ops %v err %v, want one set-acls for ns/c", res.Ops, err)
	}
	if f.Updates("hns-host") != 1 {
		t.Errorf("foreign endpoint touched %d times, want only the setup's 1", f.Updates("hns-host"))
	}
}

// TestFakeHoldsTheRender checks, through the wire form, that what the fake holds after a sync
// is exactly the render (which the equivalence tests prove), for every golden scenario.
func TestFakeHoldsTheRender(t *testing.T) {
	files, _ := filepath.Glob("../../golden/*/snapshot.yaml")
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		s, err := snapshot.Decode(data)
		if err != nil {
			t.Fatal(err)
		}
		checkFakeHoldsRender(t, filepath.Base(filepath.Dir(file)), s)
	}
	for seed := range 50 {
		checkFakeHoldsRender(t, fmt.Sprintf("seed %d", seed), randomSnapshot(rand.New(rand.NewPCG(uint64(seed), 7))))
	}
}

func checkFakeHoldsRender(t *testing.T, name string, s *snapshot.Snapshot) {
	t.Helper()
	f := NewFake()
	for i, ep := range s.Endpoints {
		var addrs []netip.Addr
		for _, p := range ep.Addrs {
			addrs = append(addrs, p.Addr())
		}
		f.AddEndpoint(fmt.Sprintf("hns-%d", i), ep.ID, addrs...)
	}
	if _, err := NewApplier(f, Options{}).Sync(context.Background(), s, true); err != nil && !errors.Is(err, ErrUnsupported) {
		t.Fatalf("%s: sync: %v", name, err)
	}
	observed, err := Observe(context.Background(), f)
	if err != nil {
		t.Fatal(err)
	}
	d := Render(s, Options{})
	for i, e := range d.Endpoints {
		id := fmt.Sprintf("hns-%d", i)
		var got []Rule
		for _, o := range observed.Endpoints {
			if o.ID == id {
				got = o.Rules
			}
		}
		want := e.Rules
		if e.Err != nil {
			want = failClosed()
		}
		if !sameRules(want, got) {
			t.Errorf("%s: %s holds\n%s\nwant\n%s", name, e.Endpoint, rulesText(got), rulesText(want))
		}
	}
	routes, _ := f.RemoteSubnetRoutes(context.Background())
	if diff := cmp.Diff(fmt.Sprint(d.Routes), fmt.Sprint(routes)); diff != "" && len(d.Routes)+len(routes) > 0 {
		t.Errorf("%s: routes (-want +got):\n%s", name, diff)
	}
}

func rulesText(rs []Rule) string {
	var b strings.Builder
	for _, r := range rs {
		b.WriteString("  " + r.String() + "\n")
	}
	return b.String()
}

func TestApplierMissingEndpointAppearsLater(t *testing.T) {
	ctx := context.Background()
	f := appFake()
	f.RemoveEndpoint("hns-c")
	a := NewApplier(f, Options{})
	res, err := a.Sync(ctx, appSnapshot(5432), true)
	if err != nil {
		t.Fatal(err)
	}
	if res.Counts["endpoint-missing"] != 1 || res.Counts["set-acls"] != 2 {
		t.Errorf("counts %v, want 2 set-acls and 1 missing endpoint", res.Counts)
	}
	f.AddEndpoint("hns-c2", "c", netip.MustParseAddr("10.0.0.3"))
	if res, err = a.Sync(ctx, appSnapshot(5432), false); err != nil {
		t.Fatal(err)
	}
	if len(res.Ops) != 1 || !strings.HasPrefix(res.Ops[0], "set-acls ns/c (hns hns-c2)") {
		t.Errorf("after the endpoint appears: ops %v, want one set-acls for ns/c on hns-c2", res.Ops)
	}
}

func TestApplierUnrenderableEndpoint(t *testing.T) {
	ctx := context.Background()
	icmp := func() *snapshot.Snapshot {
		s := appSnapshot(5432)
		s.Policies[0].Inbound = append(s.Policies[0].Inbound, snapshot.Rule{Action: snapshot.Allow, Protocol: p8(1), ICMP: &snapshot.ICMPMatch{Type: 8}})
		return s
	}
	// A new endpoint whose policy HNS cannot express is blocked rather than left open.
	f := appFake()
	a := NewApplier(f, Options{})
	_, err := a.Sync(ctx, icmp(), true)
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "endpoint ns/c ingress") {
		t.Fatalf("err %v, want ErrUnsupported naming endpoint ns/c ingress", err)
	}
	obs, _ := Observe(ctx, f)
	if d := cmp.Diff(rulesText(failClosed()), rulesText(obs.Endpoints[2].Rules)); d != "" {
		t.Errorf("hns-c rules (-want +got):\n%s", d)
	}
	// An endpoint that has rules keeps them when its policy becomes unrenderable.
	f = appFake()
	a = NewApplier(f, Options{})
	if _, err := a.Sync(ctx, appSnapshot(5432), true); err != nil {
		t.Fatal(err)
	}
	before, _ := Observe(ctx, f)
	res, err := a.Sync(ctx, icmp(), false)
	if !errors.Is(err, ErrUnsupported) || len(res.Ops) != 0 {
		t.Errorf("ops %v err %v, want none and ErrUnsupported", res.Ops, err)
	}
	after, _ := Observe(ctx, f)
	if d := cmp.Diff(fmt.Sprint(before), fmt.Sprint(after)); d != "" {
		t.Errorf("HNS changed (-before +after):\n%s", d)
	}
}

func TestApplierFailureAndDrift(t *testing.T) {
	ctx := context.Background()
	f := appFake()
	f.Fail = func(op string) error {
		if op == "set-acls hns-b" {
			return errors.New("HNS busy")
		}
		return nil
	}
	a := NewApplier(f, Options{})
	_, err := a.Sync(ctx, appSnapshot(5432), true)
	if err == nil || !strings.Contains(err.Error(), "hns set-acls ns/b") || !strings.Contains(err.Error(), "HNS busy") {
		t.Fatalf("err %v, want the failing op and HNS's error", err)
	}
	if _, err := a.Plan(Render(appSnapshot(5432), Options{})); !errors.Is(err, ErrNotSynced) {
		t.Errorf("Plan after a failed apply: %v, want ErrNotSynced", err)
	}
	f.Fail = nil
	res, err := a.Sync(ctx, appSnapshot(5432), false)
	if err != nil {
		t.Fatal(err)
	}
	if res.Counts["set-acls"] != 2 { // b and c; a was applied before the failure
		t.Errorf("retry counts %v, want 2 set-acls", res.Counts)
	}

	// Someone rewrites an endpoint behind felis's back: the hot path trusts its model, a
	// full sync (and Pending) sees and repairs the drift.
	if err := f.SetACLs(ctx, "hns-a", nil); err != nil {
		t.Fatal(err)
	}
	if res, _ := a.Sync(ctx, appSnapshot(5432), false); len(res.Ops) != 0 {
		t.Errorf("hot path ops %v, want none", res.Ops)
	}
	pending, err := a.Pending(ctx, appSnapshot(5432))
	if err != nil || len(pending) != 1 || !strings.HasPrefix(pending[0], "set-acls ns/a") {
		t.Errorf("pending %v err %v, want one set-acls for ns/a", pending, err)
	}
	if res, _ := a.Sync(ctx, appSnapshot(5432), true); len(res.Ops) != 1 {
		t.Errorf("full sync ops %v, want the repair of ns/a", res.Ops)
	}
	if pending, _ := a.Pending(ctx, appSnapshot(5432)); len(pending) != 0 {
		t.Errorf("pending after repair: %v", pending)
	}
}

func TestApplierRoutes(t *testing.T) {
	ctx := context.Background()
	f := appFake()
	stale := RemoteSubnetRoute{DestinationPrefix: netip.MustParsePrefix("10.244.7.0/26"), IsolationID: 4096,
		ProviderAddress: netip.MustParseAddr("192.168.56.99"), DistributedRouterMacAddress: "66-00-00-00-00-99"}
	if err := f.AddRemoteSubnetRoute(ctx, stale); err != nil {
		t.Fatal(err)
	}
	a := NewApplier(f, Options{})
	if _, err := a.Sync(ctx, appSnapshot(5432), true); err != nil {
		t.Fatal(err)
	}
	s := appSnapshot(5432)
	s.VTEPs[0].MAC = "66:3e:ca:7a:1b:03" // the node's VTEP was recreated
	res, err := a.Sync(ctx, s, false)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"route-remove remote-subnet 10.244.1.0/26 vni 4096 via 192.168.56.12 mac 66-3e-ca-7a-1b-02",
		"route-add remote-subnet 10.244.1.0/26 vni 4096 via 192.168.56.12 mac 66-3e-ca-7a-1b-03",
	}
	if d := cmp.Diff(want, res.Ops); d != "" {
		t.Errorf("ops (-want +got):\n%s", d)
	}
	got, _ := f.RemoteSubnetRoutes(ctx)
	if len(got) != 1 || got[0].DistributedRouterMacAddress != "66-3e-ca-7a-1b-03" {
		t.Errorf("HNS routes %v, want only the new one (the stale one removed by the first sync)", got)
	}
}

func TestFakeRejects(t *testing.T) {
	ctx := context.Background()
	good := ACLSetting{Action: "Allow", Direction: "In", RuleType: "Switch", Priority: 1000, Protocols: "6", RemotePorts: "80"}
	for _, tc := range []struct {
		name string
		bad  func(*ACLSetting)
		is   error
	}{
		{"unknown action", func(s *ACLSetting) { s.Action = "Pass" }, ErrMalformed},
		{"unknown direction", func(s *ACLSetting) { s.Direction = "Both" }, ErrMalformed},
		{"unknown rule type", func(s *ACLSetting) { s.RuleType = "Router" }, ErrMalformed},
		{"two protocols", func(s *ACLSetting) { s.Protocols = "6,17" }, ErrMalformed},
		{"ports without TCP/UDP", func(s *ACLSetting) { s.Protocols = "1" }, ErrMalformed},
		{"ports with any protocol", func(s *ACLSetting) { s.Protocols = "" }, ErrMalformed},
		{"reversed port range", func(s *ACLSetting) { s.RemotePorts = "90-80" }, ErrMalformed},
		{"port out of range", func(s *ACLSetting) { s.RemotePorts = "70000" }, ErrMalformed},
		{"bad address", func(s *ACLSetting) { s.RemoteAddresses = "10.0.0.300" }, ErrMalformed},
		{"mixed families", func(s *ACLSetting) { s.RemoteAddresses = "10.0.0.1"; s.LocalAddresses = "fd00::1" }, ErrMalformed},
		{"priority zero", func(s *ACLSetting) { s.Priority = 0 }, ErrMalformed},
		{"priority above range", func(s *ACLSetting) { s.Priority = FakeMaxPriority + 1 }, ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := NewFake()
			f.AddEndpoint("e", "e", netip.MustParseAddr("10.0.0.1"))
			if err := f.SetACLs(ctx, "e", []ACLSetting{good}); err != nil {
				t.Fatalf("good rule rejected: %v", err)
			}
			bad := good
			tc.bad(&bad)
			err := f.SetACLs(ctx, "e", []ACLSetting{{Action: "Block", Direction: "Out", Priority: 1000}, bad})
			if !errors.Is(err, tc.is) {
				t.Errorf("err %v, want %v", err, tc.is)
			}
			eps, _ := f.Endpoints(ctx)
			if d := cmp.Diff([]ACLSetting{good}, eps[0].ACLs); d != "" || f.Updates("e") != 1 {
				t.Errorf("a rejected update changed the list (updates %d):\n%s", f.Updates("e"), d)
			}
		})
	}
	f := NewFake()
	if err := f.SetACLs(ctx, "nope", nil); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown endpoint: %v, want ErrNotFound", err)
	}
	r := RemoteSubnetRoute{DestinationPrefix: netip.MustParsePrefix("10.1.0.0/26"), IsolationID: 4096, ProviderAddress: netip.MustParseAddr("192.168.0.2"), DistributedRouterMacAddress: "aa-bb-cc-dd-ee-ff"}
	if err := f.AddRemoteSubnetRoute(ctx, r); err != nil {
		t.Fatal(err)
	}
	if err := f.AddRemoteSubnetRoute(ctx, r); !errors.Is(err, ErrExists) {
		t.Errorf("duplicate route: %v, want ErrExists", err)
	}
	other := r
	other.DestinationPrefix = netip.MustParsePrefix("10.2.0.0/26")
	if err := f.RemoveRemoteSubnetRoute(ctx, other); !errors.Is(err, ErrNotFound) {
		t.Errorf("removing an absent route: %v, want ErrNotFound", err)
	}
	badMAC := other
	badMAC.DistributedRouterMacAddress = "aa:bb:cc:dd:ee:ff"
	if err := f.AddRemoteSubnetRoute(ctx, badMAC); !errors.Is(err, ErrMalformed) {
		t.Errorf("Linux-spelled MAC: %v, want ErrMalformed", err)
	}
}

func TestWireRoundTrip(t *testing.T) {
	for seed := range 30 {
		d := Render(randomSnapshot(rand.New(rand.NewPCG(uint64(seed), 7))), Options{HostAddrs: pfx("192.168.1.1/32")})
		for _, e := range d.Endpoints {
			for _, r := range e.Rules {
				back, err := r.Setting().Parse()
				if err != nil {
					t.Fatalf("seed %d: %s does not parse back: %v", seed, r, err)
				}
				if back.String() != r.String() || back.Priority != r.Priority {
					t.Fatalf("seed %d: %s round-trips to %s", seed, r, back)
				}
			}
		}
	}
	// HNS may hand back bare addresses and 256 for "any".
	r, err := ACLSetting{Action: "Allow", Direction: "Out", Protocols: "256", RemoteAddresses: "10.0.0.1,10.0.1.0/24", Priority: 1000}.Parse()
	if err != nil || r.String() != "Out 1000 Allow remote=10.0.0.1/32,10.0.1.0/24" {
		t.Errorf("got %s, %v", r, err)
	}
}
