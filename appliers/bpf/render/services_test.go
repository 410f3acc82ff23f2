package render

import (
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/felis-dev/felis/snapshot"
)

// TestService: backend groups follow snapshot.BackendsFor (ready first, serving fallback,
// Local frontends only local backends); external Cluster frontends SNAT to the node
// address; a frontend without backends rejects unless it is Local with backends elsewhere;
// SCTP is left out with a warning; frontends of one port share a group.
func TestService(t *testing.T) {
	a := netip.MustParseAddr
	be := func(addr, node string, ready, serving bool) snapshot.Backend {
		return snapshot.Backend{Addr: a(addr), Port: 8080, Protocol: 6, PortName: "http", Node: node, Ready: ready, Serving: serving}
	}
	fe := func(addr string, port uint16, kind string, local bool) snapshot.Frontend {
		return snapshot.Frontend{Addr: a(addr), Port: port, Protocol: 6, Kind: kind, PortName: "http", LocalOnly: local}
	}
	s := &snapshot.Service{ID: "ns/web", AffinitySeconds: 30,
		Frontends: []snapshot.Frontend{fe("10.96.0.1", 80, "ClusterIP", false), fe("192.168.5.1", 30080, "NodePort", false),
			fe("192.168.5.1", 30081, "NodePort", true), fe("10.96.0.9", 80, "LoadBalancer", true),
			{Addr: a("10.96.0.1"), Port: 90, Protocol: 132, Kind: "ClusterIP", PortName: "sctp"}},
		Backends: []snapshot.Backend{be("10.0.0.1", "n", false, true), be("10.0.0.2", "n", true, true), be("10.0.0.3", "other", true, true)}}
	out, warns, err := Service(s, "n", NodeAddrs{V4: a("192.168.5.1")})
	if err != nil {
		t.Fatal(err)
	}
	if len(warns) != 1 || !strings.Contains(warns[0], "protocol 132") {
		t.Errorf("warnings %q; want one about the SCTP frontend", warns)
	}
	key := func(addr string, port uint16) FrontendKey {
		return FrontendKey{Family: 4, Protocol: 6, Port: port, Addr: addrBytes(a(addr))}
	}
	cip, np, npLocal := out.Frontends[key("10.96.0.1", 80)], out.Frontends[key("192.168.5.1", 30080)], out.Frontends[key("192.168.5.1", 30081)]
	if len(out.Frontends) != 4 {
		t.Fatalf("%d frontends, want 4 (SCTP left out): %v", len(out.Frontends), out.Frontends)
	}
	if cip.Group != np.Group || cip.Count != 2 || cip.Flags != FrontendAffinity || cip.Affinity != 30 {
		t.Errorf("ClusterIP %+v, NodePort %+v: want one group of the 2 ready backends, affinity 30 s, no SNAT on the ClusterIP", cip, np)
	}
	if np.Flags != FrontendAffinity|FrontendSNAT|FrontendNode || np.SNAT != addrBytes(a("192.168.5.1")) {
		t.Errorf("Cluster NodePort %+v: want SNAT to the node address, a node-address frontend", np)
	}
	if lb := out.Frontends[key("10.96.0.9", 80)]; npLocal.Flags&FrontendNode == 0 || lb.Flags&FrontendNode != 0 || cip.Flags&FrontendNode != 0 {
		t.Errorf("NodePort %+v, load-balancer IP %+v, ClusterIP %+v: want FrontendNode on the NodePorts only", npLocal, lb, cip)
	}
	if npLocal.Group == np.Group || npLocal.Count != 1 || npLocal.Flags&FrontendSNAT != 0 {
		t.Errorf("Local NodePort %+v: want its own group of the one local ready backend, no SNAT", npLocal)
	}
	// kube-proxy's short-circuit: after the local choice, the group holds the cluster-wide
	// one, which local pods get.
	if npLocal.Flags&FrontendLocal == 0 || npLocal.Cluster != 2 {
		t.Errorf("Local NodePort %+v: want FrontendLocal and the 2 ready cluster-wide backends after the local one", npLocal)
	}
	if lb := out.Frontends[key("10.96.0.9", 80)]; lb.Group != npLocal.Group || lb.Flags&FrontendLocal == 0 {
		t.Errorf("Local load-balancer IP %+v: want the Local NodePort's group %016x, FrontendLocal", lb, npLocal.Group)
	}
	for i, want := range map[uint32]string{1: "10.0.0.2", 2: "10.0.0.3"} {
		if b := out.Backends[BackendKey{Group: npLocal.Group, Index: i}]; b.Addr != addrBytes(a(want)) || (b.Flags == BackendLocal) != (want == "10.0.0.2") {
			t.Errorf("Local group's backend %d %+v; want %s (local only for 10.0.0.2)", i, b, want)
		}
	}
	if len(out.Backends) != 2+3 {
		t.Errorf("%d backends, want 2 (cluster group) + 3 (Local group: 1 local, 2 cluster-wide)", len(out.Backends))
	}
	if cip.Flags&FrontendLocal != 0 || np.Flags&FrontendLocal != 0 || np.Cluster != 0 {
		t.Errorf("ClusterIP %+v, Cluster NodePort %+v: FrontendLocal on a frontend without externalTrafficPolicy Local", cip, np)
	}
	if b := out.Backends[BackendKey{Group: npLocal.Group}]; b.Addr != addrBytes(a("10.0.0.2")) || b.Flags != BackendLocal || b.Port != 8080 {
		t.Errorf("Local group's backend %+v; want 10.0.0.2:8080, local", b)
	}
	if b := out.Backends[BackendKey{Group: cip.Group, Index: 1}]; b.Addr != addrBytes(a("10.0.0.3")) || b.Flags != 0 {
		t.Errorf("cluster group's second backend %+v; want 10.0.0.3, not local", b)
	}

	// No ready backend: the serving one; none at all: reject; Local with backends only
	// elsewhere: drop (no reject flag).
	s.Backends = []snapshot.Backend{be("10.0.0.1", "n", false, true), be("10.0.0.3", "other", false, false)}
	out, _, _ = Service(s, "n", NodeAddrs{})
	if f := out.Frontends[key("10.96.0.1", 80)]; f.Count != 1 || out.Backends[BackendKey{Group: f.Group}].Addr != addrBytes(a("10.0.0.1")) {
		t.Errorf("no ready backend: %+v; want the serving 10.0.0.1", f)
	}
	s.Backends = []snapshot.Backend{be("10.0.0.3", "other", true, true)}
	out, _, _ = Service(s, "n", NodeAddrs{})
	f := out.Frontends[key("192.168.5.1", 30081)]
	if f.Count != 0 || f.Flags&FrontendReject != 0 {
		t.Errorf("Local frontend, backends only elsewhere: %+v; want count 0 without reject (drop)", f)
	}
	if b := out.Backends[BackendKey{Group: f.Group}]; f.Cluster != 1 || b.Addr != addrBytes(a("10.0.0.3")) {
		t.Errorf("Local frontend, backends only elsewhere: %+v, first backend %+v; want the remote 10.0.0.3 for local pods", f, b)
	}
	s.Backends = nil
	out, _, _ = Service(s, "n", NodeAddrs{})
	for k, f := range out.Frontends {
		if f.Count != 0 || f.Cluster != 0 || f.Flags&FrontendReject == 0 {
			t.Errorf("service without backends, frontend %s: %+v; want count 0 and reject", k, f)
		}
	}
}

// TestServiceNodeAddressFrontend: an external or load-balancer IP that is one of the node's
// configured addresses is a node-address frontend (FrontendNode), as a NodePort is; one
// that is not, or a ClusterIP, is not; without configured addresses nothing but NodePorts.
func TestServiceNodeAddressFrontend(t *testing.T) {
	a := netip.MustParseAddr
	fe := func(addr string, port uint16, kind string) snapshot.Frontend {
		return snapshot.Frontend{Addr: a(addr), Port: port, Protocol: 17, Kind: kind, PortName: "dns"}
	}
	s := &snapshot.Service{ID: "ns/dns",
		Frontends: []snapshot.Frontend{fe("192.168.5.1", 53, "ExternalIP"), fe("192.168.5.2", 53, "ExternalIP"),
			fe("fd00::5:1", 53, "LoadBalancer"), fe("fd00::5:2", 53, "LoadBalancer"), fe("10.96.0.10", 53, "ClusterIP"),
			fe("::ffff:192.168.5.1", 54, "LoadBalancer")},
		Backends: []snapshot.Backend{{Addr: a("10.0.0.1"), Port: 5353, Protocol: 17, PortName: "dns", Node: "n", Ready: true, Serving: true},
			{Addr: a("fd00:1::1"), Port: 5353, Protocol: 17, PortName: "dns", Node: "n", Ready: true, Serving: true}}}
	for _, tc := range []struct {
		addrs NodeAddrs
		node  []string // frontends (addr/port) expected with FrontendNode
	}{
		{NodeAddrs{V4: a("192.168.5.1"), V6: a("fd00::5:1")}, []string{"192.168.5.1/53", "fd00::5:1/53", "192.168.5.1/54"}},
		{NodeAddrs{}, nil},
	} {
		out, _, err := Service(s, "n", tc.addrs)
		if err != nil {
			t.Fatal(err)
		}
		if len(out.Frontends) != 6 {
			t.Fatalf("%d frontends, want 6: %v", len(out.Frontends), out.Frontends)
		}
		want := map[string]bool{}
		for _, n := range tc.node {
			want[n] = true
		}
		for k, f := range out.Frontends {
			name := addrOf(k.Family, k.Addr).String() + "/" + strconv.Itoa(int(k.Port))
			if got := f.Flags&FrontendNode != 0; got != want[name] {
				t.Errorf("node addresses %+v: frontend %s flags %d: FrontendNode %t, want %t", tc.addrs, name, f.Flags, got, want[name])
			}
		}
	}
}
