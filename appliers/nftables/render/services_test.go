package render_test

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/felis-dev/felis/appliers/internal/fixture"
	"github.com/felis-dev/felis/appliers/nftables/render"
	"github.com/felis-dev/felis/snapshot"
)

func TestRenderServicesGolden(t *testing.T) {
	tbl, err := render.Render(fixture.Services())
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "services.nft", tbl.String())
}

// TestRenderServicesSemantics checks the load-balancing decisions directly, so a wrong
// golden file cannot hide them.
func TestRenderServicesSemantics(t *testing.T) {
	tbl, err := render.Render(fixture.Services())
	if err != nil {
		t.Fatal(err)
	}
	chains := map[string]render.Chain{}
	for _, c := range tbl.Chains {
		chains[c.Name] = c
	}
	// Each services table has its own frontend maps: gather their elements by map name.
	maps := map[string]render.Map{}
	for _, m := range tbl.Maps {
		all := maps[m.Name]
		all.Elements = append(all.Elements, m.Elements...)
		maps[m.Name] = all
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
		// Ready backends only (the terminating 10.0.2.2 is left out): affinity checks, then
		// the numgen cascade, jumping to endpoint chains that mark hairpin traffic, record
		// affinity and DNAT.
		{"cluster ip with affinity", 4, "10.96.0.10", 6, 80,
			[]string{"ip saddr @aff-300-sep-app/web/http/tcp/4/10.0.1.1_8080 goto sep-app/web/http/tcp/4/10.0.1.1_8080",
				"numgen random mod 2 == 0 goto sep-", "update @aff-300-sep-", "dnat ip to 10.0.1.1:8080", "dnat ip to 10.0.2.1:8080",
				"ip saddr 10.0.2.1 meta mark set meta mark | 0x02000000"}, []string{"10.0.2.2"}},
		// externalTrafficPolicy Local: kube-proxy's short-circuit chain (what each client
		// reaches through it: TestRenderServicesLocalShortCircuit).
		{"nodeport local", 4, "192.168.1.10", 6, 30080, []string{"svc-app/shop//tcp/4-local-ext:", "svc-app/shop//tcp/4-local:"}, nil},
		// Cluster policy NodePort: mark for masquerade, then the cluster chain.
		{"nodeport cluster", 4, "192.168.1.10", 6, 30379, []string{"meta mark set meta mark | 0x02000000", "goto svc-app/cache//tcp/4"}, nil},
		{"ipv6 cluster ip", 6, "fd00:96::30", 6, 6379, []string{"[fd00:10::6]:6379"}, nil},
		{"no backends", 4, "10.96.0.40", 6, 80, []string{"reject"}, []string{"numgen", "drop"}},
		// Local policy, backends only on other nodes: outside clients are dropped, as
		// kube-proxy does (not rejected: the service has endpoints); its ClusterIP reaches
		// the remote backend.
		{"nodeport local without local backends", 4, "192.168.1.10", 6, 30090, []string{"-local:\ndrop"}, []string{"reject", "numgen"}},
		{"cluster ip, remote backend only", 4, "10.96.0.50", 6, 80, []string{"10.0.2.7:8080"}, []string{"reject", "drop"}},
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

	// Every endpoint chain marks the packets its own backend sent (hairpin) for masquerade,
	// before anything else; no hairpin set or chain remains.
	endpoints := 0
	for _, c := range tbl.Chains {
		if !strings.HasPrefix(c.Name, "sep-") {
			continue
		}
		endpoints++
		var dnat render.DNAT
		for _, st := range c.Rules[len(c.Rules)-1].Stmts {
			if d, ok := st.(render.DNAT); ok {
				dnat = d
			}
		}
		ip := map[bool]string{true: "ip", false: "ip6"}[dnat.Addr.Is4()]
		want := fmt.Sprintf("%s saddr %s meta mark set meta mark | 0x%08x", ip, dnat.Addr, render.MasqMark)
		if !dnat.Addr.IsValid() || c.Rules[0].String() != want {
			t.Errorf("endpoint chain %s: first rule %q, last %q; want %q first and a DNAT last", c.Name, c.Rules[0], c.Rules[len(c.Rules)-1], want)
		}
		if strings.Contains(c.Name, "10.0.2.2") {
			t.Errorf("endpoint chain %s for a terminating backend", c.Name)
		}
	}
	if endpoints == 0 {
		t.Error("no endpoint chains")
	}
	if text := tbl.String(); strings.Contains(text, "hairpin") {
		t.Errorf("a hairpin set or chain is still rendered:\n%s", text)
	}
}

// TestRendererEqualsRender drives a Renderer through random service changes (backends come
// and go, affinity flips, services appear and vanish, two services claim one frontend key,
// the node or the workload interface prefixes change) and checks every result against a
// fresh Render. Most steps change a few services (the renderer patches its lists); a node or
// prefix change re-renders everything.
func TestRendererEqualsRender(t *testing.T) {
	r := render.NewRenderer()
	rng := rand.New(rand.NewPCG(1, 2))
	snap := fixture.Services()
	gen := func(i int) snapshot.Service {
		return snapshot.Service{ID: fmt.Sprintf("gen/s%02d", i),
			Frontends: []snapshot.Frontend{{Addr: netip.AddrFrom4([4]byte{10, 97, 0, byte(i)}), Protocol: 6, Port: 80, Kind: "ClusterIP"}},
			Backends:  []snapshot.Backend{{Addr: netip.AddrFrom4([4]byte{10, 2, 0, byte(rng.IntN(9))}), Protocol: 6, Port: 80, Node: "node-1", Ready: true, Serving: true}}}
	}
	for i := range 60 {
		snap.Services = append(snap.Services, gen(i))
	}
	patched := 0
	for step := range 400 {
		svcs := slices.Clone(snap.Services)
		for n := 1 + rng.IntN(3); n > 0; n-- {
			i := rng.IntN(len(svcs))
			switch rng.IntN(5) {
			case 0:
				svcs = slices.Delete(svcs, i, i+1)
			case 1:
				svcs = append(svcs, gen(rng.IntN(80)))
			case 2:
				svcs = append(svcs, snapshot.Service{ID: "aaa/clash", // app/web's ClusterIP port: one keeps the key
					Frontends: []snapshot.Frontend{{Addr: netip.MustParseAddr("10.96.0.10"), Protocol: 6, Port: 80, Kind: "ClusterIP", PortName: "http"}}})
			case 3:
				svcs[i].AffinitySeconds = int32(rng.IntN(2) * 60)
			default:
				svcs[i].Backends = slices.Clone(svcs[i].Backends)
				if len(svcs[i].Backends) > 0 {
					svcs[i].Backends = svcs[i].Backends[1:]
				} else {
					svcs[i].Backends = gen(0).Backends
				}
			}
		}
		// Later duplicates win, as a changed service replaces its old self.
		slices.Reverse(svcs)
		slices.SortStableFunc(svcs, func(a, b snapshot.Service) int { return strings.Compare(a.ID, b.ID) })
		snap.Services = slices.CompactFunc(svcs, func(a, b snapshot.Service) bool { return a.ID == b.ID })
		switch rng.IntN(25) {
		case 0:
			snap.Node = map[string]string{"node-1": "node-2", "node-2": "node-1"}[snap.Node]
		case 1: // the workload prefixes the Local short-circuit chains match
			if len(snap.Config.InterfacePrefixes) == 0 {
				snap.Config.InterfacePrefixes = []string{"tap", "cali"}
			} else {
				snap.Config.InterfacePrefixes = nil
			}
		default:
			patched++
		}
		snap.Finalize()
		got, err := r.Render(snap)
		if err != nil {
			t.Fatal(err)
		}
		want, err := render.Render(snap)
		if err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(want.String(), got.String()); d != "" {
			t.Fatalf("step %d: Renderer differs from Render (-want +got):\n%s", step, d)
		}
	}
	if patched < 300 {
		t.Errorf("only %d of 400 steps were small changes", patched)
	}
}

// TestRenderEndpointChains checks the one-table form the iptables dataplane translates: the
// same service chains, sets and frontend elements as Render's, all in felis-svc.
func TestRenderEndpointChains(t *testing.T) {
	one, err := render.RenderEndpointChains(fixture.Services())
	if err != nil {
		t.Fatal(err)
	}
	spread, err := render.Render(fixture.Services())
	if err != nil {
		t.Fatal(err)
	}
	// Each object's text without its table, sorted; the base chains and maps are per table.
	objects := func(tbl render.Table, wantTable func(render.TableID) bool) []string {
		var out []string
		for _, c := range tbl.Chains {
			if c.Table.IsServices() && c.Base == nil {
				if !wantTable(c.Table) {
					t.Errorf("chain %s in table %s", c.Name, c.Table.Name())
				}
				out = append(out, c.Name+"\n"+fmt.Sprint(c.Rules))
			}
		}
		for _, s := range tbl.Sets {
			if s.Table.IsServices() {
				out = append(out, "set "+s.Name)
			}
		}
		for _, m := range tbl.Maps {
			if m.Table.IsServices() {
				for _, e := range m.Elements {
					out = append(out, e.String())
				}
			}
		}
		slices.Sort(out)
		return out
	}
	got := objects(one, func(id render.TableID) bool { return id == render.ServicesTable })
	want := objects(spread, func(render.TableID) bool { return true })
	if len(want) == 0 {
		t.Fatal("no service objects rendered")
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("RenderEndpointChains differs from Render beyond the tables (-Render +one table):\n%s", d)
	}
	if !strings.Contains(one.String(), "chain sep-app/web/http/tcp/4/10.0.1.1_8080 {") {
		t.Error("per-endpoint chain sep-app/web/http/tcp/4/10.0.1.1_8080 missing")
	}
}
