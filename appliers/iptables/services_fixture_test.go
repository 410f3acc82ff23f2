// Copied from appliers/nftables/render/services_test.go (a test file of another package): the same services.

package iptables

import (
	"net/netip"

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
