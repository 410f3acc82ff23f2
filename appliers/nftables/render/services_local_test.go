package render_test

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/felis-dev/felis/appliers/internal/fixture"
	"github.com/felis-dev/felis/appliers/nftables/render"
	"github.com/felis-dev/felis/snapshot"
)

// sender is who opens a new TCP connection to a frontend, as the service chains can tell
// it apart: the interface the packet came in on ("" at the output hook), whether its source
// is one of the node's addresses, and that source.
type sender struct {
	iif   string
	local bool
	src   netip.Addr
}

// chainWalk evaluates service chains for one sender's first packet, following every
// branch a random draw can take (affinity sets are empty: a first connection), and
// collects the outcomes: "dnat ADDR:PORT" (with " masq" when the masquerade mark is set),
// "reject", "drop", or "falls through".
type chainWalk struct {
	t      *testing.T
	chains map[string]render.Chain
	from   sender
	out    map[string]bool
}

func (w *chainWalk) chain(name string, masq bool, depth int) {
	c, ok := w.chains[name]
	if !ok || depth > 8 {
		w.t.Fatalf("chain %s missing (or a loop)", name)
	}
	for _, r := range c.Rules {
		matched, random, done := true, false, false
		mark := masq
	stmts:
		for _, st := range r.Stmts {
			switch st := st.(type) {
			case render.IfName:
				if st.Out {
					w.t.Fatalf("%s: output interface match in a service chain: %s", name, r)
				}
				m := w.from.iif == st.Name || st.Prefix && w.from.iif != "" && strings.HasPrefix(w.from.iif, st.Name)
				if m == st.Neg {
					matched = false
					break stmts
				}
			case render.LocalAddr:
				if !st.Src {
					w.t.Fatalf("%s: destination address type match in a service chain: %s", name, r)
				}
				if !w.from.local {
					matched = false
					break stmts
				}
			case render.AddrList:
				if st.Dst {
					w.t.Fatalf("%s: unexpected destination match: %s", name, r)
				}
				in := slices.ContainsFunc(st.Prefixes, func(p netip.Prefix) bool { return p.Contains(w.from.src) })
				if in == st.Neg {
					matched = false
					break stmts
				}
			case render.AddrSet: // an affinity set: empty for a first connection
				matched = false
				break stmts
			case render.RandomOneIn:
				random = st.Mod > 1
			case render.L4Proto:
				if (st.Proto == 6) == st.Neg {
					matched = false
					break stmts
				}
			case render.MarkSet:
				if !st.Clear && st.Bits&render.MasqMark != 0 {
					mark = true
				}
			case render.SetUpdate:
			case render.DNAT:
				s := "dnat " + netip.AddrPortFrom(st.Addr, st.Port).String()
				if mark {
					s += " masq"
				}
				w.out[s], done = true, true
			case render.Reject:
				w.out["reject"], done = true, true
			case render.Verdict:
				switch st.Kind {
				case "goto":
					w.chain(st.Chain, mark, depth+1)
				case "drop", "accept":
					w.out[st.Kind] = true
				default:
					w.t.Fatalf("%s: verdict %q in a service chain: %s", name, st.Kind, r)
				}
				done = true
			default:
				w.t.Fatalf("%s: statement %T not modelled: %s", name, st, r)
			}
		}
		switch {
		case !matched:
		case done && !random:
			return
		case !done:
			masq = mark // a rule without a verdict: its effects carry on
		}
	}
	w.out["falls through"] = true
}

// reach renders snap and walks the frontend (addr, TCP, port) for each sender.
func reach(t *testing.T, snap snapshot.Snapshot, addr string, port uint16, senders map[string]sender) map[string][]string {
	t.Helper()
	tbl, err := render.Render(snap)
	if err != nil {
		t.Fatal(err)
	}
	chains := map[string]render.Chain{}
	for _, c := range tbl.Chains {
		chains[c.Name] = c
	}
	fe := netip.MustParseAddr(addr)
	target := ""
	for _, m := range tbl.Maps {
		for _, e := range m.Elements {
			if m.Name == render.ServiceMap(map[bool]int{true: 4, false: 6}[fe.Is4()]) && e.Addr == fe && e.Proto == 6 && e.Port == port {
				target = e.Chain
			}
		}
	}
	if target == "" {
		t.Fatalf("no frontend map element for %s:%d", addr, port)
	}
	got := map[string][]string{}
	for name, s := range senders {
		w := &chainWalk{t: t, chains: chains, from: s, out: map[string]bool{}}
		w.chain(target, false, 0)
		for o := range w.out {
			got[name] = append(got[name], o)
		}
		slices.Sort(got[name])
	}
	return got
}

// TestRenderServicesLocalShortCircuit checks kube-proxy's externalTrafficPolicy Local
// behaviour by evaluating the rendered chains per client: a local pod and the node itself
// reach the frontend's cluster-wide backends (the node's own connections masqueraded: their
// source would be a node address), a client from outside reaches only the local backends
// with its address kept, and is dropped when there are none while the service has remote
// ones.
func TestRenderServicesLocalShortCircuit(t *testing.T) {
	a := netip.MustParseAddr
	senders := map[string]sender{
		"pod":     {iif: "cali0123456789a", src: a("10.0.1.9")},
		"node":    {local: true, src: a("192.168.1.10")},
		"outside": {iif: "eth0", src: a("203.0.113.9")},
		// A local backend reaching its own service's NodePort: hairpin masquerade.
		"backend": {iif: "cali5555555555a", src: a("10.0.1.5")},
	}
	both := []string{"dnat 10.0.1.5:8080", "dnat 10.0.2.5:8080"}
	bothMasq := []string{"dnat 10.0.1.5:8080 masq", "dnat 10.0.2.5:8080 masq"}
	tests := []struct {
		name, addr string
		port       uint16
		want       map[string][]string
	}{
		{"Local NodePort with a local and a remote backend", "192.168.1.10", 30080, map[string][]string{
			"pod": both, "node": bothMasq, "outside": {"dnat 10.0.1.5:8080"},
			"backend": {"dnat 10.0.1.5:8080 masq", "dnat 10.0.2.5:8080"}}},
		{"Local load-balancer IP", "198.51.100.20", 80, map[string][]string{
			"pod": both, "node": bothMasq, "outside": {"dnat 10.0.1.5:8080"},
			"backend": {"dnat 10.0.1.5:8080 masq", "dnat 10.0.2.5:8080"}}},
		{"Local NodePort without a local backend", "192.168.1.10", 30090, map[string][]string{
			"pod": {"dnat 10.0.2.7:8080"}, "node": {"dnat 10.0.2.7:8080 masq"}, "outside": {"drop"}, "backend": {"dnat 10.0.2.7:8080"}}},
		// externalTrafficPolicy Cluster: everyone is masqueraded (kube-proxy marks every
		// packet of an external frontend).
		{"Cluster NodePort", "192.168.1.10", 30379, map[string][]string{
			"pod": {"dnat 10.0.2.6:6379 masq"}, "node": {"dnat 10.0.2.6:6379 masq"}, "outside": {"dnat 10.0.2.6:6379 masq"}, "backend": {"dnat 10.0.2.6:6379 masq"}}},
		// A ClusterIP has no short-circuit: every client reaches every backend unmarked.
		{"ClusterIP of the Local service", "10.96.0.20", 80, map[string][]string{
			"pod": both, "node": both, "outside": both, "backend": {"dnat 10.0.1.5:8080 masq", "dnat 10.0.2.5:8080"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, reach(t, fixture.Services(), tc.addr, tc.port, senders)); diff != "" {
				t.Errorf("outcomes per client (-want +got):\n%s", diff)
			}
		})
	}
}

// TestRenderServicesLocalSelection covers the backend choice behind a Local frontend: the
// local selection and the cluster-wide one are made separately (a terminating local backend
// serves outside clients while the cluster has ready ones, which internal clients get), a
// service without any backend rejects every client, and the workload interface prefixes
// come from the configuration.
func TestRenderServicesLocalSelection(t *testing.T) {
	a := netip.MustParseAddr
	be := func(addr, node string, ready bool) snapshot.Backend {
		return snapshot.Backend{Addr: a(addr), Protocol: 6, Port: 8080, Node: node, Ready: ready, Serving: true}
	}
	snap := snapshot.Snapshot{
		Node:   "node-1",
		Config: snapshot.Config{InterfacePrefixes: []string{"cali", "tap"}},
		Services: []snapshot.Service{
			{ID: "app/draining", Frontends: []snapshot.Frontend{{Addr: a("192.168.1.10"), Protocol: 6, Port: 30100, Kind: "NodePort", LocalOnly: true}},
				Backends: []snapshot.Backend{be("10.0.1.7", "node-1", false), be("10.0.2.7", "node-2", true)}},
			{ID: "app/none", Frontends: []snapshot.Frontend{{Addr: a("192.168.1.10"), Protocol: 6, Port: 30101, Kind: "NodePort", LocalOnly: true}}},
		},
	}
	snap.Finalize()
	senders := map[string]sender{
		"tap pod": {iif: "tap0", src: a("10.0.1.9")},
		"node":    {local: true, src: a("192.168.1.10")},
		"outside": {iif: "eth0", src: a("203.0.113.9")},
	}
	for _, tc := range []struct {
		port uint16
		want map[string][]string
	}{
		{30100, map[string][]string{"tap pod": {"dnat 10.0.2.7:8080"}, "node": {"dnat 10.0.2.7:8080 masq"}, "outside": {"dnat 10.0.1.7:8080"}}},
		{30101, map[string][]string{"tap pod": {"reject"}, "node": {"reject"}, "outside": {"reject"}}},
	} {
		t.Run(fmt.Sprint(tc.port), func(t *testing.T) {
			if diff := cmp.Diff(tc.want, reach(t, snap, "192.168.1.10", tc.port, senders)); diff != "" {
				t.Errorf("outcomes per client (-want +got):\n%s", diff)
			}
		})
	}
}
