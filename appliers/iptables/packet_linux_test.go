//go:build linux

package iptables

import (
	"context"
	"net/netip"
	"os/exec"
	"testing"
	"time"

	"github.com/felis-dev/felis/snapshot"
	"github.com/felis-dev/felis/tools/netns"
)

// TestPackets sends real traffic through the programmed rules of both flavours: a pod reaches
// a service's ClusterIP (DNAT to the backend pod), a service without endpoints is rejected at
// once, and a policy Deny in front of the profile drops a port while others pass.
func TestPackets(t *testing.T) {
	for _, backend := range []string{BackendLegacy, BackendNFT} {
		t.Run(backend, func(t *testing.T) {
			if _, err := exec.LookPath("iptables-" + backend + "-restore"); err != nil {
				t.Skip("iptables-" + backend + " missing")
			}
			h := netns.New(t)
			node, err := h.NewNode("node1")
			if err != nil {
				t.Fatal(err)
			}
			pod := func(name string, i byte) *netns.Pod {
				p, err := node.NewPod(netns.PodOptions{Namespace: "ns", Name: name,
					IPv4: netip.AddrFrom4([4]byte{10, 65, 0, i}), IPv6: netip.AddrFrom16([16]byte{0xfd, 0, 0, 0x65, 15: i})})
				if err != nil {
					t.Fatal(err)
				}
				return p
			}
			client, server := pod("client", 10), pod("server", 11)
			for _, port := range []uint16{8080, 9090} {
				if _, err := server.Listen(netns.TCP, port); err != nil {
					t.Fatal(err)
				}
			}
			tcp := uint8(6)
			in := snapshot.Direction{Tiers: []snapshot.TierPolicies{{Tier: "default", DefaultAction: snapshot.Pass, Policies: []string{"deny-9090"}}}, Profiles: []string{"allow"}}
			out := snapshot.Direction{Profiles: []string{"allow"}}
			ep := func(p *netns.Pod, ingress snapshot.Direction) snapshot.Endpoint {
				return snapshot.Endpoint{ID: "ns/" + p.PodName, Namespace: "ns", Workload: p.PodName, Name: "eth0", Interface: p.HostInterface,
					Addrs: []netip.Prefix{netip.PrefixFrom(p.IPv4, 32), netip.PrefixFrom(p.IPv6, 128)}, Ingress: ingress, Egress: out}
			}
			snap := snapshot.Snapshot{
				Node:   node.NodeName,
				Config: snapshot.Config{InterfacePrefixes: []string{"cali"}, DefaultEndpointToHostAction: snapshot.Allow},
				Policies: []snapshot.Policy{{ID: "deny-9090", Kind: "GlobalNetworkPolicy", Name: "deny-9090", Tier: "default",
					Inbound: []snapshot.Rule{{Action: snapshot.Deny, Protocol: &tcp, DstPorts: []snapshot.PortRange{{Min: 9090, Max: 9090}}}}}},
				Profiles:  []snapshot.Profile{{ID: "allow", Inbound: []snapshot.Rule{{Action: snapshot.Allow}}, Outbound: []snapshot.Rule{{Action: snapshot.Allow}}}},
				Endpoints: []snapshot.Endpoint{ep(client, snapshot.Direction{Profiles: []string{"allow"}}), ep(server, in)},
				Services: []snapshot.Service{
					{ID: "ns/web", Frontends: []snapshot.Frontend{{Addr: netip.MustParseAddr("10.96.0.10"), Protocol: 6, Port: 80, Kind: "ClusterIP"}},
						Backends: []snapshot.Backend{{Addr: server.IPv4, Protocol: 6, Port: 8080, Node: node.NodeName, Ready: true, Serving: true}}},
					{ID: "ns/empty", Frontends: []snapshot.Frontend{{Addr: netip.MustParseAddr("10.96.0.40"), Protocol: 6, Port: 80, Kind: "ClusterIP"}}},
				},
			}
			snap.Finalize()
			k, err := NewKernel(context.Background(), backend, WithNetNS(node.Name))
			if err != nil {
				t.Fatal(err)
			}
			a := NewApplier(k)
			open := snap
			open.Endpoints = []snapshot.Endpoint{snap.Endpoints[0], ep(server, snapshot.Direction{Profiles: []string{"allow"}})}
			if _, err := a.Sync(context.Background(), mustRender(t, open)); err != nil {
				t.Fatal(err)
			}
			client.ExpectAllowed(t, netns.TCP, netip.AddrPortFrom(server.IPv4, 9090)) // before the policy applies
			if _, err := a.Sync(context.Background(), mustRender(t, snap)); err != nil {
				t.Fatal(err)
			}

			for _, dst := range []netip.AddrPort{netip.AddrPortFrom(server.IPv4, 8080), netip.AddrPortFrom(server.IPv6, 8080), netip.MustParseAddrPort("10.96.0.10:80")} {
				client.ExpectAllowed(t, netns.TCP, dst)
			}
			for _, dst := range []netip.AddrPort{netip.AddrPortFrom(server.IPv4, 9090), netip.AddrPortFrom(server.IPv6, 9090)} {
				if r := client.ProbeTimeout(netns.TCP, dst, time.Second); r.Outcome != netns.Timeout {
					t.Errorf("policy Deny on 9090: %s, want Timeout (dropped)", r)
				}
			}
			if r := client.ProbeTimeout(netns.TCP, netip.MustParseAddrPort("10.96.0.40:80"), 2*time.Second); (r.Outcome != netns.Refused && r.Outcome != netns.Unreachable) || r.Elapsed > time.Second {
				t.Errorf("service without endpoints: %s, want rejected at once", r)
			}
		})
	}
}
