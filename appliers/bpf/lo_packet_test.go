//go:build linux

package bpf

import (
	"context"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/felis-dev/felis/snapshot"
	"github.com/felis-dev/felis/tools/netns"
)

// TestPacketsHostOwnAddressServices: real packets from the node itself to frontends on its
// own addresses, which go over lo (felis_data_out on lo's egress). node1 runs felis and the
// backend web-a; node2, on the same underlay and without felis, runs web-b. node1's own
// sockets reach, over TCP and UDP, IPv4 and IPv6: its NodePort (externalTrafficPolicy
// Cluster: both backends serve, the remote one over the underlay), its Local NodePort (the
// node is a client inside the cluster: the cluster-wide backends, both serve, as
// kube-proxy's short-circuit) and an external IP equal to its own address (both serve).
// Every exchange completes, so each reply came back from the frontend (reverse-NATed at
// web-a's veth or at eth0 and handed to lo's ingress). Before felis runs the same
// probes fail (nothing listens on the node). Run with TCX links and with clsact, and with
// TCX under a `*` host endpoint allowing everything (its program on lo and eth0 too).
func TestPacketsHostOwnAddressServices(t *testing.T) {
	for _, clsact := range []bool{false, true} {
		t.Run(map[bool]string{false: "tcx", true: "clsact"}[clsact], func(t *testing.T) { hostOwnAddressServices(t, clsact, false) })
	}
	// A `*` host endpoint (allowing everything) puts its program on lo and eth0 too: with
	// TCX felis_data_out runs first on lo (head of the chain), and the remote backend's reply
	// is reverse-NATed by the host endpoint's program on eth0.
	t.Run("tcx with a * host endpoint", func(t *testing.T) { hostOwnAddressServices(t, false, true) })
}

func hostOwnAddressServices(t *testing.T, clsact, hostEP bool) {
	_, dir := openTest(t)
	node, _, webA, webB, listeners, snap := twoNodeBackends(t)
	if hostEP {
		all := snapshot.Direction{Profiles: []string{"all"}}
		snap.HostEndpoints = []snapshot.HostEndpoint{{ID: "node1", Interface: "*",
			Normal: snapshot.HostDirections{Ingress: all, Egress: all}, Forward: snapshot.HostDirections{Ingress: all, Egress: all}}}
	}
	frontends := map[string]uint16{"NodePort": 30080, "NodePort Local": 30081, "ExternalIP": 81}
	var svcs []snapshot.Service
	for _, local := range []bool{false, true} {
		svc := snapshot.Service{ID: map[bool]string{false: "app/web", true: "app/web-local"}[local]}
		for _, proto := range []uint8{6, 17} {
			for _, a := range []netip.Addr{node.IPv4, node.IPv6} {
				if local {
					svc.Frontends = append(svc.Frontends, snapshot.Frontend{Addr: a, Port: frontends["NodePort Local"], Protocol: proto, Kind: "NodePort", LocalOnly: true})
				} else {
					svc.Frontends = append(svc.Frontends, snapshot.Frontend{Addr: a, Port: frontends["NodePort"], Protocol: proto, Kind: "NodePort"},
						snapshot.Frontend{Addr: a, Port: frontends["ExternalIP"], Protocol: proto, Kind: "ExternalIP"})
				}
			}
			for _, p := range []*netns.Pod{webA, webB} {
				for _, a := range p.Addrs() {
					svc.Backends = append(svc.Backends, snapshot.Backend{Addr: a, Port: 8080, Protocol: proto, Node: p.Node.NodeName, Ready: true, Serving: true})
				}
			}
		}
		svcs = append(svcs, svc)
	}
	snap.Services = svcs
	snap.Finalize()

	served := func() map[string][2]int {
		out := map[string][2]int{}
		for name, ls := range listeners {
			out[name] = [2]int{ls[0].Served(), ls[1].Served()}
		}
		return out
	}
	// Before felis: nothing listens on node1's ports, TCP is refused.
	for name, port := range frontends {
		if r := node.Probe(netns.TCP, netip.AddrPortFrom(node.IPv4, port)); r.Outcome == netns.Allowed {
			t.Fatalf("node1 to its own %s %d before felis: %s; want no service", name, port, r)
		}
	}

	var d *Dataplane
	if err := node.Do(func() error {
		var err error
		if d, err = Open(Options{PinDir: dir + "/host", Clsact: clsact}); err != nil {
			return err
		}
		res, err := d.Sync(context.Background(), snap, true)
		out := "lo-out-link-attach"
		if clsact {
			out = "lo-out-filter-replace"
		}
		if err == nil && res.Counts[out] != 1 {
			t.Errorf("sync attached felis_data_out to lo %d times (%s), want 1: %v", res.Counts[out], out, res.Ops)
		}
		if err == nil && hostEP && !clsact {
			// felis_data_out first on lo's egress, then the host endpoint's program.
			q, qerr := link.QueryPrograms(link.QueryOptions{Target: 1, Attach: ebpf.AttachTCXEgress})
			if qerr != nil {
				return qerr
			}
			var felis int
			for _, p := range q.Programs {
				if isFelisProgram(p.ID) {
					felis++
				}
			}
			if felis != 2 {
				t.Errorf("lo's TCX egress chain holds %d felis programs, want 2 (felis_data_out, the host endpoint's)", felis)
			}
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	defer node.Do(func() error { return Cleanup(context.Background(), dir+"/host") })
	if v, err := node.Sysctl("net/ipv4/conf/lo/accept_local"); err != nil || v != "1" {
		t.Errorf("node1's lo accept_local %q (%v), want 1", v, err)
	}

	for name, port := range frontends {
		for _, a := range []netip.Addr{node.IPv4, node.IPv6} {
			dst := netip.AddrPortFrom(a, port)
			for i, proto := range []netns.Protocol{netns.TCP, netns.UDP} {
				before := served()
				for n := range 24 {
					if err := node.Probe(proto, dst).Allowed(); err != nil {
						t.Fatalf("node1 to its own %s %s over %s, probe %d: %v", name, dst, proto, n+1, err)
					}
				}
				after := served()
				for _, b := range []string{"web-a", "web-b"} {
					if after[b][i] == before[b][i] {
						t.Errorf("node1 to its own %s %s over %s: %s never served (before %v, after %v); want both backends", name, dst, proto, b, before, after)
					}
				}
			}
		}
	}
}
