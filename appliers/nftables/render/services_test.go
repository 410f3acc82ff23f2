package render_test

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/felis-dev/felis/appliers/nftables/render"
	"github.com/felis-dev/felis/snapshot"
)

// servicesSnapshot has a ClusterIP service with affinity, two ports and a terminating
// backend, a NodePort/LoadBalancer service with externalTrafficPolicy Local, a dual-stack
// service with a Cluster-policy NodePort, and a service without backends.
func servicesSnapshot() snapshot.Snapshot {
	a := netip.MustParseAddr
	be := func(addr string, port uint16, name, node string, ready bool) snapshot.Backend {
		return snapshot.Backend{Addr: a(addr), Protocol: 6, Port: port, PortName: name, Node: node, Ready: ready, Serving: true}
	}
	s := snapshot.Snapshot{
		Node: "node-1",
		Services: []snapshot.Service{
			{ID: "app/web", AffinitySeconds: 300,
				Frontends: []snapshot.Frontend{
					{Addr: a("10.96.0.10"), Protocol: 6, Port: 80, Kind: "ClusterIP", PortName: "http"},
					{Addr: a("10.96.0.10"), Protocol: 17, Port: 53, Kind: "ClusterIP", PortName: "dns"},
				},
				Backends: []snapshot.Backend{
					be("10.0.1.1", 8080, "http", "node-1", true),
					be("10.0.2.1", 8080, "http", "node-2", true),
					be("10.0.2.2", 8080, "http", "node-2", false),
					{Addr: a("10.0.1.1"), Protocol: 17, Port: 5353, PortName: "dns", Node: "node-1", Ready: true, Serving: true},
				}},
			{ID: "app/shop",
				Frontends: []snapshot.Frontend{
					{Addr: a("10.96.0.20"), Protocol: 6, Port: 80, Kind: "ClusterIP"},
					{Addr: a("192.168.1.10"), Protocol: 6, Port: 30080, Kind: "NodePort", LocalOnly: true},
					{Addr: a("198.51.100.20"), Protocol: 6, Port: 80, Kind: "LoadBalancer", LocalOnly: true},
				},
				Backends: []snapshot.Backend{be("10.0.1.5", 8080, "", "node-1", true), be("10.0.2.5", 8080, "", "node-2", true)}},
			{ID: "app/cache",
				Frontends: []snapshot.Frontend{
					{Addr: a("10.96.0.30"), Protocol: 6, Port: 6379, Kind: "ClusterIP"},
					{Addr: a("fd00:96::30"), Protocol: 6, Port: 6379, Kind: "ClusterIP"},
					{Addr: a("192.168.1.10"), Protocol: 6, Port: 30379, Kind: "NodePort"},
				},
				Backends: []snapshot.Backend{be("10.0.2.6", 6379, "", "node-2", true), be("fd00:10::6", 6379, "", "node-2", true)}},
			{ID: "app/empty",
				Frontends: []snapshot.Frontend{{Addr: a("10.96.0.40"), Protocol: 6, Port: 80, Kind: "ClusterIP"}}},
		},
	}
	s.Finalize()
	return s
}

func TestRenderServicesGolden(t *testing.T) {
	tbl, err := render.Render(servicesSnapshot())
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "services.nft", tbl.String())
}

// TestRenderServicesSemantics checks the load-balancing decisions directly, so a wrong
// golden file cannot hide them.
func TestRenderServicesSemantics(t *testing.T) {
	tbl, err := render.Render(servicesSnapshot())
	if err != nil {
		t.Fatal(err)
	}
	chains := map[string]render.Chain{}
	for _, c := range tbl.Chains {
		chains[c.Name] = c
	}
	maps := map[string]render.Map{}
	for _, m := range tbl.Maps {
		maps[m.Name] = m
	}
	target := func(fam int, addr string, proto uint8, port uint16) string {
		for _, e := range maps[render.ServiceMap(fam)].Elements {
			if e.Addr == netip.MustParseAddr(addr) && e.Proto == proto && e.Port == port {
				return e.Chain
			}
		}
		t.Fatalf("no map element for %s %d %d", addr, proto, port)
		return ""
	}
	rules := func(chain string) string {
		c, ok := chains[chain]
		if !ok {
			t.Fatalf("chain %s missing", chain)
		}
		var lines []string
		for _, r := range c.Rules {
			lines = append(lines, r.String())
		}
		return strings.Join(lines, "\n")
	}
	tests := []struct {
		name              string
		fam               int
		addr              string
		proto             uint8
		port              uint16
		contains, lacking []string
	}{
		// Ready backends only (the terminating 10.0.2.2 is left out), with affinity checks.
		{"cluster ip with affinity", 4, "10.96.0.10", 6, 80,
			[]string{"numgen random mod 2 == 0 goto sep-", "10.0.1.1:8080", "10.0.2.1:8080", "ip saddr @aff-300-"}, []string{"10.0.2.2"}},
		// externalTrafficPolicy Local: only the local backend, no masquerade mark.
		{"nodeport local", 4, "192.168.1.10", 6, 30080, []string{"svc-app/shop//tcp/4-local:", "10.0.1.5:8080"}, []string{"10.0.2.5", "-ext:", "numgen"}},
		// Cluster policy NodePort: mark for masquerade, then the cluster chain.
		{"nodeport cluster", 4, "192.168.1.10", 6, 30379, []string{"meta mark set meta mark | 0x02000000", "goto svc-app/cache//tcp/4"}, nil},
		{"ipv6 cluster ip", 6, "fd00:96::30", 6, 6379, []string{"[fd00:10::6]:6379"}, nil},
		{"no backends", 4, "10.96.0.40", 6, 80, []string{"drop"}, []string{"numgen"}},
	}
	for _, tc := range tests {
		chain := target(tc.fam, tc.addr, tc.proto, tc.port)
		text := chain + ":\n" + rules(chain)
		for _, r := range chains[chain].Rules {
			for _, st := range r.Stmts {
				switch st := st.(type) {
				case render.Verdict:
					if st.Chain != "" {
						text += "\n" + st.Chain + ":\n" + rules(st.Chain)
					}
				}
			}
		}
		for _, want := range tc.contains {
			if !strings.Contains(text, want) {
				t.Errorf("%s: %q missing from\n%s", tc.name, want, text)
			}
		}
		for _, bad := range tc.lacking {
			if strings.Contains(text, bad) {
				t.Errorf("%s: %q present in\n%s", tc.name, bad, text)
			}
		}
	}
}
